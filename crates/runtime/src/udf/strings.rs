//! String and bytes functions.
//!
//! ksqlDB's functions are Java methods over `String`s: a NULL argument gives NULL unless
//! the function says otherwise, and a failure for one row (a bad pattern, a bad mask
//! character) gives NULL for that row.

use super::{
    Body, Kernel, bytes_of, i32s_of, opt_bytes, opt_i32, opt_str, str_at, string_lists_of,
    strings_of,
};
use datafusion_common::Result;
use datafusion_common::arrow::array::{Array, ArrayRef, AsArray, BinaryArray};
use datafusion_common::arrow::datatypes::{DataType, Field};
use regex::Regex;
use std::sync::Arc;

pub(super) const NAMES: &[&str] = &[
    "UCASE",
    "LCASE",
    "TRIM",
    "LTRIM",
    "RTRIM",
    "LEN",
    "CONCAT",
    "CONCAT_WS",
    "SUBSTRING",
    "LPAD",
    "RPAD",
    "REPLACE",
    "REGEXP_REPLACE",
    "REGEXP_EXTRACT",
    "REGEXP_EXTRACT_ALL",
    "REGEXP_SPLIT_TO_ARRAY",
    "SPLIT",
    "SPLIT_TO_MAP",
    "INSTR",
    "INITCAP",
    "CHR",
    "ELT",
    "FIELD",
    "MASK",
    "MASK_LEFT",
    "MASK_RIGHT",
    "MASK_KEEP_LEFT",
    "MASK_KEEP_RIGHT",
    "ENCODE",
    "TO_BYTES",
    "FROM_BYTES",
    "MD5",
    "UUID",
];

fn string_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

pub(super) fn lookup(name: &str, args: &[DataType]) -> Option<(Body, DataType)> {
    use DataType::{Binary, Int32, Utf8};
    let bytes = args.first() == Some(&Binary);
    let (kernel, returns): (Kernel, DataType) = match name {
        "UCASE" => (|a, _| map_str(&a[0], |s| s.to_uppercase()), Utf8),
        "LCASE" => (|a, _| map_str(&a[0], |s| s.to_lowercase()), Utf8),
        // Java's String.trim(): everything up to and including ' '.
        "TRIM" => (
            |a, _| map_str(&a[0], |s| s.trim_matches(|c: char| c <= ' ').to_string()),
            Utf8,
        ),
        "LTRIM" => (
            |a, _| {
                map_str(&a[0], |s| {
                    s.trim_start_matches(|c: char| c <= ' ').to_string()
                })
            },
            Utf8,
        ),
        "RTRIM" => (
            |a, _| {
                map_str(&a[0], |s| {
                    s.trim_end_matches(|c: char| c <= ' ').to_string()
                })
            },
            Utf8,
        ),
        "LEN" if bytes => (
            |a, rows| {
                let b = a[0].as_binary::<i32>();
                i32s_of(rows, |r| opt_bytes(b, r).map(|v| v.len() as i32))
            },
            Int32,
        ),
        "LEN" => (len, Int32),
        "CONCAT" if bytes => (concat_bytes, Binary),
        "CONCAT" => (concat, Utf8),
        "CONCAT_WS" if bytes => (concat_ws_bytes, Binary),
        "CONCAT_WS" => (concat_ws, Utf8),
        "SUBSTRING" if bytes => (substring_bytes, Binary),
        "SUBSTRING" => (substring, Utf8),
        "LPAD" if bytes => (|a, rows| pad_bytes(a, rows, true), Binary),
        "LPAD" => (|a, rows| pad(a, rows, true), Utf8),
        "RPAD" if bytes => (|a, rows| pad_bytes(a, rows, false), Binary),
        "RPAD" => (|a, rows| pad(a, rows, false), Utf8),
        "REPLACE" => (replace, Utf8),
        "REGEXP_REPLACE" => (regexp_replace, Utf8),
        "REGEXP_EXTRACT" => (regexp_extract, Utf8),
        "REGEXP_EXTRACT_ALL" => (regexp_extract_all, string_list()),
        "REGEXP_SPLIT_TO_ARRAY" => (regexp_split, string_list()),
        "SPLIT" if bytes => (
            split_bytes,
            DataType::List(Arc::new(Field::new("item", Binary, true))),
        ),
        "SPLIT" => (split, string_list()),
        "SPLIT_TO_MAP" => (split_to_map, super::types_of_string_map()),
        "INSTR" => (instr, Int32),
        "INITCAP" => (|a, _| map_str(&a[0], initcap), Utf8),
        "CHR" if args.first() == Some(&Int32) => (
            |a, rows| strings_of(rows, |r| chr_of_code(opt_i32(&a[0], r)?)),
            Utf8,
        ),
        "CHR" => (
            |a, rows| {
                let s = str_at(a, 0);
                strings_of(rows, |r| chr_of_text(opt_str(s, r)?))
            },
            Utf8,
        ),
        "ELT" => (elt, Utf8),
        "FIELD" => (field, Int32),
        "MASK" => (mask_all, Utf8),
        "MASK_LEFT" => (|a, rows| mask_part(a, rows, Part::Left), Utf8),
        "MASK_RIGHT" => (|a, rows| mask_part(a, rows, Part::Right), Utf8),
        "MASK_KEEP_LEFT" => (|a, rows| mask_part(a, rows, Part::AllButLeft), Utf8),
        "MASK_KEEP_RIGHT" => (|a, rows| mask_part(a, rows, Part::AllButRight), Utf8),
        "ENCODE" => (encode, Utf8),
        "TO_BYTES" => (
            |a, rows| {
                let (s, enc) = (str_at(a, 0), str_at(a, 1));
                bytes_of(rows, |r| decode_text(opt_str(s, r)?, opt_str(enc, r)?))
            },
            Binary,
        ),
        "FROM_BYTES" => (
            |a, rows| {
                let (b, enc) = (a[0].as_binary::<i32>(), str_at(a, 1));
                strings_of(rows, |r| {
                    encode_bytes(opt_bytes(b, r)?, opt_str(enc, r)?, true)
                })
            },
            Utf8,
        ),
        "MD5" => (
            |a, _| map_str(&a[0], |s| hex(&md5(s.as_bytes()), false)),
            Utf8,
        ),
        "UUID" if bytes => (
            |a, rows| {
                let b = a[0].as_binary::<i32>();
                strings_of(rows, |r| {
                    let v: [u8; 16] = opt_bytes(b, r)?.try_into().ok()?;
                    Some(uuid::Uuid::from_bytes(v).to_string())
                })
            },
            Utf8,
        ),
        "UUID" => (
            |_, rows| strings_of(rows, |_| Some(uuid::Uuid::new_v4().to_string())),
            Utf8,
        ),
        _ => return None,
    };
    Some((Body::Plain(kernel), returns))
}

