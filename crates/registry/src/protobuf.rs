//! Protobuf schemas (parsed from `.proto` text) and protobuf's wire format, with the
//! well-known types ksqlDB maps SQL types to (wrappers, Timestamp, Date, TimeOfDay,
//! confluent.type.Decimal).
//!
//! Values cross this module as JSON, as in [`crate::avro`]: messages as objects (every
//! field present, proto3 defaults filled in), repeated fields as arrays, maps as
//! objects, enums as their symbol, bytes as base64 text, decimals as their digits,
//! dates as days, times and timestamps as milliseconds.

use crate::avro::{decimal_bytes, decimal_text, unscaled};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

type Result<T> = std::result::Result<T, String>;

/// A parsed `.proto` file: its messages, in the order written, nested ones inside.
#[derive(Clone, Debug, PartialEq)]
pub struct ProtoFile {
    pub package: String,
    pub messages: Vec<Message>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// The name as written (not qualified).
    pub name: String,
    pub fields: Vec<Field>,
    pub nested: Vec<Message>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub number: u32,
    pub label: Label,
    pub ty: FieldType,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// proto3's plain field: absent means the type's default.
    Plain,
    /// `optional` (or a oneof member): absent means NULL.
    Optional,
    Repeated,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FieldType {
    Double,
    Float,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Sint32,
    Sint64,
    Fixed32,
    Fixed64,
    Sfixed32,
    Sfixed64,
    Bool,
    String,
    Bytes,
    /// Symbols with their numbers.
    Enum(Vec<(String, i32)>),
    Message(Box<Message>),
    Map(Box<FieldType>, Box<FieldType>),
    /// `google.protobuf.<Kind>Value`: a scalar that may be NULL.
    Wrapper(Box<FieldType>),
    /// `google.protobuf.Timestamp`
    Timestamp,
    /// `google.type.Date`
    Date,
    /// `google.type.TimeOfDay`
    TimeOfDay,
    /// `confluent.type.Decimal`
    Decimal {
        precision: u32,
        scale: u32,
    },
}

impl ProtoFile {
    /// The message a record is written with: the one named `full_name` (with or without
    /// the package), else the first.
    pub fn message(&self, full_name: Option<&str>) -> Result<(&Message, Vec<i32>)> {
        let Some(name) = full_name else {
            let first = self
                .messages
                .first()
                .ok_or("the protobuf schema has no message")?;
            return Ok((first, vec![0]));
        };
        let name = name
            .strip_prefix(&format!("{}.", self.package))
            .filter(|_| !self.package.is_empty())
            .unwrap_or(name);
        find_path(&self.messages, name)
            .ok_or_else(|| format!("the protobuf schema has no message {name}"))
    }

    /// The message at a path of indexes (as record framing gives it).
    pub fn message_at(&self, path: &[i32]) -> Result<&Message> {
        let mut level = &self.messages;
        let mut found = None;
        for &i in path {
            let m = usize::try_from(i)
                .ok()
                .and_then(|i| level.get(i))
                .ok_or_else(|| format!("the protobuf schema has no message at {path:?}"))?;
            level = &m.nested;
            found = Some(m);
        }
        found.ok_or_else(|| "an empty message path".into())
    }
}

fn find_path<'a>(messages: &'a [Message], name: &str) -> Option<(&'a Message, Vec<i32>)> {
    let (head, rest) = match name.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (name, None),
    };
    let i = messages.iter().position(|m| m.name == head)?;
    match rest {
        None => Some((&messages[i], vec![i as i32])),
        Some(rest) => {
            let (m, mut path) = find_path(&messages[i].nested, rest)?;
            path.insert(0, i as i32);
            Some((m, path))
        }
    }
}

// ---- parsing ----

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    Str(String),
    Sym(char),
}

fn tokenize(text: &str) -> Result<Vec<Token>> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            out.push(Token::Str(s));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let v = match text.strip_prefix("0x") {
                Some(hex) => i64::from_str_radix(hex, 16).ok(),
                None => text.parse().ok(),
            };
            // Floats only appear in options, which are skipped: keep them as 0.
            out.push(Token::Int(v.unwrap_or(0)));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            out.push(Token::Sym(c));
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

/// A field as written, before its type name is resolved.
struct RawField {
    name: String,
    number: u32,
    label: Label,
    ty: RawType,
    decimal: (Option<u32>, Option<u32>),
}

enum RawType {
    Named(String),
    Map(String, String),
}

/// A file as written.
struct RawFile {
    package: String,
    messages: Vec<RawMessage>,
    enums: Vec<RawEnum>,
    imports: Vec<String>,
}

/// An enum as written: its name and its symbols with their numbers.
type RawEnum = (String, Vec<(String, i32)>);

struct RawMessage {
    name: String,
    fields: Vec<RawField>,
    nested: Vec<RawMessage>,
    enums: Vec<RawEnum>,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Result<Token> {
        let t = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or("Invalid protobuf schema: it ends too early")?;
        self.pos += 1;
        Ok(t)
    }

    fn ident(&mut self) -> Result<String> {
        match self.next()? {
            Token::Ident(s) => Ok(s),
            other => Err(format!(
                "Invalid protobuf schema: expected a name, found {other:?}"
            )),
        }
    }

