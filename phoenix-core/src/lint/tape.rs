//! A JSON document as a flat tape over its text.
//!
//! One strict pass over the text records the kind and byte span of every value and key, in document order.
//! The tape is what places a diagnostic at its line and column (through a JSON pointer), and it is what the
//! JSON Schema validator reads, in place: no `serde_json::Value` tree is built for a file that is valid.
//! The typed model is decoded from the text by serde directly.
//!
//! The scanner accepts exactly the JSON that serde_json accepts; where it refuses a text, the caller asks
//! serde_json why, so the message of a syntax error is serde_json's.

use std::borrow::Cow;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, JsonNumber, Node, NodeIdentity, Object};
use serde_json::Value;

/// What an entry of the tape holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// One value of the document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// The key naming the value, with its quotes; an empty range at 0 for the root and array items.
    pub(crate) key_start: u32,
    pub(crate) key_end: u32,
    /// The value's own bytes.
    pub(crate) start: u32,
    pub(crate) end: u32,
    pub(crate) first_child: u32,
    pub(crate) next_sibling: u32,
    /// How many members or items a container has.
    pub(crate) children: u32,
    pub(crate) kind: Kind,
    /// The string value holds a backslash escape.
    escaped: bool,
    /// The key holds a backslash escape.
    key_escaped: bool,
}

/// No entry: the end of a sibling chain, or a node that is not on a tape.
pub(crate) const NONE: u32 = u32::MAX;

/// serde_json refuses documents nested this deep; so does the scanner.
const DEPTH_LIMIT: usize = 128;

impl Entry {
    pub(crate) fn key(&self) -> Option<std::ops::Range<usize>> {
        (self.key_end > self.key_start).then_some(self.key_start as usize..self.key_end as usize)
    }

    pub(crate) fn value(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    /// The key naming the value, read (escapes resolved); empty for the root and array items.
    pub(crate) fn key_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.key() {
            Some(key) => unquote(&text[key], self.key_escaped),
            None => Cow::Borrowed(""),
        }
    }
}

