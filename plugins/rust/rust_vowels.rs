//! Rust count_vowels, built with Debian's rustc for wasm32-unknown-unknown (std, no crates).
//! Output: {"count":N,"total":T,"vowels":"...","calls":K}
//!   vowels: config key `vowels`, default "aeiouAEIOU";
//!   total: running total kept in the Extism var "total" (decimal text), as in count_vowels;
//!   calls: a counter in a Rust `static`, so a fresh instance says 1 on every call.
//!
//! `analyze`: text statistics for a JSON request `{"text", "top"?, "lowercase"?, "stopwords"?,
//! "min_length"?, "pretty"?, "ascii"?}`, answered as a JSON object (see plugins/README.md). It
//! carries what real Rust plugins carry: a generic JSON library (parser with error positions,
//! serializer, `ToJson`/`FromJson` traits), std collections, float parsing and formatting, and
//! Unicode tables, so the module is a realistic size (~200 KB) for the benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};

// The Extism kernel ABI: addresses and lengths are u64 offsets into host-side blocks.
#[link(wasm_import_module = "extism:host/env")]
extern "C" {
    fn input_length() -> u64;
    fn input_load_u8(offset: u64) -> u8;
    fn input_load_u64(offset: u64) -> u64;
    fn alloc(length: u64) -> u64;
    fn length(offset: u64) -> u64;
    fn load_u8(offset: u64) -> u8;
    fn load_u64(offset: u64) -> u64;
    fn store_u8(offset: u64, value: u8);
    fn store_u64(offset: u64, value: u64);
    fn output_set(offset: u64, length: u64);
    fn error_set(offset: u64);
    fn config_get(key: u64) -> u64;
    fn var_get(key: u64) -> u64;
    fn var_set(key: u64, value: u64);
}

const DEFAULT_VOWELS: &str = "aeiouAEIOU";

static CALLS: AtomicU64 = AtomicU64::new(0);

/// Safe wrappers over the host functions.
mod host {
    use super::*;

    pub fn input() -> Vec<u8> {
        let len = unsafe { input_length() };
        let mut bytes = Vec::with_capacity(len as usize);
        let mut i = 0;
        while i + 8 <= len {
            bytes.extend_from_slice(&unsafe { input_load_u64(i) }.to_le_bytes());
            i += 8;
        }
        while i < len {
            bytes.push(unsafe { input_load_u8(i) });
            i += 1;
        }
        bytes
    }

    /// Copies `bytes` into a new Extism block; returns its offset.
    pub fn store(bytes: &[u8]) -> u64 {
        let offset = unsafe { alloc(bytes.len() as u64) };
        let mut chunks = bytes.chunks_exact(8);
        let mut at = offset;
        for chunk in &mut chunks {
            unsafe { store_u64(at, u64::from_le_bytes(chunk.try_into().unwrap())) };
            at += 8;
        }
        for &b in chunks.remainder() {
            unsafe { store_u8(at, b) };
            at += 1;
        }
        offset
    }

    /// Reads a whole Extism block; an offset of 0 means "none".
    pub fn load(offset: u64) -> Option<Vec<u8>> {
        if offset == 0 {
            return None;
        }
        let len = unsafe { length(offset) };
        let mut bytes = Vec::with_capacity(len as usize);
        let mut i = 0;
        while i + 8 <= len {
            bytes.extend_from_slice(&unsafe { load_u64(offset + i) }.to_le_bytes());
            i += 8;
        }
        while i < len {
            bytes.push(unsafe { load_u8(offset + i) });
            i += 1;
        }
        Some(bytes)
    }

