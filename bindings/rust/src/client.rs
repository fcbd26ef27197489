//! The connection: request ids, reply routing, keep-alive, streams.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Code, DaemonError, Error, Result};
use crate::event::{Event, SignedEvent};
use crate::keys::SigningKey;

/// One reply frame as the daemon sent it.
pub type Frame = Map<String, Value>;

type Reply = Result<Frame>;

struct Shared {
    out: mpsc::UnboundedSender<Vec<u8>>,
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Reply>>>,
    pongs: Mutex<VecDeque<oneshot::Sender<()>>>,
    closed: Mutex<Option<String>>,
    next_id: AtomicU64,
}

impl Shared {
    fn send(&self, frame: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(frame).map_err(|e| Error::Encoding(e.to_string()))?;
        line.push(b'\n');
        self.out.send(line).map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> Error {
        let reason = self.closed.lock().unwrap().clone();
        Error::ConnectionClosed(reason.unwrap_or_else(|| "the connection is closed".into()))
    }
}

/// What the daemon said about itself on `hello`.
#[derive(Debug, Clone, Deserialize)]
pub struct Hello {
    pub server: String,
    pub version: String,
    pub protocol: u32,
    pub node: HelloNode,
    pub limits: Map<String, Value>,
    pub methods: Vec<String>,
}

/// The node of a [`Hello`].
#[derive(Debug, Clone, Deserialize)]
pub struct HelloNode {
    pub repo: String,
    /// The node's default actor.
    pub actor: Option<String>,
}

/// The reply to `append_event`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct AppendResult {
    pub ns: String,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub commit: String,
    pub event_cid: String,
    pub ulid: String,
    pub actor: String,
    /// The same ULID and body were appended before: nothing new was written.
    pub duplicate: bool,
}

/// One event of a journal, with its commit, Event-CID and signature.
#[derive(Debug, Clone, Deserialize)]
pub struct JournalEntry {
    pub commit: String,
    pub event_cid: String,
    pub sig: String,
    #[serde(flatten)]
    pub event: Event,
}

/// Optional bounds of a journal read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    pub after: Option<String>,
    pub after_ulid: Option<String>,
    pub until: Option<String>,
    pub limit: Option<u64>,
    pub last: Option<u64>,
}

/// A connection to gatosd. Cheap to clone (clones share the connection); requests
/// are pipelined and matched to replies by id, and the daemon's keep-alive pings
/// are answered by a background task. The connection closes when the last clone
/// is dropped or on [`Client::close`].
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    hello: Arc<Hello>,
    timeout: Option<Duration>,
}

pub(crate) fn decode<T: DeserializeOwned>(frame: Frame) -> Result<T> {
    serde_json::from_value(Value::Object(frame)).map_err(|e| Error::BadReply(e.to_string()))
}

fn error_of(frame: &Frame, id: Option<&str>) -> Error {
    let error = frame.get("error").and_then(Value::as_object);
    let text = |k: &str| error.and_then(|e| e.get(k)).and_then(Value::as_str).map(str::to_string);
    Error::Daemon(DaemonError {
        code: Code::from_wire(&text("code").unwrap_or_else(|| "INTERNAL".into())),
        reason: text("reason").unwrap_or_default(),
        rule: text("rule"),
        request_id: id.map(str::to_string),
    })
}

impl Client {
    /// Connect to a unix socket (a node's default: `.git/gatos/gatosd.sock`) and say hello.
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Client> {
        let stream = tokio::net::UnixStream::connect(path).await?;
        let (r, w) = stream.into_split();
        Client::start(r, w, None).await
    }

