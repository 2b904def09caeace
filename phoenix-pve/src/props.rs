//! Proxmox property strings (`name=eth0,bridge=vmbr0,ip=dhcp`) as maps, so that they compare by content.

use std::collections::BTreeMap;

use serde_json::Value;

/// Parses a property string. A leading item without `=` (a volume: `local-lvm:vm-101-disk-0`) is
/// stored under `default_key`.
pub fn parse(text: &str, default_key: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        match item.split_once('=') {
            Some((key, value)) => map.insert(key.to_owned(), value.to_owned()),
            None => map.insert(default_key.to_owned(), item.to_owned()),
        };
    }
    map
}

/// Writes a map back as a property string, `default_key` first and unnamed, the rest sorted.
pub fn render(map: &BTreeMap<String, String>, default_key: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(key) = default_key
        && let Some(value) = map.get(key)
    {
        parts.push(value.clone());
    }
    for (key, value) in map {
        if Some(key.as_str()) != default_key {
            parts.push(format!("{key}={value}"));
        }
    }
    parts.join(",")
}

/// Renders a JSON object of strings as a property string; `first` (if given) leads as `first=value`.
pub fn render_object(value: &serde_json::Value, first: Option<&str>) -> String {
    let map: BTreeMap<String, String> = value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, value)| {
            (
                key.clone(),
                value.as_str().map_or_else(|| value.to_string(), str::to_owned),
            )
        })
        .collect();
    let mut parts: Vec<String> = first
        .and_then(|first| map.get(first).map(|value| format!("{first}={value}")))
        .into_iter()
        .collect();
    parts.extend(
        map.iter()
            .filter(|(key, _)| Some(key.as_str()) != first)
            .map(|(key, value)| format!("{key}={value}")),
    );
    parts.join(",")
}

/// A size as Proxmox writes it (`16G`, `512M`, `1T`, or bare GiB) in GiB.
pub fn size_gib(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = match text.chars().last()? {
        'T' | 't' => (&text[..text.len() - 1], 1024.0),
        'G' | 'g' => (&text[..text.len() - 1], 1.0),
        'M' | 'm' => (&text[..text.len() - 1], 1.0 / 1024.0),
        'K' | 'k' => (&text[..text.len() - 1], 1.0 / 1024.0 / 1024.0),
        _ => (text, 1.0),
    };
    number.parse::<f64>().ok().map(|value| value * factor)
}

/// A key of a guest's config as text: strings as they are, numbers and flags as JSON writes them.
pub fn config_text(config: &BTreeMap<String, Value>, key: &str) -> Option<String> {
    config.get(key).map(|value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}

/// DNS servers as Proxmox keeps them: separated by single spaces (the configuration may use commas or
/// semicolons).
pub fn nameservers(list: &str) -> String {
    list.split([' ', ',', ';'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `startup` property string of a boot order and delay, as a map of its declared keys; `None` when
/// neither is declared.
pub fn startup(order: Option<u32>, delay: Option<u32>) -> Option<Value> {
    if order.is_none() && delay.is_none() {
        return None;
    }
    let mut startup = serde_json::Map::new();
    if let Some(order) = order {
        startup.insert("order".into(), Value::String(order.to_string()));
    }
    if let Some(delay) = delay {
        startup.insert("up".into(), Value::String(delay.to_string()));
    }
    Some(Value::Object(startup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_and_startup_take_proxmox_shapes() {
        assert_eq!(
            nameservers("10.0.0.2, 1.1.1.1;9.9.9.9  "),
            "10.0.0.2 1.1.1.1 9.9.9.9"
        );
        assert_eq!(startup(None, None), None);
        assert_eq!(startup(Some(2), None), Some(serde_json::json!({"order": "2"})));
        let config = BTreeMap::from([
            ("cores".to_owned(), serde_json::json!(2)),
            ("name".to_owned(), serde_json::json!("web")),
        ]);
        assert_eq!(config_text(&config, "cores").as_deref(), Some("2"));
        assert_eq!(config_text(&config, "name").as_deref(), Some("web"));
    }

    #[test]
    fn property_strings_round_trip_as_maps() {
        let map = parse(
            "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth",
            "name",
        );
        assert_eq!(map["bridge"], "vmbr0");
        assert_eq!(
            render(&map, None),
            "bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,name=eth0,type=veth"
        );
        let rootfs = parse("local-lvm:vm-101-disk-0,size=16G", "volume");
        assert_eq!(rootfs["volume"], "local-lvm:vm-101-disk-0");
        assert_eq!(
            render(&rootfs, Some("volume")),
            "local-lvm:vm-101-disk-0,size=16G"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(size_gib("16G"), Some(16.0));
        assert_eq!(size_gib("512M"), Some(0.5));
        assert_eq!(size_gib("1T"), Some(1024.0));
        assert_eq!(size_gib("8"), Some(8.0));
        assert_eq!(size_gib("big"), None);
    }
}