    pub fn config(key: &str) -> Option<String> {
        let bytes = load(unsafe { config_get(store(key.as_bytes())) })?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub fn var(key: &str) -> Option<Vec<u8>> {
        load(unsafe { var_get(store(key.as_bytes())) })
    }

    pub fn set_var(key: &str, value: &[u8]) {
        unsafe { var_set(store(key.as_bytes()), store(value)) };
    }

    pub fn output(bytes: &[u8]) {
        unsafe { output_set(store(bytes), bytes.len() as u64) };
    }

    pub fn error(message: &str) {
        unsafe { error_set(store(message.as_bytes())) };
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn count_vowels_json() -> Result<String, String> {
    let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    let vowels = host::config("vowels").unwrap_or_else(|| DEFAULT_VOWELS.to_string());
    let input = String::from_utf8(host::input()).map_err(|_| "count_vowels: input is not UTF-8".to_string())?;

    let count = input.chars().filter(|c| vowels.contains(*c)).count() as u64;

    let previous = match host::var("total") {
        None => 0,
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| "count_vowels: var 'total' is not a decimal number".to_string())?,
    };
    let total = previous + count;
    host::set_var("total", total.to_string().as_bytes());

    Ok(format!(
        "{{\"count\":{},\"total\":{},\"vowels\":{},\"calls\":{}}}",
        count,
        total,
        json_string(&vowels),
        calls
    ))
}

#[no_mangle]
pub extern "C" fn count_vowels() -> i32 {
    match count_vowels_json() {
        Ok(json) => {
            host::output(json.as_bytes());
            0
        }
        Err(message) => {
            host::error(&message);
            1
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `analyze`: text statistics over a JSON request, with a small hand-written JSON library.
// ---------------------------------------------------------------------------------------------

#[link(wasm_import_module = "extism:host/env")]
extern "C" {
    fn log_info(offset: u64);
    fn log_debug(offset: u64);
    fn log_warn(offset: u64);
}

/// Log lines through the Extism host (each line is its own block; the host frees it).
mod log {
    pub fn info(message: &str) {
        unsafe { super::log_info(super::host::store(message.as_bytes())) };
    }
    pub fn debug(message: &str) {
        unsafe { super::log_debug(super::host::store(message.as_bytes())) };
    }
    pub fn warn(message: &str) {
        unsafe { super::log_warn(super::host::store(message.as_bytes())) };
    }
}

/// A generic JSON document model with a recursive-descent parser and a serializer.
pub mod json {
    use std::collections::{BTreeMap, HashMap};
    use std::fmt;

    /// Nesting deeper than this is refused rather than risking the (1 MiB) Rust stack.
    pub const MAX_DEPTH: usize = 128;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        Number(f64),
        String(String),
        Array(Vec<Value>),
        Object(BTreeMap<String, Value>),
    }

    impl Value {
        pub fn kind(&self) -> &'static str {
            match self {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            }
        }

        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::String(s) => Some(s),
                _ => None,
            }
        }

        pub fn as_f64(&self) -> Option<f64> {
            match self {
                Value::Number(n) => Some(*n),
                _ => None,
            }
        }

        pub fn as_bool(&self) -> Option<bool> {
            match self {
                Value::Bool(b) => Some(*b),
                _ => None,
            }
        }

        pub fn as_array(&self) -> Option<&Vec<Value>> {
            match self {
                Value::Array(items) => Some(items),
                _ => None,
            }
        }

        pub fn as_object(&self) -> Option<&BTreeMap<String, Value>> {
            match self {
                Value::Object(members) => Some(members),
                _ => None,
            }
        }

        pub fn get(&self, key: &str) -> Option<&Value> {
            self.as_object().and_then(|members| members.get(key))
        }

        /// Compact text (no insignificant whitespace).
        pub fn to_compact(&self, ascii: bool) -> String {
            let mut out = String::new();
            Writer::new(&mut out, Compact, ascii).value(self);
            out
        }

        /// Indented text, `indent` spaces per level.
        pub fn to_pretty(&self, indent: usize, ascii: bool) -> String {
            let mut out = String::new();
            Writer::new(&mut out, Pretty { indent, level: 0 }, ascii).value(self);
            out
        }
    }

    impl fmt::Display for Value {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if f.alternate() {
                f.write_str(&self.to_pretty(2, false))
            } else {
                f.write_str(&self.to_compact(false))
            }
        }
    }

    // ----- errors ------------------------------------------------------------------------------

    #[derive(Debug, Clone, PartialEq)]
    pub enum ErrorKind {
        EndOfInput { expected: &'static str },
        Unexpected { found: char, expected: &'static str },
        InvalidNumber,
        NumberOutOfRange,
        InvalidEscape(char),
        InvalidUnicodeEscape,
        LoneSurrogate(u32),
        ControlCharacter(u32),
        TooDeep,
        TrailingCharacters(char),
    }

    impl fmt::Display for ErrorKind {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                ErrorKind::EndOfInput { expected } => write!(f, "unexpected end of input, expected {}", expected),
                ErrorKind::Unexpected { found, expected } => {
                    write!(f, "unexpected character {:?}, expected {}", found, expected)
                }
                ErrorKind::InvalidNumber => f.write_str("invalid number"),
                ErrorKind::NumberOutOfRange => f.write_str("number out of range"),
                ErrorKind::InvalidEscape(c) => write!(f, "invalid escape sequence \\{}", c),
                ErrorKind::InvalidUnicodeEscape => f.write_str("invalid \\u escape (4 hex digits expected)"),
                ErrorKind::LoneSurrogate(code) => write!(f, "lone UTF-16 surrogate \\u{:04X}", code),
                ErrorKind::ControlCharacter(code) => {
                    write!(f, "control character U+{:04X} must be escaped in a string", code)
                }
                ErrorKind::TooDeep => write!(f, "nesting deeper than {} levels", MAX_DEPTH),
                ErrorKind::TrailingCharacters(c) => write!(f, "trailing character {:?} after the JSON value", c),
            }
        }
    }