fn map_str(a: &ArrayRef, f: impl Fn(&str) -> String) -> Result<ArrayRef> {
    let a = a.as_string::<i32>();
    strings_of(a.len(), |r| opt_str(a, r).map(&f))
}

fn len(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let s = str_at(a, 0);
    i32s_of(rows, |r| opt_str(s, r).map(|v| v.chars().count() as i32))
}

/// NULL arguments are skipped; the result is never NULL.
fn concat(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let cols: Vec<_> = a.iter().map(|x| x.as_string::<i32>()).collect();
    strings_of(rows, |r| {
        Some(cols.iter().filter_map(|c| opt_str(c, r)).collect())
    })
}

fn concat_bytes(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let cols: Vec<_> = a.iter().map(|x| x.as_binary::<i32>()).collect();
    bytes_of(rows, |r| {
        Some(
            cols.iter()
                .filter_map(|c| opt_bytes(c, r))
                .flatten()
                .copied()
                .collect(),
        )
    })
}

/// A NULL separator gives NULL; NULL values are skipped.
fn concat_ws(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let cols: Vec<_> = a.iter().map(|x| x.as_string::<i32>()).collect();
    strings_of(rows, |r| {
        let sep = opt_str(cols[0], r)?;
        let parts: Vec<&str> = cols[1..].iter().filter_map(|c| opt_str(c, r)).collect();
        Some(parts.join(sep))
    })
}

fn concat_ws_bytes(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let cols: Vec<_> = a.iter().map(|x| x.as_binary::<i32>()).collect();
    bytes_of(rows, |r| {
        let sep = opt_bytes(cols[0], r)?;
        let parts: Vec<&[u8]> = cols[1..].iter().filter_map(|c| opt_bytes(c, r)).collect();
        Some(parts.join(sep))
    })
}

/// The range of a SUBSTRING over `n` units: 1-based start, negative counts from the end,
/// clamped to the value.
fn substring_range(n: usize, pos: i32, len: Option<i32>) -> (usize, usize) {
    let n = n as i64;
    let p = pos as i64;
    let start = if p < 0 {
        (n + p).max(0)
    } else {
        (p - 1).min(n).max(0)
    };
    let end = match len {
        Some(l) => (start + l as i64).min(n).max(start),
        None => n,
    };
    (start as usize, end as usize)
}

