//! Source text of a configuration file, with the byte span of every JSON value and key.
//!
//! One strict pass over each file records where every value and key lies (its tape, [`super::tape`]), so
//! any problem found later (by the schema, by serde or by the semantic checks) can be placed at its line and
//! column through a JSON pointer; malformed JSON gets serde_json's own message.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use miette::NamedSource;

use crate::config::FileKind;
use crate::lint::tape::{self, Entry, Kind, NONE, TapeNode};

/// One configuration file as read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    kind: FileKind,
    path: String,
    /// Shared, so that copies of a source (kept to render problems) share one text; a `String` inside, so
    /// that the text read from disk is not copied into the `Arc`.
    text: Arc<String>,
    /// The tape: kept from [`SourceFile::parse`] while the schema reads it, scanned again when a problem
    /// must be placed after it was released.
    index: OnceLock<SpanIndex>,
    /// Built on the first line or column asked for: only problems need them.
    line_starts: OnceLock<Vec<usize>>,
    duplicate_keys: Vec<DuplicateKey>,
}

/// A key written twice in one object. JSON parsers silently keep one of the values, so Phoenix refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// JSON pointer of the key (both occurrences share it).
    pub pointer: String,
    /// Byte range of the later occurrence, with its quotes.
    pub key: Range<usize>,
}

/// Where a JSON value sits in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Byte range of the value.
    pub value: Range<usize>,
    /// Byte range of the object key naming the value (with its quotes); `None` for the root and array items.
    pub key: Option<Range<usize>>,
}

/// A 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineColumn {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl SourceFile {
    /// Wraps the text of a file. `path` is how the file is named in diagnostics.
    ///
    /// Spans are found only in well-formed JSON; [`SourceFile::parse`] says whether the text is.
    pub fn new(kind: FileKind, path: impl Into<String>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            kind,
            path: path.into(),
            text: Arc::new(text.into()),
            index: OnceLock::new(),
            line_starts: OnceLock::new(),
            duplicate_keys: Vec::new(),
        }
    }

    /// Reads the text as JSON into its tape (the kind and span of every value); a text that is not JSON
    /// gets serde_json's error, with its line and column.
    pub fn parse(&mut self) -> Result<(), serde_json::Error> {
        let Some(entries) = tape::scan(&self.text) else {
            self.index = OnceLock::from(SpanIndex::default());
            self.duplicate_keys = Vec::new();
            return Err(match serde_json::from_str::<serde_json::Value>(&self.text) {
                Err(error) => error,
                Ok(_) => serde::de::Error::custom(
                    "Phoenix's JSON reader refused this file although it is JSON: please report it as a bug",
                ),
            });
        };
        let index = SpanIndex { entries };
        self.duplicate_keys = index.duplicate_keys(&self.text);
        self.index = OnceLock::from(index);
        Ok(())
    }

    /// The parsed document, for the schema validator; `None` before a successful [`SourceFile::parse`] or
    /// after [`SourceFile::release_tape`].
    pub(crate) fn document(&self) -> Option<TapeNode<'_>> {
        TapeNode::root(&self.text, &self.index.get()?.entries)
    }

    /// Frees the tape (about as large as the text) once the schema has read it; [`SourceFile::locate`]
    /// scans the text again if a problem needs placing later.
    pub(crate) fn release_tape(&mut self) {
        self.index = OnceLock::new();
    }

    fn index(&self) -> &SpanIndex {
        self.index.get_or_init(|| SpanIndex {
            entries: tape::scan(&self.text).unwrap_or_default(),
        })
    }

    fn line_starts(&self) -> &[usize] {
        self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(offset, _)| offset + 1))
                .collect()
        })
    }

    /// Keys written twice in the same object, found by [`SourceFile::parse`].
    pub fn duplicate_keys(&self) -> &[DuplicateKey] {
        &self.duplicate_keys
    }

    /// Which file of the configuration directory this is.
    pub fn kind(&self) -> FileKind {
        self.kind
    }

    /// The path shown in diagnostics.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text named by its path, for miette.
    pub fn named_source(&self) -> NamedSource<Arc<String>> {
        NamedSource::new(&self.path, Arc::clone(&self.text)).with_language("JSON")
    }

    /// Finds the value a JSON pointer (RFC 6901) names. Returns `None` when the pointer names nothing.
    pub fn locate(&self, pointer: &str) -> Option<Location> {
        self.index().locate(&self.text, pointer)
    }

    /// The line and column of a byte offset.
    pub fn line_column(&self, offset: usize) -> LineColumn {
        let line_starts = self.line_starts();
        let line = line_starts.partition_point(|&start| start <= offset);
        let line_start = line_starts[line - 1];
        let column = self
            .text
            .get(line_start..offset)
            .map_or(1, |prefix| prefix.chars().count() + 1);
        LineColumn { line, column }
    }

    /// The byte offset of a 1-based line and column, as serde_json reports them.
    pub fn offset_of(&self, line: usize, column: usize) -> usize {
        let line_starts = self.line_starts();
        let Some(&line_start) = line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let line_end = line_starts.get(line).copied().unwrap_or(self.text.len());
        let line_text = &self.text[line_start..line_end];
        let within = line_text
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(line_text.len(), |(i, _)| i);
        line_start + within
    }
}