    /// A parse error with its position: 1-based line and column (in characters) and 0-based byte offset.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Error {
        pub kind: ErrorKind,
        pub line: usize,
        pub column: usize,
        pub offset: usize,
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} at line {}, column {} (byte {})", self.kind, self.line, self.column, self.offset)
        }
    }

    impl std::error::Error for Error {}

    // ----- parser ------------------------------------------------------------------------------

    pub fn parse(text: &str) -> Result<Value, Error> {
        let mut parser = Parser { text, bytes: text.as_bytes(), pos: 0, depth: 0 };
        parser.skip_whitespace();
        let value = parser.value()?;
        parser.skip_whitespace();
        match parser.peek_char() {
            None => Ok(value),
            Some(c) => Err(parser.error_here(ErrorKind::TrailingCharacters(c))),
        }
    }

    struct Parser<'a> {
        text: &'a str,
        bytes: &'a [u8],
        pos: usize,
        depth: usize,
    }

    impl<'a> Parser<'a> {
        fn error_at(&self, offset: usize, kind: ErrorKind) -> Error {
            let before = &self.text[..offset];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let column = before[line_start..].chars().count() + 1;
            Error { kind, line, column, offset }
        }

        fn error_here(&self, kind: ErrorKind) -> Error {
            self.error_at(self.pos, kind)
        }

        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.pos).copied()
        }

        fn peek_char(&self) -> Option<char> {
            self.text[self.pos..].chars().next()
        }

        fn unexpected(&self, expected: &'static str) -> Error {
            match self.peek_char() {
                None => self.error_here(ErrorKind::EndOfInput { expected }),
                Some(found) => self.error_here(ErrorKind::Unexpected { found, expected }),
            }
        }

        fn skip_whitespace(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
                self.pos += 1;
            }
        }

        fn expect_literal(&mut self, literal: &'static str, value: Value) -> Result<Value, Error> {
            for expected in literal.bytes() {
                if self.peek() != Some(expected) {
                    return Err(self.unexpected(literal));
                }
                self.pos += 1;
            }
            Ok(value)
        }

        fn value(&mut self) -> Result<Value, Error> {
            match self.peek() {
                Some(b'n') => self.expect_literal("null", Value::Null),
                Some(b't') => self.expect_literal("true", Value::Bool(true)),
                Some(b'f') => self.expect_literal("false", Value::Bool(false)),
                Some(b'"') => self.string().map(Value::String),
                Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
                Some(b'[') => self.nested(Self::array),
                Some(b'{') => self.nested(Self::object),
                _ => Err(self.unexpected("a JSON value")),
            }
        }

        fn nested(&mut self, inner: fn(&mut Self) -> Result<Value, Error>) -> Result<Value, Error> {
            if self.depth >= MAX_DEPTH {
                return Err(self.error_here(ErrorKind::TooDeep));
            }
            self.depth += 1;
            let result = inner(self);
            self.depth -= 1;
            result
        }

        fn array(&mut self) -> Result<Value, Error> {
            self.pos += 1; // '['
            let mut items = Vec::new();
            self.skip_whitespace();
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            loop {
                self.skip_whitespace();
                items.push(self.value()?);
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    _ => return Err(self.unexpected("',' or ']'")),
                }
            }
        }

        fn object(&mut self) -> Result<Value, Error> {
            self.pos += 1; // '{'
            let mut members = BTreeMap::new();
            self.skip_whitespace();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Object(members));
            }
            loop {
                self.skip_whitespace();
                if self.peek() != Some(b'"') {
                    return Err(self.unexpected("a string key"));
                }
                let key = self.string()?;
                self.skip_whitespace();
                if self.peek() != Some(b':') {
                    return Err(self.unexpected("':'"));
                }
                self.pos += 1;
                self.skip_whitespace();
                let value = self.value()?;
                // Like most parsers, a repeated key keeps the last value.
                members.insert(key, value);
                self.skip_whitespace();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        return Ok(Value::Object(members));
                    }
                    _ => return Err(self.unexpected("',' or '}'")),
                }
            }
        }

        fn digits(&mut self) -> usize {
            let start = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            self.pos - start
        }

        fn number(&mut self) -> Result<f64, Error> {
            let start = self.pos;
            if self.peek() == Some(b'-') {
                self.pos += 1;
            }
            match self.peek() {
                Some(b'0') => self.pos += 1,
                Some(b'1'..=b'9') => {
                    self.digits();
                }
                _ => return Err(self.error_at(start, ErrorKind::InvalidNumber)),
            }
            if self.peek() == Some(b'.') {
                self.pos += 1;
                if self.digits() == 0 {
                    return Err(self.error_at(start, ErrorKind::InvalidNumber));
                }
            }
            if let Some(b'e' | b'E') = self.peek() {
                self.pos += 1;
                if let Some(b'+' | b'-') = self.peek() {
                    self.pos += 1;
                }
                if self.digits() == 0 {
                    return Err(self.error_at(start, ErrorKind::InvalidNumber));
                }
            }
            let text = &self.text[start..self.pos];
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() => Ok(n),
                Ok(_) => Err(self.error_at(start, ErrorKind::NumberOutOfRange)),
                Err(_) => Err(self.error_at(start, ErrorKind::InvalidNumber)),
            }
        }

        fn hex4(&mut self) -> Result<u32, Error> {
            let start = self.pos;
            let mut code = 0u32;
            for _ in 0..4 {
                let digit = match self.peek() {
                    Some(b) => (b as char).to_digit(16),
                    None => None,
                };
                match digit {
                    Some(d) => {
                        code = code * 16 + d;
                        self.pos += 1;
                    }
                    None => return Err(self.error_at(start, ErrorKind::InvalidUnicodeEscape)),
                }
            }
            Ok(code)
        }

        fn string(&mut self) -> Result<String, Error> {
            self.pos += 1; // opening quote
            let mut out = String::new();
            loop {
                let run_start = self.pos;
                while let Some(b) = self.peek() {
                    if b == b'"' || b == b'\\' || b < 0x20 {
                        break;
                    }
                    self.pos += 1;
                }
                out.push_str(&self.text[run_start..self.pos]);
                match self.peek() {
                    None => return Err(self.error_here(ErrorKind::EndOfInput { expected: "'\"'" })),
                    Some(b'"') => {
                        self.pos += 1;
                        return Ok(out);
                    }
                    Some(b'\\') => {
                        let escape_at = self.pos;
                        self.pos += 1;
                        let c = match self.peek_char() {
                            None => return Err(self.error_here(ErrorKind::EndOfInput { expected: "an escape sequence" })),
                            Some(c) => c,
                        };
                        self.pos += c.len_utf8();
                        match c {
                            '"' => out.push('"'),
                            '\\' => out.push('\\'),
                            '/' => out.push('/'),
                            'b' => out.push('\u{8}'),
                            'f' => out.push('\u{c}'),
                            'n' => out.push('\n'),
                            'r' => out.push('\r'),
                            't' => out.push('\t'),
                            'u' => out.push(self.unicode_escape(escape_at)?),
                            other => return Err(self.error_at(escape_at, ErrorKind::InvalidEscape(other))),
                        }
                    }
                    Some(b) => return Err(self.error_here(ErrorKind::ControlCharacter(b as u32))),
                }
            }
        }

        /// After `\u`: one code unit, or a surrogate pair written as two escapes.
        fn unicode_escape(&mut self, escape_at: usize) -> Result<char, Error> {
            let first = self.hex4()?;
            let code = match first {
                0xD800..=0xDBFF => {
                    if !self.text[self.pos..].starts_with("\\u") {
                        return Err(self.error_at(escape_at, ErrorKind::LoneSurrogate(first)));
                    }
                    self.pos += 2;
                    let second = self.hex4()?;
                    if !(0xDC00..=0xDFFF).contains(&second) {
                        return Err(self.error_at(escape_at, ErrorKind::LoneSurrogate(first)));
                    }
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                }
                0xDC00..=0xDFFF => return Err(self.error_at(escape_at, ErrorKind::LoneSurrogate(first))),
                _ => first,
            };
            char::from_u32(code).ok_or_else(|| self.error_at(escape_at, ErrorKind::InvalidUnicodeEscape))
        }
    }

    // ----- serializer --------------------------------------------------------------------------

    /// Layout decisions, so one writer serves compact and indented output.
    pub trait Format {
        fn open(&mut self, out: &mut String, bracket: char);
        fn close(&mut self, out: &mut String, bracket: char, empty: bool);
        fn before_item(&mut self, out: &mut String, first: bool);
        fn after_key(&mut self, out: &mut String);
    }

    pub struct Compact;

    impl Format for Compact {
        fn open(&mut self, out: &mut String, bracket: char) {
            out.push(bracket);
        }
        fn close(&mut self, out: &mut String, bracket: char, _empty: bool) {
            out.push(bracket);
        }
        fn before_item(&mut self, out: &mut String, first: bool) {
            if !first {
                out.push(',');
            }
        }
        fn after_key(&mut self, out: &mut String) {
            out.push(':');
        }
    }

    pub struct Pretty {
        pub indent: usize,
        pub level: usize,
    }

    impl Pretty {
        fn newline(&self, out: &mut String) {
            out.push('\n');
            for _ in 0..self.indent * self.level {
                out.push(' ');
            }
        }
    }

    impl Format for Pretty {
        fn open(&mut self, out: &mut String, bracket: char) {
            out.push(bracket);
            self.level += 1;
        }
        fn close(&mut self, out: &mut String, bracket: char, empty: bool) {
            self.level -= 1;
            if !empty {
                self.newline(out);
            }
            out.push(bracket);
        }
        fn before_item(&mut self, out: &mut String, first: bool) {
            if !first {
                out.push(',');
            }
            self.newline(out);
        }
        fn after_key(&mut self, out: &mut String) {
            out.push_str(": ");
        }
    }

    pub struct Writer<'o, F: Format> {
        out: &'o mut String,
        format: F,
        /// Escape every non-ASCII character as \uXXXX (a surrogate pair above U+FFFF).
        ascii: bool,
    }

    impl<'o, F: Format> Writer<'o, F> {
        pub fn new(out: &'o mut String, format: F, ascii: bool) -> Self {
            Writer { out, format, ascii }
        }

        pub fn value(&mut self, value: &Value) {
            match value {
                Value::Null => self.out.push_str("null"),
                Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
                Value::Number(n) => write_number(self.out, *n),
                Value::String(s) => write_string(self.out, s, self.ascii),
                Value::Array(items) => {
                    self.format.open(self.out, '[');
                    for (i, item) in items.iter().enumerate() {
                        self.format.before_item(self.out, i == 0);
                        self.value(item);
                    }
                    self.format.close(self.out, ']', items.is_empty());
                }
                Value::Object(members) => {
                    self.format.open(self.out, '{');
                    for (i, (key, item)) in members.iter().enumerate() {
                        self.format.before_item(self.out, i == 0);
                        write_string(self.out, key, self.ascii);
                        self.format.after_key(self.out);
                        self.value(item);
                    }
                    self.format.close(self.out, '}', members.is_empty());
                }
            }
        }
    }

    /// Numbers as JavaScript prints them for the common cases; NaN and infinities become null.
    pub fn write_number(out: &mut String, n: f64) {
        use std::fmt::Write;
        if !n.is_finite() {
            out.push_str("null");
        } else if n == n.trunc() && n.abs() < 1e15 {
            let _ = write!(out, "{}", n as i64);
        } else if n.abs() >= 1e21 || n.abs() < 1e-6 {
            let _ = write!(out, "{:e}", n);
        } else {
            let _ = write!(out, "{}", n);
        }
    }

    pub fn write_string(out: &mut String, s: &str, ascii: bool) {
        use std::fmt::Write;
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c if ascii && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{:04x}", unit);
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    // ----- conversions -------------------------------------------------------------------------

    /// Types that have a JSON representation.
    pub trait ToJson {
        fn to_json(&self) -> Value;
    }

    impl ToJson for Value {
        fn to_json(&self) -> Value {
            self.clone()
        }
    }
    impl ToJson for bool {
        fn to_json(&self) -> Value {
            Value::Bool(*self)
        }
    }
    impl ToJson for f64 {
        fn to_json(&self) -> Value {
            Value::Number(*self)
        }
    }
    impl ToJson for usize {
        fn to_json(&self) -> Value {
            Value::Number(*self as f64)
        }
    }
    impl ToJson for u64 {
        fn to_json(&self) -> Value {
            Value::Number(*self as f64)
        }
    }
    impl ToJson for str {
        fn to_json(&self) -> Value {
            Value::String(self.to_string())
        }
    }
    impl ToJson for String {
        fn to_json(&self) -> Value {
            Value::String(self.clone())
        }
    }
    impl ToJson for char {
        fn to_json(&self) -> Value {
            Value::String(self.to_string())
        }
    }
    impl<T: ToJson + ?Sized> ToJson for &T {
        fn to_json(&self) -> Value {
            (**self).to_json()
        }
    }
    impl<T: ToJson> ToJson for Option<T> {
        fn to_json(&self) -> Value {
            match self {
                Some(v) => v.to_json(),
                None => Value::Null,
            }
        }
    }
    impl<T: ToJson> ToJson for [T] {
        fn to_json(&self) -> Value {
            Value::Array(self.iter().map(ToJson::to_json).collect())
        }
    }
    impl<T: ToJson> ToJson for Vec<T> {
        fn to_json(&self) -> Value {
            self.as_slice().to_json()
        }
    }
    impl<A: ToJson, B: ToJson> ToJson for (A, B) {
        fn to_json(&self) -> Value {
            Value::Array(vec![self.0.to_json(), self.1.to_json()])
        }
    }
    impl<T: ToJson> ToJson for BTreeMap<String, T> {
        fn to_json(&self) -> Value {
            Value::Object(self.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
        }
    }
    impl<T: ToJson, S> ToJson for HashMap<String, T, S> {
        fn to_json(&self) -> Value {
            Value::Object(self.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
        }
    }

    /// Builds a JSON object member by member, in the style of a derived serializer.
    #[derive(Debug, Default, Clone, PartialEq)]
    pub struct ObjectBuilder {
        members: BTreeMap<String, Value>,
    }

    impl ObjectBuilder {
        pub fn new() -> Self {
            Self::default()
        }
        pub fn field<T: ToJson + ?Sized>(mut self, key: &str, value: &T) -> Self {
            self.members.insert(key.to_string(), value.to_json());
            self
        }
        pub fn build(self) -> Value {
            Value::Object(self.members)
        }
    }

    /// A field that has the wrong type or value; `path` is like `stopwords[2]`.
    #[derive(Debug, Clone, PartialEq)]
    pub struct DecodeError {
        pub path: String,
        pub message: String,
    }

    impl fmt::Display for DecodeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            if self.path.is_empty() {
                f.write_str(&self.message)
            } else {
                write!(f, "field `{}`: {}", self.path, self.message)
            }
        }
    }

    impl std::error::Error for DecodeError {}

    fn mismatch(path: &str, expected: &str, found: &Value) -> DecodeError {
        DecodeError { path: path.to_string(), message: format!("expected {}, found {}", expected, found.kind()) }
    }

    /// Types that can be read from a JSON value.
    pub trait FromJson: Sized {
        fn from_json(value: &Value, path: &str) -> Result<Self, DecodeError>;
    }

    impl FromJson for bool {
        fn from_json(value: &Value, path: &str) -> Result<Self, DecodeError> {
            value.as_bool().ok_or_else(|| mismatch(path, "a boolean", value))
        }
    }
    impl FromJson for f64 {
        fn from_json(value: &Value, path: &str) -> Result<Self, DecodeError> {
            value.as_f64().ok_or_else(|| mismatch(path, "a number", value))
        }
    }
    impl FromJson for usize {
        fn from_json(value: &Value, path: &str) -> Result<Self, DecodeError> {
            match value.as_f64() {
                Some(n) if n >= 0.0 && n == n.trunc() && n <= u32::MAX as f64 => Ok(n as usize),
                Some(n) => Err(DecodeError {
                    path: path.to_string(),
                    message: format!("expected a non-negative integer, found {}", n),
                }),
                None => Err(mismatch(path, "a non-negative integer", value)),
            }
        }
    }
    impl FromJson for String {
        fn from_json(value: &Value, path: &str) -> Result<Self, DecodeError> {
            value.as_str().map(str::to_string).ok_or_else(|| mismatch(path, "a string", value))
        }
    }
    impl<T: FromJson> FromJson for Option<T> {
        fn from_json(value: &Value, path: &str) -> Result<Self, DecodeError> {
            match value {
                Value::Null => Ok(None),
                other => T::from_json(other, path).map(Some),
            }
        }
    }
    impl<T: FromJson> FromJson for Vec<T> {
        fn from_json(value: &Value, path: &str) -> Result<Self, DecodeError> {
            let items = value.as_array().ok_or_else(|| mismatch(path, "an array", value))?;
            items.iter().enumerate().map(|(i, item)| T::from_json(item, &format!("{}[{}]", path, i))).collect()
        }
    }
    impl<T: FromJson> FromJson for BTreeMap<String, T> {
        fn from_json(value: &Value, path: &str) -> Result<Self, DecodeError> {
            let members = value.as_object().ok_or_else(|| mismatch(path, "an object", value))?;
            members
                .iter()
                .map(|(key, item)| Ok((key.clone(), T::from_json(item, &format!("{}.{}", path, key))?)))
                .collect()
        }
    }

    /// Reads the members of an object one by one, refusing members nobody asked for.
    pub struct ObjectReader<'v> {
        members: &'v BTreeMap<String, Value>,
        known: Vec<&'static str>,
    }

    impl<'v> ObjectReader<'v> {
        pub fn new(value: &'v Value, what: &str) -> Result<Self, DecodeError> {
            match value.as_object() {
                Some(members) => Ok(ObjectReader { members, known: Vec::new() }),
                None => Err(DecodeError {
                    path: String::new(),
                    message: format!("{} must be a JSON object, found {}", what, value.kind()),
                }),
            }
        }

        pub fn required<T: FromJson>(&mut self, key: &'static str) -> Result<T, DecodeError> {
            self.known.push(key);
            match self.members.get(key) {
                Some(value) => T::from_json(value, key),
                None => Err(DecodeError { path: key.to_string(), message: "missing".to_string() }),
            }
        }

        pub fn optional<T: FromJson>(&mut self, key: &'static str, default: T) -> Result<T, DecodeError> {
            self.known.push(key);
            match self.members.get(key) {
                Some(Value::Null) | None => Ok(default),
                Some(value) => T::from_json(value, key),
            }
        }

        pub fn finish(self) -> Result<(), DecodeError> {
            match self.members.keys().find(|key| !self.known.contains(&key.as_str())) {
                None => Ok(()),
                Some(unknown) => Err(DecodeError {
                    path: unknown.clone(),
                    message: format!("unknown field, expected one of: {}", self.known.join(", ")),
                }),
            }
        }
    }
}

