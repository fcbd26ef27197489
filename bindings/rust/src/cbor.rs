//! Canonical DAG-CBOR (SPEC §3): definite lengths, shortest integer forms, map keys
//! sorted by their encoded bytes (shorter first), no floats, no tags.
//!
//! Values are `serde_json::Value`s; the crate enables serde_json's
//! `arbitrary_precision`, so every integer from −2^64 to 2^64−1 survives the trip
//! from JSON text to the signed bytes.

use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};

const MAX_DEPTH: usize = 64;

fn integer(n: &Number, path: &str) -> Result<i128> {
    let text = n.to_string();
    if text.contains(['.', 'e', 'E']) {
        return Err(Error::Encoding(format!(
            "{path}: floats are not allowed in signed data ({text}); use integers or Q32.32 fixed point"
        )));
    }
    let value: i128 = text
        .parse()
        .map_err(|_| Error::Encoding(format!("{path}: integer {text} is outside the 64-bit range of DAG-CBOR")))?;
    if !(-(1i128 << 64)..=(1i128 << 64) - 1).contains(&value) {
        return Err(Error::Encoding(format!("{path}: integer {text} is outside the 64-bit range of DAG-CBOR")));
    }
    Ok(value)
}

/// Check that a value is in the canonical data model (what [`encode`] checks first).
pub fn check(value: &Value) -> Result<()> {
    walk(value, "$", 0, &mut None)
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u8::MAX as u64 {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u16::MAX as u64 {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as u64 {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn walk(value: &Value, path: &str, depth: usize, out: &mut Option<&mut Vec<u8>>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::Encoding(format!("{path}: nested deeper than {MAX_DEPTH} levels")));
    }
    match value {
        Value::Null => emit(out, &[0xf6]),
        Value::Bool(true) => emit(out, &[0xf5]),
        Value::Bool(false) => emit(out, &[0xf4]),
        Value::Number(n) => {
            let i = integer(n, path)?;
            if let Some(buf) = out.as_deref_mut() {
                if i >= 0 {
                    head(buf, 0, i as u64);
                } else {
                    head(buf, 1, (-1 - i) as u64);
                }
            }
        }
        Value::String(s) => {
            if let Some(buf) = out.as_deref_mut() {
                head(buf, 3, s.len() as u64);
                buf.extend_from_slice(s.as_bytes());
            }
        }
        Value::Array(items) => {
            if let Some(buf) = out.as_deref_mut() {
                head(buf, 4, items.len() as u64);
            }
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), depth + 1, out)?;
            }
        }
        Value::Object(map) => encode_map(map, path, depth, out)?,
    }
    Ok(())
}

fn emit(out: &mut Option<&mut Vec<u8>>, bytes: &[u8]) {
    if let Some(buf) = out.as_deref_mut() {
        buf.extend_from_slice(bytes);
    }
}

fn encode_map(map: &Map<String, Value>, path: &str, depth: usize, out: &mut Option<&mut Vec<u8>>) -> Result<()> {
    let mut keys: Vec<&String> = map.keys().collect();
    // Encoded text keys sort by length first, then bytewise.
    keys.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.as_bytes().cmp(b.as_bytes())));
    if let Some(buf) = out.as_deref_mut() {
        head(buf, 5, keys.len() as u64);
    }
    for key in keys {
        if let Some(buf) = out.as_deref_mut() {
            head(buf, 3, key.len() as u64);
            buf.extend_from_slice(key.as_bytes());
        }
        walk(&map[key], &format!("{path}.{key}"), depth + 1, out)?;
    }
    Ok(())
}

/// The canonical DAG-CBOR bytes of a value.
///
/// # Errors
/// [`Error::Encoding`] naming the first value outside the data model: a float, an
/// integer outside [−2^64, 2^64−1], nesting deeper than 64.
pub fn encode(value: &Value) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(256);
    walk(value, "$", 0, &mut Some(&mut buf))?;
    Ok(buf)
}
