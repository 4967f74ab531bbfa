//! Wallet events of every replica: the scripts publish them on the namespace's channel, and
//! each replica passes them on to its own [`Events`].

use std::time::Duration;

use super::{RedisStore, codec, keys};
use crate::events::{Events, WalletEvent};
use crate::shutdown::Shutdown;

impl RedisStore {
    /// Passes the wallet events the scripts publish (of every replica) on to `events`, until
    /// shutdown; after any break in the subscription, says that events may have been missed.
    pub async fn watch_wallets(&self, events: Events, mut shutdown: Shutdown) {
        use tokio_stream::StreamExt;
        let mut pause = Duration::from_millis(50);
        loop {
            events.missed();
            let subscribed = async {
                let mut pubsub = self.client.get_async_pubsub().await?;
                pubsub
                    .subscribe(keys::events_channel(&self.settings.namespace))
                    .await?;
                redis::RedisResult::Ok(pubsub)
            };
            let pubsub = tokio::select! {
                _ = shutdown.wait() => return,
                subscribed = tokio::time::timeout(self.settings.timeout, subscribed) => subscribed,
            };
            match pubsub {
                Ok(Ok(mut pubsub)) => {
                    pause = Duration::from_millis(50);
                    let mut messages = pubsub.on_message();
                    loop {
                        let message = tokio::select! {
                            _ = shutdown.wait() => return,
                            message = messages.next() => message,
                        };
                        let Some(message) = message else {
                            break;
                        };
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        if let Some(event) = wallet_event(&payload) {
                            // Against this replica's clock: meaningful when clocks agree.
                            let late_ms = crate::clock::Clock::now_ms(&crate::clock::SystemClock)
                                - event.at_ms;
                            metrics::histogram!(crate::telemetry::GATING_PROPAGATION_SECONDS)
                                .record(late_ms.max(0) as f64 / 1_000.0);
                            events.publish(event);
                        }
                    }
                    tracing::warn!("redis wallet events interrupted; resubscribing");
                }
                _ => tracing::warn!("cannot subscribe to redis wallet events; retrying"),
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

/// Applies one event message (an event as the scripts make it, in JSON) to the cache;
/// returns the event.
fn wallet_event(payload: &str) -> Option<WalletEvent> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    codec::event(&value).ok()
}