    fn expect(&mut self, c: char) -> Result<()> {
        match self.next()? {
            Token::Sym(s) if s == c => Ok(()),
            other => Err(format!(
                "Invalid protobuf schema: expected '{c}', found {other:?}"
            )),
        }
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Token::Sym(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skips to the end of a statement (`;`), over any balanced braces.
    fn skip_statement(&mut self) -> Result<()> {
        let mut depth = 0;
        loop {
            match self.next()? {
                Token::Sym('{') => depth += 1,
                Token::Sym('}') => {
                    depth -= 1;
                    if depth == 0 {
                        self.eat(';');
                        return Ok(());
                    }
                }
                Token::Sym(';') if depth == 0 => return Ok(()),
                _ => {}
            }
        }
    }

    fn file(&mut self) -> Result<RawFile> {
        let (mut package, mut messages, mut enums) = (String::new(), Vec::new(), Vec::new());
        let mut imports = Vec::new();
        while let Some(t) = self.peek().cloned() {
            match t {
                Token::Ident(k) if k == "import" => {
                    self.pos += 1;
                    if matches!(self.peek(), Some(Token::Ident(m)) if m == "public" || m == "weak")
                    {
                        self.pos += 1;
                    }
                    if let Token::Str(name) = self.next()? {
                        imports.push(name);
                    }
                    self.expect(';')?;
                }
                Token::Ident(k) if k == "message" => {
                    self.pos += 1;
                    messages.push(self.message()?);
                }
                Token::Ident(k) if k == "enum" => {
                    self.pos += 1;
                    enums.push(self.enumeration()?);
                }
                Token::Ident(k) if k == "package" => {
                    self.pos += 1;
                    package = self.ident()?;
                    self.expect(';')?;
                }
                Token::Sym(';') => self.pos += 1,
                _ => self.skip_statement()?,
            }
        }
        Ok(RawFile {
            package,
            messages,
            enums,
            imports,
        })
    }

    fn enumeration(&mut self) -> Result<RawEnum> {
        let name = self.ident()?;
        self.expect('{')?;
        let mut symbols = Vec::new();
        while !self.eat('}') {
            let symbol = self.ident()?;
            if symbol == "option" || symbol == "reserved" {
                self.skip_statement()?;
                continue;
            }
            self.expect('=')?;
            let Token::Int(n) = self.next()? else {
                return Err("Invalid protobuf schema: an enum value needs a number".into());
            };
            if self.peek() == Some(&Token::Sym('[')) {
                self.skip_options()?;
            }
            self.expect(';')?;
            symbols.push((symbol, n as i32));
        }
        Ok((name, symbols))
    }

    /// Skips `[ ... ]`, returning the decimal precision and scale a
    /// `confluent.field_meta` option gives.
    fn skip_options(&mut self) -> Result<(Option<u32>, Option<u32>)> {
        self.expect('[')?;
        let (mut precision, mut scale) = (None, None);
        let mut depth = 1;
        let mut pending: (Option<String>, Option<String>) = (None, None);
        while depth > 0 {
            match self.next()? {
                Token::Sym('[') => depth += 1,
                Token::Sym(']') => depth -= 1,
                Token::Ident(k) if k == "key" || k == "value" => {
                    self.eat(':');
                    if let Token::Str(s) = self.next()? {
                        if k == "key" {
                            pending.0 = Some(s);
                        } else {
                            pending.1 = Some(s);
                        }
                    }
                    if let (Some(key), Some(value)) = (&pending.0, &pending.1) {
                        match key.as_str() {
                            "precision" => precision = value.parse().ok(),
                            "scale" => scale = value.parse().ok(),
                            _ => {}
                        }
                        pending = (None, None);
                    }
                }
                _ => {}
            }
        }
        Ok((precision, scale))
    }

    fn field(&mut self, first: String, oneof: bool) -> Result<RawField> {
        let mut label = if oneof { Label::Optional } else { Label::Plain };
        let type_name = match first.as_str() {
            "optional" => {
                label = Label::Optional;
                self.ident()?
            }
            "repeated" => {
                label = Label::Repeated;
                self.ident()?
            }
            "required" => self.ident()?,
            _ => first,
        };
        let ty = if type_name == "map" {
            self.expect('<')?;
            let k = self.ident()?;
            self.expect(',')?;
            let v = self.ident()?;
            self.expect('>')?;
            RawType::Map(k, v)
        } else {
            RawType::Named(type_name)
        };
        let name = self.ident()?;
        self.expect('=')?;
        let Token::Int(number) = self.next()? else {
            return Err(format!(
                "Invalid protobuf schema: field {name} needs a number"
            ));
        };
        let decimal = if self.peek() == Some(&Token::Sym('[')) {
            self.skip_options()?
        } else {
            (None, None)
        };
        self.expect(';')?;
        Ok(RawField {
            name,
            number: number as u32,
            label,
            ty,
            decimal,
        })
    }

    fn message(&mut self) -> Result<RawMessage> {
        let name = self.ident()?;
        self.expect('{')?;
        let mut m = RawMessage {
            name,
            fields: Vec::new(),
            nested: Vec::new(),
            enums: Vec::new(),
        };
        loop {
            match self.next()? {
                Token::Sym('}') => return Ok(m),
                Token::Sym(';') => {}
                Token::Ident(k) if k == "message" => m.nested.push(self.message()?),
                Token::Ident(k) if k == "enum" => m.enums.push(self.enumeration()?),
                Token::Ident(k) if k == "oneof" => {
                    self.ident()?;
                    self.expect('{')?;
                    while !self.eat('}') {
                        let first = self.ident()?;
                        if first == "option" {
                            self.skip_statement()?;
                            continue;
                        }
                        m.fields.push(self.field(first, true)?);
                    }
                }
                Token::Ident(k)
                    if matches!(k.as_str(), "option" | "reserved" | "extensions" | "extend") =>
                {
                    self.skip_statement()?
                }
                Token::Ident(first) => m.fields.push(self.field(first, false)?),
                other => {
                    return Err(format!(
                        "Invalid protobuf schema: unexpected {other:?} in message {}",
                        m.name
                    ));
                }
            }
        }
    }
}

/// Resolves type names: scalars, well-known types, then messages and enums from the
/// innermost scope out.
struct Resolver<'a> {
    /// Scopes from the file down to the message being resolved.
    scopes: Vec<(&'a [RawMessage], &'a [RawEnum])>,
    depth: usize,
}

impl<'a> Resolver<'a> {
    fn message(&mut self, m: &'a RawMessage) -> Result<Message> {
        self.depth += 1;
        if self.depth > 32 {
            return Err("recursive protobuf messages are not supported".into());
        }
        self.scopes.push((&m.nested, &m.enums));
        let mut fields = Vec::with_capacity(m.fields.len());
        for f in &m.fields {
            let ty = match &f.ty {
                RawType::Named(n) => self.named(n, f.decimal)?,
                RawType::Map(k, v) => FieldType::Map(
                    Box::new(self.named(k, (None, None))?),
                    Box::new(self.named(v, (None, None))?),
                ),
            };
            fields.push(Field {
                name: f.name.clone(),
                number: f.number,
                label: f.label,
                ty,
            });
        }
        let nested = m
            .nested
            .iter()
            .map(|n| self.message(n))
            .collect::<Result<_>>()?;
        self.scopes.pop();
        self.depth -= 1;
        Ok(Message {
            name: m.name.clone(),
            fields,
            nested,
        })
    }

