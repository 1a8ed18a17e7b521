//! Date and time functions. Patterns are Java's `DateTimeFormatter` patterns (ksqlDB
//! passes them through to Java), interpreted here: letters are fields, `'...'` is
//! literal text, other characters stand for themselves. Parsing is case-insensitive and
//! fills missing fields with 1970-01-01T00:00 as ksqlDB does. A value that does not parse,
//! a pattern that cannot be used, or an unknown time zone gives NULL for the row.

use super::{Body, Kernel, i32s_of, i64s_of, opt_i32, opt_i64, opt_str, str_at, strings_of};
use chrono::{
    DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use datafusion_common::Result;
use datafusion_common::arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Time32MillisecondArray, TimestampMillisecondArray,
};
use datafusion_common::arrow::datatypes::{
    DataType, Date32Type, Time32MillisecondType, TimeUnit, TimestampMillisecondType,
};
use std::sync::Arc;

pub(super) const NAMES: &[&str] = &[
    "UNIX_TIMESTAMP",
    "UNIX_DATE",
    "FROM_UNIXTIME",
    "FROM_DAYS",
    "DATETOSTRING",
    "STRINGTODATE",
    "TIMESTAMPTOSTRING",
    "STRINGTOTIMESTAMP",
    "FORMAT_DATE",
    "PARSE_DATE",
    "FORMAT_TIME",
    "PARSE_TIME",
    "FORMAT_TIMESTAMP",
    "PARSE_TIMESTAMP",
    "CONVERT_TZ",
    "DATEADD",
    "DATESUB",
    "TIMEADD",
    "TIMESUB",
    "TIMESTAMPADD",
    "TIMESTAMPSUB",
];

const DAY_MS: i64 = 86_400_000;

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

pub(super) fn lookup(name: &str, args: &[DataType]) -> Option<(Body, DataType)> {
    use DataType::{Date32, Int32, Int64, Utf8};
    let time = DataType::Time32(TimeUnit::Millisecond);
    let (kernel, returns): (Kernel, DataType) = match (name, args) {
        ("UNIX_TIMESTAMP", []) => (
            |_, rows| i64s_of(rows, |_| Some(Utc::now().timestamp_millis())),
            Int64,
        ),
        ("UNIX_TIMESTAMP", [_]) => (
            |a, rows| {
                let t = a[0].as_primitive::<TimestampMillisecondType>();
                i64s_of(rows, |r| t.is_valid(r).then(|| t.value(r)))
            },
            Int64,
        ),
        ("UNIX_DATE", []) => (
            |_, rows| {
                i32s_of(rows, |_| {
                    Some(Utc::now().timestamp_millis().div_euclid(DAY_MS) as i32)
                })
            },
            Int32,
        ),
        ("UNIX_DATE", [_]) => (
            |a, rows| {
                let d = a[0].as_primitive::<Date32Type>();
                i32s_of(rows, |r| d.is_valid(r).then(|| d.value(r)))
            },
            Int32,
        ),
        ("FROM_UNIXTIME", _) => (
            |a, rows| timestamps_of(rows, |r| opt_i64(&a[0], r)),
            timestamp_type(),
        ),
        ("FROM_DAYS", _) => (|a, rows| dates_of(rows, |r| opt_i32(&a[0], r)), Date32),
        ("DATETOSTRING", _) => (
            |a, rows| {
                let f = str_at(a, 1);
                let mut cache = Patterns::default();
                strings_of(rows, |r| {
                    let days = opt_i32(&a[0], r)?;
                    format_date(days, cache.get(opt_str(f, r)?)?)
                })
            },
            Utf8,
        ),
        ("FORMAT_DATE", _) => (
            |a, rows| {
                let (d, f) = (a[0].as_primitive::<Date32Type>(), str_at(a, 1));
                let mut cache = Patterns::default();
                strings_of(rows, |r| {
                    let days = d.is_valid(r).then(|| d.value(r))?;
                    format_date(days, cache.get(opt_str(f, r)?)?)
                })
            },
            Utf8,
        ),
        ("STRINGTODATE", _) => (
            |a, rows| {
                let (s, f) = (str_at(a, 0), str_at(a, 1));
                let mut cache = Patterns::default();
                i32s_of(rows, |r| {
                    parse_date(opt_str(s, r)?, cache.get(opt_str(f, r)?)?)
                })
            },
            Int32,
        ),
        ("PARSE_DATE", _) => (
            |a, rows| {
                let (s, f) = (str_at(a, 0), str_at(a, 1));
                let mut cache = Patterns::default();
                dates_of(rows, |r| {
                    parse_date(opt_str(s, r)?, cache.get(opt_str(f, r)?)?)
                })
            },
            Date32,
        ),
        ("FORMAT_TIME", _) => (
            |a, rows| {
                let (t, f) = (a[0].as_primitive::<Time32MillisecondType>(), str_at(a, 1));
                let mut cache = Patterns::default();
                strings_of(rows, |r| {
                    let ms = t.is_valid(r).then(|| t.value(r))?;
                    format_time(ms, cache.get(opt_str(f, r)?)?)
                })
            },
            Utf8,
        ),
        ("PARSE_TIME", _) => (
            |a, rows| {
                let (s, f) = (str_at(a, 0), str_at(a, 1));
                let mut cache = Patterns::default();
                let out: Time32MillisecondArray = (0..rows)
                    .map(|r| parse_time(opt_str(s, r)?, cache.get(opt_str(f, r)?)?))
                    .collect();
                Ok(Arc::new(out) as ArrayRef)
            },
            time,
        ),
        ("TIMESTAMPTOSTRING", [Int64, ..]) => (
            |a, rows| format_timestamps(a, rows, |r| opt_i64(&a[0], r)),
            Utf8,
        ),
        ("FORMAT_TIMESTAMP", _) => (
            |a, rows| {
                let t = a[0].as_primitive::<TimestampMillisecondType>();
                format_timestamps(a, rows, |r| t.is_valid(r).then(|| t.value(r)))
            },
            Utf8,
        ),
        ("STRINGTOTIMESTAMP", _) => (
            |a, rows| {
                let parsed = parse_timestamps(a, rows);
                i64s_of(rows, |r| parsed[r])
            },
            Int64,
        ),
        ("PARSE_TIMESTAMP", _) => (
            |a, rows| {
                let parsed = parse_timestamps(a, rows);
                timestamps_of(rows, |r| parsed[r])
            },
            timestamp_type(),
        ),
        ("CONVERT_TZ", _) => (convert_tz, timestamp_type()),
        ("DATEADD", _) => (|a, rows| date_shift(a, rows, 1), Date32),
        ("DATESUB", _) => (|a, rows| date_shift(a, rows, -1), Date32),
        ("TIMEADD", _) => (|a, rows| time_shift(a, rows, 1), time),
        ("TIMESUB", _) => (|a, rows| time_shift(a, rows, -1), time),
        ("TIMESTAMPADD", _) => (|a, rows| timestamp_shift(a, rows, 1), timestamp_type()),
        ("TIMESTAMPSUB", _) => (|a, rows| timestamp_shift(a, rows, -1), timestamp_type()),
        _ => return None,
    };
    Some((Body::Plain(kernel), returns))
}

