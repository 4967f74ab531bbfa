//! Webhooks against a real HTTP receiver in the test: every event posted, signed, retried with
//! backoff after failures, delivered once per event id, and listed with its delivery status.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use creditgate::clock::SystemClock;
use creditgate::config::{FileConfig, Flags, ServerConfig};
use creditgate::proto;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const SECRET: &str = "test-secret-0123456789";

/// One request the receiver got, and how it answered.
#[derive(Clone, Debug)]
struct Received {
    event_id: String,
    signature: String,
    body: String,
    status: u16,
}

/// A local HTTP endpoint that fails the first `failures` attempts of each event, then accepts.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(failures: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::<Received>::new()));
        let log = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut read = BufReader::new(read);
                    // Requests on a kept-alive connection, one after another.
                    loop {
                        let mut headers = HashMap::new();
                        loop {
                            let mut line = String::new();
                            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = line.split_once(':') {
                                headers.insert(name.to_ascii_lowercase(), value.trim().to_owned());
                            }
                        }
                        let len: usize = headers["content-length"].parse().unwrap();
                        let mut body = vec![0; len];
                        read.read_exact(&mut body).await.unwrap();
                        let event_id = headers["creditgate-event-id"].clone();
                        let status = {
                            let mut log = log.lock().unwrap();
                            let earlier = log.iter().filter(|r| r.event_id == event_id).count();
                            let status = if earlier < failures { 500 } else { 200 };
                            log.push(Received {
                                event_id,
                                signature: headers["creditgate-signature"].clone(),
                                body: String::from_utf8(body).unwrap(),
                                status,
                            });
                            status
                        };
                        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        if write.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { port, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A server posting every event to `receiver`, retrying quickly.
async fn start_posting_to(
    dir: &std::path::Path,
    receiver: &Receiver,
    attempts_max: u32,
) -> TestServer {
    let file: FileConfig = toml::from_str(&format!(
        r#"
        [limits]
        webhook_interval_ms = 20
        webhook_retry_ms = 50
        webhook_retry_max_ms = 200
        webhook_attempts_max = {attempts_max}
        [[webhooks]]
        name = "billing"
        url = "http://127.0.0.1:{}/hooks/creditgate"
        secret = "{SECRET}"
        "#,
        receiver.port
    ))
    .unwrap();
    let mut config = common::config(dir);
    let resolved = ServerConfig::resolve(Flags::default(), file).unwrap();
    config.webhooks = resolved.webhooks;
    config.limits.webhook_interval_ms = resolved.limits.webhook_interval_ms;
    config.limits.webhook_retry_ms = resolved.limits.webhook_retry_ms;
    config.limits.webhook_retry_max_ms = resolved.limits.webhook_retry_max_ms;
    config.limits.webhook_attempts_max = resolved.limits.webhook_attempts_max;
    start_with(config, Arc::new(SystemClock)).await
}

/// Checks `t=<ms>,v1=<hex>` against the body, as a receiver would.
fn signed_by_the_secret(received: &Received) -> bool {
    let Some((t, v1)) = received
        .signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", received.body).as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

async fn events(
    mut admin: proto::admin_client::AdminClient<tonic::transport::Channel>,
) -> Vec<proto::EventRecord> {
    admin
        .list_events(proto::ListEventsRequest {
            account_id: "acme".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

#[tokio::test]
async fn events_are_signed_retried_and_delivered_once_per_event_id() {
    let receiver = Receiver::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_posting_to(dir.path(), &receiver, 20).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await; // REPLENISHED
    t.gate
        .charge(charge_amount("acme", "chat", "1.00"))
        .await
        .unwrap(); // DEPLETED

    eventually(Duration::from_secs(20), || {
        let delivered = receiver
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .count();
        async move { delivered == 2 }
    })
    .await;
    // Nothing is sent again once delivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = receiver.received();
    let mut by_event: HashMap<String, Vec<&Received>> = HashMap::new();
    for r in &received {
        assert!(signed_by_the_secret(r), "a valid signature: {r:?}");
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["id"], r.event_id.as_str(), "the body names its event");
        by_event.entry(r.event_id.clone()).or_default().push(r);
    }
    assert_eq!(by_event.len(), 2);
    for (id, attempts) in &by_event {
        let statuses: Vec<u16> = attempts.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [500, 500, 200],
            "{id}: retried, then delivered once"
        );
    }
    let kinds: Vec<String> = received
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["type"].to_string())
        .collect();
    assert!(kinds.contains(&"\"depleted\"".to_owned()), "{kinds:?}");

    let listed = events(t.admin.clone()).await;
    assert_eq!(listed.len(), 2);
    for record in &listed {
        let delivery = &record.deliveries[0];
        assert_eq!(
            (
                delivery.endpoint.as_str(),
                delivery.status(),
                delivery.attempts
            ),
            ("billing", proto::DeliveryStatus::Delivered, 3)
        );
        assert!(delivery.last_error.is_empty());
    }
    t.server.stop().await;
}

#[tokio::test]
async fn a_delivery_that_never_succeeds_is_given_up_and_listed_as_failed() {
    let receiver = Receiver::start(usize::MAX).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_posting_to(dir.path(), &receiver, 3).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    eventually(Duration::from_secs(20), || {
        let admin = t.admin.clone();
        async move {
            events(admin)
                .await
                .first()
                .is_some_and(|e| e.deliveries[0].status() == proto::DeliveryStatus::Failed)
        }
    })
    .await;
    let delivery = events(t.admin.clone()).await[0].deliveries[0].clone();
    assert_eq!(delivery.attempts, 3);
    assert!(
        delivery.last_error.contains("500"),
        "{}",
        delivery.last_error
    );
    assert_eq!(receiver.received().len(), 3, "no attempt past the last");
    t.server.stop().await;
}

#[tokio::test]
async fn a_top_up_request_is_delivered_and_listed_with_the_grant_that_answered_it() {
    let receiver = Receiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = start_posting_to(dir.path(), &receiver, 20).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;
    t.admin
        .set_alerts(proto::SetAlertsRequest {
            account_id: "acme".into(),
            wallet: String::new(),
            thresholds: vec![],
            auto_top_up: Some(proto::AutoTopUp {
                below: "2.00".into(),
                size: Some(proto::auto_top_up::Size::Amount("20.00".into())),
            }),
        })
        .await
        .unwrap();
    t.gate
        .charge(charge_amount("acme", "chat", "9.00"))
        .await
        .unwrap();
    // The payment side reads the request from its webhook and answers with a grant.
    let request: serde_json::Value = loop {
        let top_up = receiver
            .received()
            .into_iter()
            .find(|r| r.body.contains("top_up_requested"));
        if let Some(r) = top_up {
            break serde_json::from_str(&r.body).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(request["top_up_amount"], "20.00");
    t.admin
        .add_grant(proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: "topup-1".into(),
            amount: "20.00".into(),
            top_up_request_id: request["top_up_request_id"].as_str().unwrap().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || {
        let admin = t.admin.clone();
        async move {
            events(admin)
                .await
                .iter()
                .any(|e| e.answered_by_grant_id == "topup-1")
        }
    })
    .await;
    t.server.stop().await;
}

/// Two replicas sharing Redis and a PostgreSQL ledger, both sending: each event reaches the
/// receiver once, whichever replica took it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_ledger_send_each_event_once() {
    use creditgate::ledger::LedgerTarget;
    let receiver = Receiver::start(0).await;
    let redis = common::redis::RedisServer::start();
    let database = PgDatabase::create().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut replicas = Vec::new();
    for dir in &dirs {
        let file: FileConfig = toml::from_str(&format!(
            "[limits]\nwebhook_interval_ms = 20\n[[webhooks]]\nname = \"billing\"\n\
             url = \"http://127.0.0.1:{}/hooks\"\nsecret = \"{SECRET}\"\n",
            receiver.port
        ))
        .unwrap();
        let mut config = common::config(dir.path());
        config.webhooks = ServerConfig::resolve(Flags::default(), file)
            .unwrap()
            .webhooks;
        config.limits.webhook_interval_ms = 20;
        config.redis = Some(redis.url());
        config.ledger = LedgerTarget::Postgres {
            url: database.url.clone(),
        };
        replicas.push(start_with(config, Arc::new(SystemClock)).await);
    }
    // Each grant of a new account replenishes it, and each charge empties it: 2 events each.
    let before = receiver.received().len();
    for i in 0..10 {
        let account = format!("acct{i}");
        grant(&mut replicas[i % 2].admin, &account, "g1", "1.00").await;
        replicas[(i + 1) % 2]
            .gate
            .charge(charge_amount(&account, "chat", "1.00"))
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(20), || {
        let delivered = receiver.received().len() - before;
        async move { delivered >= 20 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = &receiver.received()[before..];
    let mut ids: Vec<&str> = received.iter().map(|r| r.event_id.as_str()).collect();
    ids.sort_unstable();
    let sent = ids.len();
    ids.dedup();
    assert_eq!((ids.len(), sent), (20, 20), "every event once");
    for replica in replicas {
        replica.server.stop().await;
    }
    database.drop_database().await;
}