/// ksqlDB's SUBSTRING: 1-based start, negative counts from the end, clamped to the string.
fn substring(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let s = str_at(a, 0);
    strings_of(rows, |r| {
        let pos = opt_i32(&a[1], r)?;
        let len = match a.get(2) {
            Some(l) => Some(opt_i32(l, r)?),
            None => None,
        };
        let chars: Vec<char> = opt_str(s, r)?.chars().collect();
        let (start, end) = substring_range(chars.len(), pos, len);
        Some(chars[start..end].iter().collect())
    })
}

fn substring_bytes(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let b = a[0].as_binary::<i32>();
    bytes_of(rows, |r| {
        let pos = opt_i32(&a[1], r)?;
        let len = match a.get(2) {
            Some(l) => Some(opt_i32(l, r)?),
            None => None,
        };
        let v = opt_bytes(b, r)?;
        let (start, end) = substring_range(v.len(), pos, len);
        Some(v[start..end].to_vec())
    })
}

/// LPAD / RPAD over units: NULL for a NULL argument, a negative length or an empty
/// padding; input longer than the length is cut to it.
fn pad_units<T: Clone>(input: &[T], len: i32, padding: &[T], left: bool) -> Option<Vec<T>> {
    if len < 0 || padding.is_empty() {
        return None;
    }
    let len = len as usize;
    if input.len() >= len {
        return Some(input[..len].to_vec());
    }
    let fill: Vec<T> = padding
        .iter()
        .cycle()
        .take(len - input.len())
        .cloned()
        .collect();
    Some(if left {
        [fill.as_slice(), input].concat()
    } else {
        [input, fill.as_slice()].concat()
    })
}

fn pad(a: &[ArrayRef], rows: usize, left: bool) -> Result<ArrayRef> {
    let (s, p) = (str_at(a, 0), str_at(a, 2));
    strings_of(rows, |r| {
        let input: Vec<char> = opt_str(s, r)?.chars().collect();
        let padding: Vec<char> = opt_str(p, r)?.chars().collect();
        let out = pad_units(&input, opt_i32(&a[1], r)?, &padding, left)?;
        Some(out.into_iter().collect())
    })
}

fn pad_bytes(a: &[ArrayRef], rows: usize, left: bool) -> Result<ArrayRef> {
    let (s, p) = (a[0].as_binary::<i32>(), a[2].as_binary::<i32>());
    bytes_of(rows, |r| {
        pad_units(opt_bytes(s, r)?, opt_i32(&a[1], r)?, opt_bytes(p, r)?, left)
    })
}

fn replace(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (s, from, to) = (str_at(a, 0), str_at(a, 1), str_at(a, 2));
    strings_of(rows, |r| {
        Some(opt_str(s, r)?.replace(opt_str(from, r)?, opt_str(to, r)?))
    })
}

/// Compiled patterns of a batch: the pattern is almost always a constant, so the last one
/// is kept. A pattern the regex engine refuses is `None` (NULL for its rows).
#[derive(Default)]
struct Patterns {
    last: Option<(String, Option<Regex>)>,
}

impl Patterns {
    fn get(&mut self, pattern: &str) -> Option<&Regex> {
        if self.last.as_ref().is_none_or(|(p, _)| p != pattern) {
            self.last = Some((pattern.to_string(), Regex::new(pattern).ok()));
        }
        self.last.as_ref().and_then(|(_, re)| re.as_ref())
    }
}

