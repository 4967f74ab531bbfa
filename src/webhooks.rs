//! Webhooks: every event, delivered by HTTP POST to the endpoints that want it, from the
//! ledger's durable outbox of deliveries.
//!
//! The ledger writes one delivery row per event and endpoint in the same transaction as the
//! event. Each replica's sender takes the rows that are due (leasing them, so replicas do not
//! send the same one at once), posts them, and records the outcome: delivered on a 2xx answer,
//! else tried again after a delay that doubles with each attempt, up to a limit, until the
//! attempts run out. Delivery is at least once: a receiver de-duplicates by the event id.
//!
//! Each request is signed: `creditgate-signature: t=<unix ms>,v1=<hex>`, where the hex is the
//! HMAC-SHA256, keyed with the endpoint's secret, of `<t>.<body>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::domain::alert::AlertRule;
use crate::domain::format_minor;
use crate::events::{EventDetail, WalletEvent, WalletEventKind};
use crate::ledger::{Attempt, Delivery, Ledger, WebhookRoute};
use crate::shutdown::Shutdown;

/// Header with the event's id.
pub const EVENT_ID_HEADER: &str = "creditgate-event-id";
/// Header with the signature.
pub const SIGNATURE_HEADER: &str = "creditgate-signature";
/// Deliveries taken at once.
const BATCH_LEN: usize = 64;

/// An endpoint events are posted to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// Names it in delivery listings.
    pub name: String,
    /// `http://host[:port]/path`.
    pub url: hyper::Uri,
    /// Key of the HMAC-SHA256 signature.
    pub secret: String,
    /// Kinds of event it is sent; empty: every kind.
    pub kinds: Vec<WalletEventKind>,
}

impl Webhook {
    pub fn route(&self) -> WebhookRoute {
        WebhookRoute {
            endpoint: self.name.clone(),
            kinds: self.kinds.clone(),
        }
    }
}

/// How deliveries are paced.
#[derive(Clone, Copy, Debug)]
pub struct WebhookSettings {
    /// Time between looks for deliveries due.
    pub interval: Duration,
    /// How long one POST may take.
    pub timeout: Duration,
    /// Delay before the second attempt; it doubles with each attempt after that.
    pub retry_ms: i64,
    /// Longest delay between attempts.
    pub retry_max_ms: i64,
    /// Attempts before a delivery is given up.
    pub attempts_max: u32,
}

/// The body posted for an event: one JSON object.
pub fn body(event: &WalletEvent) -> Value {
    let mut body = json!({
        "id": event.id,
        "type": event.kind.as_str(),
        "account_id": event.account.as_str(),
        "wallet": event.wallet.as_str(),
        "at_ms": event.at_ms,
        "available": format_minor(event.available_minor),
    });
    match &event.detail {
        EventDetail::None => {}
        EventDetail::Hold { reservation } => {
            body["reservation_id"] = json!(reservation.to_string())
        }
        EventDetail::Rule {
            rule: AlertRule::Below { amount_minor },
        } => body["threshold"] = json!(format_minor(*amount_minor)),
        EventDetail::Rule {
            rule: AlertRule::AllowanceUsed { percent },
        } => body["allowance_used_percent"] = json!(percent),
        EventDetail::Limit { limit } => body["limit"] = json!(limit),
        EventDetail::TopUp {
            request_id,
            amount_minor,
        } => {
            body["top_up_request_id"] = json!(request_id);
            body["top_up_amount"] = json!(format_minor(*amount_minor));
        }
    }
    body
}

/// The signature header's value for `body` sent at `at_ms`.
pub fn signature(secret: &str, at_ms: i64, body: &[u8]) -> String {
    let signed = hmac_hex(secret, &[at_ms.to_string().as_bytes(), b".", body]);
    format!("t={at_ms},v1={signed}")
}

/// HMAC-SHA256 of the concatenated `parts`, in lower-case hex.
fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Delay before attempt `attempts + 1`, after `attempts` failed ones: doubling from
/// `retry_ms`, at most `retry_max_ms`.
pub fn backoff_ms(settings: &WebhookSettings, attempts: u32) -> i64 {
    let doublings = attempts.saturating_sub(1).min(32);
    settings
        .retry_ms
        .saturating_mul(1_i64 << doublings)
        .min(settings.retry_max_ms)
}