fn timestamps_of(rows: usize, f: impl FnMut(usize) -> Option<i64>) -> Result<ArrayRef> {
    Ok(Arc::new(
        (0..rows).map(f).collect::<TimestampMillisecondArray>(),
    ))
}

fn dates_of(rows: usize, f: impl FnMut(usize) -> Option<i32>) -> Result<ArrayRef> {
    Ok(Arc::new((0..rows).map(f).collect::<Date32Array>()))
}

/// Milliseconds of one unit of a time unit's name (`DAYS`, `HOUR`, ...).
fn unit_ms(unit: &str) -> Option<i64> {
    Some(match unit.to_ascii_uppercase().trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => DAY_MS,
        _ => return None,
    })
}

/// DATEADD / DATESUB: a number of units added to a date, in whole days (toward zero).
fn date_shift(a: &[ArrayRef], rows: usize, sign: i64) -> Result<ArrayRef> {
    let (u, d) = (str_at(a, 0), a[2].as_primitive::<Date32Type>());
    dates_of(rows, |r| {
        let ms = unit_ms(opt_str(u, r)?)?.checked_mul(opt_i32(&a[1], r)? as i64)?;
        let days = d.is_valid(r).then(|| d.value(r))? as i64 + sign * (ms / DAY_MS);
        i32::try_from(days).ok()
    })
}

/// TIMEADD / TIMESUB: wraps around midnight.
fn time_shift(a: &[ArrayRef], rows: usize, sign: i64) -> Result<ArrayRef> {
    let (u, t) = (str_at(a, 0), a[2].as_primitive::<Time32MillisecondType>());
    let out: Time32MillisecondArray = (0..rows)
        .map(|r| {
            let ms = unit_ms(opt_str(u, r)?)?.checked_mul(opt_i32(&a[1], r)? as i64)?;
            let t = t.is_valid(r).then(|| t.value(r))? as i64;
            Some((t + sign * ms).rem_euclid(DAY_MS) as i32)
        })
        .collect();
    Ok(Arc::new(out))
}

fn timestamp_shift(a: &[ArrayRef], rows: usize, sign: i64) -> Result<ArrayRef> {
    let (u, t) = (
        str_at(a, 0),
        a[2].as_primitive::<TimestampMillisecondType>(),
    );
    timestamps_of(rows, |r| {
        let ms = unit_ms(opt_str(u, r)?)?.checked_mul(opt_i64(&a[1], r)?)?;
        let t = t.is_valid(r).then(|| t.value(r))?;
        t.checked_add(ms.checked_mul(sign)?)
    })
}