/// The tape of a parsed document and what is found on it.
#[derive(Debug, Clone, Default)]
struct SpanIndex {
    entries: Vec<Entry>,
}

impl SpanIndex {
    fn locate(&self, text: &str, pointer: &str) -> Option<Location> {
        let mut current = 0u32;
        self.entries.first()?;
        if !pointer.is_empty() {
            for raw_token in pointer.strip_prefix('/')?.split('/') {
                let token = raw_token.replace("~1", "/").replace("~0", "~");
                current = self.child(text, current, &token)?;
            }
        }
        let entry = self.entries[current as usize];
        Some(Location {
            value: entry.value(),
            key: entry.key(),
        })
    }

    /// Lists keys that repeat within one object. A first pass over the objects finds whether any does,
    /// allocating once; pointers are built by a walk of the tree only when one does.
    fn duplicate_keys(&self, text: &str) -> Vec<DuplicateKey> {
        let mut keys: Vec<&str> = Vec::new();
        let any = self
            .entries
            .iter()
            .filter(|entry| entry.kind == Kind::Object)
            .any(|object| {
                keys.clear();
                let mut child = object.first_child;
                while let Some(entry) = self.entries.get(child as usize) {
                    keys.push(&text[entry.key_start as usize..entry.key_end as usize]);
                    child = entry.next_sibling;
                }
                // Most objects have a few keys: comparing each with those before it beats sorting them.
                if keys.len() <= 8 {
                    return keys
                        .iter()
                        .enumerate()
                        .any(|(index, key)| keys[..index].contains(key));
                }
                keys.sort_unstable();
                keys.windows(2).any(|pair| pair[0] == pair[1])
            });
        let mut found = Vec::new();
        if any {
            let mut path = Vec::new();
            self.find_duplicates(text, 0, &mut path, &mut found);
        }
        found
    }

    /// Depth-first walk; `path` holds (entry, position among siblings) of the ancestors below the root.
    fn find_duplicates(
        &self,
        text: &str,
        node: u32,
        path: &mut Vec<(u32, usize)>,
        found: &mut Vec<DuplicateKey>,
    ) {
        let parent = self.entries[node as usize];
        let is_object = parent.kind == Kind::Object;
        let mut seen: HashSet<&str> = HashSet::new();
        let mut child = parent.first_child;
        let mut position = 0usize;
        while child != NONE {
            let current = self.entries[child as usize];
            if is_object {
                let quoted = &text[current.key_start as usize..current.key_end as usize];
                if !seen.insert(quoted) {
                    path.push((child, position));
                    found.push(DuplicateKey {
                        pointer: self.pointer_of(text, path),
                        key: current.key_start as usize..current.key_end as usize,
                    });
                    path.pop();
                }
            }
            if current.first_child != NONE {
                path.push((child, position));
                self.find_duplicates(text, child, path, found);
                path.pop();
            }
            position += 1;
            child = current.next_sibling;
        }
    }