    fn named(&mut self, name: &str, decimal: (Option<u32>, Option<u32>)) -> Result<FieldType> {
        let scalar = match name {
            "double" => Some(FieldType::Double),
            "float" => Some(FieldType::Float),
            "int32" => Some(FieldType::Int32),
            "int64" => Some(FieldType::Int64),
            "uint32" => Some(FieldType::Uint32),
            "uint64" => Some(FieldType::Uint64),
            "sint32" => Some(FieldType::Sint32),
            "sint64" => Some(FieldType::Sint64),
            "fixed32" => Some(FieldType::Fixed32),
            "fixed64" => Some(FieldType::Fixed64),
            "sfixed32" => Some(FieldType::Sfixed32),
            "sfixed64" => Some(FieldType::Sfixed64),
            "bool" => Some(FieldType::Bool),
            "string" => Some(FieldType::String),
            "bytes" => Some(FieldType::Bytes),
            _ => None,
        };
        if let Some(s) = scalar {
            return Ok(s);
        }
        let bare = name.trim_start_matches('.');
        let wrapped = |t: FieldType| Ok(FieldType::Wrapper(Box::new(t)));
        match bare {
            "google.protobuf.Timestamp" => return Ok(FieldType::Timestamp),
            "google.type.Date" => return Ok(FieldType::Date),
            "google.type.TimeOfDay" => return Ok(FieldType::TimeOfDay),
            "confluent.type.Decimal" => {
                return Ok(FieldType::Decimal {
                    precision: decimal.0.unwrap_or(64),
                    scale: decimal.1.unwrap_or(0),
                });
            }
            "google.protobuf.DoubleValue" => return wrapped(FieldType::Double),
            "google.protobuf.FloatValue" => return wrapped(FieldType::Float),
            "google.protobuf.Int64Value" => return wrapped(FieldType::Int64),
            "google.protobuf.UInt64Value" => return wrapped(FieldType::Uint64),
            "google.protobuf.Int32Value" => return wrapped(FieldType::Int32),
            "google.protobuf.UInt32Value" => return wrapped(FieldType::Uint32),
            "google.protobuf.BoolValue" => return wrapped(FieldType::Bool),
            "google.protobuf.StringValue" => return wrapped(FieldType::String),
            "google.protobuf.BytesValue" => return wrapped(FieldType::Bytes),
            _ => {}
        }
        // The last part names the type; earlier parts walk down from a scope.
        let parts: Vec<&str> = bare.split('.').collect();
        for level in (0..self.scopes.len()).rev() {
            let (messages, enums) = self.scopes[level];
            if let Some(t) = self.lookup(messages, enums, &parts)? {
                return Ok(t);
            }
        }
        Err(format!("Invalid protobuf schema: unknown type {name}"))
    }

