//! Wallet events: a wallet's spendable balance running out or coming back, holds expiring,
//! thresholds and spend limits crossed, top-ups requested; from whichever replica caused
//! them, fanned out in this process to `WatchBalance` subscribers.
//!
//! A store makes an event in the same atomic step as the change that caused it, and writes it
//! to its outbox with the change, so the ledger keeps every event (for webhooks). The
//! in-process store announces its events itself; with Redis, the scripts publish them on the
//! events channel and every replica's subscriber forwards them here. A subscriber that falls
//! more than [`EVENTS_BUFFER`] events behind is dropped rather than allowed to slow anything
//! down.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

pub use crate::domain::event::{EventDetail, WalletEvent, WalletEventKind};

/// Events kept for subscribers that have not read them yet.
pub const EVENTS_BUFFER: usize = 4_096;

/// Where events are published and subscribed to in this process.
#[derive(Clone, Debug)]
pub struct Events {
    announced: broadcast::Sender<WalletEvent>,
    /// How many times events may have been missed (a store's subscription broke).
    missed: Arc<watch::Sender<u64>>,
}

impl Default for Events {
    fn default() -> Events {
        Events {
            announced: broadcast::channel(EVENTS_BUFFER).0,
            missed: Arc::new(watch::channel(0).0),
        }
    }
}

impl Events {
    pub fn publish(&self, event: WalletEvent) {
        // Nobody listening is not an error.
        let _ = self.announced.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<WalletEvent> {
        self.announced.subscribe()
    }

    /// Says that events may have been missed: whoever keeps state built from them (the
    /// reservation cache's empty wallets) should drop it.
    pub fn missed(&self) {
        self.missed.send_modify(|times| *times += 1);
    }

    /// Changes whenever events may have been missed.
    pub fn misses(&self) -> watch::Receiver<u64> {
        self.missed.subscribe()
    }

    /// Subscribers now: one per open `WatchBalance` stream (and the cache's, with Redis).
    pub fn subscribers(&self) -> usize {
        self.announced.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_crossing_zero_is_an_event() {
        assert_eq!(WalletEvent::crossing(5, 0), Some(WalletEventKind::Depleted));
        assert_eq!(
            WalletEvent::crossing(0, 1),
            Some(WalletEventKind::Replenished)
        );
        assert_eq!(WalletEvent::crossing(5, 1), None);
        assert_eq!(WalletEvent::crossing(0, 0), None);
    }

    #[test]
    fn kinds_read_back_from_their_names() {
        for kind in WalletEventKind::ALL {
            assert_eq!(WalletEventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(WalletEventKind::parse("snapshot"), None);
    }
}