/// Word, sentence and character statistics.
pub mod text {
    use super::json::{ObjectBuilder, ToJson, Value};
    use std::collections::{BTreeMap, HashMap, HashSet};

    #[derive(Debug, Clone, PartialEq)]
    pub struct Options {
        pub top: usize,
        pub lowercase: bool,
        pub stopwords: Vec<String>,
        pub min_length: usize,
    }

    impl Default for Options {
        fn default() -> Self {
            Options { top: 10, lowercase: true, stopwords: Vec::new(), min_length: 1 }
        }
    }

    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct CharClasses {
        pub alphabetic: usize,
        pub numeric: usize,
        pub whitespace: usize,
        pub punctuation: usize,
        pub other: usize,
        pub uppercase: usize,
        pub lowercase: usize,
    }

    impl CharClasses {
        pub fn add(&mut self, c: char) {
            if c.is_alphabetic() {
                self.alphabetic += 1;
                if c.is_uppercase() {
                    self.uppercase += 1;
                } else if c.is_lowercase() {
                    self.lowercase += 1;
                }
            } else if c.is_numeric() {
                self.numeric += 1;
            } else if c.is_whitespace() {
                self.whitespace += 1;
            } else if is_punctuation(c) {
                self.punctuation += 1;
            } else {
                self.other += 1;
            }
        }
    }

