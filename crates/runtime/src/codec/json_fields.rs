//! Reads the top-level fields of a JSON object without building a `serde_json::Value`.
//!
//! Decoding a record used to parse its whole value into a `Value` (a map with a hashed
//! `String` per field) and then look each column up by name. This scanner walks the object
//! once, validating it, matches each key against the part's column names and keeps only
//! the byte range of the matched values; `ColumnBuilder::append_raw_json` then appends
//! them straight from their text.
//!
//! The matching rules are those of the `Value` lookup: a column takes the field whose name
//! equals its own; failing that, the first field whose upper-cased name equals its
//! upper-cased name; a repeated field keeps its last value. Whatever the scanner does not
//! handle cheaply (any backslash escape, a non-ASCII key that could match case-insensitively,
//! deep nesting, a value that is not an object) or does not accept (any JSON it finds
//! invalid) makes it give up, and the caller decodes the record the slow way, which also
//! words the error for bad input. So the scanner is never looser than serde_json about
//! the values it reads. One difference is deliberate: a field no column reads is
//! checked for JSON syntax only, so a number beyond DOUBLE's range there no longer fails
//! the whole record.

/// Where a column's value sits in the record's text.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FieldSpan {
    pub start: usize,
    pub end: usize,
    /// The key's range, to tell a repeated key from another spelling of the name.
    key: (usize, usize),
    exact: bool,
}

/// Why the scanner gave up; the caller then takes the slow path.
#[derive(Debug, PartialEq)]
pub struct GiveUp;

type Scan<T> = Result<T, GiveUp>;

/// Nesting deeper than this is left to serde_json (whose own limit is 128).
const MAX_DEPTH: usize = 64;

/// Fills `spans` (one per column, reset here) with the value ranges of `text`'s fields.
/// `exact` are the column names as declared and `upper` the same upper-cased, which must
/// all differ (so that a key matches one column at most).
pub fn match_fields(
    text: &str,
    exact: &[String],
    upper: &[String],
    spans: &mut [Option<FieldSpan>],
) -> Scan<()> {
    spans.iter_mut().for_each(|s| *s = None);
    let mut guess = 0;
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.expect(b'"')?;
            let (ks, ke) = s.string_body()?;
            let key = &text[ks..ke];
            s.ws();
            s.expect(b':')?;
            s.ws();
            let start = s.i;
            s.value(0)?;
            let at = |exact| FieldSpan {
                start,
                end: s.i,
                key: (ks, ke),
                exact,
            };
            // Fields mostly come in column order: try the next column's name first.
            let matched = if guess < exact.len() && key == exact[guess] {
                Some((guess, true))
            } else if let Some(c) = exact.iter().position(|e| e == key) {
                Some((c, true))
            } else {
                match upper.iter().position(|u| upper_eq(key, u)) {
                    Some(_) if !key.is_ascii() => return Err(GiveUp),
                    found => found.map(|c| (c, false)),
                }
            };
            if let Some((c, is_exact)) = matched {
                guess = c + 1;
                let span = &mut spans[c];
                match span {
                    _ if is_exact => *span = Some(at(true)),
                    None => *span = Some(at(false)),
                    // The same key again: its last value counts, as in a JSON map.
                    Some(prev) if !prev.exact && &text[prev.key.0..prev.key.1] == key => {
                        *span = Some(at(false))
                    }
                    Some(_) => {}
                }
            } else if !key.is_ascii() {
                // Unicode upper-casing might still match a column.
                return Err(GiveUp);
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return Err(GiveUp),
            }
        }
    }
    s.ws();
    if s.i == s.b.len() {
        Ok(())
    } else {
        Err(GiveUp)
    }
}

