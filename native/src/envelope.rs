//! Encoding a bus message's envelope: the daemon's per-publish work before the writer.
//!
//! `envelope` gives exactly what `mind_bus.presign` computes without signing: the
//! `Body-Hash` digest, the canonical DAG-CBOR envelope and its Event-CID. It encodes
//! only the plain data model from exact built-in types (dict with str keys, list,
//! tuple, str, bytes, int within 64 bits, bool, None) up to the same depth limit;
//! anything else (a float, a subclass, a huge integer, a lone surrogate, deeper
//! nesting) makes it answer `None`, and Python encodes that message and names the
//! error itself.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::event_cid;

/// `ledger_core._dagcbor.MAX_DEPTH`: a value nested deeper is refused.
const MAX_DEPTH: usize = 64;

struct Unusual;

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= 0xFF {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= 0xFFFF {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= 0xFFFF_FFFF {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn encode(out: &mut Vec<u8>, value: &Bound<'_, PyAny>, depth: usize) -> Result<(), Unusual> {
    if depth > MAX_DEPTH {
        return Err(Unusual);
    }
    if value.is_none() {
        out.push(0xF6);
    } else if value.is_exact_instance_of::<PyBool>() {
        out.push(if value.is_truthy().map_err(|_| Unusual)? { 0xF5 } else { 0xF4 });
    } else if let Ok(s) = value.downcast_exact::<PyString>() {
        text(out, s.to_str().map_err(|_| Unusual)?);
    } else if value.is_exact_instance_of::<pyo3::types::PyInt>() {
        if let Ok(n) = value.extract::<i64>() {
            if n >= 0 {
                head(out, 0, n as u64);
            } else {
                head(out, 1, (-1 - n) as u64);
            }
        } else if let Ok(n) = value.extract::<u64>() {
            head(out, 0, n);
        } else {
            return Err(Unusual); // below i64 or above u64: Python's range rules decide
        }
    } else if let Ok(d) = value.downcast_exact::<PyDict>() {
        let mut entries: Vec<(Vec<u8>, Bound<'_, PyAny>)> = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let k = k.downcast_exact::<PyString>().map_err(|_| Unusual)?;
            let mut key = Vec::new();
            text(&mut key, k.to_str().map_err(|_| Unusual)?);
            entries.push((key, v));
        }
        entries.sort_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
        head(out, 5, entries.len() as u64);
        for (key, v) in &entries {
            out.extend_from_slice(key);
            encode(out, v, depth + 1)?;
        }
    } else if let Ok(l) = value.downcast_exact::<PyList>() {
        head(out, 4, l.len() as u64);
        for item in l.iter() {
            encode(out, &item, depth + 1)?;
        }
    } else if let Ok(t) = value.downcast_exact::<PyTuple>() {
        head(out, 4, t.len() as u64);
        for item in t.iter() {
            encode(out, &item, depth + 1)?;
        }
    } else if let Ok(b) = value.downcast_exact::<PyBytes>() {
        let data = b.as_bytes();
        head(out, 2, data.len() as u64);
        out.extend_from_slice(data);
    } else {
        return Err(Unusual);
    }
    Ok(())
}

/// `(digest, canonical, cid)` of a message envelope, or None (Python encodes it).
///
/// `headers` is None or a dict of str to str with at most the allowed count (checked by
/// the caller), `key` None or a str of allowed length; the names are valid already.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn envelope<'py>(
    py: Python<'py>,
    message_type: &str,
    payload: &Bound<'py, PyAny>,
    key: Option<&Bound<'py, PyAny>>,
    headers: Option<&Bound<'py, PyAny>>,
    topic: &str,
    ulid: &str,
    publisher: &str,
    policy_root: &str,
    ts: &str,
) -> PyResult<Option<(String, Bound<'py, PyBytes>, String)>> {
    let mut body = Vec::with_capacity(256);
    if encode(&mut body, payload, 0).is_err() {
        return Ok(None);
    }
    let mut enc_headers = Vec::with_capacity(16);
    match headers {
        None => enc_headers.push(0xA0),
        Some(h) => {
            if encode(&mut enc_headers, h, 0).is_err() {
                return Ok(None);
            }
        }
    }
    let mut enc_key = Vec::with_capacity(16);
    match key {
        None => enc_key.push(0xF6),
        Some(k) => match k.downcast_exact::<PyString>().ok().and_then(|s| s.to_str().ok()) {
            Some(s) => text(&mut enc_key, s),
            None => return Ok(None),
        },
    }
    // The body map as hashed for `Body-Hash`: {key, body, headers} in canonical order.
    let mut key_body = Vec::with_capacity(body.len() + enc_key.len() + 16);
    text(&mut key_body, "key");
    key_body.extend_from_slice(&enc_key);
    text(&mut key_body, "body");
    key_body.extend_from_slice(&body);
    let mut hashed = blake3::Hasher::new();
    hashed.update(&[0xA3]);
    hashed.update(&key_body);
    let mut tail = Vec::with_capacity(16 + enc_headers.len());
    text(&mut tail, "headers");
    tail.extend_from_slice(&enc_headers);
    hashed.update(&tail);
    let digest = hashed.finalize().to_hex().to_string();
    // The envelope {ts, type, ulid, actor, payload, policy_root}, the payload being the
    // body map {key, body, topic, headers}.
    let mut env = Vec::with_capacity(key_body.len() + tail.len() + 256);
    env.push(0xA6);
    text(&mut env, "ts");
    text(&mut env, ts);
    text(&mut env, "type");
    text(&mut env, message_type);
    text(&mut env, "ulid");
    text(&mut env, ulid);
    text(&mut env, "actor");
    text(&mut env, publisher);
    text(&mut env, "payload");
    env.push(0xA4);
    env.extend_from_slice(&key_body);
    text(&mut env, "topic");
    text(&mut env, topic);
    env.extend_from_slice(&tail);
    text(&mut env, "policy_root");
    text(&mut env, policy_root);
    let cid = event_cid(&env);
    Ok(Some((digest, PyBytes::new(py, &env), cid)))
}
