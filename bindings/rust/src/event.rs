//! Event envelopes (SPEC §5), their canonical bytes, Event-CID and signature.

use std::io::Read;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cbor;
use crate::error::{Code, Error, Result};
use crate::keys::SigningKey;

/// The policy root of a node before any policy bundle exists.
pub const ZERO_OID: &str = "0000000000000000000000000000000000000000";

/// An event envelope. `None` optional fields are left out of the signed bytes;
/// `caps: Some(vec![])` is encoded as an empty list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Event {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub ulid: String,
    #[serde(default)]
    pub actor: String,
    pub payload: Value,
    #[serde(default)]
    pub policy_root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caps: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig_alg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
}

/// An envelope with its canonical bytes, Event-CID and signature.
#[derive(Debug, Clone)]
pub struct SignedEvent {
    pub event: Event,
    pub canonical: Vec<u8>,
    pub cid: String,
    /// `ed25519:<128 hex>`.
    pub signature: String,
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A bare name is `user:<name>` (SPEC §2).
pub fn normalize_actor(actor: &str) -> String {
    if is_name(actor) {
        format!("user:{actor}")
    } else {
        actor.to_string()
    }
}

impl Event {
    /// An event of `event_type` with `payload`; the rest is completed by the daemon
    /// (node-signed) or by [`Event::complete`] (signed here).
    pub fn new(event_type: impl Into<String>, payload: Value) -> Event {
        Event { event_type: event_type.into(), payload, ..Event::default() }
    }

    /// The map whose canonical bytes are signed.
    pub fn value(&self) -> Result<Value> {
        for (name, v) in [("type", &self.event_type), ("ulid", &self.ulid), ("actor", &self.actor), ("policy_root", &self.policy_root)] {
            if v.is_empty() {
                return Err(Error::Invalid(Code::InvalidEvent, format!("the envelope needs `{name}`")));
            }
        }
        let valid_actor = self.actor.split_once(':').is_some_and(|(kind, name)| {
            matches!(kind, "user" | "agent" | "service") && is_name(name)
        });
        if !valid_actor {
            return Err(Error::Invalid(Code::InvalidName, format!("actor {} is not kind:name", self.actor)));
        }
        cbor::check(&self.payload)?;
        let mut map = Map::new();
        map.insert("type".into(), Value::String(self.event_type.clone()));
        map.insert("ulid".into(), Value::String(self.ulid.clone()));
        map.insert("actor".into(), Value::String(self.actor.clone()));
        map.insert("payload".into(), self.payload.clone());
        map.insert("policy_root".into(), Value::String(self.policy_root.clone()));
        if let Some(caps) = &self.caps {
            map.insert("caps".into(), Value::Array(caps.iter().cloned().map(Value::String).collect()));
        }
        if let Some(alg) = &self.sig_alg {
            map.insert("sig_alg".into(), Value::String(alg.clone()));
        }
        if let Some(ts) = &self.ts {
            map.insert("ts".into(), Value::String(ts.clone()));
        }
        Ok(Value::Object(map))
    }

    /// Canonical DAG-CBOR bytes of the unsigned envelope.
    pub fn canonical(&self) -> Result<Vec<u8>> {
        cbor::encode(&self.value()?)
    }

    /// Fill in what a client-signed envelope needs: the key's actor, a fresh ULID,
    /// `ts` from the ULID's time, the zero policy root.
    pub fn complete(mut self, key: &SigningKey) -> Event {
        if self.actor.is_empty() {
            self.actor = key.actor().unwrap_or_default().to_string();
        }
        self.actor = normalize_actor(&self.actor);
        if self.ulid.is_empty() {
            self.ulid = new_ulid();
        }
        if self.ts.is_none() {
            self.ts = ulid_millis(&self.ulid).map(format_millis);
        }
        if self.policy_root.is_empty() {
            self.policy_root = ZERO_OID.to_string();
        }
        self
    }

    /// Encode and sign the envelope.
    pub fn sign(self, key: &SigningKey) -> Result<SignedEvent> {
        let canonical = self.canonical()?;
        let cid = event_cid(&canonical);
        let signature = key.sign_text(&canonical);
        Ok(SignedEvent { event: self, canonical, cid, signature })
    }
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The Event-CID of canonical bytes: CIDv1, dag-cbor, BLAKE3-256 multihash, base32 lowercase (`b…`).
pub fn event_cid(canonical: &[u8]) -> String {
    let mut cid = vec![0x01, 0x71, 0x1e, 0x20];
    cid.extend_from_slice(blake3::hash(canonical).as_bytes());
    let mut out = String::from("b");
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in cid {
        acc = (acc << 8) | byte as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(BASE32[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
static ULID_STATE: Mutex<(u64, u128)> = Mutex::new((0, 0));

fn random_80() -> u128 {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes[6..]))
        .expect("gatos: cannot read /dev/urandom");
    u128::from_be_bytes(bytes)
}

/// A fresh ULID, monotonic within this process.
pub fn new_ulid() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let mut state = ULID_STATE.lock().unwrap_or_else(|e| e.into_inner());
    if now <= state.0 {
        state.1 = (state.1 + 1) & ((1u128 << 80) - 1);
    } else {
        *state = (now, random_80());
    }
    let mut n = ((state.0 as u128) << 80) | state.1;
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = CROCKFORD[(n & 31) as usize];
        n >>= 5;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

/// The millisecond time a ULID holds.
pub fn ulid_millis(ulid: &str) -> Option<u64> {
    if ulid.len() != 26 {
        return None;
    }
    ulid.bytes().take(10).try_fold(0u64, |ms, c| {
        CROCKFORD.iter().position(|&d| d == c.to_ascii_uppercase()).map(|i| (ms << 5) | i as u64)
    })
}

/// RFC 3339 UTC with milliseconds (`2026-01-02T03:04:05.678Z`).
pub fn format_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}