/// Scans `text` into entries; `None` when the text is not JSON that serde_json would accept.
pub(crate) fn scan(text: &str) -> Option<Vec<Entry>> {
    u32::try_from(text.len()).ok()?;
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
        // Pretty-printed configuration holds a value every 20 to 40 bytes.
        entries: Vec::with_capacity(text.len() / 24),
    };
    scanner.value(None, 0)?;
    scanner.skip_whitespace();
    (scanner.at == scanner.bytes.len()).then_some(scanner.entries)
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    entries: Vec<Entry>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn value(&mut self, key: Option<(usize, usize, bool)>, depth: usize) -> Option<u32> {
        self.skip_whitespace();
        let index = u32::try_from(self.entries.len()).ok()?;
        let (key_start, key_end, key_escaped) = key.unwrap_or((0, 0, false));
        self.entries.push(Entry {
            key_start: key_start as u32,
            key_end: key_end as u32,
            start: self.at as u32,
            end: self.at as u32,
            first_child: NONE,
            next_sibling: NONE,
            children: 0,
            kind: Kind::Null,
            escaped: false,
            key_escaped,
        });
        let kind = match self.peek()? {
            b'{' if depth + 1 < DEPTH_LIMIT => {
                self.container(index, depth + 1, b'}')?;
                Kind::Object
            }
            b'[' if depth + 1 < DEPTH_LIMIT => {
                self.container(index, depth + 1, b']')?;
                Kind::Array
            }
            b'"' => {
                self.entries[index as usize].escaped = self.string()?;
                Kind::String
            }
            b't' => self.literal(b"true", Kind::Bool)?,
            b'f' => self.literal(b"false", Kind::Bool)?,
            b'n' => self.literal(b"null", Kind::Null)?,
            b'-' | b'0'..=b'9' => {
                self.number()?;
                Kind::Number
            }
            _ => return None,
        };
        let entry = &mut self.entries[index as usize];
        entry.kind = kind;
        entry.end = self.at as u32;
        Some(index)
    }

    /// Reads an object or an array from its opening bracket, linking its values under `parent`.
    fn container(&mut self, parent: u32, depth: usize, close: u8) -> Option<()> {
        self.at += 1;
        self.skip_whitespace();
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        let mut previous = NONE;
        let mut count = 0u32;
        loop {
            let key = if close == b'}' { Some(self.key()?) } else { None };
            let child = self.value(key, depth)?;
            self.link(parent, previous, child);
            previous = child;
            count += 1;
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                byte if byte == close => {
                    self.at += 1;
                    break;
                }
                _ => return None,
            }
        }
        self.entries[parent as usize].children = count;
        Some(())
    }

    /// Reads a member's key and its colon: the key's range with its quotes, and whether it holds an escape.
    fn key(&mut self) -> Option<(usize, usize, bool)> {
        self.skip_whitespace();
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at;
        let escaped = self.string()?;
        let end = self.at;
        self.skip_whitespace();
        if self.peek()? != b':' {
            return None;
        }
        self.at += 1;
        Some((start, end, escaped))
    }

    fn link(&mut self, parent: u32, previous: u32, child: u32) {
        if previous == NONE {
            self.entries[parent as usize].first_child = child;
        } else {
            self.entries[previous as usize].next_sibling = child;
        }
    }

    /// Reads a string from its opening quote; returns whether it holds an escape.
    fn string(&mut self) -> Option<bool> {
        let start = self.at;
        self.at += 1;
        let mut escaped = false;
        let mut unicode = false;
        loop {
            let rest = self.bytes.get(self.at..)?;
            let offset = rest
                .iter()
                .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)?;
            self.at += offset;
            match self.bytes[self.at] {
                b'"' => {
                    self.at += 1;
                    break;
                }
                b'\\' => {
                    escaped = true;
                    match self.bytes.get(self.at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => unicode = true,
                        _ => return None,
                    }
                    self.at += 2;
                }
                // A control character: JSON strings must escape them.
                _ => return None,
            }
        }
        // Hex escapes must name characters (surrogates in pairs): serde_json's decoder decides.
        if unicode {
            serde_json::from_str::<String>(&self.text[start..self.at]).ok()?;
        }
        Some(escaped)
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Option<Kind> {
        if !self.bytes.get(self.at..)?.starts_with(word) {
            return None;
        }
        self.at += word.len();
        Some(kind)
    }

    fn number(&mut self) -> Option<()> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut plain = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.required_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            plain = false;
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.required_digits()?;
        }
        // serde_json refuses numbers beyond f64's range; only long or exponent forms can be.
        if !plain || self.at - start > 18 {
            serde_json::from_str::<serde_json::Number>(&self.text[start..self.at]).ok()?;
        }
        Some(())
    }

    fn required_digits(&mut self) -> Option<()> {
        if !self.peek()?.is_ascii_digit() {
            return None;
        }
        self.digits();
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }
}

/// A string as JSON text writes it (with its quotes), read.
fn unquote(quoted: &str, escaped: bool) -> Cow<'_, str> {
    let inner = &quoted[1..quoted.len() - 1];
    if escaped {
        Cow::Owned(serde_json::from_str(quoted).unwrap_or_else(|_| inner.to_owned()))
    } else {
        Cow::Borrowed(inner)
    }
}

/// The representation the schema validator reads: values of a tape, over their text.
pub(crate) struct TapeJson;

/// One value: an entry of a tape, or a lone string (a property name, for `propertyNames`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TapeNode<'a> {
    /// The document's text; for a lone string, the string itself.
    text: &'a str,
    entries: &'a [Entry],
    /// [`NONE`] for a lone string.
    index: u32,
}

impl<'a> TapeNode<'a> {
    /// The root of a scanned document.
    pub(crate) fn root(text: &'a str, entries: &'a [Entry]) -> Option<TapeNode<'a>> {
        (!entries.is_empty()).then_some(TapeNode {
            text,
            entries,
            index: 0,
        })
    }

    fn entry(&self) -> Option<&'a Entry> {
        self.entries.get(self.index as usize)
    }

    fn kind(&self) -> Kind {
        self.entry().map_or(Kind::String, |entry| entry.kind)
    }

    fn at(&self, index: u32) -> TapeNode<'a> {
        TapeNode { index, ..*self }
    }

    fn first_child(&self) -> u32 {
        self.entry().map_or(NONE, |entry| entry.first_child)
    }

    fn children(&self) -> usize {
        self.entry().map_or(0, |entry| entry.children as usize)
    }
}

