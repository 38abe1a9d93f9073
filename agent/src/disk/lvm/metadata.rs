//! LVM2's text metadata format: the `name = value` / `name { ... }` language in which LVM stores
//! a volume group's description in each metadata area (and in `/etc/lvm/backup`).
//!
//! [`parse`] turns the text into a [`Value`] tree: sections, integers, strings (with `\"` and
//! `\\` escapes), lists `[ ... ]` and `#` comments, as LVM2's `lib/config/config.c` writes them.
//! The text comes from an untrusted disk, so the parser is bounded: nesting deeper than
//! [`MAX_DEPTH`] and texts longer than [`MAX_TEXT`] are refused, every error names the byte
//! offset, and nothing panics (a proptest checks this).
//!
//! It does not interpret the tree (that is [`super`]'s job), evaluate LVM's configuration
//! semantics (profiles, `--config` merging, `@tag` conditions) or accept floating-point values
//! (the metadata LVM writes has none).
#![deny(clippy::arithmetic_side_effects, clippy::as_conversions)]

use super::LvmError;

/// Deepest nesting of sections and lists accepted (LVM's own metadata needs 5).
pub const MAX_DEPTH: usize = 32;
/// Longest metadata text accepted (LVM's default metadata area is 1 MiB).
pub const MAX_TEXT: usize = 16 << 20;

/// One value of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A string, escapes resolved.
    Str(String),
    /// A list `[a, b, ...]`.
    List(Vec<Value>),
    /// A section `{ name = value ... }`: its items in order.
    Section(Vec<(String, Value)>),
}

impl Value {
    /// The item called `name` of a section (the first one if repeated).
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Section(items) => items.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The items of a section (empty for anything else).
    pub fn items(&self) -> &[(String, Value)] {
        match self {
            Value::Section(items) => items,
            _ => &[],
        }
    }