    /// Connect to a loopback TCP daemon (`--listen`) with its token and say hello.
    pub async fn connect_tcp(address: &str, token: &str) -> Result<Client> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Client::start(r, w, Some(token)).await
    }

    /// Run the protocol over any byte stream pair (e.g. the pipes of `gatosd --stdio`).
    pub async fn start<R, W>(reader: R, writer: W, token: Option<&str>) -> Result<Client>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            out,
            pending: Mutex::new(HashMap::new()),
            pongs: Mutex::new(VecDeque::new()),
            closed: Mutex::new(None),
            next_id: AtomicU64::new(0),
        });
        tokio::spawn(write_loop(writer, rx));
        tokio::spawn(read_loop(reader, Arc::downgrade(&shared)));
        let mut fields = Map::new();
        if let Some(token) = token {
            fields.insert("token".into(), Value::String(token.into()));
        }
        let mut client = Client { shared, hello: Arc::new(placeholder_hello()), timeout: Some(Duration::from_secs(30)) };
        let hello: Hello = decode(client.request("hello", fields).await?)?;
        client.hello = Arc::new(hello);
        Ok(client)
    }

    /// The daemon's versions, limits and methods, as said on connect.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The time limit of requests that are not streams (default 30 s; `None`: wait forever).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.timeout = timeout;
        self
    }

    /// Close the connection; requests still waiting fail with [`Error::ConnectionClosed`].
    pub fn close(&self) {
        self.shared.pending.lock().unwrap().clear();
        let _ = self.shared.out.send(Vec::new()); // an empty write asks the writer to shut down
    }

    /// Send a request and return its final frame (`ack` and progress frames skipped).
    pub async fn request(&self, kind: &str, fields: Map<String, Value>) -> Result<Frame> {
        let mut stream = self.stream(kind, fields)?;
        let work = async {
            loop {
                match stream.next().await {
                    Some(Ok(frame)) if stream.is_done() => return Ok(frame),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e),
                    None => return Err(Error::ConnectionClosed(format!("{kind}: no final frame"))),
                }
            }
        };
        match self.timeout {
            Some(limit) => tokio::time::timeout(limit, work).await.map_err(|_| Error::Timeout)?,
            None => work.await,
        }
    }

    /// [`Client::request`] with the final frame decoded into `T`.
    pub async fn call<T: DeserializeOwned>(&self, kind: &str, fields: Value) -> Result<T> {
        let fields = match fields {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => return Err(Error::Encoding("request fields must be a JSON object".into())),
        };
        decode(self.request(kind, fields).await?)
    }

    /// Send a request answered by several frames; read them with [`ReplyStream::next`].
    pub fn stream(&self, kind: &str, mut fields: Map<String, Value>) -> Result<ReplyStream> {
        let id = format!("r{}", self.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let closed = self.shared.closed.lock().unwrap();
            if closed.is_some() {
                drop(closed);
                return Err(self.shared.closed_error());
            }
            self.shared.pending.lock().unwrap().insert(id.clone(), tx);
        }
        fields.insert("type".into(), Value::String(kind.into()));
        fields.insert("id".into(), Value::String(id.clone()));
        let stream = ReplyStream { id, rx, done: false, shared: self.shared.clone() };
        self.shared.send(&Value::Object(fields))?;
        Ok(stream)
    }

    /// Send a keep-alive ping and wait for its pong.
    pub async fn ping(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.shared.pongs.lock().unwrap().push_back(tx);
        self.shared.send(&json!({"kind": "ping"}))?;
        rx.await.map_err(|_| self.shared.closed_error())
    }

    /// `status`: pid, uptime, queue and counters of the daemon.
    pub async fn status(&self) -> Result<Frame> {
        self.request("status", Map::new()).await
    }

    /// `verify`: check every journal of the node (`valid`, `problems`).
    pub async fn verify(&self) -> Result<Frame> {
        self.clone().with_timeout(None).request("verify", Map::new()).await
    }

    /// Append an event signed by the node with the key it holds for the actor
    /// (`event.actor`, else the node's default actor); empty `ulid`, `ts` and
    /// `policy_root` are filled in by the daemon.
    pub async fn append_event(&self, ns: &str, event: Event) -> Result<AppendResult> {
        crate::cbor::check(&event.payload)?;
        let mut body = json!({"type": event.event_type, "payload": event.payload});
        for (name, value) in [("ulid", &event.ulid), ("actor", &event.actor), ("policy_root", &event.policy_root)] {
            if !value.is_empty() {
                body[name] = Value::String(value.clone());
            }
        }
        if let Some(caps) = event.caps {
            body["caps"] = json!(caps);
        }
        if let Some(ts) = event.ts {
            body["ts"] = Value::String(ts);
        }
        if let Some(alg) = event.sig_alg {
            body["sig_alg"] = Value::String(alg);
        }
        self.call("append_event", json!({"ns": ns, "event": body})).await
    }

    /// Sign an event here (the private key never leaves this process) and append it.
    /// Missing fields are completed ([`Event::complete`]); the daemon's Event-CID
    /// must equal the one computed here ([`Error::CidMismatch`] otherwise).
    pub async fn append_signed(&self, ns: &str, event: Event, key: &SigningKey) -> Result<AppendResult> {
        let signed = event.complete(key).sign(key)?;
        self.append_signed_event(ns, &signed).await
    }

    /// Append an event signed beforehand ([`Event::sign`]).
    pub async fn append_signed_event(&self, ns: &str, signed: &SignedEvent) -> Result<AppendResult> {
        let event = signed.event.value()?;
        let out: AppendResult = self.call("append_event", json!({"ns": ns, "event": event, "sig": signed.signature})).await?;
        if out.event_cid != signed.cid {
            return Err(Error::CidMismatch { daemon: out.event_cid, local: signed.cid.clone() });
        }
        Ok(out)
    }

    /// The events of one journal, oldest first (long reads come in several frames, joined here).
    pub async fn journal_read(&self, ns: &str, actor: &str, options: ReadOptions) -> Result<Vec<JournalEntry>> {
        let mut fields = json!({"ns": ns, "actor": actor});
        for (name, value) in [("after", options.after), ("after_ulid", options.after_ulid), ("until", options.until)] {
            if let Some(v) = value {
                fields[name] = Value::String(v);
            }
        }
        if let Some(limit) = options.limit {
            fields["limit"] = json!(limit);
        }
        if let Some(last) = options.last {
            fields["last"] = json!(last);
        }
        let Value::Object(fields) = fields else { unreachable!() };
        let mut stream = self.stream("journal.read", fields)?;
        let mut entries = Vec::new();
        while let Some(frame) = stream.next().await {
            let mut frame = frame?;
            if let Some(part) = frame.remove("entries") {
                let part: Vec<JournalEntry> = serde_json::from_value(part).map_err(|e| Error::BadReply(e.to_string()))?;
                entries.extend(part);
            }
        }
        Ok(entries)
    }

    /// The head commit of a journal, `None` when it is empty or absent.
    pub async fn journal_head(&self, ns: &str, actor: &str) -> Result<Option<String>> {
        let frame = self.request("journal.head", as_map(json!({"ns": ns, "actor": actor}))).await?;
        Ok(frame.get("head").and_then(Value::as_str).map(str::to_string))
    }

    /// `fold_state`: fold a namespace into a state checkpoint (final frame: `state_root`,
    /// `commit`, `value`, …). `spec` and `channel` are optional.
    pub async fn fold_state(&self, ns: &str, spec: Option<&str>, channel: Option<&str>) -> Result<Frame> {
        let mut fields = json!({"ns": ns});
        if let Some(spec) = spec {
            fields["spec"] = json!(spec);
        }
        if let Some(channel) = channel {
            fields["channel"] = json!(channel);
        }
        self.clone().with_timeout(None).request("fold_state", as_map(fields)).await
    }

    /// `state.get`: the newest checkpoint of a namespace.
    pub async fn state_get(&self, ns: &str, channel: Option<&str>) -> Result<Frame> {
        let mut fields = json!({"ns": ns});
        if let Some(channel) = channel {
            fields["channel"] = json!(channel);
        }
        self.request("state.get", as_map(fields)).await
    }

    /// The message plane: `bus.publish`, `bus.subscribe`, `bus.ack`, `bus.nack`.
    pub fn bus(&self) -> crate::bus::Bus<'_> {
        crate::bus::Bus { client: self }
    }

    /// The job plane: `jobs.enqueue`, `jobs.status`, `jobs.result`, `jobs.wait`, `jobs.cancel`.
    pub fn jobs(&self) -> crate::jobs::Jobs<'_> {
        crate::jobs::Jobs { client: self }
    }
}