impl Json for TapeJson {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = String;
    type StringBuffer = ();

    // A lookup walks the members, so one pass over them never costs more than the lookups it replaces.
    const KEYS_PER_LOOKUP: usize = 64;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    fn with_string_node<T>(_buffer: &mut (), string: &str, f: impl FnOnce(TapeNode<'_>) -> T) -> T {
        f(TapeNode {
            text: string,
            entries: &[],
            index: NONE,
        })
    }
}

impl<'a> Node<'a, TapeJson> for TapeNode<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = TapeNumber<'a>;

    fn as_object(&self) -> Option<TapeObject<'a>> {
        (self.kind() == Kind::Object).then_some(TapeObject(*self))
    }

    fn as_array(&self) -> Option<TapeArray<'a>> {
        (self.kind() == Kind::Array).then_some(TapeArray(*self))
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match self.entry() {
            None => Some(Cow::Borrowed(self.text)),
            Some(entry) if entry.kind == Kind::String => {
                Some(unquote(&self.text[entry.value()], entry.escaped))
            }
            Some(_) => None,
        }
    }

    fn as_number(&self) -> Option<TapeNumber<'a>> {
        let entry = self.entry()?;
        (entry.kind == Kind::Number).then(|| TapeNumber(&self.text[entry.value()]))
    }

    fn as_boolean(&self) -> Option<bool> {
        let entry = self.entry()?;
        (entry.kind == Kind::Bool).then(|| self.text.as_bytes()[entry.start as usize] == b't')
    }

    fn is_null(&self) -> bool {
        self.kind() == Kind::Null
    }

    fn is_number(&self) -> bool {
        self.kind() == Kind::Number
    }

    fn json_type(&self) -> JsonType {
        match self.kind() {
            Kind::Null => JsonType::Null,
            Kind::Bool => JsonType::Boolean,
            Kind::Number => JsonType::Number,
            Kind::String => JsonType::String,
            Kind::Array => JsonType::Array,
            Kind::Object => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // `enum` and `const` of strings, on every guest: compare without building a `Value`.
        match (self.kind(), expected) {
            (Kind::String, Value::String(expected)) => {
                self.as_string().is_some_and(|text| text == **expected)
            }
            (Kind::String, _) => false,
            (Kind::Bool, Value::Bool(expected)) => self.as_boolean() == Some(*expected),
            (Kind::Null, Value::Null) => true,
            (Kind::Bool | Kind::Null, _) => false,
            _ => jsonschema::json::cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(match self.entry() {
            None => Value::String(self.text.to_owned()),
            Some(entry) => serde_json::from_str(&self.text[entry.value()]).unwrap_or(Value::Null),
        })
    }

    fn identity(&self) -> Option<NodeIdentity> {
        self.entry()?;
        Some(NodeIdentity::tagged(self.entries.as_ptr() as usize, self.index))
    }
}

/// An object of a tape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TapeObject<'a>(TapeNode<'a>);

impl<'a> Object<'a, TapeJson> for TapeObject<'a> {
    type Node = TapeNode<'a>;
    type MemberName = Cow<'a, str>;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.0.children()
    }

    fn get(&self, key: &String) -> Option<TapeNode<'a>> {
        let node = self.0;
        let mut child = node.first_child();
        while let Some(entry) = node.entries.get(child as usize) {
            if entry.key_text(node.text) == key.as_str() {
                return Some(node.at(child));
            }
            child = entry.next_sibling;
        }
        None
    }

    fn members(&self) -> Members<'a> {
        Members(TapeArray(self.0).elements())
    }
}

/// The members of an object, in document order: its values, each with its key.
pub(crate) struct Members<'a>(Items<'a>);

impl<'a> Iterator for Members<'a> {
    type Item = (Cow<'a, str>, TapeNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let member = self.0.next()?;
        Some((member.entry()?.key_text(member.text), member))
    }
}

/// An array of a tape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TapeArray<'a>(TapeNode<'a>);

impl<'a> Array<'a, TapeJson> for TapeArray<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = Items<'a>;

    fn len(&self) -> usize {
        self.0.children()
    }

    fn elements(&self) -> Items<'a> {
        Items {
            node: self.0,
            next: self.0.first_child(),
        }
    }
}

