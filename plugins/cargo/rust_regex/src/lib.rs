//! A plugin built the way Extism Rust plugins are: cargo, std, and crates (serde + serde_json for
//! JSON, regex with its Unicode tables), here from Debian's packages, offline. The host ABI is
//! declared by hand (the Rust PDK crate is not packaged). The module is over 1 MB, like real ones.
//!
//! `count_vowels`: {"count":N,"total":T,"vowels":"...","calls":K}, as rust_vowels, counted with a
//!   regex built from config `vowels` (default "aeiouAEIOU").
//! `extract`: input {"text": "...", "patterns": {"<name>": "<regex>", ...}, "limit"?: 100};
//!   output {"counts": {"<name>": N}, "matches": {"<name>": [{"match", "start", "end", "groups"?}]}}
//!   (at most `limit` matches listed per pattern, every match counted; named groups by name).
//! `redact`: input {"text": "...", "rules": [{"pattern": "<regex>", "replacement": "<with $1/$name>"}]};
//!   output {"text": "<every rule applied in order>", "matched": [<indices of rules that matched>]}.
//! `json_stats`: input any JSON document; output {"depth", "values": {"array", "bool", "null",
//!   "number", "object", "string"}, "keys": [the 10 most frequent object keys as [key, count]],
//!   "longest_string": N (characters)}.

use regex::{Regex, RegexSet};
use serde_json::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

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
    fn log_info(offset: u64);
}

static CALLS: AtomicU64 = AtomicU64::new(0);

/// Safe wrappers over the host functions.
mod host {
    use super::*;

    fn read(len: u64, load8: impl Fn(u64) -> u8, load64: impl Fn(u64) -> u64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(len as usize);
        let mut i = 0;
        while i + 8 <= len {
            bytes.extend_from_slice(&load64(i).to_le_bytes());
            i += 8;
        }
        while i < len {
            bytes.push(load8(i));
            i += 1;
        }
        bytes
    }

