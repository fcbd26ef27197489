//! The message plane: publish, subscribe (a stream of messages), ack, nack.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::client::{as_map, decode, Client, Frame, ReplyStream};
use crate::error::{Error, Result};

/// The bus methods of a connection: [`Client::bus`].
pub struct Bus<'a> {
    pub(crate) client: &'a Client,
}

/// The reply to `bus.publish`.
#[derive(Debug, Clone, Deserialize)]
pub struct Published {
    pub topic: String,
    pub shard: u32,
    pub position: u64,
    pub ulid: String,
    pub commit: String,
    pub duplicate: bool,
}

/// Optional fields of `bus.publish`.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    pub key: Option<String>,
    /// Idempotency key: publishing the same ULID again is a duplicate.
    pub ulid: Option<String>,
    pub headers: Option<HashMap<String, String>>,
}

/// Optional fields of `bus.subscribe`.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// `earliest`, `HEAD`, `HEAD-<n>`, a position or a ULID.
    pub from: Option<String>,
    /// Consumer group: messages are shared among its subscribers and must be acked.
    pub group: Option<String>,
    pub ack_wait_ms: Option<u64>,
    pub max_in_flight: Option<u64>,
    pub max_deliver: Option<u64>,
}

/// One delivered `bus.message`.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub topic: String,
    pub shard: u32,
    pub position: u64,
    pub ulid: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    pub publisher: String,
    pub commit: String,
    pub payload: Value,
    /// 1 on the first delivery, more when redelivered.
    pub delivery: u32,
    #[serde(default)]
    pub group: Option<String>,
}

impl Bus<'_> {
    /// Publish one message; returns after its commit is on the topic's ref.
    pub async fn publish(&self, topic: &str, payload: Value, options: PublishOptions) -> Result<Published> {
        crate::cbor::check(&payload)?;
        let mut fields = json!({"topic": topic, "payload": payload});
        if let Some(key) = options.key {
            fields["key"] = json!(key);
        }
        if let Some(ulid) = options.ulid {
            fields["ulid"] = json!(ulid);
        }
        if let Some(headers) = options.headers {
            fields["headers"] = json!(headers);
        }
        self.client.call("bus.publish", fields).await
    }

    /// Subscribe to a topic; read messages with [`Subscription::next`].
    pub async fn subscribe(&self, topic: &str, options: SubscribeOptions) -> Result<Subscription> {
        let mut fields = json!({"topic": topic});
        if let Some(from) = options.from {
            fields["from"] = json!(from);
        }
        if let Some(group) = &options.group {
            fields["group"] = json!(group);
        }
        for (name, value) in [("ack_wait_ms", options.ack_wait_ms), ("max_in_flight", options.max_in_flight), ("max_deliver", options.max_deliver)] {
            if let Some(v) = value {
                fields[name] = json!(v);
            }
        }
        let mut stream = self.client.stream("bus.subscribe", as_map(fields))?;
        // The daemon acks the subscription (or refuses it) at once.
        match stream.next().await {
            Some(Ok(_)) if !stream.is_done() => {}
            Some(Err(e)) => return Err(e),
            _ => return Err(Error::BadReply(format!("the subscription to {topic} ended at once"))),
        }
        Ok(Subscription { client: self.client.clone(), stream, group: options.group, delivered: None })
    }

    /// Acknowledge a delivered message for a consumer group (after the ack commit).
    pub async fn ack(&self, group: &str, message: &Message) -> Result<Frame> {
        self.client.request("bus.ack", ack_fields(group, message)).await
    }

    /// Give a delivered message back for redelivery.
    pub async fn nack(&self, group: &str, message: &Message) -> Result<Frame> {
        self.client.request("bus.nack", ack_fields(group, message)).await
    }
}

fn ack_fields(group: &str, m: &Message) -> Map<String, Value> {
    as_map(json!({"topic": m.topic, "group": group, "ulid": m.ulid, "shard": m.shard, "position": m.position}))
}

/// A running `bus.subscribe`. Dropping it stops reading; [`Subscription::close`]
/// also tells the daemon.
pub struct Subscription {
    client: Client,
    stream: ReplyStream,
    group: Option<String>,
    delivered: Option<u64>,
}

impl Subscription {
    /// The next message; `None` once the subscription ended.
    pub async fn next(&mut self) -> Option<Result<Message>> {
        loop {
            let frame = match self.stream.next().await? {
                Ok(frame) => frame,
                Err(e) => return Some(Err(e)),
            };
            if self.stream.is_done() {
                self.delivered = frame.get("delivered").and_then(Value::as_u64);
                return None;
            }
            if frame.get("type").and_then(Value::as_str) == Some("bus.message") {
                return Some(decode(frame));
            }
        }
    }

    /// Ack a message of this subscription's consumer group.
    pub async fn ack(&self, message: &Message) -> Result<Frame> {
        let group = self.group.as_deref().ok_or_else(|| Error::BadReply("ack needs a subscription in a consumer group".into()))?;
        self.client.bus().ack(group, message).await
    }

    /// The daemon's count of delivered messages, once the subscription has ended.
    pub fn delivered(&self) -> Option<u64> {
        self.delivered
    }

    /// Unsubscribe and wait for the subscription's final frame.
    pub async fn close(&mut self) -> Result<()> {
        if self.stream.is_done() {
            return Ok(());
        }
        self.client.request("bus.unsubscribe", as_map(json!({"subscription": self.stream.id()}))).await?;
        while let Some(message) = self.next().await {
            message?;
        }
        Ok(())
    }
}