    fn lookup(
        &mut self,
        messages: &'a [RawMessage],
        enums: &'a [RawEnum],
        parts: &[&str],
    ) -> Result<Option<FieldType>> {
        match parts {
            [] => Ok(None),
            [last] => {
                if let Some((_, symbols)) = enums.iter().find(|(n, _)| n == last) {
                    return Ok(Some(FieldType::Enum(symbols.clone())));
                }
                match messages.iter().find(|m| m.name == *last) {
                    Some(m) => Ok(Some(FieldType::Message(Box::new(self.message(m)?)))),
                    None => Ok(None),
                }
            }
            [first, rest @ ..] => match messages.iter().find(|m| m.name == *first) {
                Some(m) => {
                    self.scopes.push((&m.nested, &m.enums));
                    let found = self.lookup(&m.nested, &m.enums, rest);
                    self.scopes.pop();
                    found
                }
                // A package prefix: skip it.
                None => self.lookup(messages, enums, rest),
            },
        }
    }
}

/// Parses `.proto` text that imports nothing but the well-known types.
pub fn parse(text: &str) -> Result<ProtoFile> {
    parse_with_imports(text, &BTreeMap::new())
}

fn parse_raw(text: &str) -> Result<RawFile> {
    Parser {
        tokens: tokenize(text)?,
        pos: 0,
    }
    .file()
}

/// Parses `.proto` text whose imports are among `imports` (file name to text; imports
/// of the well-known types need none). The messages are the file's own; the imported
/// files' messages and enums serve as field types.
pub fn parse_with_imports(text: &str, imports: &BTreeMap<String, String>) -> Result<ProtoFile> {
    let main = parse_raw(text)?;
    let own = main.messages.len();
    let (mut messages, mut enums) = (main.messages, main.enums);
    let mut pending = main.imports;
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(imported) = imports.get(&name) {
            let f = parse_raw(imported)?;
            pending.extend(f.imports);
            messages.extend(f.messages);
            enums.extend(f.enums);
        }
    }
    let mut r = Resolver {
        scopes: vec![(&messages, &enums)],
        depth: 0,
    };
    let resolved = messages[..own]
        .iter()
        .map(|m| r.message(m))
        .collect::<Result<_>>()?;
    Ok(ProtoFile {
        package: main.package,
        messages: resolved,
    })
}

// ---- wire format ----

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

/// Writes the message indexes of Confluent's protobuf framing (after the schema id).
pub fn write_message_indexes(out: &mut Vec<u8>, path: &[i32]) {
    if path == [0] {
        out.push(0);
        return;
    }
    write_varint(out, zigzag(path.len() as i64));
    for i in path {
        write_varint(out, zigzag(i64::from(*i)));
    }
}

/// Reads the message indexes of Confluent's protobuf framing.
pub fn read_message_indexes(r: &mut Reader<'_>) -> Result<Vec<i32>> {
    let n = unzigzag(r.varint()?);
    if n == 0 {
        return Ok(vec![0]);
    }
    if !(0..=64).contains(&n) {
        return Err(format!("Invalid protobuf framing: {n} message indexes"));
    }
    (0..n).map(|_| Ok(unzigzag(r.varint()?) as i32)).collect()
}

pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(TRUNCATED)?;
            self.buf = rest;
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("Invalid protobuf data: a varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(TRUNCATED.into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn skip(&mut self, wire: u64) -> Result<()> {
        match wire {
            0 => {
                self.varint()?;
            }
            1 => {
                self.take(8)?;
            }
            2 => {
                let n = self.varint()? as usize;
                self.take(n)?;
            }
            5 => {
                self.take(4)?;
            }
            other => return Err(format!("Invalid protobuf data: wire type {other}")),
        }
        Ok(())
    }
}

const TRUNCATED: &str = "Invalid protobuf data: the record ends too early";