/// Posts deliveries as they fall due.
pub struct Sender {
    ledger: Arc<dyn Ledger>,
    clock: Arc<dyn Clock>,
    endpoints: HashMap<String, Webhook>,
    settings: WebhookSettings,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Sender {
    pub fn new(
        ledger: Arc<dyn Ledger>,
        clock: Arc<dyn Clock>,
        webhooks: Vec<Webhook>,
        settings: WebhookSettings,
    ) -> Sender {
        Sender {
            ledger,
            clock,
            endpoints: webhooks.into_iter().map(|w| (w.name.clone(), w)).collect(),
            settings,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends until shutdown.
    pub async fn run(self, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tick.tick() => {}
            }
            loop {
                match self.send_due().await {
                    Ok(sent) if sent == BATCH_LEN => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "webhook deliveries could not be read");
                        break;
                    }
                }
            }
        }
    }

    /// Sends the deliveries due now; returns how many were taken.
    pub async fn send_due(&self) -> Result<usize, crate::ledger::LedgerError> {
        let now = self.clock.now_ms();
        // A lease outlasts the attempt, so no other replica sends it meanwhile.
        let lease = now + 2 * self.settings.timeout.as_millis() as i64 + 1_000;
        // Only this replica's endpoints: another replica's are left to it.
        let endpoints: Vec<String> = self.endpoints.keys().cloned().collect();
        let due = self
            .ledger
            .claim_deliveries(
                &endpoints,
                now,
                lease,
                self.settings.attempts_max,
                BATCH_LEN,
            )
            .await?;
        let taken = due.len();
        let mut attempts = JoinSet::new();
        for delivery in due {
            let Some(endpoint) = self.endpoints.get(&delivery.endpoint).cloned() else {
                continue;
            };
            let client = self.client.clone();
            let timeout = self.settings.timeout;
            let clock = self.clock.clone();
            attempts.spawn(async move {
                let outcome =
                    post(&client, &endpoint, &delivery.event, clock.now_ms(), timeout).await;
                (delivery, outcome)
            });
        }
        while let Some(done) = attempts.join_next().await {
            let Ok((delivery, outcome)) = done else {
                continue;
            };
            let attempt = self.attempt(&delivery, outcome);
            let counted = match attempt {
                Attempt::Delivered => "delivered",
                Attempt::Failed { .. } => "failed",
            };
            metrics::counter!(crate::telemetry::WEBHOOK_ATTEMPTS_TOTAL, "outcome" => counted)
                .increment(1);
            if let Attempt::Failed { error, .. } = &attempt {
                tracing::info!(
                    event = %delivery.event.id,
                    endpoint = %delivery.endpoint,
                    attempts = delivery.attempts + 1,
                    %error,
                    "webhook not delivered"
                );
            }
            self.ledger
                .record_delivery(&delivery, &attempt, self.clock.now_ms())
                .await?;
        }
        Ok(taken)
    }

    fn attempt(&self, delivery: &Delivery, outcome: Result<(), String>) -> Attempt {
        match outcome {
            Ok(()) => Attempt::Delivered,
            Err(error) => {
                let attempts = delivery.attempts + 1;
                let retry_at_ms = (attempts < self.settings.attempts_max)
                    .then(|| self.clock.now_ms() + backoff_ms(&self.settings, attempts));
                Attempt::Failed { error, retry_at_ms }
            }
        }
    }
}

/// Posts one event; a 2xx answer within `timeout` is a delivery.
async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    endpoint: &Webhook,
    event: &WalletEvent,
    now_ms: i64,
    timeout: Duration,
) -> Result<(), String> {
    let body = body(event).to_string();
    let request = hyper::Request::post(endpoint.url.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(EVENT_ID_HEADER, &event.id)
        .header(
            SIGNATURE_HEADER,
            signature(&endpoint.secret, now_ms, body.as_bytes()),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        Ok(Err(error)) => Err(error.to_string()),
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!("answered {}", response.status())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_the_most() {
        let settings = WebhookSettings {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
            retry_ms: 1_000,
            retry_max_ms: 60_000,
            attempts_max: 20,
        };
        let delays: Vec<i64> = (1..=8).map(|a| backoff_ms(&settings, a)).collect();
        assert_eq!(
            delays,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(backoff_ms(&settings, u32::MAX), 60_000);
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_time_and_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_hex("Jefe", &[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            signature("Jefe", 1_700, b"{}"),
            format!("t=1700,v1={}", hmac_hex("Jefe", &[b"1700.{}"]))
        );
    }
}
