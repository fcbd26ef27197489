//! The shared scenario against a live gatosd started by bindings/testnode.py.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use gatos::bus::{PublishOptions, SubscribeOptions};
use gatos::jobs::Manifest;
use gatos::{Client, Code, Error, Event, ReadOptions, SigningKey};
use serde_json::{json, Value};

/// The node of testnode.py; dropping it closes the helper's stdin, which stops everything.
struct TestNode {
    info: Value,
    child: Child,
}

impl TestNode {
    fn start() -> TestNode {
        let bindings = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var("GATOS_PYTHON").unwrap_or_else(|_| format!("{bindings}/../.venv/bin/python"));
        let mut child = Command::new(&python)
            .arg(format!("{bindings}/testnode.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {python} testnode.py: {e} (set GATOS_PYTHON)"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let info = serde_json::from_str(&line).unwrap_or_else(|e| panic!("testnode.py printed {line:?}: {e}"));
        TestNode { info, child }
    }

    fn get(&self, path: &[&str]) -> String {
        path.iter().fold(&self.info, |v, k| &v[*k]).as_str().unwrap().to_string()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_against_live_daemon() {
    let node = TestNode::start();
    let owner = node.get(&["owner"]);
    let client = Client::connect_unix(node.get(&["socket"])).await.unwrap();
    assert_eq!(client.hello().server, "gatosd");
    assert_eq!(client.hello().protocol, 1);
    assert_eq!(client.hello().node.actor.as_deref(), Some(owner.as_str()));

    // TCP with the token; a wrong token is UNAUTHORIZED; keep-alive ping.
    let tcp = Client::connect_tcp(&node.get(&["tcp"]), &node.get(&["token"])).await.unwrap();
    assert!(tcp.status().await.unwrap()["pid"].is_u64());
    tcp.ping().await.unwrap();
    tcp.close();
    let err = Client::connect_tcp(&node.get(&["tcp"]), "wrong-token-0123456789").await.err().unwrap();
    assert!(err.is(Code::Unauthorized), "{err}");

    // Append signed here, read back.
    let signer = node.get(&["signer", "actor"]);
    let key = SigningKey::from_file(node.get(&["signer", "key_file"])).unwrap();
    let payload: Value = serde_json::from_str(
        r#"{"amount": 18446744073709551615, "neg": -9223372036854775808, "text": "héllo 🐈", "nested": {"list": [1, "two", null, true]}}"#,
    )
    .unwrap();
    let event = Event { caps: Some(vec!["finance:append".into()]), ..Event::new("invoice.created", payload) }.complete(&key);
    let signed = event.clone().sign(&key).unwrap();
    let res = client.append_signed_event("finance", &signed).await.unwrap();
    assert!(!res.duplicate);
    assert_eq!(res.actor, signer);
    assert_eq!(res.event_cid, signed.cid);
    let again = client.append_signed_event("finance", &signed).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.commit, res.commit);
    let entries = client.journal_read("finance", &signer, ReadOptions { last: Some(1), ..Default::default() }).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].commit, res.commit);
    assert_eq!(entries[0].sig, signed.signature);
    assert_eq!(entries[0].event, event);
    assert_eq!(entries[0].event.canonical().unwrap(), signed.canonical);
    assert_eq!(client.journal_head("finance", &signer).await.unwrap(), Some(res.commit.clone()));

    // Append signed by the node.
    let res = client.append_event("finance", Event::new("note", json!({"n": 1}))).await.unwrap();
    assert_eq!(res.actor, owner);

    // Publish, subscribe, ack.
    let bus = client.bus();
    let mut sub = bus
        .subscribe("sdk/rust", SubscribeOptions { from: Some("earliest".into()), group: Some("workers".into()), ..Default::default() })
        .await
        .unwrap();
    for n in 1..=2 {
        bus.publish("sdk/rust", json!({"n": n}), PublishOptions { key: Some("k".into()), ..Default::default() }).await.unwrap();
    }
    for n in 1..=2u64 {
        let message = sub.next().await.unwrap().unwrap();
        assert_eq!(message.payload["n"].as_u64(), Some(n));
        assert_eq!(message.publisher, owner);
        assert_eq!(message.delivery, 1);
        sub.ack(&message).await.unwrap();
    }
    sub.close().await.unwrap();
    assert_eq!(sub.delivered(), Some(2));

    // Enqueue a job and wait for its result.
    let jobs = client.jobs();
    let manifest = Manifest {
        command: vec!["/bin/echo".into()],
        args: vec!["hello from rust".into(), gatos::new_ulid()],
        timeout: 30,
        ..Default::default()
    };
    let job = jobs.enqueue(&node.get(&["job_ns"]), &manifest).await.unwrap();
    let mut states = Vec::new();
    let result = jobs.wait(&job.job_id, Some(60_000), |s| states.push(s.to_string())).await.unwrap();
    assert_eq!(result.status.as_deref(), Some("succeeded"), "states {states:?}");
    assert!(result.verified);
    assert!(result.stdout().unwrap().starts_with("hello from rust "));
    assert_eq!(jobs.status(&job.job_id).await.unwrap().state, "succeeded");

    // A denied append is a typed policy error with its rule.
    let denied = SigningKey::from_file(node.get(&["denied", "key_file"])).unwrap();
    let err = client.append_signed("finance", Event::new("invoice.created", json!({})), &denied).await.unwrap_err();
    assert!(err.is(Code::PolicyDeny), "{err}");
    let Error::Daemon(frame) = &err else { panic!("{err:?}") };
    assert!(frame.rule.is_some());

    // Other error frames are typed, with their parents.
    let err = client.append_event("Fin/ance", Event::new("x", json!(1))).await.unwrap_err();
    assert!(err.is(Code::InvalidNs) && err.is(Code::InvalidName), "{err}");
    let err = client.request("nope", Default::default()).await.unwrap_err();
    assert!(err.is(Code::UnknownType), "{err}");
    let err = jobs.status(&format!("blake3:{}", "0".repeat(64))).await.unwrap_err();
    assert!(err.is(Code::JobNotFound) && err.is(Code::JobError), "{err}");
    client.close();
}