    impl ToJson for CharClasses {
        fn to_json(&self) -> Value {
            ObjectBuilder::new()
                .field("alphabetic", &self.alphabetic)
                .field("numeric", &self.numeric)
                .field("whitespace", &self.whitespace)
                .field("punctuation", &self.punctuation)
                .field("other", &self.other)
                .field("uppercase", &self.uppercase)
                .field("lowercase", &self.lowercase)
                .build()
        }
    }

    /// ASCII punctuation plus the Unicode punctuation blocks most text uses.
    pub fn is_punctuation(c: char) -> bool {
        c.is_ascii_punctuation()
            || matches!(c as u32,
                0x00A1 | 0x00A7 | 0x00AB | 0x00B6 | 0x00B7 | 0x00BB | 0x00BF
                | 0x2010..=0x2027 | 0x2030..=0x205E | 0x3001..=0x3003 | 0x3008..=0x3011
                | 0xFF01..=0xFF0F | 0xFF1A..=0xFF1F)
    }

    fn ends_sentence(c: char) -> bool {
        matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？' | '‼' | '⁇')
    }

    fn is_apostrophe(c: char) -> bool {
        matches!(c, '\'' | '’')
    }

    /// A word and how often it occurs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Ranked {
        pub text: String,
        pub count: usize,
    }

    impl ToJson for Ranked {
        fn to_json(&self) -> Value {
            ObjectBuilder::new().field("word", &self.text).field("count", &self.count).build()
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    pub struct Stats {
        pub characters: usize,
        pub bytes: usize,
        pub lines: usize,
        pub words: usize,
        pub unique_words: usize,
        pub sentences: usize,
        pub stopwords_removed: usize,
        pub average_word_length: f64,
        pub longest_word: Option<String>,
        pub top: Vec<Ranked>,
        pub top_bigrams: Vec<Ranked>,
        pub word_lengths: Vec<(usize, usize)>,
        pub classes: CharClasses,
    }

    impl ToJson for Stats {
        fn to_json(&self) -> Value {
            ObjectBuilder::new()
                .field("characters", &self.characters)
                .field("bytes", &self.bytes)
                .field("lines", &self.lines)
                .field("words", &self.words)
                .field("unique_words", &self.unique_words)
                .field("sentences", &self.sentences)
                .field("stopwords_removed", &self.stopwords_removed)
                .field("average_word_length", &self.average_word_length)
                .field("longest_word", &self.longest_word)
                .field("top", &self.top)
                .field("top_bigrams", &self.top_bigrams)
                .field("word_lengths", &self.word_lengths)
                .field("classes", &self.classes)
                .build()
        }
    }

    /// What the tokenizer sees: a word, or the end of a sentence (`.`, `!`, `?`, `…`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Token<'a> {
        Word(&'a str),
        SentenceEnd,
    }

    /// Splits text into words: runs of letters and digits, with an apostrophe between two of them
    /// kept inside the word (`don't`, `l’homme`).
    pub struct Tokens<'a> {
        text: &'a str,
        chars: std::iter::Peekable<std::str::CharIndices<'a>>,
        pending_end: bool,
    }

    impl<'a> Tokens<'a> {
        pub fn new(text: &'a str) -> Self {
            Tokens { text, chars: text.char_indices().peekable(), pending_end: false }
        }
    }

    impl<'a> Iterator for Tokens<'a> {
        type Item = Token<'a>;

        fn next(&mut self) -> Option<Token<'a>> {
            if self.pending_end {
                self.pending_end = false;
                return Some(Token::SentenceEnd);
            }
            let mut start: Option<usize> = None;
            while let Some((i, c)) = self.chars.next() {
                if c.is_alphanumeric() {
                    start.get_or_insert(i);
                    continue;
                }
                if is_apostrophe(c) && start.is_some() {
                    if let Some(&(_, next)) = self.chars.peek() {
                        if next.is_alphanumeric() {
                            continue;
                        }
                    }
                }
                match start {
                    Some(s) => {
                        self.pending_end = ends_sentence(c);
                        return Some(Token::Word(&self.text[s..i]));
                    }
                    None if ends_sentence(c) => return Some(Token::SentenceEnd),
                    None => {}
                }
            }
            start.map(|s| Token::Word(&self.text[s..]))
        }
    }

    fn normalize(word: &str, lowercase: bool) -> String {
        if lowercase {
            word.chars().flat_map(char::to_lowercase).collect()
        } else {
            word.to_string()
        }
    }

    /// The `n` most frequent entries, most frequent first, ties in alphabetical order.
    pub fn top_n(counts: HashMap<String, usize>, n: usize) -> Vec<Ranked> {
        let mut ranked: Vec<Ranked> = counts.into_iter().map(|(text, count)| Ranked { text, count }).collect();
        ranked.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.text.cmp(&b.text)));
        ranked.truncate(n);
        ranked
    }

    /// Rounds to `places` decimals.
    pub fn round_to(value: f64, places: i32) -> f64 {
        let scale = 10f64.powi(places);
        (value * scale).round() / scale
    }

    pub fn analyze(text: &str, options: &Options) -> Stats {
        let stopwords: HashSet<String> = options.stopwords.iter().map(|w| normalize(w, options.lowercase)).collect();
        let mut classes = CharClasses::default();
        let mut characters = 0;
        for c in text.chars() {
            characters += 1;
            classes.add(c);
        }

        let mut words = 0usize;
        let mut word_chars = 0usize;
        let mut sentences = 0usize;
        let mut in_sentence = false;
        let mut stopwords_removed = 0usize;
        let mut longest: Option<(usize, String)> = None;
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut bigrams: HashMap<String, usize> = HashMap::new();
        let mut lengths: BTreeMap<usize, usize> = BTreeMap::new();
        let mut previous: Option<String> = None;

        for token in Tokens::new(text) {
            let word = match token {
                Token::Word(word) => word,
                Token::SentenceEnd => {
                    if in_sentence {
                        sentences += 1;
                        in_sentence = false;
                    }
                    previous = None;
                    continue;
                }
            };
            let length = word.chars().count();
            words += 1;
            word_chars += length;
            in_sentence = true;
            *lengths.entry(length).or_insert(0) += 1;
            let normalized = normalize(word, options.lowercase);
            if longest.as_ref().map_or(true, |(l, w)| length > *l || (length == *l && normalized < *w)) {
                longest = Some((length, normalized.clone()));
            }
            if stopwords.contains(&normalized) {
                stopwords_removed += 1;
                previous = None;
                continue;
            }
            if length < options.min_length {
                previous = None;
                continue;
            }
            if let Some(before) = previous.take() {
                *bigrams.entry(format!("{} {}", before, normalized)).or_insert(0) += 1;
            }
            *counts.entry(normalized.clone()).or_insert(0) += 1;
            previous = Some(normalized);
        }
        if in_sentence {
            sentences += 1;
        }

        let unique_words = counts.len();
        let average_word_length = if words == 0 { 0.0 } else { round_to(word_chars as f64 / words as f64, 2) };
        let lines = if text.is_empty() { 0 } else { text.lines().count() };
        let mut top_bigrams = top_n(bigrams, options.top);
        top_bigrams.retain(|b| b.count > 1);
        Stats {
            characters,
            bytes: text.len(),
            lines,
            words,
            unique_words,
            sentences,
            stopwords_removed,
            average_word_length,
            longest_word: longest.map(|(_, w)| w),
            top: top_n(counts, options.top),
            top_bigrams,
            word_lengths: lengths.into_iter().collect(),
            classes,
        }
    }
}