/// Reads a message as JSON (see the module's overview).
pub fn read_message(m: &Message, bytes: &[u8], decimal_numbers: bool) -> Result<Value> {
    let mut raw: Vec<Vec<Raw<'_>>> = vec![Vec::new(); m.fields.len()];
    let mut r = Reader::new(bytes);
    while !r.buf.is_empty() {
        let tag = r.varint()?;
        let (number, wire) = ((tag >> 3) as u32, tag & 7);
        let Some(i) = m.fields.iter().position(|f| f.number == number) else {
            r.skip(wire)?;
            continue;
        };
        let v = match wire {
            0 => Raw::Varint(r.varint()?),
            1 => Raw::Fixed(u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"))),
            5 => Raw::Fixed(u64::from(u32::from_le_bytes(
                r.take(4)?.try_into().expect("4 bytes"),
            ))),
            2 => {
                let n = r.varint()? as usize;
                Raw::Bytes(r.take(n)?)
            }
            other => return Err(format!("Invalid protobuf data: wire type {other}")),
        };
        raw[i].push(v);
    }
    let mut obj = Map::with_capacity(m.fields.len());
    for (f, values) in m.fields.iter().zip(raw) {
        let v = match (f.label, &f.ty) {
            (_, FieldType::Map(k, v)) => {
                let mut out = Map::new();
                for entry in values {
                    let Raw::Bytes(b) = entry else {
                        return Err(format!("Invalid protobuf data: map field {}", f.name));
                    };
                    let e = read_entry(k, v, b, decimal_numbers)?;
                    out.insert(e.0, e.1);
                }
                Value::Object(out)
            }
            (Label::Repeated, ty) => {
                let mut out = Vec::new();
                for v in values {
                    match (v, packable(ty)) {
                        (Raw::Bytes(b), Some(wire)) => {
                            let mut pr = Reader::new(b);
                            while !pr.buf.is_empty() {
                                let item = match wire {
                                    0 => Raw::Varint(pr.varint()?),
                                    1 => Raw::Fixed(u64::from_le_bytes(
                                        pr.take(8)?.try_into().expect("8 bytes"),
                                    )),
                                    _ => Raw::Fixed(u64::from(u32::from_le_bytes(
                                        pr.take(4)?.try_into().expect("4 bytes"),
                                    ))),
                                };
                                out.push(scalar(ty, &item, decimal_numbers)?);
                            }
                        }
                        (v, _) => out.push(scalar(ty, &v, decimal_numbers)?),
                    }
                }
                Value::Array(out)
            }
            (label, ty) => match values.last() {
                Some(v) => scalar(ty, v, decimal_numbers)?,
                None if label == Label::Optional => Value::Null,
                None => default_of(ty),
            },
        };
        obj.insert(f.name.clone(), v);
    }
    Ok(Value::Object(obj))
}

fn read_entry(
    k: &FieldType,
    v: &FieldType,
    bytes: &[u8],
    decimal_numbers: bool,
) -> Result<(String, Value)> {
    let entry = Message {
        name: "Entry".into(),
        fields: vec![
            Field {
                name: "key".into(),
                number: 1,
                label: Label::Plain,
                ty: k.clone(),
            },
            Field {
                name: "value".into(),
                number: 2,
                label: Label::Plain,
                ty: v.clone(),
            },
        ],
        nested: Vec::new(),
    };
    let Value::Object(mut o) = read_message(&entry, bytes, decimal_numbers)? else {
        unreachable!("a message reads as an object")
    };
    let key = match o.remove("key") {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Ok((key, o.remove("value").unwrap_or(Value::Null)))
}

#[derive(Clone, Copy)]
enum Raw<'a> {
    Varint(u64),
    Fixed(u64),
    Bytes(&'a [u8]),
}

/// The wire type a packed repeated field's items have.
fn packable(ty: &FieldType) -> Option<u64> {
    match ty {
        FieldType::Double | FieldType::Fixed64 | FieldType::Sfixed64 => Some(1),
        FieldType::Float | FieldType::Fixed32 | FieldType::Sfixed32 => Some(5),
        FieldType::Int32
        | FieldType::Int64
        | FieldType::Uint32
        | FieldType::Uint64
        | FieldType::Sint32
        | FieldType::Sint64
        | FieldType::Bool
        | FieldType::Enum(_) => Some(0),
        _ => None,
    }
}

/// A proto3 field's value when it is absent.
fn default_of(ty: &FieldType) -> Value {
    match ty {
        FieldType::Double | FieldType::Float => json!(0.0),
        FieldType::Bool => json!(false),
        FieldType::String | FieldType::Bytes => json!(""),
        FieldType::Enum(symbols) => symbols
            .iter()
            .find(|(_, n)| *n == 0)
            .or(symbols.first())
            .map_or(Value::Null, |(s, _)| json!(s)),
        FieldType::Message(_)
        | FieldType::Wrapper(_)
        | FieldType::Timestamp
        | FieldType::Date
        | FieldType::TimeOfDay
        | FieldType::Decimal { .. } => Value::Null,
        FieldType::Map(..) => json!({}),
        _ => json!(0),
    }
}

fn scalar(ty: &FieldType, v: &Raw<'_>, decimal_numbers: bool) -> Result<Value> {
    let bad = || format!("Invalid protobuf data for a {ty:?} field");
    Ok(match (ty, *v) {
        (FieldType::Int32, Raw::Varint(x)) => json!(x as i32),
        (FieldType::Int64, Raw::Varint(x)) => json!(x as i64),
        (FieldType::Uint32, Raw::Varint(x)) => json!(x as u32),
        (FieldType::Uint64, Raw::Varint(x)) => json!(x),
        (FieldType::Sint32 | FieldType::Sint64, Raw::Varint(x)) => json!(unzigzag(x)),
        (FieldType::Bool, Raw::Varint(x)) => json!(x != 0),
        (FieldType::Enum(symbols), Raw::Varint(x)) => symbols
            .iter()
            .find(|(_, n)| i64::from(*n) == x as i64)
            .map_or(Value::Null, |(s, _)| json!(s)),
        (FieldType::Fixed32, Raw::Fixed(x)) => json!(x as u32),
        (FieldType::Sfixed32, Raw::Fixed(x)) => json!(x as u32 as i32),
        (FieldType::Fixed64, Raw::Fixed(x)) => json!(x),
        (FieldType::Sfixed64, Raw::Fixed(x)) => json!(x as i64),
        (FieldType::Float, Raw::Fixed(x)) => float(f64::from(f32::from_bits(x as u32))),
        (FieldType::Double, Raw::Fixed(x)) => float(f64::from_bits(x)),
        (FieldType::String, Raw::Bytes(b)) => json!(
            std::str::from_utf8(b)
                .map_err(|_| "Invalid protobuf data: a string that is not UTF-8")?
        ),
        (FieldType::Bytes, Raw::Bytes(b)) => json!(crate::avro::base64(b)),
        (FieldType::Message(m), Raw::Bytes(b)) => read_message(m, b, decimal_numbers)?,
        (FieldType::Wrapper(inner), Raw::Bytes(b)) => {
            let m = wrapper_message(inner);
            read_message(&m, b, decimal_numbers)?["value"].take()
        }
        (FieldType::Timestamp, Raw::Bytes(b)) => {
            let o = read_message(&well_known("seconds", "nanos"), b, false)?;
            json!(
                o["seconds"].as_i64().unwrap_or(0) * 1000
                    + o["nanos"].as_i64().unwrap_or(0) / 1_000_000
            )
        }
        (FieldType::Date, Raw::Bytes(b)) => {
            let o = read_message(&date_message(), b, false)?;
            let (y, m, d) = (
                o["year"].as_i64().unwrap_or(0),
                o["month"].as_i64().unwrap_or(1),
                o["day"].as_i64().unwrap_or(1),
            );
            json!(days_from_civil(y, m, d))
        }
        (FieldType::TimeOfDay, Raw::Bytes(b)) => {
            let o = read_message(&time_message(), b, false)?;
            let part = |k: &str| o[k].as_i64().unwrap_or(0);
            json!(
                ((part("hours") * 60 + part("minutes")) * 60 + part("seconds")) * 1000
                    + part("nanos") / 1_000_000
            )
        }
        (FieldType::Decimal { scale, .. }, Raw::Bytes(b)) => {
            let o = read_message(&decimal_message(), b, false)?;
            let raw = crate::avro::unbase64(o["value"].as_str().unwrap_or(""))?;
            let text = if raw.is_empty() {
                "0".to_string()
            } else {
                decimal_text(&raw, *scale)?
            };
            match serde_json::from_str(&text) {
                Ok(n) if decimal_numbers => n,
                _ => json!(text),
            }
        }
        _ => return Err(bad()),
    })
}

fn float(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

fn plain(name: &str, number: u32, ty: FieldType) -> Field {
    Field {
        name: name.into(),
        number,
        label: Label::Plain,
        ty,
    }
}

fn wrapper_message(inner: &FieldType) -> Message {
    Message {
        name: "Wrapper".into(),
        fields: vec![plain("value", 1, inner.clone())],
        nested: Vec::new(),
    }
}

fn well_known(a: &str, b: &str) -> Message {
    Message {
        name: "Timestamp".into(),
        fields: vec![plain(a, 1, FieldType::Int64), plain(b, 2, FieldType::Int32)],
        nested: Vec::new(),
    }
}

fn date_message() -> Message {
    Message {
        name: "Date".into(),
        fields: vec![
            plain("year", 1, FieldType::Int32),
            plain("month", 2, FieldType::Int32),
            plain("day", 3, FieldType::Int32),
        ],
        nested: Vec::new(),
    }
}

fn time_message() -> Message {
    Message {
        name: "TimeOfDay".into(),
        fields: vec![
            plain("hours", 1, FieldType::Int32),
            plain("minutes", 2, FieldType::Int32),
            plain("seconds", 3, FieldType::Int32),
            plain("nanos", 4, FieldType::Int32),
        ],
        nested: Vec::new(),
    }
}

fn decimal_message() -> Message {
    Message {
        name: "Decimal".into(),
        fields: vec![
            plain("value", 1, FieldType::Bytes),
            plain("precision", 2, FieldType::Uint32),
            plain("scale", 3, FieldType::Int32),
        ],
        nested: Vec::new(),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Writes a JSON value (the module's shape) as message `m`. NULLs are left out, so a
/// plain proto3 field reads back as its default.
pub fn write_message(m: &Message, v: &Value, out: &mut Vec<u8>) -> Result<()> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("cannot write {v} as protobuf message {}", m.name))?;
    for f in &m.fields {
        let fv = obj.get(&f.name).or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&f.name))
                .map(|(_, v)| v)
        });
        let Some(fv) = fv.filter(|v| !v.is_null()) else {
            continue;
        };
        write_field(f, fv, out).map_err(|e| format!("field {}: {e}", f.name))?;
    }
    Ok(())
}

