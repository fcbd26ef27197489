//! Errors: the daemon's error frames as a typed [`Code`], and the client's own failures.

use std::fmt;

macro_rules! codes {
    ($($variant:ident = $wire:literal $(=> $parent:ident)?),* $(,)?) => {
        /// A wire error code of docs/protocol.md. Codes this client does not know yet
        /// arrive as [`Code::Other`], so a newer daemon never breaks an older client.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $(#[doc = $wire] $variant,)*
            /// A code this client does not know.
            Other(String),
        }

        impl Code {
            /// The code as it is written on the wire (`"POLICY_DENY"`).
            pub fn as_str(&self) -> &str {
                match self {
                    $(Code::$variant => $wire,)*
                    Code::Other(s) => s,
                }
            }

            /// The code of a wire string.
            pub fn from_wire(code: &str) -> Code {
                match code {
                    $($wire => Code::$variant,)*
                    other => Code::Other(other.to_string()),
                }
            }

            /// The code this one refines (`INVALID_NS` → `INVALID_NAME`, `JOB_NOT_FOUND` → `JOB_ERROR`).
            pub fn parent(&self) -> Option<Code> {
                match self {
                    $($(Code::$variant => Some(Code::$parent),)?)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    BadFrame = "BAD_FRAME", UnknownType = "UNKNOWN_TYPE", TooLarge = "TOO_LARGE", Busy = "BUSY",
    Timeout = "TIMEOUT", Unauthorized = "UNAUTHORIZED", ShuttingDown = "SHUTTING_DOWN", Internal = "INTERNAL",
    InvalidName = "INVALID_NAME", InvalidNs = "INVALID_NS" => InvalidName, InvalidEvent = "INVALID_EVENT",
    BadEncoding = "BAD_ENCODING", BadSignature = "BAD_SIGNATURE", UnknownSigAlg = "UNKNOWN_SIG_ALG" => BadSignature,
    UnknownActor = "UNKNOWN_ACTOR", UlidReused = "ULID_REUSED", NotFound = "NOT_FOUND", Conflict = "CONFLICT",
    NotFastForward = "NOT_FAST_FORWARD" => Conflict, Locked = "LOCKED" => Conflict, RefInTheWay = "REF_IN_THE_WAY",
    Storage = "STORAGE", Corrupt = "CORRUPT" => Storage, NoActor = "NO_ACTOR", InvalidConfig = "INVALID_CONFIG",
    PolicyDeny = "POLICY_DENY", InvalidPolicy = "INVALID_POLICY", InvalidGrant = "INVALID_GRANT",
    FoldError = "FOLD_ERROR", InvalidFoldSpec = "INVALID_FOLD_SPEC" => FoldError, FoldFailed = "FOLD_FAILED" => FoldError,
    ProofMismatch = "PROOF_MISMATCH" => FoldError, FoldFuel = "FOLD_FUEL" => FoldFailed,
    FoldMemory = "FOLD_MEMORY" => FoldFailed, FoldState = "FOLD_STATE" => FoldFailed,
    BusError = "BUS_ERROR", InvalidMessage = "INVALID_MESSAGE" => BusError, InvalidPosition = "INVALID_POSITION" => BusError,
    NotPending = "NOT_PENDING" => BusError, UnknownGroup = "UNKNOWN_GROUP" => BusError,
    JobError = "JOB_ERROR", InvalidJob = "INVALID_JOB" => JobError, JobNotFound = "JOB_NOT_FOUND" => JobError,
    ClaimLost = "CLAIM_LOST" => JobError, JobFinished = "JOB_FINISHED" => JobError,
    BlobNotFound = "BLOB_NOT_FOUND" => JobError, BlobCorrupt = "BLOB_CORRUPT" => JobError,
    RunnerUnavailable = "RUNNER_UNAVAILABLE" => JobError, BadProof = "BAD_PROOF" => JobError,
    CacheError = "CACHE_ERROR", InvalidQuery = "INVALID_QUERY" => CacheError,
    InvalidIndexSpec = "INVALID_INDEX_SPEC" => CacheError, CorruptIndex = "CORRUPT_INDEX" => CacheError,
    SyncFailed = "SYNC_FAILED",
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error frame of the daemon: `{"ok": false, "error": {"code", "reason", "rule"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonError {
    pub code: Code,
    pub reason: String,
    /// The deciding policy rule (`<file>:<line>`), for `POLICY_DENY`.
    pub rule: Option<String>,
    /// The id of the request the frame answered.
    pub request_id: Option<String>,
}

/// Everything a call can fail with.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The daemon answered with an error frame.
    Daemon(DaemonError),
    /// A value cannot be canonical DAG-CBOR (a float, an integer out of range, …); nothing was sent.
    Encoding(String),
    /// A local envelope or key problem found before sending (code `INVALID_EVENT`, `INVALID_NAME`, `BAD_SIGNATURE`).
    Invalid(Code, String),
    /// The connection could not be made or failed.
    Io(std::io::Error),
    /// The connection ended before the reply was complete.
    ConnectionClosed(String),
    /// The daemon sent something that is not a frame of the protocol.
    BadReply(String),
    /// The daemon stored another Event-CID than the one signed here.
    CidMismatch { daemon: String, local: String },
    /// No reply within the time limit.
    Timeout,
}

impl Error {
    /// The wire code of the error, where it has one (`Encoding` is `BAD_ENCODING`).
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Daemon(e) => Some(e.code.clone()),
            Error::Encoding(_) => Some(Code::BadEncoding),
            Error::Invalid(code, _) => Some(code.clone()),
            _ => None,
        }
    }

    /// Whether the error's code is `code` or refines it:
    /// `err.is(Code::InvalidName)` holds for `INVALID_NS` too.
    pub fn is(&self, code: Code) -> bool {
        let mut current = self.code();
        while let Some(c) = current {
            if c == code {
                return true;
            }
            current = c.parent();
        }
        false
    }

    /// The daemon's error frame, if this is one.
    pub fn daemon(&self) -> Option<&DaemonError> {
        match self {
            Error::Daemon(e) => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Daemon(e) => {
                write!(f, "{}: {}", e.code, e.reason)?;
                if let Some(rule) = &e.rule {
                    write!(f, " (rule {rule})")?;
                }
                Ok(())
            }
            Error::Encoding(reason) => write!(f, "BAD_ENCODING: {reason}"),
            Error::Invalid(code, reason) => write!(f, "{code}: {reason}"),
            Error::Io(e) => write!(f, "connection: {e}"),
            Error::ConnectionClosed(reason) => write!(f, "connection closed: {reason}"),
            Error::BadReply(reason) => write!(f, "bad reply: {reason}"),
            Error::CidMismatch { daemon, local } => write!(f, "the daemon stored {daemon}, this client signed {local}"),
            Error::Timeout => f.write_str("no reply in time"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