/// A Java `replaceAll` replacement (`$1`, `${name}`, `\$` for a literal) in the regex
/// crate's syntax.
fn java_replacement(java: &str) -> String {
    let mut out = String::with_capacity(java.len());
    let mut chars = java.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(n) => out.push(n),
                None => {}
            },
            '$' => {
                if chars.peek() == Some(&'{') {
                    out.push('$');
                } else {
                    let mut digits = String::new();
                    while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                        digits.push(*d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{digits}}}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn regexp_replace(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (s, p, w) = (str_at(a, 0), str_at(a, 1), str_at(a, 2));
    let mut patterns = Patterns::default();
    strings_of(rows, |r| {
        let (s, w) = (opt_str(s, r)?, opt_str(w, r)?);
        let re = patterns.get(opt_str(p, r)?)?;
        Some(re.replace_all(s, java_replacement(w).as_str()).into_owned())
    })
}

/// The capture group a REGEXP_EXTRACT call asks for (0: the whole match).
fn group_arg(a: &[ArrayRef], r: usize) -> Option<usize> {
    match a.get(2) {
        Some(g) => usize::try_from(opt_i32(g, r)?).ok(),
        None => Some(0),
    }
}

fn regexp_extract(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (p, s) = (str_at(a, 0), str_at(a, 1));
    let mut patterns = Patterns::default();
    strings_of(rows, |r| {
        let (pattern, s, group) = (opt_str(p, r)?, opt_str(s, r)?, group_arg(a, r)?);
        let re = patterns.get(pattern)?;
        Some(re.captures(s)?.get(group)?.as_str().to_string())
    })
}

fn regexp_extract_all(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (p, s) = (str_at(a, 0), str_at(a, 1));
    let mut patterns = Patterns::default();
    string_lists_of(rows, |r| {
        let (pattern, s, group) = (opt_str(p, r)?, opt_str(s, r)?, group_arg(a, r)?);
        let re = patterns.get(pattern)?;
        if group >= re.captures_len() {
            return None;
        }
        Some(
            re.captures_iter(s)
                .map(|c| c.get(group).map(|m| m.as_str().to_string()))
                .collect(),
        )
    })
}

/// Java's `Pattern.split(s, -1)`: trailing empty strings kept, no leading empty string
/// for a zero-width match at the start.
fn regexp_split(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (s, p) = (str_at(a, 0), str_at(a, 1));
    let mut patterns = Patterns::default();
    string_lists_of(rows, |r| {
        let (s, pattern) = (opt_str(s, r)?, opt_str(p, r)?);
        let re = patterns.get(pattern)?;
        let mut parts: Vec<Option<String>> = Vec::new();
        let mut last = 0;
        for m in re.find_iter(s) {
            if m.end() == 0 {
                continue;
            }
            parts.push(Some(s[last..m.start()].to_string()));
            last = m.end();
        }
        parts.push(Some(s[last..].to_string()));
        Some(parts)
    })
}

fn split(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (s, d) = (str_at(a, 0), str_at(a, 1));
    string_lists_of(rows, |r| {
        let (s, d) = (opt_str(s, r)?, opt_str(d, r)?);
        Some(if d.is_empty() {
            if s.is_empty() {
                vec![Some(String::new())]
            } else {
                s.chars().map(|c| Some(c.to_string())).collect()
            }
        } else {
            s.split(d).map(|p| Some(p.to_string())).collect()
        })
    })
}

fn split_bytes(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (s, d) = (a[0].as_binary::<i32>(), a[1].as_binary::<i32>());
    let mut items: Vec<Vec<u8>> = Vec::new();
    let mut lengths = Vec::with_capacity(rows);
    for r in 0..rows {
        let (Some(s), Some(d)) = (opt_bytes(s, r), opt_bytes(d, r)) else {
            lengths.push(None);
            continue;
        };
        let parts = split_slice(s, d);
        lengths.push(Some(parts.len()));
        items.extend(parts);
    }
    let items: BinaryArray = items.iter().map(|v| Some(v.as_slice())).collect();
    super::list_of(Arc::new(items), &lengths)
}

fn split_slice(s: &[u8], d: &[u8]) -> Vec<Vec<u8>> {
    if d.is_empty() {
        if s.is_empty() {
            return vec![Vec::new()];
        }
        return s.iter().map(|b| vec![*b]).collect();
    }
    let mut parts = Vec::new();
    let mut last = 0;
    let mut i = 0;
    while i + d.len() <= s.len() {
        if &s[i..i + d.len()] == d {
            parts.push(s[last..i].to_vec());
            i += d.len();
            last = i;
        } else {
            i += 1;
        }
    }
    parts.push(s[last..].to_vec());
    parts
}

/// SPLIT_TO_MAP(input, entryDelimiter, kvDelimiter): empty entries and entries without
/// the key-value delimiter are skipped; a later entry wins over an earlier one.
fn split_to_map(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (s, ed, kd) = (str_at(a, 0), str_at(a, 1), str_at(a, 2));
    let mut b = super::string_map_builder();
    for r in 0..rows {
        let entries = (|| {
            let (s, ed, kd) = (opt_str(s, r)?, opt_str(ed, r)?, opt_str(kd, r)?);
            if ed.is_empty() || kd.is_empty() {
                return None;
            }
            let mut out: Vec<(&str, &str)> = Vec::new();
            for entry in s.split(ed).filter(|e| !e.is_empty()) {
                let mut kv = entry.split(kd);
                let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                    continue;
                };
                match out.iter_mut().find(|(ok, _)| *ok == k) {
                    Some(slot) => slot.1 = v,
                    None => out.push((k, v)),
                }
            }
            Some(out)
        })();
        match entries {
            Some(entries) => {
                for (k, v) in entries {
                    b.keys().append_value(k);
                    b.values().append_value(v);
                }
                b.append(true)?;
            }
            None => b.append(false)?,
        }
    }
    Ok(Arc::new(b.finish()))
}

