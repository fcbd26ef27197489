//! The job plane: enqueue, status, result, wait, cancel.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::client::{decode, Client, Frame};
use crate::error::{Error, Result};

/// The job methods of a connection: [`Client::jobs`].
pub struct Jobs<'a> {
    pub(crate) client: &'a Client,
}

/// A v1 job manifest (docs/jobs.md). The job id is the hash of its canonical JSON:
/// enqueuing the same manifest again returns the same job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Manifest {
    pub command: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Whole seconds.
    pub timeout: u64,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub env: HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_root: Option<String>,
    /// Makes an otherwise identical job a new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ulid: Option<String>,
}

/// The reply to `jobs.enqueue`.
#[derive(Debug, Clone, Deserialize)]
pub struct Enqueued {
    pub job_id: String,
    pub ns: String,
    pub commit: String,
    pub duplicate: bool,
    pub runtime: String,
}

/// The reply to `jobs.status`: the lifecycle folded from the job's events, corrected by its refs.
#[derive(Debug, Clone, Deserialize)]
pub struct JobStatus {
    pub job_id: String,
    /// `pending`, `claimed`, `running`, `succeeded`, `failed`, `aborted`.
    pub state: String,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub runs: u32,
    #[serde(default)]
    pub history: Vec<Value>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// The reply to `jobs.result`, and the final frame of `jobs.wait`.
#[derive(Debug, Clone, Deserialize)]
pub struct JobResult {
    pub job_id: String,
    /// `succeeded`, `failed` or `aborted` (absent when `jobs.wait` timed out).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
    /// The Proof-of-Execution was checked.
    #[serde(default)]
    pub verified: bool,
    /// By name: UTF-8 text, `{"base64"}` or a blob pointer.
    #[serde(default)]
    pub outputs: Map<String, Value>,
    #[serde(default)]
    pub exit: Option<Value>,
    #[serde(default)]
    pub poe: Option<Value>,
    #[serde(default)]
    pub timed_out: bool,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl JobResult {
    /// The job's standard output when it is inline text.
    pub fn stdout(&self) -> Option<&str> {
        self.outputs.get("stdout").and_then(Value::as_str)
    }
}

impl Jobs<'_> {
    /// Create a job in namespace `ns`.
    pub async fn enqueue(&self, ns: &str, manifest: &Manifest) -> Result<Enqueued> {
        self.client.call("jobs.enqueue", json!({"ns": ns, "manifest": manifest})).await
    }

    /// Where a job is in its lifecycle.
    pub async fn status(&self, job_id: &str) -> Result<JobStatus> {
        self.client.call("jobs.status", json!({"job_id": job_id})).await
    }

    /// A finished job's result (`JOB_NOT_FOUND` before it has one).
    pub async fn result(&self, job_id: &str) -> Result<JobResult> {
        self.client.call("jobs.result", json!({"job_id": job_id})).await
    }

    /// Wait for a job's result, calling `on_state` at each state change before it.
    pub async fn wait(&self, job_id: &str, timeout_ms: Option<u64>, mut on_state: impl FnMut(&str)) -> Result<JobResult> {
        let mut fields = Map::new();
        fields.insert("job_id".into(), json!(job_id));
        if let Some(ms) = timeout_ms {
            fields.insert("timeout_ms".into(), json!(ms));
        }
        let mut stream = self.client.stream("jobs.wait", fields)?;
        while let Some(frame) = stream.next().await {
            let frame: Frame = frame?;
            if stream.is_done() {
                return decode(frame);
            }
            if let Some(state) = frame.get("state").and_then(Value::as_str) {
                on_state(state);
            }
        }
        Err(Error::ConnectionClosed("jobs.wait ended without a result".into()))
    }

    /// Abort a job that has no result yet (`JOB_FINISHED` otherwise).
    pub async fn cancel(&self, job_id: &str, reason: &str) -> Result<Frame> {
        self.client.request("jobs.cancel", crate::client::as_map(json!({"job_id": job_id, "reason": reason}))).await
    }
}