/// CONVERT_TZ(ts, from, to): the wall-clock time in `from` moved to `to`, with both
/// offsets taken at the instant `ts`.
fn convert_tz(a: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let (t, from, to) = (
        a[0].as_primitive::<TimestampMillisecondType>(),
        str_at(a, 1),
        str_at(a, 2),
    );
    timestamps_of(rows, |r| {
        let ts = t.is_valid(r).then(|| t.value(r))?;
        let from = Zone::parse(opt_str(from, r)?)?.offset_at(ts)?;
        let to = Zone::parse(opt_str(to, r)?)?.offset_at(ts)?;
        ts.checked_add((to.local_minus_utc() - from.local_minus_utc()) as i64 * 1000)
    })
}

/// The time zone argument, if any (argument 2), or UTC.
fn zone_arg(a: &[ArrayRef], r: usize) -> Option<Zone> {
    match a.get(2) {
        Some(z) => Zone::parse(opt_str(z.as_string::<i32>(), r)?),
        None => Some(Zone::Fixed(Utc.fix())),
    }
}

fn format_timestamps(
    a: &[ArrayRef],
    rows: usize,
    millis: impl Fn(usize) -> Option<i64>,
) -> Result<ArrayRef> {
    let f = str_at(a, 1);
    let mut cache = Patterns::default();
    strings_of(rows, |r| {
        let ms = millis(r)?;
        let zone = zone_arg(a, r)?;
        let pattern = cache.get(opt_str(f, r)?)?;
        format_instant(ms, &zone, pattern)
    })
}

/// Epoch milliseconds of each string in a Java date-time pattern (UTC unless the text
/// carries a zone); NULL where the string is NULL or does not parse.
pub(crate) fn parse_with_pattern(strings: &ArrayRef, pattern: &str) -> ArrayRef {
    use datafusion_common::arrow::array::{Int64Array, StringArray};
    let rows = strings.len();
    let patterns: ArrayRef = Arc::new(StringArray::from(vec![pattern; rows]));
    Arc::new(Int64Array::from(parse_timestamps(
        &[strings.clone(), patterns],
        rows,
    )))
}

fn parse_timestamps(a: &[ArrayRef], rows: usize) -> Vec<Option<i64>> {
    let (s, f) = (str_at(a, 0), str_at(a, 1));
    let mut cache = Patterns::default();
    (0..rows)
        .map(|r| {
            let text = opt_str(s, r)?;
            let zone = zone_arg(a, r)?;
            parse_instant(text, cache.get(opt_str(f, r)?)?, &zone)
        })
        .collect()
}

/// A time zone as Java's `ZoneId.of` reads it: a region (`Europe/London`), `UTC`, `GMT`,
/// `Z`, or an offset (`+02`, `+0200`, `+02:00`, `UTC+2`, `GMT-03:30`).
#[derive(Clone, Debug)]
pub(super) enum Zone {
    Fixed(FixedOffset),
    Region(Tz),
}

impl Zone {
    pub(super) fn parse(text: &str) -> Option<Zone> {
        let t = text.trim();
        if matches!(t, "Z" | "UTC" | "GMT" | "UT") {
            return Some(Zone::Fixed(Utc.fix()));
        }
        if t.starts_with('+') || t.starts_with('-') {
            return parse_offset(t).map(Zone::Fixed);
        }
        for prefix in ["UTC", "GMT", "UT"] {
            if let Some(rest) = t.strip_prefix(prefix)
                && (rest.starts_with('+') || rest.starts_with('-'))
            {
                return parse_offset(rest).map(Zone::Fixed);
            }
        }
        t.parse::<Tz>().ok().map(Zone::Region)
    }

    fn offset_at(&self, millis: i64) -> Option<FixedOffset> {
        let utc = DateTime::from_timestamp_millis(millis)?.naive_utc();
        Some(match self {
            Zone::Fixed(o) => *o,
            Zone::Region(tz) => tz.offset_from_utc_datetime(&utc).fix(),
        })
    }

    /// The short name of the zone at an instant (`PDT`, `BST`, `UTC`, `+02:00`).
    fn short_name(&self, millis: i64) -> Option<String> {
        let utc = DateTime::from_timestamp_millis(millis)?.naive_utc();
        Some(match self {
            Zone::Fixed(o) if o.local_minus_utc() == 0 => "UTC".to_string(),
            Zone::Fixed(o) => o.to_string(),
            Zone::Region(tz) => tz.offset_from_utc_datetime(&utc).to_string(),
        })
    }

    fn id(&self) -> String {
        match self {
            Zone::Fixed(o) if o.local_minus_utc() == 0 => "Z".to_string(),
            Zone::Fixed(o) => o.to_string(),
            Zone::Region(tz) => tz.name().to_string(),
        }
    }

