//! The shared vectors (bindings/vectors/events.json), byte for byte.

use gatos::{cbor, event_cid, verify_signature, Event, SigningKey};
use serde_json::{json, Value};

fn load(name: &str) -> Value {
    let path = format!("{}/../vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn vectors_byte_for_byte() {
    let vectors = load("events.json");
    let test_key = load("test_key.json");
    let key = SigningKey::from_seed_hex(test_key["seed"].as_str().unwrap(), None).unwrap();
    assert_eq!(key.public_key(), test_key["public_key"].as_str().unwrap());
    let vectors = vectors.as_array().unwrap();
    assert!(vectors.len() >= 20);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let want = v["canonical_hex"].as_str().unwrap();
        assert_eq!(hex(&cbor::encode(&v["envelope"]).unwrap()), want, "{name}: canonical bytes");
        let event: Event = serde_json::from_value(v["envelope"].clone()).unwrap();
        let signed = event.sign(&key).unwrap();
        assert_eq!(hex(&signed.canonical), want, "{name}: Event::canonical");
        assert_eq!(signed.cid, v["cid"].as_str().unwrap(), "{name}: cid");
        assert_eq!(key.public_key(), v["public_key"].as_str().unwrap());
        assert_eq!(signed.signature, v["signature"].as_str().unwrap(), "{name}: signature");
        assert!(verify_signature(&key.public_key(), &signed.canonical, &signed.signature));
        assert_eq!(event_cid(&signed.canonical), signed.cid);
    }
}

#[test]
fn refuses_what_cannot_be_canonical() {
    for text in ["1.5", "1.0", "1e3", "18446744073709551616", "-18446744073709551617", "{\"a\":[0.1]}"] {
        let value: Value = serde_json::from_str(text).unwrap();
        let err = cbor::encode(&value).unwrap_err();
        assert!(err.is(gatos::Code::BadEncoding), "{text}: {err}");
    }
    let mut deep = json!(1);
    for _ in 0..70 {
        deep = json!([deep]);
    }
    assert!(cbor::encode(&deep).is_err());
}

#[test]
fn blake3_reference_values() {
    // SPEC §3: the Event-CID is over BLAKE3; check the crate against the spec's values.
    assert_eq!(blake3_hex(b""), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
    assert_eq!(blake3_hex(b"hello"), "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f");
}

fn blake3_hex(data: &[u8]) -> String {
    // The CID is prefix (4 bytes) + digest; recover the digest from a CID's base32.
    let cid = event_cid(data);
    let alphabet = "abcdefghijklmnopqrstuvwxyz234567";
    let (mut acc, mut bits, mut out) = (0u64, 0u32, Vec::new());
    for c in cid[1..].chars() {
        acc = (acc << 5) | alphabet.find(c).unwrap() as u64;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    hex(&out[4..36])
}

#[test]
fn ulids_are_monotonic_and_carry_their_time() {
    let mut prev = String::new();
    for _ in 0..1000 {
        let u = gatos::new_ulid();
        assert!(u.len() == 26 && u > prev, "{u} after {prev}");
        prev = u;
    }
    let ms = gatos::ulid_millis(&prev).unwrap();
    assert_eq!(gatos::format_millis(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(gatos::format_millis(1_795_840_464_128), "2026-11-28T04:34:24.128Z");
    assert!(ms > 1_700_000_000_000);
}