/// INSTR(string, substring[, position[, occurrence]]): the 1-based position of the
/// occurrence-th match at or after position (before it, searching backwards, when
/// negative); 0 when there is none.
fn instr(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (s, sub) = (str_at(a, 0), str_at(a, 1));
    i32s_of(rows, |r| {
        let position = match a.get(2) {
            Some(p) => opt_i32(p, r)?,
            None => 1,
        };
        let occurrence = match a.get(3) {
            Some(o) => opt_i32(o, r)?,
            None => 1,
        };
        let (Some(s), Some(sub)) = (opt_str(s, r), opt_str(sub, r)) else {
            return Some(0);
        };
        Some(instr_of(s, sub, position, occurrence))
    })
}

pub(super) fn instr_of(s: &str, sub: &str, position: i32, occurrence: i32) -> i32 {
    let s: Vec<char> = s.chars().collect();
    let sub: Vec<char> = sub.chars().collect();
    let n = s.len() as i64;
    let position = position as i64;
    if position.abs() > n || occurrence <= 0 || position == 0 {
        return 0;
    }
    let matches_at = |i: usize| i + sub.len() <= s.len() && s[i..i + sub.len()] == sub[..];
    let mut seen = 0;
    if position > 0 {
        for i in (position - 1) as usize..s.len().max(1) {
            if matches_at(i) {
                seen += 1;
                if seen == occurrence {
                    return i as i32 + 1;
                }
            }
        }
    } else {
        // The match must end at or before the position counted from the end.
        let last_end = (n + position + 1) as usize;
        for start in (0..=last_end.saturating_sub(sub.len())).rev() {
            if start + sub.len() <= last_end && matches_at(start) {
                seen += 1;
                if seen == occurrence {
                    return start as i32 + 1;
                }
            }
        }
    }
    0
}