    /// The instant of a wall-clock time in this zone (the earlier one when it is
    /// ambiguous, shifted forward over a gap).
    fn instant_of(&self, local: NaiveDateTime) -> Option<i64> {
        match self {
            Zone::Fixed(o) => Some(o.from_local_datetime(&local).single()?.timestamp_millis()),
            Zone::Region(tz) => {
                let mut probe = local;
                for _ in 0..4 {
                    if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                        return Some(t.timestamp_millis() - (probe - local).num_milliseconds());
                    }
                    probe = probe.checked_add_signed(Duration::minutes(30))?;
                }
                None
            }
        }
    }
}

/// `+HH`, `+HHMM`, `+HH:MM`, `+HH:MM:SS` (or with `-`).
fn parse_offset(t: &str) -> Option<FixedOffset> {
    let (sign, rest) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || digits.is_empty() {
        return None;
    }
    let (h, m, s) = match digits.len() {
        1 | 2 => (digits.parse::<i32>().ok()?, 0, 0),
        4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?, 0),
        6 => (
            digits[..2].parse().ok()?,
            digits[2..4].parse().ok()?,
            digits[4..].parse().ok()?,
        ),
        _ => return None,
    };
    if h > 18 || m > 59 || s > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60 + s))
}

/// Common abbreviations a `z` field reads, as the region Java resolves them to.
fn zone_abbreviation(name: &str) -> Option<Zone> {
    let region = match name.to_ascii_uppercase().as_str() {
        "UTC" | "GMT" | "Z" | "UT" => return Some(Zone::Fixed(Utc.fix())),
        "PST" | "PDT" | "PT" => "America/Los_Angeles",
        "MST" | "MDT" | "MT" => "America/Denver",
        "CST" | "CDT" | "CT" => "America/Chicago",
        "EST" | "EDT" | "ET" => "America/New_York",
        "AKST" | "AKDT" => "America/Anchorage",
        "HST" => "Pacific/Honolulu",
        "BST" => "Europe/London",
        "CET" | "CEST" => "Europe/Paris",
        "EET" | "EEST" => "Europe/Athens",
        "IST" => "Asia/Kolkata",
        "JST" => "Asia/Tokyo",
        _ => return None,
    };
    region.parse::<Tz>().ok().map(Zone::Region)
}

/// A piece of a Java date-time pattern.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Token {
    Field(char, usize),
    Literal(String),
}

/// Splits a Java pattern into fields and literal text; `None` for what is not supported
/// (optional sections, unknown letters, an unterminated quote).
pub(super) fn tokenize(pattern: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let push_lit = |out: &mut Vec<Token>, s: &str| match out.last_mut() {
        Some(Token::Literal(l)) => l.push_str(s),
        _ => out.push(Token::Literal(s.to_string())),
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                push_lit(&mut out, "'");
                i += 2;
                continue;
            }
            let mut lit = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return None,
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        lit.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        lit.push(*ch);
                        i += 1;
                    }
                }
            }
            push_lit(&mut out, &lit);
        } else if c.is_ascii_alphabetic() {
            let mut n = 1;
            while chars.get(i + n) == Some(&c) {
                n += 1;
            }
            if !"GuyDMLdQqYwWEecFaBhKkHmsSAnNVvzOXxZ".contains(c) {
                return None;
            }
            out.push(Token::Field(c, n));
            i += n;
        } else if matches!(c, '[' | ']' | '{' | '}' | '#') {
            return None;
        } else {
            push_lit(&mut out, &c.to_string());
            i += 1;
        }
    }
    Some(out)
}

/// Tokenized patterns of a batch: the pattern is almost always a constant.
#[derive(Default)]
struct Patterns {
    last: Option<(String, Option<Vec<Token>>)>,
}

