//! `sync/dns/public/<zone>`: the public view's names, published to the zone's authoritative server by
//! RFC 2136 dynamic update and read back by zone transfer, both signed with TSIG ([`wire`]).
//!
//! Observe transfers the zone and keeps the names Phoenix owns (an ownership record
//! `_phoenix.<name>` with this estate's owner id, [`phoenix_core::dns::public`]) and the declared names
//! that something else holds. Diff compares records name by name; a name that left the configuration
//! is removed only when Phoenix owns it; a change of more than a third of a zone of at least
//! [`SAFE_ZONE_SIZE`] records is destructive (`--allow-destroy`), octoDNS's safety rule. Apply sends one
//! update per zone, with prerequisites that the names are as they were read: the server applies all of
//! it or nothing, and a name someone else holds is never touched.

pub mod wire;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use phoenix_core::config::common::Secret;
use phoenix_core::config::hypervisor::DnsUpdateServer;
use phoenix_core::dns::public::{
    NameRecords, PublicZone, SAFE_ZONE_SIZE, owned_name, owner_name, ownership_text, split_server,
};
use phoenix_core::{Address, Change, Consequence, ManagerError, Observed, diff_owned};
use serde_json::Value;

use wire::{Data, Entry, Record, Server, TsigKey, WireError};

/// The field that carries the zone's size in what is observed; no DNS name has a space.
pub const ZONE_SIZE: &str = "zone records";
/// The key a name held by something else carries in what is observed: who holds it.
const HELD_BY: &str = "held_by";

const TIMEOUT: Duration = Duration::from_secs(30);

/// The server of `zone`, with its key resolved by `secret` (the secret's base64 text).
pub fn server(
    zone: &PublicZone,
    secret: &dyn Fn(&Secret) -> Result<String, String>,
) -> Result<Server, String> {
    let config = zone
        .server
        .as_ref()
        .ok_or_else(|| format!("zone {} has no server to publish to", zone.zone))?;
    server_of(config, secret)
}

/// The server `config` declares, with its key resolved by `secret`.
pub fn server_of(
    config: &DnsUpdateServer,
    secret: &dyn Fn(&Secret) -> Result<String, String>,
) -> Result<Server, String> {
    let (host, port) = split_server(&config.address)
        .ok_or_else(|| format!("`{}` is not a DNS server's address", config.address))?;
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let key = match &config.tsig {
        Some(tsig) => Some(TsigKey::new(&tsig.name, &tsig.algorithm, &secret(&tsig.secret)?)?),
        None => None,
    };
    Ok(Server {
        address,
        key,
        timeout: TIMEOUT,
    })
}

/// What the zone holds that the plan compares: the names Phoenix owns, the declared names something else
/// holds, and the zone's size.
pub async fn observe(server: &Server, zone: &PublicZone) -> Result<Observed, ManagerError> {
    let records = server.transfer(&zone.zone).await.map_err(wire_error)?;
    Ok(Observed::new(fields(zone, &records)))
}

