//! ed25519 keys (ed25519-dalek): sign events here, so private keys never travel.

use std::path::Path;

use ed25519_dalek::{Signature, Signer, VerifyingKey};

use crate::error::{Code, Error, Result};

/// An ed25519 private key, with the actor it belongs to when known. Its public key
/// must be trusted for that actor on the node (`gatos key new`, the trust graph).
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    actor: Option<String>,
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn bad(reason: impl Into<String>) -> Error {
    Error::Invalid(Code::BadSignature, reason.into())
}

impl SigningKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: [u8; 32], actor: Option<&str>) -> SigningKey {
        SigningKey { key: ed25519_dalek::SigningKey::from_bytes(&seed), actor: actor.map(str::to_string) }
    }

    /// A key from its seed in hex (64 digits).
    pub fn from_seed_hex(seed: &str, actor: Option<&str>) -> Result<SigningKey> {
        let bytes = from_hex(seed).ok_or_else(|| bad("the seed is not hex"))?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| bad("an ed25519 seed is 32 bytes"))?;
        Ok(SigningKey::from_seed(seed, actor))
    }

    /// A node key file (`.git/gatos/keys/<kind>/<name>.key`: JSON `{actor, public_key, seed}`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<SigningKey> {
        let text = std::fs::read_to_string(path.as_ref())?;
        let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not a key file: {e}")))?;
        let seed = doc["seed"].as_str().ok_or_else(|| bad("the key file has no seed"))?;
        let key = SigningKey::from_seed_hex(seed, doc["actor"].as_str())?;
        if let Some(public) = doc["public_key"].as_str() {
            if public != key.public_key() {
                return Err(bad("the key file's public_key does not match its seed"));
            }
        }
        Ok(key)
    }

    /// The actor of the key, when known.
    pub fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }

    /// `ed25519:<64 hex>`.
    pub fn public_key(&self) -> String {
        format!("ed25519:{}", to_hex(self.key.verifying_key().as_bytes()))
    }

    /// The raw 64-byte signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// `ed25519:<128 hex>` of `message`.
    pub fn sign_text(&self, message: &[u8]) -> String {
        format!("ed25519:{}", to_hex(&self.sign(message)))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({:?}, {})", self.actor, self.public_key())
    }
}

/// Whether `signature` (`ed25519:<hex>`) signs `message` under `public_key` (`ed25519:<hex>`).
pub fn verify_signature(public_key: &str, message: &[u8], signature: &str) -> bool {
    let (Some(pk), Some(sig)) = (public_key.strip_prefix("ed25519:"), signature.strip_prefix("ed25519:")) else {
        return false;
    };
    let (Some(pk), Some(sig)) = (from_hex(pk), from_hex(sig)) else { return false };
    let (Ok(pk), Ok(sig)) = (<[u8; 32]>::try_from(pk), <[u8; 64]>::try_from(sig)) else { return false };
    VerifyingKey::from_bytes(&pk).is_ok_and(|k| k.verify_strict(message, &Signature::from_bytes(&sig)).is_ok())
}