impl Patterns {
    fn get(&mut self, pattern: &str) -> Option<&[Token]> {
        if self.last.as_ref().is_none_or(|(p, _)| p != pattern) {
            self.last = Some((pattern.to_string(), tokenize(pattern)));
        }
        self.last.as_ref().and_then(|(_, t)| t.as_deref())
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// What a value to format has: a date, a time, a zone (with the instant, for names).
struct Parts<'a> {
    date: Option<NaiveDate>,
    time: Option<NaiveTime>,
    zone: Option<(&'a Zone, i64)>,
}

fn pad(v: i64, width: usize) -> String {
    if v < 0 {
        format!("-{:0width$}", -v)
    } else {
        format!("{v:0width$}")
    }
}

fn format_offset(seconds: i32, colon: bool, with_minutes: bool, z_for_zero: bool) -> String {
    if seconds == 0 && z_for_zero {
        return "Z".to_string();
    }
    let sign = if seconds < 0 { '-' } else { '+' };
    let s = seconds.abs();
    let (h, m) = (s / 3600, s % 3600 / 60);
    match (with_minutes || m != 0, colon) {
        (false, _) => format!("{sign}{h:02}"),
        (true, true) => format!("{sign}{h:02}:{m:02}"),
        (true, false) => format!("{sign}{h:02}{m:02}"),
    }
}

fn format_parts(parts: &Parts, tokens: &[Token]) -> Option<String> {
    let mut out = String::new();
    for t in tokens {
        let (c, n) = match t {
            Token::Literal(l) => {
                out.push_str(l);
                continue;
            }
            Token::Field(c, n) => (*c, *n),
        };
        let d = || parts.date;
        let tm = || parts.time;
        let offset = || {
            let (z, ms) = parts.zone?;
            Some(z.offset_at(ms)?.local_minus_utc())
        };
        let text = match c {
            'G' => "AD".to_string(),
            'y' | 'u' | 'Y' => {
                let y = d()?.year() as i64;
                if n == 2 {
                    pad(y.rem_euclid(100), 2)
                } else {
                    pad(y, n)
                }
            }
            'M' | 'L' => {
                let m = d()?.month() as usize;
                match n {
                    1 | 2 => pad(m as i64, n),
                    3 => MONTHS[m - 1][..3].to_string(),
                    4 => MONTHS[m - 1].to_string(),
                    _ => MONTHS[m - 1][..1].to_string(),
                }
            }
            'd' => pad(d()?.day() as i64, n),
            'D' => pad(d()?.ordinal() as i64, n),
            'E' => {
                let w = d()?.weekday().num_days_from_monday() as usize;
                if n >= 4 {
                    DAYS[w].to_string()
                } else {
                    DAYS[w][..3].to_string()
                }
            }
            'a' => if tm()?.hour() < 12 { "AM" } else { "PM" }.to_string(),
            'H' => pad(tm()?.hour() as i64, n),
            'k' => pad(if tm()?.hour() == 0 { 24 } else { tm()?.hour() } as i64, n),
            'K' => pad((tm()?.hour() % 12) as i64, n),
            'h' => {
                let h = tm()?.hour() % 12;
                pad(if h == 0 { 12 } else { h } as i64, n)
            }
            'm' => pad(tm()?.minute() as i64, n),
            's' => pad(tm()?.second() as i64, n),
            'S' => {
                let nanos = format!("{:09}", tm()?.nanosecond() % 1_000_000_000);
                if n <= 9 {
                    nanos[..n].to_string()
                } else {
                    format!("{nanos}{}", "0".repeat(n - 9))
                }
            }
            'A' => pad(
                (tm()?.num_seconds_from_midnight() as i64) * 1000
                    + (tm()?.nanosecond() / 1_000_000) as i64,
                n,
            ),
            'n' => pad(tm()?.nanosecond() as i64, n),
            'z' => {
                let (z, ms) = parts.zone?;
                if n >= 4 { z.id() } else { z.short_name(ms)? }
            }
            'V' => parts.zone?.0.id(),
            'Z' => match n {
                1..=3 => format_offset(offset()?, false, true, false),
                4 => {
                    let o = offset()?;
                    if o == 0 {
                        "GMT".to_string()
                    } else {
                        format!("GMT{}", format_offset(o, true, true, false))
                    }
                }
                _ => format_offset(offset()?, true, true, true),
            },
            'X' | 'x' => {
                let z = c == 'X';
                match n {
                    1 => format_offset(offset()?, false, false, z),
                    2 | 4 => format_offset(offset()?, false, true, z),
                    _ => format_offset(offset()?, true, true, z),
                }
            }
            'O' => {
                let o = offset()?;
                if o == 0 {
                    "GMT".to_string()
                } else if n == 4 {
                    format!("GMT{}", format_offset(o, true, true, false))
                } else {
                    let h = format_offset(o, true, false, false);
                    format!("GMT{}", h.replacen("+0", "+", 1).replacen("-0", "-", 1))
                }
            }
            _ => return None,
        };
        out.push_str(&text);
    }
    Some(out)
}

fn epoch_day(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(Duration::days(days as i64))
}

pub(super) fn format_date(days: i32, tokens: &[Token]) -> Option<String> {
    let parts = Parts {
        date: Some(epoch_day(days)?),
        time: None,
        zone: None,
    };
    format_parts(&parts, tokens)
}

pub(super) fn format_time(ms: i32, tokens: &[Token]) -> Option<String> {
    let ms = ms.rem_euclid(DAY_MS as i32) as u32;
    let parts = Parts {
        date: None,
        time: NaiveTime::from_num_seconds_from_midnight_opt(ms / 1000, ms % 1000 * 1_000_000),
        zone: None,
    };
    format_parts(&parts, tokens)
}

pub(super) fn format_instant(ms: i64, zone: &Zone, tokens: &[Token]) -> Option<String> {
    let offset = zone.offset_at(ms)?;
    let local = DateTime::from_timestamp_millis(ms)?
        .naive_utc()
        .checked_add_signed(Duration::seconds(offset.local_minus_utc() as i64))?;
    let parts = Parts {
        date: Some(local.date()),
        time: Some(local.time()),
        zone: Some((zone, ms)),
    };
    format_parts(&parts, tokens)
}

/// The fields read from a string.
#[derive(Default, Debug)]
struct Parsed {
    year: Option<i64>,
    month: Option<u32>,
    day: Option<u32>,
    day_of_year: Option<u32>,
    hour: Option<u32>,
    hour12: Option<u32>,
    pm: Option<bool>,
    minute: Option<u32>,
    second: Option<u32>,
    nanos: Option<u32>,
    zone: Option<Zone>,
}

fn is_numeric_field(t: Option<&Token>) -> bool {
    matches!(t, Some(Token::Field(c, n)) if "yuYMLdDHhKkmsSAn".contains(*c) && !(matches!(c, 'M' | 'L') && *n >= 3))
}

/// Reads `min..=max` ASCII digits.
fn take_digits(s: &str, min: usize, max: usize) -> Option<(i64, &str)> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) if min > 0 && max > 4 => (true, rest),
        _ => (false, s),
    };
    let n = body
        .bytes()
        .take(max)
        .take_while(u8::is_ascii_digit)
        .count();
    if n < min || n == 0 {
        return None;
    }
    let v: i64 = body[..n].parse().ok()?;
    Some((if neg { -v } else { v }, &body[n..]))
}

