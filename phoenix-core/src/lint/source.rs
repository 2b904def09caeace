//! Source text of a configuration file, with the byte span of every JSON value and key.
//!
//! serde_json parses each file (and reports malformed JSON); a second, single pass over the text it
//! accepted records where every value and key lies, so any problem found later (by the schema, by serde or
//! by the semantic checks) can be placed at its line and column through a JSON pointer.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use miette::NamedSource;

use crate::config::FileKind;

/// One configuration file as read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    kind: FileKind,
    path: String,
    text: Arc<str>,
    index: SpanIndex,
    line_starts: Vec<usize>,
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
    /// The span index is built only when `text` is well-formed JSON; call [`SourceFile::parse`] first.
    pub fn new(kind: FileKind, path: impl Into<String>, text: impl Into<Arc<str>>) -> SourceFile {
        let text: Arc<str> = text.into();
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(offset, _)| offset + 1))
            .collect();
        SourceFile {
            kind,
            path: path.into(),
            text,
            index: SpanIndex::default(),
            line_starts,
            duplicate_keys: Vec::new(),
        }
    }

    /// Parses the text as JSON and indexes the spans of its values.
    pub fn parse(&mut self) -> Result<serde_json::Value, serde_json::Error> {
        let value = serde_json::from_str(&self.text)?;
        self.index = SpanIndex::build(&self.text);
        self.duplicate_keys = self.index.duplicate_keys(&self.text);
        Ok(value)
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
    pub fn named_source(&self) -> NamedSource<Arc<str>> {
        NamedSource::new(&self.path, Arc::clone(&self.text)).with_language("JSON")
    }

    /// Finds the value a JSON pointer (RFC 6901) names. Returns `None` when the pointer names nothing.
    pub fn locate(&self, pointer: &str) -> Option<Location> {
        self.index.locate(&self.text, pointer)
    }

    /// The line and column of a byte offset.
    pub fn line_column(&self, offset: usize) -> LineColumn {
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let line_start = self.line_starts[line - 1];
        let column = self
            .text
            .get(line_start..offset)
            .map_or(1, |prefix| prefix.chars().count() + 1);
        LineColumn { line, column }
    }

    /// The byte offset of a 1-based line and column, as serde_json reports them.
    pub fn offset_of(&self, line: usize, column: usize) -> usize {
        let Some(&line_start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let line_end = self.line_starts.get(line).copied().unwrap_or(self.text.len());
        let line_text = &self.text[line_start..line_end];
        let within = line_text
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(line_text.len(), |(i, _)| i);
        line_start + within
    }
}

/// A flat tree of the values of a JSON document, in document order.
#[derive(Debug, Clone, Default)]
struct SpanIndex {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    /// The key with its quotes, or an empty range at 0 for the root and array items.
    key_start: u32,
    key_end: u32,
    start: u32,
    end: u32,
    first_child: u32,
    next_sibling: u32,
}

const NONE: u32 = u32::MAX;

impl SpanIndex {
    /// Indexes text that serde_json already accepted as JSON.
    fn build(text: &str) -> SpanIndex {
        let mut scanner = Scanner {
            bytes: text.as_bytes(),
            position: 0,
            nodes: Vec::new(),
        };
        if u32::try_from(text.len()).is_ok() {
            scanner.value(None);
        }
        SpanIndex { nodes: scanner.nodes }
    }

    fn locate(&self, text: &str, pointer: &str) -> Option<Location> {
        let mut current = 0u32;
        self.nodes.first()?;
        if !pointer.is_empty() {
            for raw_token in pointer.strip_prefix('/')?.split('/') {
                let token = raw_token.replace("~1", "/").replace("~0", "~");
                current = self.child(text, current, &token)?;
            }
        }
        let node = self.nodes[current as usize];
        let key = (node.key_end > node.key_start).then_some(node.key_start as usize..node.key_end as usize);
        Some(Location {
            value: node.start as usize..node.end as usize,
            key,
        })
    }

    /// Walks the whole tree and lists keys that repeat within one object.
    fn duplicate_keys(&self, text: &str) -> Vec<DuplicateKey> {
        let mut found = Vec::new();
        if !self.nodes.is_empty() {
            let mut path = Vec::new();
            self.find_duplicates(text, 0, &mut path, &mut found);
        }
        found
    }

    /// Depth-first walk; `path` holds (node, position among siblings) of the ancestors below the root.
    /// Pointers are built only for the duplicates found, so the walk allocates almost nothing.
    fn find_duplicates(
        &self,
        text: &str,
        node: u32,
        path: &mut Vec<(u32, usize)>,
        found: &mut Vec<DuplicateKey>,
    ) {
        let parent = self.nodes[node as usize];
        let is_object = text.as_bytes()[parent.start as usize] == b'{';
        let mut small: Vec<&str> = Vec::new();
        let mut large: HashSet<&str> = HashSet::new();
        let mut child = parent.first_child;
        let mut position = 0usize;
        while child != NONE {
            let current = self.nodes[child as usize];
            if is_object {
                let quoted = &text[current.key_start as usize..current.key_end as usize];
                // Most objects have a handful of keys: a linear scan beats hashing there.
                let repeated = if small.len() < 16 {
                    let repeated = small.contains(&quoted);
                    small.push(quoted);
                    repeated
                } else {
                    if large.is_empty() {
                        large.extend(small.iter().copied());
                    }
                    !large.insert(quoted)
                };
                if repeated {
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

    /// The JSON pointer of the last node of `path`.
    fn pointer_of(&self, text: &str, path: &[(u32, usize)]) -> String {
        let mut pointer = String::new();
        for &(node, position) in path {
            let node = self.nodes[node as usize];
            pointer.push('/');
            if node.key_end > node.key_start {
                let quoted = &text[node.key_start as usize..node.key_end as usize];
                let key = serde_json::from_str::<String>(quoted).unwrap_or_else(|_| quoted.to_owned());
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            } else {
                pointer.push_str(&position.to_string());
            }
        }
        pointer
    }

    fn child(&self, text: &str, parent: u32, token: &str) -> Option<u32> {
        let parent_node = self.nodes[parent as usize];
        let is_array = text.as_bytes()[parent_node.start as usize] == b'[';
        let wanted_index: Option<usize> = if is_array { Some(token.parse().ok()?) } else { None };
        let mut child = parent_node.first_child;
        let mut position = 0usize;
        while child != NONE {
            let node = self.nodes[child as usize];
            let matches = match wanted_index {
                Some(index) => index == position,
                None => key_equals(&text[node.key_start as usize..node.key_end as usize], token),
            };
            if matches {
                return Some(child);
            }
            position += 1;
            child = node.next_sibling;
        }
        None
    }
}

/// Compares a quoted JSON key with an unescaped pointer token.
fn key_equals(quoted: &str, token: &str) -> bool {
    let inner = &quoted[1..quoted.len() - 1];
    if inner.contains('\\') {
        serde_json::from_str::<String>(quoted).is_ok_and(|key| key == token)
    } else {
        inner == token
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    position: usize,
    nodes: Vec<Node>,
}

impl Scanner<'_> {
    fn value(&mut self, key: Option<(usize, usize)>) -> u32 {
        self.skip_whitespace();
        let index = self.nodes.len() as u32;
        let (key_start, key_end) = key.unwrap_or((0, 0));
        self.nodes.push(Node {
            key_start: key_start as u32,
            key_end: key_end as u32,
            start: self.position as u32,
            end: self.position as u32,
            first_child: NONE,
            next_sibling: NONE,
        });
        match self.bytes.get(self.position) {
            Some(b'{') => self.container(index, b'}', true),
            Some(b'[') => self.container(index, b']', false),
            Some(b'"') => {
                self.string();
            }
            Some(_) => {
                while let Some(byte) = self.bytes.get(self.position) {
                    if matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.position += 1;
                }
            }
            None => {}
        }
        self.nodes[index as usize].end = self.position as u32;
        index
    }

    fn container(&mut self, parent: u32, close: u8, is_object: bool) {
        self.position += 1;
        let mut previous = NONE;
        loop {
            self.skip_whitespace();
            match self.bytes.get(self.position) {
                None => return,
                Some(&byte) if byte == close => {
                    self.position += 1;
                    return;
                }
                Some(b',') => {
                    self.position += 1;
                    continue;
                }
                Some(_) => {}
            }
            let key = if is_object {
                let key = self.string();
                self.skip_whitespace();
                self.position += 1; // The colon.
                Some(key)
            } else {
                None
            };
            let child = self.value(key);
            if previous == NONE {
                self.nodes[parent as usize].first_child = child;
            } else {
                self.nodes[previous as usize].next_sibling = child;
            }
            previous = child;
        }
    }

    /// Skips a string starting at the current quote; returns its range with quotes.
    fn string(&mut self) -> (usize, usize) {
        let start = self.position;
        self.position += 1;
        while let Some(&byte) = self.bytes.get(self.position) {
            self.position += 1;
            match byte {
                b'\\' => self.position += 1,
                b'"' => break,
                _ => {}
            }
        }
        (start, self.position)
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.bytes.get(self.position), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.position += 1;
        }
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