/// The values under a container (an array's items, an object's values), in order.
pub(crate) struct Items<'a> {
    node: TapeNode<'a>,
    next: u32,
}

impl<'a> Iterator for Items<'a> {
    type Item = TapeNode<'a>;

    fn next(&mut self) -> Option<TapeNode<'a>> {
        let entry = self.node.entries.get(self.next as usize)?;
        let item = self.node.at(self.next);
        self.next = entry.next_sibling;
        Some(item)
    }
}

/// A number of a tape, as written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TapeNumber<'a>(&'a str);

impl JsonNumber for TapeNumber<'_> {
    fn as_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }

    fn as_i64(&self) -> Option<i64> {
        self.0.parse().ok()
    }

    fn as_f64(&self) -> Option<f64> {
        self.0.parse().ok()
    }

    fn as_str(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.0)
    }

    fn to_number(&self) -> Cow<'_, serde_json::Number> {
        // serde_json reads integers that fit as integers, the rest as f64, as it did for the scanner.
        Cow::Owned(serde_json::from_str(self.0).unwrap_or_else(|_| serde_json::Number::from(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scanner accepts exactly what serde_json accepts.
    #[track_caller]
    fn agrees(text: &str) {
        let serde = serde_json::from_str::<Value>(text).is_ok();
        assert_eq!(
            scan(text).is_some(),
            serde,
            "scanner and serde_json disagree on {text:?}"
        );
    }

    #[test]
    fn accepts_what_serde_json_accepts() {
        for text in [
            "{}",
            "[]",
            " {\"a\" : [1, -2.5e3, 0, -0, 1E+2, true, false, null, \"x\"]}\n",
            r#""\u00e9\ud83d\ude00\n\t\"\\\/""#,
            "123456789012345678901234567890",
            "1e308",
            "{\"a\":{\"b\":{\"c\":[[[]]]}}}",
        ] {
            agrees(text);
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        for text in [
            "",
            " ",
            "{",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e400",
            "+1",
            "tru",
            "truex",
            "nul",
            "\"unterminated",
            "\"tab\tinside\"",
            r#""\x""#,
            r#""\ud800""#,
            r#""\udc00x""#,
            r#""\u12""#,
            "{} {}",
            "\u{feff}{}",
            "[NaN]",
        ] {
            agrees(text);
        }
        let deep = |depth: usize| "[".repeat(depth) + &"]".repeat(depth);
        for depth in [126, 127, 128, 129, 200] {
            agrees(&deep(depth));
        }
    }

    #[test]
    fn records_kinds_spans_and_counts() {
        let text = r#"{"a": [1, "x"], "b\n": {"c": null}}"#;
        let entries = scan(text).expect("valid");
        let kinds: Vec<Kind> = entries.iter().map(|entry| entry.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Object,
                Kind::Array,
                Kind::Number,
                Kind::String,
                Kind::Object,
                Kind::Null
            ]
        );
        assert_eq!(entries[0].children, 2);
        assert_eq!(entries[1].children, 2);
        assert_eq!(&text[entries[3].value()], "\"x\"");
        assert_eq!(&text[entries[4].key().expect("a key")], "\"b\\n\"");
        let root = TapeNode::root(text, &entries).expect("root");
        let object = root.as_object().expect("an object");
        assert!(object.get(&"b\n".to_owned()).is_some());
        let names: Vec<Cow<'_, str>> = object.members().map(|(name, _)| name).collect();
        assert_eq!(names, ["a", "b\n"]);
        assert_eq!(
            root.to_value().into_owned(),
            serde_json::from_str::<Value>(text).expect("JSON")
        );
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        for written in ["0", "-7", "18446744073709551615", "1.5", "1e2", "-0.0"] {
            let number = TapeNumber(written);
            let serde: serde_json::Number = serde_json::from_str(written).expect("number");
            assert_eq!(number.as_u64(), serde.as_u64(), "{written}");
            assert_eq!(number.as_i64(), serde.as_i64(), "{written}");
            assert_eq!(number.as_f64(), serde.as_f64(), "{written}");
        }
    }
}