/// Reads one of `names` (case-insensitively), returning its index.
fn take_name<'a>(s: &'a str, names: &[&str]) -> Option<(usize, &'a str)> {
    names.iter().enumerate().find_map(|(i, name)| {
        let head = s.get(..name.len())?;
        head.eq_ignore_ascii_case(name)
            .then(|| (i, &s[name.len()..]))
    })
}

/// Reads `text` with `tokens`; text left over after the pattern is an error unless
/// `trailing` allows it (ksqlDB's date parsing ignores it).
fn parse_fields(text: &str, tokens: &[Token], trailing: bool) -> Option<Parsed> {
    let mut p = Parsed::default();
    let mut s = text;
    for (i, t) in tokens.iter().enumerate() {
        let (c, n) = match t {
            Token::Literal(l) => {
                let head = s.get(..l.len())?;
                if !head.eq_ignore_ascii_case(l) {
                    return None;
                }
                s = &s[l.len()..];
                continue;
            }
            Token::Field(c, n) => (*c, *n),
        };
        let adjacent = is_numeric_field(tokens.get(i + 1));
        // Width of a numeric field: fixed when it has 2+ letters or a number follows it.
        let width = |min_one: usize| -> (usize, usize) {
            if n >= 2 || adjacent {
                (n.max(min_one), n.max(min_one))
            } else {
                (1, 19)
            }
        };
        match c {
            'y' | 'u' | 'Y' => {
                if n == 2 {
                    let (v, rest) = take_digits(s, 2, 2)?;
                    p.year = Some(2000 + v);
                    s = rest;
                } else {
                    let (min, max) = if adjacent { (n, n) } else { (n, 19) };
                    let (v, rest) = take_digits(s, min, max)?;
                    p.year = Some(v);
                    s = rest;
                }
            }
            'M' | 'L' if n >= 3 => {
                let names: Vec<String> = MONTHS
                    .iter()
                    .map(|m| {
                        if n == 3 {
                            m[..3].to_string()
                        } else {
                            m.to_string()
                        }
                    })
                    .collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let (i, rest) = take_name(s, &refs)?;
                p.month = Some(i as u32 + 1);
                s = rest;
            }
            'E' => {
                let names: Vec<String> = DAYS
                    .iter()
                    .map(|d| {
                        if n >= 4 {
                            d.to_string()
                        } else {
                            d[..3].to_string()
                        }
                    })
                    .collect();
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                let (_, rest) = take_name(s, &refs)?;
                s = rest;
            }
            'a' => {
                let (i, rest) = take_name(s, &["AM", "PM"])?;
                p.pm = Some(i == 1);
                s = rest;
            }
            'G' => {
                let (_, rest) = take_name(s, &["AD"])?;
                s = rest;
            }
            'S' => {
                let (v, rest) = take_digits(s, n, n)?;
                let scale = 10i64.checked_pow(9u32.checked_sub(n as u32)?)?;
                p.nanos = Some((v * scale) as u32);
                s = rest;
            }
            'M' | 'L' | 'd' | 'D' | 'H' | 'h' | 'K' | 'k' | 'm' | 's' => {
                let (min, max) = width(1);
                let (v, rest) = take_digits(s, min, max.max(min))?;
                let v = u32::try_from(v).ok()?;
                match c {
                    'M' | 'L' => p.month = Some(v),
                    'd' => p.day = Some(v),
                    'D' => p.day_of_year = Some(v),
                    'H' => p.hour = Some(v),
                    'k' => p.hour = Some(v % 24),
                    'h' => p.hour12 = Some(v % 12),
                    'K' => p.hour12 = Some(v),
                    'm' => p.minute = Some(v),
                    _ => p.second = Some(v),
                }
                s = rest;
            }
            'z' | 'V' => {
                let n = s
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || "/_+-:".contains(ch)))
                    .unwrap_or(s.len());
                let name = &s[..n];
                p.zone = Some(zone_abbreviation(name).or_else(|| Zone::parse(name))?);
                s = &s[n..];
            }
            'X' | 'x' | 'Z' | 'O' => {
                let mut rest = s;
                if c == 'O' {
                    rest = rest.strip_prefix("GMT")?;
                }
                if let Some(r) = rest.strip_prefix('Z').filter(|_| c == 'X') {
                    p.zone = Some(Zone::Fixed(Utc.fix()));
                    s = r;
                    continue;
                }
                if c == 'O' && !rest.starts_with(['+', '-']) {
                    p.zone = Some(Zone::Fixed(Utc.fix()));
                    s = rest;
                    continue;
                }
                let sign_len = 1;
                let body = rest.get(sign_len..)?;
                let len = body
                    .find(|ch: char| !(ch.is_ascii_digit() || ch == ':'))
                    .unwrap_or(body.len());
                let offset = parse_offset(&rest[..sign_len + len])?;
                p.zone = Some(Zone::Fixed(offset));
                s = &body[len..];
            }
            _ => return None,
        }
    }
    (trailing || s.is_empty()).then_some(p)
}