fn fields(zone: &PublicZone, records: &[Record]) -> BTreeMap<String, Value> {
    let ownership = ownership_text(&zone.owner_id);
    let owned = |name: &str| {
        records
            .iter()
            .any(|record| record.name == owner_name(name) && record.data == Data::Txt(ownership.clone()))
    };
    let mut names: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for record in records {
        match owned_name(&record.name) {
            // A name Phoenix owns is compared even when its records were all deleted by hand.
            Some(name) if record.data == Data::Txt(ownership.clone()) => {
                names.entry(name).or_default();
            }
            Some(_) => {}
            None => names.entry(record.name.clone()).or_default().push(record),
        }
    }
    let mut fields = BTreeMap::new();
    for (name, at) in &names {
        let mine = owned(name);
        let mut value = NameRecords::default();
        let mut cname = false;
        for record in at {
            match &record.data {
                Data::A(address) => value.a.push(address.to_string()),
                Data::Aaaa(address) => value.aaaa.push(address.to_string()),
                _ => cname |= record.rtype == wire::TYPE_CNAME,
            }
            if matches!(record.data, Data::A(_) | Data::Aaaa(_)) {
                value.ttl = record.ttl;
            }
        }
        // Other types (the apex's SOA, NS and MX, a TXT) live beside addresses: only addresses and an
        // alias stand in the way of Phoenix's records.
        let in_the_way = !value.a.is_empty() || !value.aaaa.is_empty() || cname;
        let held = zone.names.contains_key(name) && in_the_way;
        if !(mine || held) {
            continue;
        }
        value.a.sort();
        value.aaaa.sort();
        let mut json = serde_json::to_value(&value).unwrap_or_default();
        if !mine {
            let holder = records
                .iter()
                .filter(|record| record.name == owner_name(name))
                .find_map(|record| match &record.data {
                    Data::Txt(text) => Some(text.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "not Phoenix".to_owned());
            json[HELD_BY] = Value::from(holder);
            if cname {
                json["CNAME"] = Value::Bool(true);
            }
        }
        fields.insert(name.clone(), json);
    }
    fields.insert(ZONE_SIZE.to_owned(), Value::from(records.len()));
    fields
}

/// The changes that bring the zone to `zone`; all destructive when they touch more than a third of a zone
/// of at least [`SAFE_ZONE_SIZE`] records.
pub fn diff(address: &Address, zone: &PublicZone, observed: Option<&Observed>) -> Vec<Change> {
    let size = observed
        .and_then(|observed| observed.fields.get(ZONE_SIZE))
        .and_then(Value::as_u64)
        .unwrap_or_default() as usize;
    let observed = observed.map(|observed| {
        let mut observed = observed.clone();
        observed.fields.remove(ZONE_SIZE);
        observed
    });
    let mut changes = diff_owned(address, zone.fields(), observed.as_ref());
    for change in &mut changes {
        let touched: usize = change
            .fields
            .iter()
            .map(|field| records_changed(field.old.as_ref(), field.new.as_ref()))
            .sum();
        if size >= SAFE_ZONE_SIZE && touched * 3 > size {
            for field in &mut change.fields {
                field.consequence = Consequence::Destructive;
            }
        }
    }
    changes
}

/// How many records changing a name from `old` to `new` adds, removes or changes: its addresses, and its
/// ownership record when the name comes or goes.
fn records_changed(old: Option<&Value>, new: Option<&Value>) -> usize {
    let count = |value: &Value| {
        ["A", "AAAA"]
            .iter()
            .map(|key| value.get(key).and_then(Value::as_array).map_or(0, Vec::len))
            .sum::<usize>()
    };
    match (old, new) {
        (Some(old), Some(new)) => count(old).max(count(new)),
        (Some(value), None) | (None, Some(value)) => count(value) + 1,
        (None, None) => 0,
    }
}

/// Sends the one update that makes `change`, refusing it whole when a name is held by something else.
pub async fn apply(server: &Server, zone: &PublicZone, change: &Change) -> Result<(), ManagerError> {
    let held: Vec<String> = change
        .fields
        .iter()
        .filter_map(|field| {
            let holder = field.old.as_ref()?.get(HELD_BY)?.as_str()?;
            Some(format!("{} (held by `{holder}`)", field.field))
        })
        .collect();
    if !held.is_empty() {
        return Err(ManagerError::Failed {
            message: format!(
                "zone {}: {} already {} records Phoenix does not own; nothing was sent",
                zone.zone,
                held.join(", "),
                if held.len() == 1 { "has" } else { "have" }
            ),
            details: Some(format!(
                "remove those records, or add the ownership record `_phoenix.<name>. TXT \"{}\"` to hand them to Phoenix",
                ownership_text(&zone.owner_id)
            )),
        });
    }
    let ownership = Data::Txt(ownership_text(&zone.owner_id));
    let mut prerequisites = Vec::new();
    let mut updates = Vec::new();
    for field in &change.fields {
        let name = &field.field;
        let owner = owner_name(name);
        let old = field.old.as_ref().map(records).transpose()?;
        let new = field.new.as_ref().map(records).transpose()?;
        match &old {
            // No address or alias there when read, and no ownership record: none may be there now.
            None => {
                for rtype in [wire::TYPE_A, wire::TYPE_AAAA, wire::TYPE_CNAME] {
                    prerequisites.push(Entry::absent_set(name, rtype));
                }
                prerequisites.push(Entry::absent(&owner));
            }
            // Still Phoenix's.
            Some(_) => {
                prerequisites.push(Entry::exactly(&owner, &ownership));
                updates.push(Entry::delete_set(name, wire::TYPE_A));
                updates.push(Entry::delete_set(name, wire::TYPE_AAAA));
            }
        }
        match &new {
            Some(new) => {
                for data in data_of(new)? {
                    updates.push(Entry::add(name, new.ttl, &data));
                }
                if old.is_none() {
                    updates.push(Entry::add(&owner, new.ttl, &ownership));
                }
            }
            None => updates.push(Entry::delete(&owner, &ownership)),
        }
    }
    match server.update(&zone.zone, &prerequisites, &updates).await {
        Ok(()) => {
            tracing::info!(zone = %zone.zone, names = change.fields.len(), "updated the public DNS zone");
            Ok(())
        }
        Err(WireError::Refused { message, rcode }) if wire::PREREQUISITE_FAILED.contains(&rcode) => {
            Err(ManagerError::Failed {
                message: format!(
                    "zone {} changed since Phoenix read it; nothing was changed",
                    zone.zone
                ),
                details: Some(format!("{message}; plan again")),
            })
        }
        Err(error) => Err(wire_error(error)),
    }
}

fn records(value: &Value) -> Result<NameRecords, ManagerError> {
    serde_json::from_value(value.clone())
        .map_err(|error| ManagerError::failed(format!("a public name's records do not read back: {error}")))
}

fn data_of(records: &NameRecords) -> Result<Vec<Data>, ManagerError> {
    let mut data = Vec::new();
    for address in &records.a {
        let ip: Ipv4Addr = address
            .parse()
            .map_err(|_| ManagerError::failed(format!("`{address}` is not an IPv4 address")))?;
        data.push(Data::A(ip));
    }
    for address in &records.aaaa {
        let ip: Ipv6Addr = address
            .parse()
            .map_err(|_| ManagerError::failed(format!("`{address}` is not an IPv6 address")))?;
        data.push(Data::Aaaa(ip));
    }
    Ok(data)
}

/// Never transient: an update that timed out may have been applied, and its prerequisites would refuse
/// it the second time.
fn wire_error(error: WireError) -> ManagerError {
    ManagerError::failed(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(names: &[&str]) -> PublicZone {
        PublicZone {
            zone: "example.org".to_owned(),
            owner_id: "phoenix".to_owned(),
            names: names
                .iter()
                .map(|name| {
                    let records = NameRecords {
                        a: vec!["203.0.113.7".to_owned()],
                        aaaa: Vec::new(),
                        ttl: 300,
                    };
                    (name.to_string(), records)
                })
                .collect(),
            server: None,
        }
    }

    fn record(name: &str, data: Data) -> Record {
        Record {
            name: name.to_owned(),
            rtype: match data {
                Data::A(_) => wire::TYPE_A,
                Data::Txt(_) => wire::TYPE_TXT,
                _ => 2,
            },
            ttl: 300,
            data,
        }
    }

    fn owned(name: &str, ip: [u8; 4]) -> [Record; 2] {
        [
            record(name, Data::A(Ipv4Addr::from(ip))),
            record(&owner_name(name), Data::Txt(ownership_text("phoenix"))),
        ]
    }

    #[test]
    fn only_owned_and_declared_names_are_compared() {
        let mut records = vec![
            record("example.org", Data::Other),
            record("mail.example.org", Data::A(Ipv4Addr::new(192, 0, 2, 25))),
        ];
        records.extend(owned("www.example.org", [203, 0, 113, 7]));
        records.extend(owned("old.example.org", [203, 0, 113, 7]));
        records.push(record("app.example.org", Data::A(Ipv4Addr::new(192, 0, 2, 80))));
        let zone = zone(&["www.example.org", "app.example.org", "new.example.org"]);
        let fields = fields(&zone, &records);
        assert_eq!(
            fields.keys().collect::<Vec<_>>(),
            ["app.example.org", "old.example.org", "www.example.org", ZONE_SIZE]
        );
        assert_eq!(fields["app.example.org"][HELD_BY], "not Phoenix");
        let address = Address::Sync("dns/public/example.org".to_owned());
        let changes = diff(&address, &zone, Some(&Observed::new(fields)));
        let changed: Vec<_> = changes[0]
            .fields
            .iter()
            .map(|field| field.field.as_str())
            .collect();
        assert_eq!(changed, ["app.example.org", "new.example.org", "old.example.org"]);
        // 7 records; below the size the one-third rule holds at.
        assert!(
            changes[0]
                .fields
                .iter()
                .all(|field| field.consequence == Consequence::Live)
        );
    }

    #[test]
    fn changing_more_than_a_third_of_a_zone_is_destructive() {
        let mut records = vec![record("example.org", Data::Other)];
        for index in 0..6 {
            records.extend(owned(&format!("s{index}.example.org"), [203, 0, 113, 7]));
        }
        // 13 records; moving five names changes five of them, more than a third.
        let mut zone = zone(&[
            "s0.example.org",
            "s1.example.org",
            "s2.example.org",
            "s3.example.org",
            "s4.example.org",
            "s5.example.org",
        ]);
        let address = Address::Sync("dns/public/example.org".to_owned());
        for name in [
            "s0.example.org",
            "s1.example.org",
            "s2.example.org",
            "s3.example.org",
            "s4.example.org",
        ] {
            zone.names.get_mut(name).unwrap().a = vec!["203.0.113.8".to_owned()];
        }
        let observed = Observed::new(fields(&zone, &records));
        let changes = diff(&address, &zone, Some(&observed));
        assert_eq!(changes[0].consequence(), Consequence::Destructive);
        // Four of thirteen is less than a third.
        zone.names.get_mut("s4.example.org").unwrap().a = vec!["203.0.113.7".to_owned()];
        let changes = diff(&address, &zone, Some(&observed));
        assert_eq!(changes[0].consequence(), Consequence::Live);
    }
}