/// The range of the single JSON value `text` holds (without surrounding whitespace).
pub fn value_span(text: &str) -> Scan<(usize, usize)> {
    let mut s = Scanner {
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    let start = s.i;
    s.value(0)?;
    let end = s.i;
    s.ws();
    if s.i == s.b.len() {
        Ok((start, end))
    } else {
        Err(GiveUp)
    }
}

/// Whether `key` upper-cased as ASCII equals `upper`.
fn upper_eq(key: &str, upper: &str) -> bool {
    key.len() == upper.len()
        && key
            .bytes()
            .zip(upper.bytes())
            .all(|(a, b)| a.to_ascii_uppercase() == b)
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Scan<u8> {
        let c = self.peek().ok_or(GiveUp)?;
        self.i += 1;
        Ok(c)
    }

    fn expect(&mut self, c: u8) -> Scan<()> {
        if self.next()? == c {
            Ok(())
        } else {
            Err(GiveUp)
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// After an opening quote: the string's contents' range, past its closing quote.
    /// (A plain loop: field names and values are short, too short for memchr to pay.)
    fn string_body(&mut self) -> Scan<(usize, usize)> {
        let start = self.i;
        let rest = &self.b[start..];
        let len = rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
            .ok_or(GiveUp)?;
        // A backslash escape, or a control character JSON does not allow in strings.
        if rest[len] != b'"' {
            return Err(GiveUp);
        }
        self.i = start + len + 1;
        Ok((start, start + len))
    }

    fn digits(&mut self) -> Scan<()> {
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(GiveUp);
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Scan<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(GiveUp)
        }
    }

    /// Skips one value, checking it is valid JSON.
    fn value(&mut self, depth: usize) -> Scan<()> {
        match self.peek().ok_or(GiveUp)? {
            b'"' => {
                self.i += 1;
                self.string_body().map(|_| ())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                if self.peek() == Some(b'-') {
                    self.i += 1;
                }
                if self.peek() == Some(b'0') {
                    self.i += 1;
                } else {
                    self.digits()?;
                }
                if self.peek() == Some(b'.') {
                    self.i += 1;
                    self.digits()?;
                }
                if let Some(b'e' | b'E') = self.peek() {
                    self.i += 1;
                    if let Some(b'+' | b'-') = self.peek() {
                        self.i += 1;
                    }
                    self.digits()?;
                }
                Ok(())
            }
            open @ (b'[' | b'{') if depth < MAX_DEPTH => {
                self.i += 1;
                let close = if open == b'[' { b']' } else { b'}' };
                self.ws();
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.expect(b'"')?;
                        self.string_body()?;
                        self.ws();
                        self.expect(b':')?;
                        self.ws();
                    }
                    self.value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => self.ws(),
                        c if c == close => return Ok(()),
                        _ => return Err(GiveUp),
                    }
                }
            }
            _ => Err(GiveUp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str, names: &[&str]) -> Scan<Vec<Option<String>>> {
        let exact: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let upper: Vec<String> = names.iter().map(|n| n.to_uppercase()).collect();
        let mut spans = vec![None; names.len()];
        match_fields(text, &exact, &upper, &mut spans)?;
        Ok(spans
            .iter()
            .map(|s| s.map(|s| text[s.start..s.end].to_string()))
            .collect())
    }

    fn some(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn finds_fields_by_exact_then_case_insensitive_name() {
        let got = fields(
            r#" { "id" : 7, "NAME":"a b", "x":[1,{"y":null}], "Tags":{} } "#,
            &["ID", "NAME", "TAGS", "MISSING"],
        );
        assert_eq!(
            got,
            Ok(vec![
                Some("7".into()),
                Some("\"a b\"".into()),
                Some("{}".into()),
                None
            ])
        );
        // An exact match wins over an earlier case-insensitive one.
        assert_eq!(
            fields(r#"{"name":1,"NAME":2}"#, &["NAME"]),
            Ok(some(&["2"]))
        );
        // Another spelling after a case-insensitive match does not replace it ...
        assert_eq!(
            fields(r#"{"name":1,"Name":2}"#, &["NAME"]),
            Ok(some(&["1"]))
        );
        // ... but the same key repeated does: the last value counts.
        assert_eq!(
            fields(r#"{"name":1,"Name":2,"name":3}"#, &["NAME"]),
            Ok(some(&["3"]))
        );
        assert_eq!(fields(r#"{"A":1,"A":2}"#, &["A"]), Ok(some(&["2"])));
        assert_eq!(fields("{}", &["A"]), Ok(vec![None]));
    }

    #[test]
    fn gives_up_on_what_it_does_not_read_or_accept() {
        for text in [
            r#"{"a\"b":1}"#,
            r#"{"A":"x\ny"}"#,
            r#"{"A":01}"#,
            r#"{"A":1.}"#,
            r#"{"A":-}"#,
            r#"{"A":tru}"#,
            r#"{"A":1,}"#,
            r#"{"A":[1,]}"#,
            r#"{"A":1} x"#,
            r#"{"A":1"#,
            "[1]",
            "7",
            "{\"A\":\"tab\there\"}",
            r#"{"ÄB":1}"#,
        ] {
            assert_eq!(fields(text, &["A"]), Err(GiveUp), "{text}");
        }
        let deep = format!(r#"{{"A":{}{}}}"#, "[".repeat(100), "]".repeat(100));
        assert_eq!(fields(&deep, &["A"]), Err(GiveUp));
        assert_eq!(value_span(" 12 "), Ok((1, 3)));
        assert_eq!(value_span("12 x"), Err(GiveUp));
        // Numbers in every form JSON allows.
        assert_eq!(
            fields(r#"{"A":[0,-0.5,1e3,2E-2,-10.25e+2]}"#, &["A"]),
            Ok(some(&["[0,-0.5,1e3,2E-2,-10.25e+2]"]))
        );
    }
}