    /// This value as an integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// This value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// This value as a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

/// Parse a whole metadata text (the top level is a section without braces).
pub fn parse(text: &[u8]) -> Result<Value, LvmError> {
    if text.len() > MAX_TEXT {
        return Err(LvmError::corrupt(
            None,
            format!(
                "metadata text of {} bytes is over the {MAX_TEXT}-byte limit",
                text.len()
            ),
        ));
    }
    let mut p = Parser { text, pos: 0 };
    let items = p.items(0, None)?;
    Ok(Value::Section(items))
}

struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, msg: impl Into<String>) -> LvmError {
        LvmError::corrupt(
            None,
            format!("metadata text at byte {}: {}", self.pos, msg.into()),
        )
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn bump(&mut self) {
        self.pos = self.pos.saturating_add(1);
    }

    /// Skip blanks and `#` comments; the next significant byte.
    fn skip(&mut self) -> Option<u8> {
        while let Some(c) = self.peek() {
            if c == b'#' {
                while let Some(c) = self.peek() {
                    if c == b'\n' {
                        break;
                    }
                    self.bump();
                }
            } else if c.is_ascii_whitespace() || c == 0 {
                // A trailing NUL ends the text in a metadata area.
                self.bump();
            } else {
                return Some(c);
            }
        }
        None
    }

    /// Items until `close` (or the end of the text when `close` is `None`).
    fn items(&mut self, depth: usize, close: Option<u8>) -> Result<Vec<(String, Value)>, LvmError> {
        let mut items = Vec::new();
        loop {
            match (self.skip(), close) {
                (None, None) => return Ok(items),
                (None, Some(_)) => return Err(self.err("unterminated section")),
                (Some(c), Some(want)) if c == want => {
                    self.bump();
                    return Ok(items);
                }
                (Some(_), _) => {}
            }
            let name = self.name()?;
            match self.skip() {
                Some(b'=') => {
                    self.bump();
                    let value = self.value(depth)?;
                    items.push((name, value));
                }
                Some(b'{') => {
                    self.bump();
                    let depth = self.deeper(depth)?;
                    let inner = self.items(depth, Some(b'}'))?;
                    items.push((name, Value::Section(inner)));
                }
                _ => return Err(self.err(format!("expected '=' or '{{' after {name:?}"))),
            }
        }
    }

    fn deeper(&self, depth: usize) -> Result<usize, LvmError> {
        let d = depth.saturating_add(1);
        if d > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(d)
    }

    fn name(&mut self) -> Result<String, LvmError> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace() || b"={}[],\"#".contains(&c) || c == 0 {
                break;
            }
            self.bump();
        }
        let raw = self.text.get(start..self.pos).unwrap_or_default();
        if raw.is_empty() {
            return Err(self.err("expected a name"));
        }
        Ok(String::from_utf8_lossy(raw).into_owned())
    }

    fn value(&mut self, depth: usize) -> Result<Value, LvmError> {
        match self.skip() {
            Some(b'"') => self.string(),
            Some(b'[') => {
                self.bump();
                let depth = self.deeper(depth)?;
                let mut list = Vec::new();
                loop {
                    match self.skip() {
                        Some(b']') => {
                            self.bump();
                            return Ok(Value::List(list));
                        }
                        None => return Err(self.err("unterminated list")),
                        Some(b',') if !list.is_empty() => {
                            self.bump();
                            // A trailing comma before the bracket is accepted.
                            if self.skip() == Some(b']') {
                                continue;
                            }
                        }
                        Some(_) if !list.is_empty() => {
                            return Err(self.err("expected ',' or ']' in a list"))
                        }
                        Some(_) => {}
                    }
                    list.push(self.value(depth)?);
                }
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.int(),
            Some(c) => Err(self.err(format!("unexpected {:?}", char::from(c)))),
            None => Err(self.err("expected a value")),
        }
    }

    fn string(&mut self) -> Result<Value, LvmError> {
        self.bump(); // the opening quote
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.bump();
                    return Ok(Value::Str(String::from_utf8_lossy(&out).into_owned()));
                }
                Some(b'\\') => {
                    self.bump();
                    match self.peek() {
                        Some(c) => {
                            out.push(c);
                            self.bump();
                        }
                        None => return Err(self.err("unterminated string")),
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.bump();
                }
            }
        }
    }

    fn int(&mut self) -> Result<Value, LvmError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.bump();
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        if self.peek() == Some(b'.') {
            return Err(self.err("floating-point values are not supported"));
        }
        let raw = self.text.get(start..self.pos).unwrap_or_default();
        std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Value::Int)
            .ok_or_else(|| self.err("integer out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    #[test]
    fn parses_what_lvm_writes() {
        let text = br#"# Generated by LVM2
vg0 {
id = "abc-def"
seqno = 3
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192		# 4 Megabytes
logical_volumes {
root {
segment1 {
stripes = [
"pv0", 0
]
}
}
}
}
contents = "Text Format Volume Group"
description = "quote \" and back\\slash"
creation_time = 1700000000	# Tue Nov 14
"#;
        let v = parse(text).expect("parse");
        let vg = v.get("vg0").expect("vg0");
        assert_eq!(vg.get("id"), Some(&s("abc-def")));
        assert_eq!(vg.get("seqno").and_then(Value::as_int), Some(3));
        assert_eq!(
            vg.get("status"),
            Some(&Value::List(vec![s("RESIZEABLE"), s("READ"), s("WRITE")]))
        );
        assert_eq!(vg.get("flags"), Some(&Value::List(vec![])));
        let stripes = vg
            .get("logical_volumes")
            .and_then(|l| l.get("root"))
            .and_then(|r| r.get("segment1"))
            .and_then(|s| s.get("stripes"));
        assert_eq!(stripes, Some(&Value::List(vec![s("pv0"), Value::Int(0)])));
        assert_eq!(v.get("description"), Some(&s("quote \" and back\\slash")));
        assert_eq!(
            v.get("creation_time").and_then(Value::as_int),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn rejects_malformed_text() {
        let deep = format!(
            "{}{}",
            "a {".repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        let deep_list = format!(
            "a = {}{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        let ok_depth = format!("{}{}", "a {".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert!(parse(ok_depth.as_bytes()).is_ok(), "exactly the limit");
        for (name, text, want) in [
            (
                "unterminated section",
                "vg { a = 1".to_owned(),
                "unterminated section",
            ),
            (
                "unterminated string",
                "a = \"abc".to_owned(),
                "unterminated string",
            ),
            (
                "escape at the end",
                "a = \"abc\\".to_owned(),
                "unterminated string",
            ),
            (
                "unterminated list",
                "a = [1, 2".to_owned(),
                "unterminated list",
            ),
            ("no value", "a = ".to_owned(), "expected a value"),
            ("no equals", "a 1".to_owned(), "expected '=' or '{'"),
            ("stray brace", "}".to_owned(), "expected a name"),
            (
                "huge integer",
                "a = 99999999999999999999".to_owned(),
                "out of range",
            ),
            ("float", "a = 1.5".to_owned(), "floating-point"),
            ("deep sections", deep, "nested deeper"),
            ("deep lists", deep_list, "nested deeper"),
        ] {
            let got = parse(text.as_bytes()).map_err(|e| e.to_string());
            assert!(
                matches!(&got, Err(e) if e.contains(want)),
                "case {name}: {got:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_near_valid_text(text in "[a-z0-9 =\\[\\]{}\",#\\\\\n-]{0,400}") {
            let _ = parse(text.as_bytes());
        }
    }
}
