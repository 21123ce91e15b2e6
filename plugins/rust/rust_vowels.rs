//! Rust count_vowels, built with Debian's rustc for wasm32-unknown-unknown (std, no crates).
//! Output: {"count":N,"total":T,"vowels":"...","calls":K}
//!   vowels: config key `vowels`, default "aeiouAEIOU";
//!   total: running total kept in the Extism var "total" (decimal text), as in count_vowels;
//!   calls: a counter in a Rust `static`, so a fresh instance says 1 on every call.

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