fn write_tag(out: &mut Vec<u8>, number: u32, wire: u64) {
    write_varint(out, (u64::from(number) << 3) | wire);
}

fn write_field(f: &Field, v: &Value, out: &mut Vec<u8>) -> Result<()> {
    match (&f.ty, f.label) {
        (FieldType::Map(k, vt), _) => {
            let entries = v.as_object().ok_or_else(|| format!("{v} is not a map"))?;
            let entry = |key: &str, value: &Value| -> Result<Vec<u8>> {
                let mut b = Vec::new();
                let key_value = match **k {
                    FieldType::String => json!(key),
                    _ => serde_json::from_str(key).unwrap_or(json!(key)),
                };
                write_field(&plain("key", 1, (**k).clone()), &key_value, &mut b)?;
                if !value.is_null() {
                    write_field(&plain("value", 2, (**vt).clone()), value, &mut b)?;
                }
                Ok(b)
            };
            for (key, value) in entries {
                let b = entry(key, value)?;
                write_tag(out, f.number, 2);
                write_varint(out, b.len() as u64);
                out.extend_from_slice(&b);
            }
        }
        (ty, Label::Repeated) => {
            let items = v.as_array().ok_or_else(|| format!("{v} is not an array"))?;
            let one = plain(&f.name, f.number, ty.clone());
            for item in items {
                // NULL elements cannot be written; they read back as defaults.
                let item = if item.is_null() {
                    &default_of(ty)
                } else {
                    item
                };
                if item.is_null() {
                    write_tag(out, f.number, 2);
                    write_varint(out, 0);
                    continue;
                }
                write_field(&one, item, out)?;
            }
        }
        (ty, _) => write_single(f.number, ty, v, out)?,
    }
    Ok(())
}