impl Parsed {
    fn date(&self) -> Option<NaiveDate> {
        let year = i32::try_from(self.year.unwrap_or(1970)).ok()?;
        if let Some(doy) = self.day_of_year {
            return NaiveDate::from_yo_opt(year, doy);
        }
        NaiveDate::from_ymd_opt(year, self.month.unwrap_or(1), self.day.unwrap_or(1))
    }

    fn time(&self) -> Option<NaiveTime> {
        let hour = match (self.hour, self.hour12, self.pm) {
            (Some(h), _, _) => h,
            (None, Some(h), pm) => h + if pm == Some(true) { 12 } else { 0 },
            (None, None, _) => 0,
        };
        NaiveTime::from_hms_nano_opt(
            hour,
            self.minute.unwrap_or(0),
            self.second.unwrap_or(0),
            self.nanos.unwrap_or(0),
        )
    }
}

pub(super) fn parse_date(text: &str, tokens: &[Token]) -> Option<i32> {
    let p = parse_fields(text, tokens, true)?;
    let days = (p.date()? - NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days();
    i32::try_from(days).ok()
}

pub(super) fn parse_time(text: &str, tokens: &[Token]) -> Option<i32> {
    let p = parse_fields(text, tokens, false)?;
    let t = p.time()?;
    Some((t.num_seconds_from_midnight() * 1000 + t.nanosecond() / 1_000_000) as i32)
}

/// Milliseconds since the epoch of a wall-clock time read with `tokens`, in the zone the
/// text names, else in `zone`.
pub(super) fn parse_instant(text: &str, tokens: &[Token], zone: &Zone) -> Option<i64> {
    let p = parse_fields(text, tokens, false)?;
    let local = NaiveDateTime::new(p.date()?, p.time()?);
    p.zone.as_ref().unwrap_or(zone).instant_of(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_times_parse_with_a_java_pattern() {
        use datafusion_common::arrow::array::{AsArray, StringArray};
        use datafusion_common::arrow::datatypes::Int64Type;
        let strings: ArrayRef = Arc::new(StringArray::from(vec![
            Some("2018-05-11T21:58:33Z"),
            Some("not a time"),
            None,
        ]));
        let times = parse_with_pattern(&strings, "yyyy-MM-dd'T'HH:mm:ssX");
        let times = times.as_primitive::<Int64Type>();
        assert_eq!(times.value(0), 1_526_075_913_000);
        assert!(times.is_null(1) && times.is_null(2));
    }

    fn tokens(p: &str) -> Vec<Token> {
        tokenize(p).unwrap()
    }

    fn utc() -> Zone {
        Zone::Fixed(Utc.fix())
    }

    #[test]
    fn patterns_split_into_fields_and_quoted_text() {
        assert_eq!(
            tokens("yyyy-MM-dd'T'HH''"),
            vec![
                Token::Field('y', 4),
                Token::Literal("-".into()),
                Token::Field('M', 2),
                Token::Literal("-".into()),
                Token::Field('d', 2),
                Token::Literal("T".into()),
                Token::Field('H', 2),
                Token::Literal("'".into()),
            ]
        );
        assert_eq!(tokenize("yyyy[-MM]"), None);
        assert_eq!(tokenize("'open"), None);
    }

    #[test]
    fn dates_format_and_parse() {
        assert_eq!(format_date(0, &tokens("dd/MM/yyyy")).unwrap(), "01/01/1970");
        assert_eq!(
            format_date(-1, &tokens("EEE d MMM yy")).unwrap(),
            "Wed 31 Dec 69"
        );
        assert_eq!(parse_date("1970-01-02", &tokens("yyyy-MM-dd")), Some(1));
        assert_eq!(parse_date("02-feb-1970", &tokens("dd-MMM-yyyy")), Some(32));
        assert_eq!(parse_date("19700201", &tokens("yyyyMMdd")), Some(31));
        assert_eq!(parse_date("1970", &tokens("yyyy-MM-dd")), None);
        // Text after the pattern is ignored, as ksqlDB reads dates.
        assert_eq!(
            parse_date("1970-01-02-01-01", &tokens("yyyy-MM-dd")),
            Some(1)
        );
        // A date pattern cannot format a time of day.
        assert_eq!(format_date(0, &tokens("HH")), None);
    }

    #[test]
    fn times_format_and_parse() {
        assert_eq!(
            format_time(3_723_004, &tokens("HH:mm:ss.SSS")).unwrap(),
            "01:02:03.004"
        );
        assert_eq!(format_time(13 * 3_600_000, &tokens("h a")).unwrap(), "1 PM");
        assert_eq!(parse_time("01:02:03", &tokens("HH:mm:ss")), Some(3_723_000));
        assert_eq!(
            parse_time("12:30 am", &tokens("hh:mm a")),
            Some(30 * 60_000)
        );
        assert_eq!(
            parse_time("01:00 pm", &tokens("hh:mm a")),
            Some(13 * 3_600_000)
        );
    }

    #[test]
    fn timestamps_use_zones() {
        let la = Zone::parse("America/Los_Angeles").unwrap();
        // 2020-07-01T12:00:00Z is 05:00 in Los Angeles (daylight time).
        let ms = 1_593_604_800_000;
        assert_eq!(
            format_instant(ms, &la, &tokens("yyyy-MM-dd HH:mm zzz XXX")).unwrap(),
            "2020-07-01 05:00 PDT -07:00"
        );
        assert_eq!(
            format_instant(ms, &utc(), &tokens("yyyy-MM-dd'T'HH:mm:ss.SSSX")).unwrap(),
            "2020-07-01T12:00:00.000Z"
        );
        assert_eq!(
            parse_instant("2020-07-01 05:00", &tokens("yyyy-MM-dd HH:mm"), &la),
            Some(ms)
        );
        assert_eq!(
            parse_instant(
                "2020-07-01 05:00 PST",
                &tokens("yyyy-MM-dd HH:mm z"),
                &utc()
            ),
            Some(ms)
        );
        assert_eq!(
            parse_instant(
                "2020-07-01T14:00:00+0200",
                &tokens("yyyy-MM-dd'T'HH:mm:ssX"),
                &utc()
            ),
            Some(ms)
        );
        assert_eq!(
            parse_instant(
                "2020-07-01T12:00:00.5Z",
                &tokens("yyyy-MM-dd'T'HH:mm:ss.SX"),
                &utc()
            ),
            Some(ms + 500)
        );
        // Missing fields default to 1970-01-01T00:00.
        assert_eq!(
            parse_instant("01:00", &tokens("HH:mm"), &utc()),
            Some(3_600_000)
        );
    }

    #[test]
    fn zones_read_like_java() {
        let offset = |z: &str| {
            Zone::parse(z)
                .and_then(|z| z.offset_at(0))
                .map(|o| o.local_minus_utc())
        };
        assert_eq!(offset("+0200"), Some(7200));
        assert_eq!(offset("-05:30"), Some(-19800));
        assert_eq!(offset("UTC+3"), Some(10800));
        assert_eq!(offset("Z"), Some(0));
        assert_eq!(offset("Europe/Berlin"), Some(3600));
        assert_eq!(offset("Mars/Olympus"), None);
    }

    #[test]
    fn extreme_instants_give_null_not_a_panic() {
        let la = Zone::parse("America/Los_Angeles").unwrap();
        assert_eq!(format_instant(i64::MAX, &la, &tokens("yyyy")), None);
        assert_eq!(format_instant(i64::MIN, &utc(), &tokens("yyyy")), None);
    }

    #[test]
    fn units_shift_values() {
        assert_eq!(unit_ms("DAYS"), Some(86_400_000));
        assert_eq!(unit_ms("hour"), Some(3_600_000));
        assert_eq!(unit_ms("WEEKS"), None);
    }
}