    /// The JSON pointer of the last entry of `path`.
    fn pointer_of(&self, text: &str, path: &[(u32, usize)]) -> String {
        let mut pointer = String::new();
        for &(node, position) in path {
            let entry = self.entries[node as usize];
            pointer.push('/');
            match entry.key() {
                Some(_) => pointer.push_str(&entry.key_text(text).replace('~', "~0").replace('/', "~1")),
                None => pointer.push_str(&position.to_string()),
            }
        }
        pointer
    }

    fn child(&self, text: &str, parent: u32, token: &str) -> Option<u32> {
        let parent_entry = self.entries[parent as usize];
        let wanted_index: Option<usize> = match parent_entry.kind {
            Kind::Array => Some(token.parse().ok()?),
            _ => None,
        };
        let mut child = parent_entry.first_child;
        let mut position = 0usize;
        while child != NONE {
            let entry = self.entries[child as usize];
            let matches = match wanted_index {
                Some(index) => index == position,
                None => entry.key_text(text) == token,
            };
            if matches {
                return Some(child);
            }
            position += 1;
            child = entry.next_sibling;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> SourceFile {
        let mut file = SourceFile::new(FileKind::Lxc, "test.json", text);
        file.parse().expect("test JSON is valid");
        file
    }

    #[track_caller]
    fn check(text: &str, pointer: &str, expected_value: &str, expected_key: Option<&str>) {
        let file = source(text);
        let location = file.locate(pointer).expect("pointer resolves");
        assert_eq!(&text[location.value.clone()], expected_value);
        assert_eq!(location.key.map(|key| &text[key]), expected_key);
    }

    #[test]
    fn locates_nested_values_and_keys() {
        let text = r#"{"a": {"b": [1, {"c": "x,y"}], "d/e": true, "f~g": null}, "h": -1.5e3}"#;
        check(text, "", text, None);
        check(text, "/a/b/1/c", r#""x,y""#, Some(r#""c""#));
        check(text, "/a/b/0", "1", None);
        check(text, "/a/d~1e", "true", Some(r#""d/e""#));
        check(text, "/a/f~0g", "null", Some(r#""f~g""#));
        check(text, "/h", "-1.5e3", Some(r#""h""#));
    }

    #[test]
    fn escaped_keys_and_strings_are_handled() {
        let text = r#"{"q\"uote": "a\\\"b", "\u0041": [ ]}"#;
        check(text, "/q\"uote", r#""a\\\"b""#, Some(r#""q\"uote""#));
        check(text, "/A", "[ ]", Some(r#""\u0041""#));
    }

    #[test]
    fn duplicate_keys_are_found_with_their_pointer() {
        let text = r#"{"a": {"x": 1, "y": 2, "x": 3}, "b": [{"k": 1, "k": 2}], "a": null}"#;
        let file = source(text);
        let found: Vec<(&str, &str)> = file
            .duplicate_keys()
            .iter()
            .map(|dup| (dup.pointer.as_str(), &text[dup.key.clone()]))
            .collect();
        assert_eq!(
            found,
            [("/a/x", r#""x""#), ("/b/0/k", r#""k""#), ("/a", r#""a""#)]
        );
    }

    #[test]
    fn missing_pointers_name_nothing() {
        let file = source(r#"{"a": [1, 2]}"#);
        assert_eq!(file.locate("/b"), None);
        assert_eq!(file.locate("/a/2"), None);
        assert_eq!(file.locate("/a/x"), None);
        assert_eq!(file.locate("a"), None);
    }

    #[test]
    fn line_and_column_count_characters() {
        let file = source("{\n  \"é\": 1,\n  \"b\": 2\n}");
        let location = file.locate("/b").expect("resolves");
        assert_eq!(
            file.line_column(location.value.start),
            LineColumn { line: 3, column: 8 }
        );
        assert_eq!(file.offset_of(3, 8), location.value.start);
        let key = file.locate("/é").expect("resolves");
        assert_eq!(
            file.line_column(key.value.start),
            LineColumn { line: 2, column: 8 }
        );
    }
}