fn int_of(v: &Value) -> Result<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u as i64))
            .ok_or_else(|| format!("{v} is not an integer")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{v} is not an integer")),
        Value::Bool(b) => Ok(i64::from(*b)),
        _ => Err(format!("{v} is not an integer")),
    }
}

fn float_of(v: &Value) -> Result<f64> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("{v} is not a number")),
        Value::String(s) => s.trim().parse().map_err(|_| format!("{v} is not a number")),
        _ => Err(format!("{v} is not a number")),
    }
}

fn write_single(number: u32, ty: &FieldType, v: &Value, out: &mut Vec<u8>) -> Result<()> {
    let nested = |out: &mut Vec<u8>, m: &Message, v: &Value| -> Result<()> {
        let mut b = Vec::new();
        write_message(m, v, &mut b)?;
        write_tag(out, number, 2);
        write_varint(out, b.len() as u64);
        out.extend_from_slice(&b);
        Ok(())
    };
    match ty {
        FieldType::Int32 | FieldType::Int64 | FieldType::Uint32 | FieldType::Uint64 => {
            write_tag(out, number, 0);
            write_varint(out, int_of(v)? as u64);
        }
        FieldType::Sint32 | FieldType::Sint64 => {
            write_tag(out, number, 0);
            write_varint(out, zigzag(int_of(v)?));
        }
        FieldType::Bool => {
            write_tag(out, number, 0);
            let b = match v {
                Value::Bool(b) => *b,
                Value::String(s) => s.eq_ignore_ascii_case("true"),
                _ => return Err(format!("{v} is not a boolean")),
            };
            write_varint(out, u64::from(b));
        }
        FieldType::Enum(symbols) => {
            let n = match v {
                Value::String(s) => symbols
                    .iter()
                    .find(|(x, _)| x == s)
                    .map(|(_, n)| *n)
                    .ok_or_else(|| format!("{s} is not a symbol of the enum"))?,
                other => int_of(other)? as i32,
            };
            write_tag(out, number, 0);
            write_varint(out, i64::from(n) as u64);
        }
        FieldType::Fixed32 | FieldType::Sfixed32 => {
            write_tag(out, number, 5);
            out.extend_from_slice(&(int_of(v)? as u32).to_le_bytes());
        }
        FieldType::Fixed64 | FieldType::Sfixed64 => {
            write_tag(out, number, 1);
            out.extend_from_slice(&(int_of(v)? as u64).to_le_bytes());
        }
        FieldType::Float => {
            write_tag(out, number, 5);
            out.extend_from_slice(&(float_of(v)? as f32).to_le_bytes());
        }
        FieldType::Double => {
            write_tag(out, number, 1);
            out.extend_from_slice(&float_of(v)?.to_le_bytes());
        }
        FieldType::String => {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            write_tag(out, number, 2);
            write_varint(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        FieldType::Bytes => {
            let b = crate::avro::unbase64(v.as_str().ok_or_else(|| format!("{v} is not bytes"))?)?;
            write_tag(out, number, 2);
            write_varint(out, b.len() as u64);
            out.extend_from_slice(&b);
        }
        FieldType::Message(m) => nested(out, m, v)?,
        FieldType::Map(..) => return Err("a map inside a map".into()),
        FieldType::Wrapper(inner) => nested(out, &wrapper_message(inner), &json!({"value": v}))?,
        FieldType::Timestamp => {
            let ms = int_of(v)?;
            let t =
                json!({"seconds": ms.div_euclid(1000), "nanos": ms.rem_euclid(1000) * 1_000_000});
            nested(out, &well_known("seconds", "nanos"), &t)?
        }
        FieldType::Date => {
            let (y, m, d) = civil_from_days(int_of(v)?);
            nested(
                out,
                &date_message(),
                &json!({"year": y, "month": m, "day": d}),
            )?
        }
        FieldType::TimeOfDay => {
            let ms = int_of(v)?;
            let t = json!({"hours": ms / 3_600_000, "minutes": ms / 60_000 % 60,
                "seconds": ms / 1000 % 60, "nanos": ms % 1000 * 1_000_000});
            nested(out, &time_message(), &t)?
        }
        FieldType::Decimal { precision, scale } => {
            let text = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return Err(format!("{v} is not a decimal")),
            };
            let bytes = decimal_bytes(unscaled(&text, *scale)?);
            let d = json!({"value": crate::avro::base64(&bytes), "precision": precision, "scale": scale});
            nested(out, &decimal_message(), &d)?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_nested_messages_enums_maps_and_options_parses() {
        let f = parse(
            r#"syntax = "proto3"; package p.q;
            import "confluent/type/decimal.proto";
            // a comment
            message Outer {
              enum Suit { SPADES = 0; HEARTS = 1; }
              message Inner { int32 f1 = 1; }
              Inner c1 = 1;
              repeated string tags = 2;
              map<string, int64> counts = 3;
              optional Suit suit = 4;
              confluent.type.Decimal d = 5 [(confluent.field_meta) = { params: [{ value: "4", key: "precision" }, { value: "2", key: "scale" }]}];
              oneof choice { string a = 6; int32 b = 7; }
            }
            message Second { Outer.Inner x = 1; }"#,
        )
        .unwrap();
        assert_eq!(f.package, "p.q");
        let (outer, path) = f.message(None).unwrap();
        assert_eq!(path, vec![0]);
        assert_eq!(outer.fields.len(), 7);
        assert_eq!(
            outer.fields[4].ty,
            FieldType::Decimal {
                precision: 4,
                scale: 2
            }
        );
        assert_eq!(outer.fields[5].label, Label::Optional);
        let (second, path) = f.message(Some("p.q.Second")).unwrap();
        assert_eq!(path, vec![1]);
        assert!(matches!(second.fields[0].ty, FieldType::Message(_)));
        assert_eq!(f.message(Some("Outer.Inner")).unwrap().1, vec![0, 0]);
    }

    #[test]
    fn messages_round_trip_with_defaults_for_absent_fields() {
        let f = parse(
            r#"syntax = "proto3";
            import "google/protobuf/wrappers.proto";
            import "google/protobuf/timestamp.proto";
            message M {
              int32 i = 1; int64 l = 2; double d = 3; bool b = 4; string s = 5;
              repeated int32 arr = 6; map<string, string> m = 7;
              google.protobuf.Int32Value w = 8; optional int32 o = 9;
              message N { sint64 x = 1; } N n = 10; bytes by = 11;
              google.protobuf.Timestamp ts = 12; google.type.Date dt = 13;
              google.type.TimeOfDay t = 14; uint32 u = 15; float f = 16;
            }"#,
        )
        .unwrap();
        let (m, _) = f.message(None).unwrap();
        let full = json!({"i": -5, "l": 1i64 << 40, "d": 1.5, "b": true, "s": "x",
            "arr": [1, 0, -2], "m": {"k": "v"}, "w": 0, "o": 0, "n": {"x": -3},
            "by": "AQI=", "ts": 1234, "dt": -1, "t": 3_723_004, "u": 4_000_000_000u64, "f": 0.5});
        let mut out = Vec::new();
        write_message(m, &full, &mut out).unwrap();
        assert_eq!(read_message(m, &out, false).unwrap(), full);
        let mut empty = Vec::new();
        write_message(m, &json!({"w": null, "o": null}), &mut empty).unwrap();
        assert!(empty.is_empty());
        assert_eq!(
            read_message(m, &empty, false).unwrap(),
            json!({"i": 0, "l": 0, "d": 0.0, "b": false, "s": "", "arr": [], "m": {},
                "w": null, "o": null, "n": null, "by": "", "ts": null, "dt": null,
                "t": null, "u": 0, "f": 0.0})
        );
    }

    #[test]
    fn imported_files_give_field_types() {
        let imports: BTreeMap<String, String> = [(
            "event.proto".to_string(),
            "syntax = \"proto3\"; package ev; message Event { int64 timestamp = 1; }".to_string(),
        )]
        .into();
        let f = parse_with_imports(
            "syntax = \"proto3\"; import \"event.proto\"; message L { ev.Event event = 1; }",
            &imports,
        )
        .unwrap();
        assert_eq!(
            f.messages.len(),
            1,
            "imported messages are not the file's own"
        );
        let (m, _) = f.message(None).unwrap();
        let FieldType::Message(event) = &m.fields[0].ty else {
            panic!("a message field")
        };
        assert_eq!(event.fields[0].name, "timestamp");
        assert!(parse("import \"event.proto\"; message L { Event e = 1; }").is_err());
    }

    #[test]
    fn framing_indexes_round_trip() {
        for path in [vec![0], vec![1], vec![0, 2, 1]] {
            let mut out = Vec::new();
            write_message_indexes(&mut out, &path);
            assert_eq!(read_message_indexes(&mut Reader::new(&out)).unwrap(), path);
        }
    }

    #[test]
    fn dates_convert_both_ways() {
        for days in [-719_468, -1, 0, 9, 18_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }

    #[test]
    fn bad_data_and_bad_schemas_are_errors() {
        let f = parse("syntax = \"proto3\"; message M { string s = 1; }").unwrap();
        let (m, _) = f.message(None).unwrap();
        for bytes in [&[0x0a, 5, b'a'][..], &[0x0b], &[0xff; 11]] {
            assert!(read_message(m, bytes, false).is_err(), "{bytes:?}");
        }
        assert!(parse("message M { Unknown u = 1; }").is_err());
        assert!(parse("message M { int32 }").is_err());
    }
}
