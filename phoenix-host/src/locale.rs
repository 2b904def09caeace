//! `host/locale`: the node's locale, generated and set as the system's `LANG`, on the host channel.
//!
//! A locale is generated when `locale -a` lists it; it is added to `/etc/locale.gen` (its commented line
//! uncommented, or the line the node's `/usr/share/i18n/SUPPORTED` gives appended) and `locale-gen` runs
//! only then. `LANG` is read from `/etc/default/locale` and set with `update-locale` only when it differs.

use std::collections::BTreeMap;

use phoenix_core::ManagerError;
use serde_json::{Value, json};

use crate::node::Node;

const LOCALE_GEN: &str = "/etc/locale.gen";
const SUPPORTED: &str = "/usr/share/i18n/SUPPORTED";
const DEFAULT: &str = "/etc/default/locale";

/// The declared fields: the locale generated, and `LANG` set to it.
pub(crate) fn desired(locale: &str) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("generated".to_owned(), json!(true)),
        ("lang".to_owned(), json!(locale)),
    ])
}

/// What the node has: whether the locale is generated, and its `LANG` (absent when unset).
pub(crate) async fn observe(node: &Node, locale: &str) -> Result<BTreeMap<String, Value>, ManagerError> {
    let mut fields = BTreeMap::from([("generated".to_owned(), json!(generated(node, locale).await?))]);
    if let Some(lang) = lang(node).await? {
        fields.insert("lang".to_owned(), json!(lang));
    }
    Ok(fields)
}

/// glibc's name for a locale in `locale -a`: the code set in lower case without punctuation
/// (`de_DE.UTF-8` is listed as `de_DE.utf8`).
fn normalised(locale: &str) -> String {
    let (name, modifier) = locale
        .split_once('@')
        .map_or((locale, None), |(name, modifier)| (name, Some(modifier)));
    let mut out = match name.split_once('.') {
        Some((language, codeset)) => {
            let codeset: String = codeset
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .map(|c| c.to_ascii_lowercase())
                .collect();
            format!("{language}.{codeset}")
        }
        None => name.to_owned(),
    };
    if let Some(modifier) = modifier {
        out.push('@');
        out.push_str(modifier);
    }
    out
}

async fn generated(node: &Node, locale: &str) -> Result<bool, ManagerError> {
    let wanted = normalised(locale);
    let listed = node.check(&["locale", "-a"], None).await?;
    Ok(listed
        .lines()
        .any(|line| line.trim() == wanted || line.trim() == locale))
}

async fn lang(node: &Node) -> Result<Option<String>, ManagerError> {
    let text = node.read_file(DEFAULT).await?.unwrap_or_default();
    Ok(text.lines().rev().find_map(|line| {
        let value = line.trim().strip_prefix("LANG=")?;
        Some(value.trim_matches(|c| c == '"' || c == '\'').to_owned())
    }))
}

/// `/etc/locale.gen` with the locale's line in it, uncommented; `None` when it already is.
fn with_locale(locale_gen: &str, line: &str) -> Option<String> {
    let mut found = false;
    let mut lines: Vec<String> = Vec::new();
    for existing in locale_gen.lines() {
        let bare = existing.trim_start_matches('#').trim();
        if bare == line {
            if !existing.starts_with('#') {
                return None;
            }
            if !found {
                lines.push(line.to_owned());
                found = true;
                continue;
            }
        }
        lines.push(existing.to_owned());
    }
    if !found {
        lines.push(line.to_owned());
    }
    Some(lines.join("\n") + "\n")
}

/// Generates the locale where it is not, and sets `LANG` where it differs.
pub(crate) async fn apply(node: &Node, locale: &str) -> Result<(), ManagerError> {
    if !generated(node, locale).await? {
        let supported = node.read_file(SUPPORTED).await?.unwrap_or_default();
        let line = supported
            .lines()
            .map(str::trim)
            .find(|line| line.split_whitespace().next() == Some(locale))
            .ok_or_else(|| {
                ManagerError::failed(format!(
                    "node {} cannot generate the locale {locale}: it is not in {SUPPORTED}",
                    node.name()
                ))
            })?;
        let current = node.read_file(LOCALE_GEN).await?.unwrap_or_default();
        if let Some(edited) = with_locale(&current, line) {
            node.write_file(LOCALE_GEN, &edited, "0644", None).await?;
        }
        node.change(&format!("generated the locale {locale}"), &["locale-gen"], None)
            .await?;
    }
    if lang(node).await?.as_deref() != Some(locale) {
        let assignment = format!("LANG={locale}");
        node.change(
            &format!("set {assignment}"),
            &["update-locale", &assignment],
            None,
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_names_are_compared_the_way_glibc_lists_them() {
        assert_eq!(normalised("de_DE.UTF-8"), "de_DE.utf8");
        assert_eq!(normalised("de_DE.ISO-8859-15@euro"), "de_DE.iso885915@euro");
        assert_eq!(normalised("C.UTF-8"), "C.utf8");
        assert_eq!(normalised("POSIX"), "POSIX");
    }

    #[test]
    fn the_locale_line_is_uncommented_once_or_appended() {
        let generated = "# de_DE.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n";
        assert_eq!(
            with_locale(generated, "de_DE.UTF-8 UTF-8").as_deref(),
            Some("de_DE.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n")
        );
        assert_eq!(with_locale(generated, "en_US.UTF-8 UTF-8"), None);
        assert_eq!(
            with_locale("en_US.UTF-8 UTF-8\n", "fr_FR.UTF-8 UTF-8").as_deref(),
            Some("en_US.UTF-8 UTF-8\nfr_FR.UTF-8 UTF-8\n")
        );
    }
}