/// Each run of non-whitespace (and the whitespace after it) with its first letter upper
/// case and the rest lower case; whitespace before the first word is dropped.
pub(super) fn initcap(s: &str) -> String {
    let lower = s.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    let mut at_word_start = true;
    for c in lower.trim_start().chars() {
        if c.is_whitespace() {
            at_word_start = true;
            out.push(c);
        } else if at_word_start {
            out.extend(c.to_uppercase());
            at_word_start = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn chr_of_code(code: i32) -> Option<String> {
    char::from_u32(u32::try_from(code).ok()?).map(String::from)
}

/// CHR of `\uXXXX` escapes (a surrogate pair is two): exactly one character, else NULL.
pub(super) fn chr_of_text(text: &str) -> Option<String> {
    let mut units = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let hex = rest.strip_prefix("\\u")?;
        let digits = hex.get(..4)?;
        units.push(u16::from_str_radix(digits, 16).ok()?);
        rest = &hex[4..];
    }
    let s: String = char::decode_utf16(units).collect::<Result<_, _>>().ok()?;
    (s.chars().count() == 1).then_some(s)
}

fn elt(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let cols: Vec<_> = a[1..].iter().map(|x| x.as_string::<i32>()).collect();
    strings_of(rows, |r| {
        let n = usize::try_from(opt_i32(&a[0], r)?).ok()?;
        let col = cols.get(n.checked_sub(1)?)?;
        opt_str(col, r).map(str::to_string)
    })
}

fn field(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let cols: Vec<_> = a.iter().map(|x| x.as_string::<i32>()).collect();
    i32s_of(rows, |r| {
        let Some(wanted) = opt_str(cols[0], r) else {
            return Some(0);
        };
        let pos = cols[1..]
            .iter()
            .position(|c| opt_str(c, r) == Some(wanted))
            .map_or(0, |p| p as i32 + 1);
        Some(pos)
    })
}

/// Replacement characters for upper case, lower case, digits and the rest; `None` keeps
/// characters of that class.
#[derive(Clone, Copy)]
struct Masker([Option<char>; 4]);

impl Default for Masker {
    fn default() -> Self {
        Masker([Some('X'), Some('x'), Some('n'), Some('-')])
    }
}

impl Masker {
    /// From the four mask arguments starting at `first`: NULL keeps the class, anything
    /// but one character is an error (`None`).
    fn from_args(a: &[ArrayRef], first: usize, r: usize) -> Option<Masker> {
        if a.len() <= first {
            return Some(Masker::default());
        }
        let mut m = [None; 4];
        for (i, slot) in m.iter_mut().enumerate() {
            let col = a[first + i].as_string::<i32>();
            if let Some(s) = opt_str(col, r) {
                let mut chars = s.chars();
                let (Some(c), None) = (chars.next(), chars.next()) else {
                    return None;
                };
                *slot = Some(c);
            }
        }
        Some(Masker(m))
    }

    fn mask(&self, c: char) -> char {
        let class = if c.is_uppercase() {
            0
        } else if c.is_lowercase() {
            1
        } else if c.is_ascii_digit() {
            2
        } else {
            3
        };
        self.0[class].unwrap_or(c)
    }
}

fn mask_all(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let s = str_at(a, 0);
    strings_of(rows, |r| {
        let masker = Masker::from_args(a, 1, r)?;
        Some(opt_str(s, r)?.chars().map(|c| masker.mask(c)).collect())
    })
}

#[derive(Clone, Copy)]
enum Part {
    Left,
    Right,
    AllButLeft,
    AllButRight,
}

fn mask_part(a: &[ArrayRef], rows: usize, part: Part) -> Result<ArrayRef> {
    let s = str_at(a, 0);
    strings_of(rows, |r| {
        let s = opt_str(s, r)?;
        let n = usize::try_from(opt_i32(&a[1], r)?).ok()?;
        let masker = Masker::from_args(a, 2, r)?;
        let len = s.chars().count();
        let masked = |i: usize| match part {
            Part::Left => i < n,
            Part::Right => i + n >= len,
            Part::AllButLeft => i >= n,
            Part::AllButRight => i + n < len,
        };
        Some(
            s.chars()
                .enumerate()
                .map(|(i, c)| if masked(i) { masker.mask(c) } else { c })
                .collect(),
        )
    })
}

/// ENCODE(string, from, to): the string read as `from` ('hex', 'utf8', 'ascii',
/// 'base64') and written as `to`.
fn encode(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (s, from, to) = (str_at(a, 0), str_at(a, 1), str_at(a, 2));
    strings_of(rows, |r| {
        let bytes = decode_text(opt_str(s, r)?, opt_str(from, r)?)?;
        encode_bytes(&bytes, opt_str(to, r)?, false)
    })
}

/// The bytes a string stands for in an encoding; `None` for an unknown encoding or text
/// that is not valid in it.
pub(super) fn decode_text(s: &str, encoding: &str) -> Option<Vec<u8>> {
    match encoding.to_ascii_lowercase().as_str() {
        "hex" => {
            // Only after `0x` may the digits be odd in number (a leading 0 is implied),
            // as in ksqlDB; bare digits and `X'...'` literals must come in pairs.
            if let Some(digits) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                return unhex(&if digits.len() % 2 == 1 {
                    format!("0{digits}")
                } else {
                    digits.to_string()
                });
            }
            let digits = s
                .strip_prefix("X'")
                .or_else(|| s.strip_prefix("x'"))
                .map_or(Some(s), |t| t.strip_suffix('\''))?;
            unhex(digits)
        }
        "utf8" => Some(s.as_bytes().to_vec()),
        // Java writes '?' for a character ASCII cannot hold (per UTF-16 unit).
        "ascii" => Some(
            s.encode_utf16()
                .map(|u| if u < 0x80 { u as u8 } else { b'?' })
                .collect(),
        ),
        "base64" => unbase64(s),
        _ => None,
    }
}

/// Bytes written as text in an encoding; invalid UTF-8 or ASCII becomes U+FFFD.
pub(super) fn encode_bytes(b: &[u8], encoding: &str, upper_hex: bool) -> Option<String> {
    match encoding.to_ascii_lowercase().as_str() {
        "hex" => Some(hex(b, upper_hex)),
        "utf8" => Some(String::from_utf8_lossy(b).into_owned()),
        "ascii" => Some(
            b.iter()
                .map(|&c| if c < 0x80 { c as char } else { '\u{fffd}' })
                .collect(),
        ),
        "base64" => Some(base64(b)),
        _ => None,
    }
}

pub(super) fn hex(b: &[u8], upper: bool) -> String {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut s = String::with_capacity(b.len() * 2);
    for v in b {
        s.push(digits[(v >> 4) as usize] as char);
        s.push(digits[(v & 15) as usize] as char);
    }
    s
}

/// Pairs of hex digits to bytes; None for an odd count or a non-digit.
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 == 1 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(super) use sluice_registry::base64::{decode as unbase64, encode as base64};

/// The MD5 digest (RFC 1321).
pub(super) fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4294967296.0) as u32)
        .collect();
    let mut h: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
    let mut msg = input.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((input.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in msg.chunks(64) {
        let m: Vec<u32> = block
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, v) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udf::test_support::{s, strings, texts};
    use datafusion_common::arrow::array::Int32Array;

    fn ints(v: &[Option<i32>]) -> ArrayRef {
        Arc::new(Int32Array::from(v.to_vec()))
    }

    #[test]
    fn substring_follows_ksqldb() {
        let st = strings(&[Some("hello"), Some("hello"), Some("hello"), None]);
        let p = ints(&[Some(2), Some(-3), Some(0), Some(1)]);
        let l = ints(&[Some(3), Some(2), Some(2), Some(1)]);
        let out = substring(&[st, p, l], 4).unwrap();
        assert_eq!(texts(&out), vec![s("ell"), s("ll"), s("he"), None]);
    }

    #[test]
    fn concat_skips_nulls_and_concat_ws_needs_a_separator() {
        let out = concat(&[strings(&[Some("a"), None]), strings(&[None, None])], 2).unwrap();
        assert_eq!(texts(&out), vec![s("a"), s("")]);
        let out = concat_ws(
            &[
                strings(&[Some(", "), None]),
                strings(&[Some("a"), Some("a")]),
                strings(&[None, None]),
                strings(&[Some("b"), Some("b")]),
            ],
            2,
        )
        .unwrap();
        assert_eq!(texts(&out), vec![s("a, b"), None]);
    }

    #[test]
    fn padding_repeats_and_truncates() {
        let chars = |v: &str| v.chars().collect::<Vec<_>>();
        let run = |input: &str, len: i32, p: &str, left: bool| {
            pad_units(&chars(input), len, &chars(p), left)
                .map(|v| v.into_iter().collect::<String>())
        };
        assert_eq!(run("Q", 4, "ab", true), s("abaQ"));
        assert_eq!(run("Q", 4, "ab", false), s("Qaba"));
        assert_eq!(run("Quick", 3, "ab", true), s("Qui"));
        assert_eq!(run("Quick", 3, "ab", false), s("Qui"));
        assert_eq!(run("Q", -1, "ab", true), None);
        assert_eq!(run("Q", 4, "", true), None);
    }

    #[test]
    fn instr_counts_occurrences_both_ways() {
        assert_eq!(instr_of("CORPORATE FLOOR", "OR", 1, 1), 2);
        assert_eq!(instr_of("CORPORATE FLOOR", "OR", 3, 2), 14);
        assert_eq!(instr_of("CORPORATE FLOOR", "OR", -3, 2), 2);
        assert_eq!(instr_of("CORPORATE FLOOR", "MORE", 1, 1), 0);
        assert_eq!(instr_of("short", "or", 4, 2), 0);
    }

    #[test]
    fn initcap_capitalizes_words() {
        assert_eq!(initcap("the   quICK br0wn"), "The   Quick Br0wn");
        assert_eq!(initcap("  lead"), "Lead");
        assert_eq!(initcap("a_b"), "A_b");
    }

    #[test]
    fn chr_reads_code_points_and_escapes() {
        assert_eq!(chr_of_code(75), s("K"));
        assert_eq!(chr_of_code(-1), None);
        assert_eq!(chr_of_text("\\u004b"), s("K"));
        assert_eq!(chr_of_text("\\ud83d\\ude00"), s("\u{1f600}"));
        assert_eq!(chr_of_text("004b"), None);
        assert_eq!(chr_of_text("\\u004b\\u004b"), None);
        assert_eq!(chr_of_text(""), None);
    }

    #[test]
    fn masks_by_character_class() {
        let out = mask_all(&[strings(&[Some("AbC-12 z"), None])], 2).unwrap();
        assert_eq!(texts(&out), vec![s("XxX-nn-x"), None]);
        let out = mask_part(
            &[
                strings(&[Some("AbCd"), Some("AbCd")]),
                ints(&[Some(2), Some(-1)]),
            ],
            2,
            Part::Left,
        )
        .unwrap();
        assert_eq!(texts(&out), vec![s("XxCd"), None]);
        let out = mask_part(
            &[
                strings(&[Some("AbCd")]),
                ints(&[Some(1)]),
                strings(&[Some("*")]),
                strings(&[None]),
                strings(&[None]),
                strings(&[None]),
            ],
            1,
            Part::AllButRight,
        )
        .unwrap();
        assert_eq!(texts(&out), vec![s("*b*d")]);
    }

    #[test]
    fn codecs_round_trip() {
        assert_eq!(base64(b"Example!"), "RXhhbXBsZSE=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(unbase64("YWI=").unwrap(), b"ab");
        assert_eq!(unbase64("YWI").unwrap(), b"ab");
        assert_eq!(decode_text("0x4142", "hex").unwrap(), b"AB");
        assert_eq!(decode_text("X'4142'", "hex").unwrap(), b"AB");
        assert_eq!(encode_bytes(&[0x1a, 0xb2], "hex", true).unwrap(), "1AB2");
        assert_eq!(decode_text("é", "ascii").unwrap(), b"?");
        assert_eq!(encode_bytes(&[0xc3], "ascii", false).unwrap(), "\u{fffd}");
        assert_eq!(decode_text("zz", "hex"), None);
        // An odd count of digits: a leading 0 after `0x`, else not hex.
        assert_eq!(decode_text("0x141", "hex").unwrap(), b"\x01\x41");
        assert_eq!(decode_text("141", "hex"), None);
        assert_eq!(decode_text("X'141'", "hex"), None);
        assert_eq!(decode_text("x'4142", "hex"), None);
    }

    #[test]
    fn md5_matches_rfc_1321() {
        assert_eq!(hex(&md5(b""), false), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(&md5(b"abc"), false), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex(
                &md5(b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
                false
            ),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    #[test]
    fn regexes_extract_replace_and_split() {
        let out = regexp_extract(
            &[
                strings(&[Some("(\\w+) (\\w+)"), Some("x(")]),
                strings(&[Some("ada lovelace"), Some("x(")]),
                ints(&[Some(2), Some(0)]),
            ],
            2,
        )
        .unwrap();
        assert_eq!(texts(&out), vec![s("lovelace"), None]);
        let out = regexp_replace(
            &[
                strings(&[Some("a1b22")]),
                strings(&[Some("(\\d+)")]),
                strings(&[Some("<$1>")]),
            ],
            1,
        )
        .unwrap();
        assert_eq!(texts(&out), vec![s("a<1>b<22>")]);
        let out = regexp_split(&[strings(&[Some("a1b22c")]), strings(&[Some("\\d")])], 1).unwrap();
        let list = out.as_list::<i32>();
        assert_eq!(texts(&list.value(0)), vec![s("a"), s("b"), s(""), s("c")]);
    }

    #[test]
    fn split_keeps_empty_parts() {
        let out = split(
            &[
                strings(&[Some(".a.."), Some("ab")]),
                strings(&[Some("."), Some("")]),
            ],
            2,
        )
        .unwrap();
        let list = out.as_list::<i32>();
        assert_eq!(texts(&list.value(0)), vec![s(""), s("a"), s(""), s("")]);
        assert_eq!(texts(&list.value(1)), vec![s("a"), s("b")]);
        assert_eq!(
            split_slice(b"a--b", b"--"),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
    }

    #[test]
    fn split_to_map_skips_bad_entries() {
        let out = split_to_map(
            &[
                strings(&[Some("a=1;b=2;;c;a=3")]),
                strings(&[Some(";")]),
                strings(&[Some("=")]),
            ],
            1,
        )
        .unwrap();
        let map = out.as_map();
        assert_eq!(texts(map.keys()), vec![s("a"), s("b")]);
        assert_eq!(texts(map.values()), vec![s("3"), s("2")]);
    }

    #[test]
    fn elt_and_field_are_inverse() {
        let a = strings(&[Some("x"), None]);
        let b = strings(&[Some("y"), Some("y")]);
        let out = field(&[strings(&[Some("y"), Some("z")]), a.clone(), b.clone()], 2).unwrap();
        let pos = out.as_primitive::<datafusion_common::arrow::datatypes::Int32Type>();
        assert_eq!((pos.value(0), pos.value(1)), (2, 0));
        let out = elt(&[ints(&[Some(2), Some(3)]), a, b], 2).unwrap();
        assert_eq!(texts(&out), vec![s("y"), None]);
    }
}
