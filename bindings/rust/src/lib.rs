//! Client of `gatosd`, the GATOS node daemon, for Rust (tokio).
//!
//! It speaks the JSONL protocol of the project's `docs/protocol.md` over a unix
//! socket or loopback TCP (with the daemon's token): requests are pipelined on one
//! connection and matched to replies by id, the daemon's keep-alive pings are
//! answered in the background, and error frames become [`Error::Daemon`] with a
//! typed [`Code`] (`err.is(Code::InvalidName)` also holds for `INVALID_NS`).
//!
//! Events can be signed here: [`Event::canonical`] is canonical DAG-CBOR,
//! [`event_cid`] the CIDv1 (dag-cbor, BLAKE3-256, base32) and [`Event::sign`] an
//! ed25519 signature, byte for byte as the Python core (the shared vectors in
//! `bindings/vectors` prove it).
//!
//! ```no_run
//! # async fn run() -> Result<(), gatos::Error> {
//! let client = gatos::Client::connect_unix(".git/gatos/gatosd.sock").await?;
//! let event = gatos::Event::new("invoice.created", serde_json::json!({"amount": 1200}));
//! let res = client.append_event("finance", event).await?;
//! println!("{} {}", res.commit, res.event_cid);
//! # Ok(()) }
//! ```

pub mod bus;
pub mod cbor;
mod client;
mod error;
mod event;
pub mod jobs;
mod keys;

pub use client::{AppendResult, Client, Frame, Hello, HelloNode, JournalEntry, ReadOptions, ReplyStream};
pub use error::{Code, DaemonError, Error, Result};
pub use event::{event_cid, format_millis, new_ulid, normalize_actor, ulid_millis, Event, SignedEvent, ZERO_OID};
pub use keys::{verify_signature, SigningKey};
