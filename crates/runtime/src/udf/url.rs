//! URL functions, with the semantics of Java's `java.net.URI` (components decoded, a
//! missing component NULL, a string that is not a URI NULL) and of `URLEncoder` /
//! `URLDecoder` for parameters.

use super::{Body, Kernel, i32s_of, opt_str, str_at, strings_of};
use datafusion_common::arrow::array::ArrayRef;
use datafusion_common::arrow::datatypes::DataType;

pub(super) const NAMES: &[&str] = &[
    "URL_DECODE_PARAM",
    "URL_ENCODE_PARAM",
    "URL_EXTRACT_FRAGMENT",
    "URL_EXTRACT_HOST",
    "URL_EXTRACT_PARAMETER",
    "URL_EXTRACT_PATH",
    "URL_EXTRACT_PORT",
    "URL_EXTRACT_PROTOCOL",
    "URL_EXTRACT_QUERY",
];

pub(super) fn lookup(name: &str, _: &[DataType]) -> Option<(Body, DataType)> {
    let (kernel, returns): (Kernel, DataType) = match name {
        "URL_ENCODE_PARAM" => (
            |a, rows| map(a, rows, |s| Some(encode_param(s))),
            DataType::Utf8,
        ),
        "URL_DECODE_PARAM" => (|a, rows| map(a, rows, decode_param), DataType::Utf8),
        "URL_EXTRACT_FRAGMENT" => (
            |a, rows| map(a, rows, |s| decode(Uri::parse(s)?.fragment?)),
            DataType::Utf8,
        ),
        "URL_EXTRACT_HOST" => (
            |a, rows| map(a, rows, |s| Some(Uri::parse(s)?.host?.to_string())),
            DataType::Utf8,
        ),
        "URL_EXTRACT_PATH" => (
            |a, rows| map(a, rows, |s| decode(Uri::parse(s)?.path)),
            DataType::Utf8,
        ),
        "URL_EXTRACT_PROTOCOL" => (
            |a, rows| map(a, rows, |s| Some(Uri::parse(s)?.scheme?.to_string())),
            DataType::Utf8,
        ),
        "URL_EXTRACT_QUERY" => (
            |a, rows| map(a, rows, |s| decode(Uri::parse(s)?.query?)),
            DataType::Utf8,
        ),
        "URL_EXTRACT_PORT" => (
            |a, rows| {
                let s = str_at(a, 0);
                i32s_of(rows, |r| Uri::parse(opt_str(s, r)?)?.port)
            },
            DataType::Int32,
        ),
        "URL_EXTRACT_PARAMETER" => (
            |a, rows| {
                let (s, p) = (str_at(a, 0), str_at(a, 1));
                strings_of(rows, |r| {
                    let query = Uri::parse(opt_str(s, r)?)?.query?;
                    let wanted = opt_str(p, r)?;
                    query.split('&').find_map(|param| {
                        let (k, v) = param.split_once('=').unwrap_or((param, ""));
                        (k == wanted).then(|| decode_param(v))?
                    })
                })
            },
            DataType::Utf8,
        ),
        _ => return None,
    };
    Some((Body::Plain(kernel), returns))
}

fn map(
    a: &[ArrayRef],
    rows: usize,
    f: impl Fn(&str) -> Option<String>,
) -> datafusion_common::Result<ArrayRef> {
    let s = str_at(a, 0);
    strings_of(rows, |r| f(opt_str(s, r)?))
}

/// The parts of a URI reference (RFC 3986), raw (still percent-encoded).
#[derive(Debug, Default, PartialEq)]
struct Uri<'a> {
    scheme: Option<&'a str>,
    host: Option<&'a str>,
    port: Option<i32>,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> Uri<'a> {
    fn parse(s: &'a str) -> Option<Uri<'a>> {
        // Characters java.net.URI refuses anywhere.
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"<>\\^`{|}".contains(c))
        {
            return None;
        }
        let mut uri = Uri::default();
        let mut rest = s;
        if let Some((fragment_head, fragment)) = rest.split_once('#') {
            uri.fragment = Some(fragment);
            rest = fragment_head;
        }
        if let Some(colon) = rest.find(':') {
            let scheme = &rest[..colon];
            let valid = scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
            if valid {
                uri.scheme = Some(scheme);
                rest = &rest[colon + 1..];
            } else if !rest[..colon].contains(['/', '?']) {
                return None;
            }
        }
        if let Some((head, query)) = rest.split_once('?') {
            uri.query = Some(query);
            rest = head;
        }
        if let Some(after) = rest.strip_prefix("//") {
            let end = after.find('/').unwrap_or(after.len());
            let authority = &after[..end];
            uri.path = &after[end..];
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let (host, port) = match host_port.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || host_port.starts_with('[') => {
                    let port = if p.is_empty() {
                        None
                    } else {
                        Some(p.parse::<i32>().ok()?)
                    };
                    (h, port)
                }
                _ => (host_port, None),
            };
            uri.host = (!host.is_empty()).then_some(host);
            uri.port = port;
        } else {
            uri.path = rest;
        }
        Some(uri)
    }
}

/// Percent-decoding of a URI component (`+` stays `+`).
fn decode(s: &str) -> Option<String> {
    percent_decode(s, false)
}

fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// `URLDecoder.decode(s, UTF-8)`.
fn decode_param(s: &str) -> Option<String> {
    percent_decode(s, true)
}

/// `URLEncoder.encode(s, UTF-8)`: letters, digits and `.-*_` kept, space as `+`.
fn encode_param(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_split_into_components() {
        let u = Uri::parse("https://me@example.com:8080/a%20b/c?x=1&y#frag").unwrap();
        assert_eq!(u.scheme, Some("https"));
        assert_eq!(u.host, Some("example.com"));
        assert_eq!(u.port, Some(8080));
        assert_eq!(decode(u.path).unwrap(), "/a b/c");
        assert_eq!(u.query, Some("x=1&y"));
        assert_eq!(u.fragment, Some("frag"));
        let u = Uri::parse("example.com").unwrap();
        assert_eq!((u.scheme, u.host, u.path), (None, None, "example.com"));
        let u = Uri::parse("http://example.com").unwrap();
        assert_eq!(
            (u.port, u.query, u.fragment, u.path),
            (None, None, None, "")
        );
        assert!(Uri::parse("http://bad host").is_none());
    }

    #[test]
    fn parameters_encode_like_url_encoder() {
        assert_eq!(encode_param("a b&c/é"), "a+b%26c%2F%C3%A9");
        assert_eq!(decode_param("a+b%26c%2F%C3%A9").unwrap(), "a b&c/é");
        assert_eq!(decode_param("%zz"), None);
    }
}
