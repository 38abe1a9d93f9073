//! Credentials out of text: the userinfo of anything shaped like a URL (`scheme://user:pw@`)
//! and the values of query parameters that carry secrets (`?key=…`, `token=`, `sig=`, …),
//! matched in the text itself so that a URL that does not parse is redacted too.
//!
//! Used on whatever leaves the process: log lines, error messages, summaries, `report.json`,
//! guest attributes. Not here: secrets that look like nothing (a scanner's environment values),
//! which the scanner runner replaces by value.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// What replaces a secret.
pub const MASK: &str = "***";

/// `scheme://` then userinfo up to the last `@` of the authority.
static USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#@\s"'<>]*@"#).unwrap_or_else(|e| {
        unreachable!("the userinfo pattern is valid: {e}");
    })
});

/// A secret-bearing query parameter after `?` or `&`, its value up to the next delimiter.
static QUERY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)([?&](?:key|api[_-]?key|token|access[_-]?token|auth|sig|signature|secret|password|passwd|pwd|x-amz-signature|x-goog-signature|x-goog-credential|credential)=)[^&#\s"'<>]*"#,
    )
    .unwrap_or_else(|e| unreachable!("the query pattern is valid: {e}"))
});

/// `text` with every credential replaced by [`MASK`]; borrowed when there is none.
#[must_use]
pub fn text(text: &str) -> Cow<'_, str> {
    let step = USERINFO.replace_all(text, |c: &regex::Captures<'_>| format!("{}{MASK}@", &c[1]));
    match QUERY.replace_all(&step, |c: &regex::Captures<'_>| format!("{}{MASK}", &c[1])) {
        Cow::Borrowed(_) => step,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// [`text`] as an owned string (for `Display` values).
#[must_use]
pub fn string(s: impl std::fmt::Display) -> String {
    let s = s.to_string();
    match text(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(o) => o,
    }
}

/// A writer that redacts what passes through it. Each `write` is redacted on its own, so it
/// suits writers that get whole lines (the log formatter writes one event per call).
pub struct Writer<W>(pub W);

impl<W: std::io::Write> std::io::Write for Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let raw = String::from_utf8_lossy(buf);
        self.0.write_all(text(&raw).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_parsed_or_not() {
        for (input, want) in [
            (
                "https://user:hunter2@qflow.example/v1?x=1",
                "https://***@qflow.example/v1?x=1",
            ),
            (
                "cannot reach http://tok@host:99/p: refused",
                "cannot reach http://***@host:99/p: refused",
            ),
            // Not a valid URL (a space in the port), still redacted.
            (
                "invalid QFlow URL 'https://a:b@host: 80/': bad port",
                "invalid QFlow URL 'https://***@host: 80/': bad port",
            ),
            (
                "GET https://h/up?sig=abc123&name=x&token=t0k#frag",
                "GET https://h/up?sig=***&name=x&token=***#frag",
            ),
            (
                "\"url\":\"https://h/p?API_KEY=zz\"",
                "\"url\":\"https://h/p?API_KEY=***\"",
            ),
            (
                "mailto-like user@example.com stays",
                "mailto-like user@example.com stays",
            ),
            (
                "https://host/path@v2 keeps the path",
                "https://host/path@v2 keeps the path",
            ),
            ("monkey=1&keyboard=2", "monkey=1&keyboard=2"),
        ] {
            assert_eq!(text(input), want, "{input}");
        }
        assert!(matches!(text("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_writer_redacts_each_write() {
        let mut w = Writer(Vec::new());
        std::io::Write::write_all(&mut w, b"to https://u:p@h/ now\n").expect("write");
        assert_eq!(w.0, b"to https://***@h/ now\n");
    }
}