    pub fn input() -> Vec<u8> {
        read(unsafe { input_length() }, |i| unsafe { input_load_u8(i) }, |i| unsafe { input_load_u64(i) })
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

    /// A whole Extism block; offset 0 means none.
    pub fn load(offset: u64) -> Option<Vec<u8>> {
        if offset == 0 {
            return None;
        }
        let len = unsafe { length(offset) };
        Some(read(len, |i| unsafe { load_u8(offset + i) }, |i| unsafe { load_u64(offset + i) }))
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

    pub fn info(message: &str) {
        unsafe { log_info(store(message.as_bytes())) };
    }

    pub fn output(bytes: &[u8]) {
        unsafe { output_set(store(bytes), bytes.len() as u64) };
    }

    pub fn error(message: &str) {
        unsafe { error_set(store(message.as_bytes())) };
    }
}

/// Runs one export: its output, or its error set with the plugin's failure code.
fn export(run: impl FnOnce() -> Result<Vec<u8>, String>) -> i32 {
    match run() {
        Ok(output) => {
            host::output(&output);
            0
        }
        Err(message) => {
            host::error(&message);
            1
        }
    }
}

#[derive(Serialize)]
struct VowelCount {
    count: u64,
    total: u64,
    vowels: String,
    calls: u64,
}

#[no_mangle]
pub extern "C" fn count_vowels() -> i32 {
    export(|| {
        let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        let vowels = host::config("vowels").unwrap_or_else(|| "aeiouAEIOU".to_string());
        let input = String::from_utf8(host::input()).map_err(|_| "count_vowels: input is not UTF-8".to_string())?;
        let class: String = vowels.chars().map(|c| regex::escape(&c.to_string())).collect();
        let count = if class.is_empty() {
            0
        } else {
            let re = Regex::new(&format!("[{}]", class)).map_err(|e| format!("count_vowels: {}", e))?;
            re.find_iter(&input).count() as u64
        };
        let previous = host::var("total")
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.parse::<u64>().ok())
            .unwrap_or(0);
        let total = previous + count;
        host::set_var("total", total.to_string().as_bytes());
        serde_json::to_vec(&VowelCount { count, total, vowels, calls }).map_err(|e| e.to_string())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtractRequest {
    text: String,
    patterns: BTreeMap<String, String>,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

#[derive(Serialize)]
struct Match {
    #[serde(rename = "match")]
    text: String,
    start: usize,
    end: usize,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    groups: BTreeMap<String, Option<String>>,
}

#[derive(Serialize)]
struct ExtractResponse {
    counts: BTreeMap<String, usize>,
    matches: BTreeMap<String, Vec<Match>>,
}

#[no_mangle]
pub extern "C" fn extract() -> i32 {
    export(|| {
        let request: ExtractRequest =
            serde_json::from_slice(&host::input()).map_err(|e| format!("extract: invalid request: {}", e))?;
        host::info(&format!(
            "extract: {} patterns over {} bytes of text",
            request.patterns.len(),
            request.text.len()
        ));
        let mut response = ExtractResponse { counts: BTreeMap::new(), matches: BTreeMap::new() };
        for (name, pattern) in &request.patterns {
            let re = Regex::new(pattern).map_err(|e| format!("extract: pattern `{}`: {}", name, e))?;
            let names: Vec<&str> = re.capture_names().flatten().collect();
            let mut count = 0;
            let mut listed = Vec::new();
            for captures in re.captures_iter(&request.text) {
                count += 1;
                if listed.len() >= request.limit {
                    continue;
                }
                let whole = captures.get(0).expect("group 0 always matches");
                let groups = names
                    .iter()
                    .map(|&group| (group.to_string(), captures.name(group).map(|m| m.as_str().to_string())))
                    .collect();
                listed.push(Match { text: whole.as_str().to_string(), start: whole.start(), end: whole.end(), groups });
            }
            response.counts.insert(name.clone(), count);
            response.matches.insert(name.clone(), listed);
        }
        serde_json::to_vec(&response).map_err(|e| e.to_string())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactRule {
    pattern: String,
    replacement: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactRequest {
    text: String,
    rules: Vec<RedactRule>,
}

#[derive(Serialize)]
struct RedactResponse {
    text: String,
    matched: Vec<usize>,
}

#[no_mangle]
pub extern "C" fn redact() -> i32 {
    export(|| {
        let request: RedactRequest =
            serde_json::from_slice(&host::input()).map_err(|e| format!("redact: invalid request: {}", e))?;
        let set = RegexSet::new(request.rules.iter().map(|r| &r.pattern)).map_err(|e| format!("redact: {}", e))?;
        let matched: Vec<usize> = set.matches(&request.text).into_iter().collect();
        let mut text = request.text;
        for rule in &request.rules {
            let re = Regex::new(&rule.pattern).map_err(|e| format!("redact: {}", e))?;
            text = re.replace_all(&text, rule.replacement.as_str()).into_owned();
        }
        serde_json::to_vec(&RedactResponse { text, matched }).map_err(|e| e.to_string())
    })
}

#[derive(Default, Serialize)]
struct ValueCounts {
    array: u64,
    bool: u64,
    null: u64,
    number: u64,
    object: u64,
    string: u64,
}

#[derive(Default)]
struct Walk {
    depth: usize,
    values: ValueCounts,
    keys: BTreeMap<String, u64>,
    longest_string: usize,
}

impl Walk {
    fn visit(&mut self, value: &Value, depth: usize) {
        self.depth = self.depth.max(depth);
        match value {
            Value::Null => self.values.null += 1,
            Value::Bool(_) => self.values.bool += 1,
            Value::Number(_) => self.values.number += 1,
            Value::String(s) => {
                self.values.string += 1;
                self.longest_string = self.longest_string.max(s.chars().count());
            }
            Value::Array(items) => {
                self.values.array += 1;
                items.iter().for_each(|item| self.visit(item, depth + 1));
            }
            Value::Object(map) => {
                self.values.object += 1;
                for (key, item) in map {
                    *self.keys.entry(key.clone()).or_default() += 1;
                    self.visit(item, depth + 1);
                }
            }
        }
    }
}

#[no_mangle]
pub extern "C" fn json_stats() -> i32 {
    export(|| {
        let document: Value =
            serde_json::from_slice(&host::input()).map_err(|e| format!("json_stats: invalid JSON: {}", e))?;
        let mut walk = Walk::default();
        walk.visit(&document, 1);
        let mut keys: Vec<(String, u64)> = walk.keys.into_iter().collect();
        keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        keys.truncate(10);
        let stats = serde_json::json!({
            "depth": walk.depth,
            "values": walk.values,
            "keys": keys,
            "longest_string": walk.longest_string,
        });
        serde_json::to_vec(&stats).map_err(|e| e.to_string())
    })
}