#[derive(Debug)]
enum AnalyzeError {
    NotUtf8,
    Json(json::Error),
    Request(json::DecodeError),
}

impl std::fmt::Display for AnalyzeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnalyzeError::NotUtf8 => f.write_str("analyze: input is not UTF-8"),
            AnalyzeError::Json(e) => write!(f, "analyze: invalid JSON: {}", e),
            AnalyzeError::Request(e) => write!(f, "analyze: {}", e),
        }
    }
}

impl From<json::Error> for AnalyzeError {
    fn from(e: json::Error) -> Self {
        AnalyzeError::Json(e)
    }
}

impl From<json::DecodeError> for AnalyzeError {
    fn from(e: json::DecodeError) -> Self {
        AnalyzeError::Request(e)
    }
}

/// The `analyze` request: `{"text", "top"?, "lowercase"?, "stopwords"?, "min_length"?, "pretty"?, "ascii"?}`.
#[derive(Debug, Clone, PartialEq)]
struct AnalyzeRequest {
    text: String,
    options: text::Options,
    pretty: bool,
    ascii: bool,
}

impl json::FromJson for AnalyzeRequest {
    fn from_json(value: &json::Value, _path: &str) -> Result<Self, json::DecodeError> {
        let defaults = text::Options::default();
        let mut reader = json::ObjectReader::new(value, "the input")?;
        let request = AnalyzeRequest {
            text: reader.required("text")?,
            options: text::Options {
                top: reader.optional("top", defaults.top)?,
                lowercase: reader.optional("lowercase", defaults.lowercase)?,
                stopwords: reader.optional("stopwords", defaults.stopwords)?,
                min_length: reader.optional("min_length", defaults.min_length)?,
            },
            pretty: reader.optional("pretty", false)?,
            ascii: reader.optional("ascii", false)?,
        };
        reader.finish()?;
        Ok(request)
    }
}

fn analyze_json() -> Result<String, AnalyzeError> {
    use json::{FromJson, ToJson};
    let input = String::from_utf8(host::input()).map_err(|_| AnalyzeError::NotUtf8)?;
    let request = AnalyzeRequest::from_json(&json::parse(&input)?, "")?;
    log::debug(&format!(
        "analyze: {} bytes of text, top {}, lowercase {}, {} stopwords",
        request.text.len(),
        request.options.top,
        request.options.lowercase,
        request.options.stopwords.len()
    ));
    if request.text.is_empty() {
        log::warn("analyze: the text is empty");
    }
    let stats = text::analyze(&request.text, &request.options);
    log::info(&format!(
        "analyze: {} words ({} unique) in {} sentences",
        stats.words, stats.unique_words, stats.sentences
    ));
    let value = stats.to_json();
    Ok(if request.pretty { value.to_pretty(2, request.ascii) } else { value.to_compact(request.ascii) })
}

#[no_mangle]
pub extern "C" fn analyze() -> i32 {
    match analyze_json() {
        Ok(json) => {
            host::output(json.as_bytes());
            0
        }
        Err(error) => {
            host::error(&error.to_string());
            1
        }
    }
}