pub(crate) fn as_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn placeholder_hello() -> Hello {
    Hello {
        server: String::new(),
        version: String::new(),
        protocol: 0,
        node: HelloNode { repo: String::new(), actor: None },
        limits: Map::new(),
        methods: Vec::new(),
    }
}

/// The frames of one request: `ack`, progress or data frames, and last the final
/// frame (after which [`ReplyStream::is_done`]); an error frame is returned as `Err`.
pub struct ReplyStream {
    id: String,
    rx: mpsc::UnboundedReceiver<Reply>,
    done: bool,
    shared: Arc<Shared>,
}

impl ReplyStream {
    /// The request id (what `bus.unsubscribe` names).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the final frame was returned.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next frame; `None` after the final one.
    pub async fn next(&mut self) -> Option<Result<Frame>> {
        if self.done {
            return None;
        }
        let reply = match self.rx.recv().await {
            Some(reply) => reply,
            None => Err(self.shared.closed_error()),
        };
        match reply {
            Ok(mut frame) => {
                frame.remove("id");
                match frame.get("ok") {
                    None => Some(Ok(frame)),
                    Some(Value::Bool(true)) => {
                        self.finish();
                        Some(Ok(frame))
                    }
                    Some(_) => {
                        self.finish();
                        Some(Err(error_of(&frame, Some(&self.id))))
                    }
                }
            }
            Err(e) => {
                self.finish();
                Some(Err(e))
            }
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.shared.pending.lock().unwrap().remove(&self.id);
    }
}

impl Drop for ReplyStream {
    fn drop(&mut self) {
        self.shared.pending.lock().unwrap().remove(&self.id);
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut writer: W, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(line) = rx.recv().await {
        if line.is_empty() || writer.write_all(&line).await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(reader: R, shared: std::sync::Weak<Shared>) {
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut line = Vec::new();
    let mut closing: Option<Error> = None;
    let reason = loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) => break "the daemon closed the connection".to_string(),
            Err(e) => break e.to_string(),
            Ok(_) => {}
        }
        let Some(shared) = shared.upgrade() else { return };
        let frame: Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(_) if line.iter().all(u8::is_ascii_whitespace) => continue,
            Err(e) => break format!("the daemon sent a line that is not JSON: {e}"),
        };
        let Value::Object(frame) = frame else { continue };
        match frame.get("kind").and_then(Value::as_str) {
            Some("ping") => {
                let _ = shared.send(&json!({"kind": "pong"}));
                continue;
            }
            Some("pong") => {
                if let Some(tx) = shared.pongs.lock().unwrap().pop_front() {
                    let _ = tx.send(());
                }
                continue;
            }
            _ => {}
        }
        match frame.get("id").and_then(Value::as_str) {
            Some(id) => {
                if let Some(tx) = shared.pending.lock().unwrap().get(id) {
                    let _ = tx.send(Ok(frame));
                }
            }
            None if frame.get("ok") == Some(&Value::Bool(false)) => {
                // `"id": null` failures: a dropped over-long line, or a refusal before a close.
                let pending = shared.pending.lock().unwrap();
                if pending.len() == 1 {
                    let _ = pending.values().next().unwrap().send(Ok(frame));
                } else {
                    closing = Some(error_of(&frame, None));
                }
            }
            None => {}
        }
    };
    let Some(shared) = shared.upgrade() else { return };
    let reason = match closing {
        Some(e) => e.to_string(),
        None => reason,
    };
    *shared.closed.lock().unwrap() = Some(reason.clone());
    for (_, tx) in shared.pending.lock().unwrap().drain() {
        let _ = tx.send(Err(Error::ConnectionClosed(reason.clone())));
    }
    shared.pongs.lock().unwrap().clear();
    let _ = shared.out.send(Vec::new());
}
