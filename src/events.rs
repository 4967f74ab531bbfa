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

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::domain::alert::AlertRule;
use crate::domain::{AccountId, ReservationId, WalletId};

/// Events kept for subscribers that have not read them yet.
pub const EVENTS_BUFFER: usize = 4_096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletEventKind {
    /// Nothing is spendable any more (for a feature every grant admits).
    Depleted,
    /// Something is spendable again.
    Replenished,
    /// A hold reached its expiry before it was committed or released, and was given back.
    HoldExpired,
    /// The spendable balance fell below a threshold of the wallet's.
    LowBalance,
    /// A threshold share of the wallet's included allowances is used.
    Alert,
    /// A spend limit has nothing left in its window.
    LimitReached,
    /// The wallet's auto top-up policy asks for credit.
    TopUpRequested,
}

impl WalletEventKind {
    pub const ALL: [WalletEventKind; 7] = [
        WalletEventKind::Depleted,
        WalletEventKind::Replenished,
        WalletEventKind::HoldExpired,
        WalletEventKind::LowBalance,
        WalletEventKind::Alert,
        WalletEventKind::LimitReached,
        WalletEventKind::TopUpRequested,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WalletEventKind::Depleted => "depleted",
            WalletEventKind::Replenished => "replenished",
            WalletEventKind::HoldExpired => "hold_expired",
            WalletEventKind::LowBalance => "low_balance",
            WalletEventKind::Alert => "alert",
            WalletEventKind::LimitReached => "limit_reached",
            WalletEventKind::TopUpRequested => "top_up_requested",
        }
    }

    pub fn parse(text: &str) -> Option<WalletEventKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// What an event is about, beyond its wallet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventDetail {
    #[default]
    None,
    /// The hold that expired.
    Hold { reservation: ReservationId },
    /// The threshold crossed.
    Rule { rule: AlertRule },
    /// The spend limit reached, e.g. `project=atlas/day`.
    Limit { limit: String },
    /// The top-up asked for; the grant that answers it names `request_id`.
    TopUp {
        request_id: String,
        amount_minor: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletEvent {
    /// Unique, for de-duplication by whoever receives it: `evt/<account>/<at_ms>.<n>`.
    pub id: String,
    pub kind: WalletEventKind,
    pub account: AccountId,
    pub wallet: WalletId,
    /// The store's clock when it happened.
    pub at_ms: i64,
    /// The wallet's spendable balance right after.
    pub available_minor: i64,
    pub detail: EventDetail,
}

impl WalletEvent {
    /// The id of an account's `n`th event, which happened at `at_ms`.
    pub fn id(account: &AccountId, at_ms: i64, n: u64) -> String {
        format!("evt/{account}/{at_ms}.{n}")
    }

    /// The kind of event a wallet's spendable balance going from `before` to `after` is, if it
    /// crossed zero (the rule the scripts' `wallet_events` follows).
    pub fn crossing(before: i64, after: i64) -> Option<WalletEventKind> {
        match (before > 0, after > 0) {
            (true, false) => Some(WalletEventKind::Depleted),
            (false, true) => Some(WalletEventKind::Replenished),
            _ => None,
        }
    }

    /// The reservation of a `HOLD_EXPIRED` event.
    pub fn reservation(&self) -> Option<&ReservationId> {
        match &self.detail {
            EventDetail::Hold { reservation } => Some(reservation),
            _ => None,
        }
    }
}

/// Where events are published and subscribed to in this process.
#[derive(Clone, Debug)]
pub struct Events(broadcast::Sender<WalletEvent>);

impl Default for Events {
    fn default() -> Events {
        Events(broadcast::channel(EVENTS_BUFFER).0)
    }
}

impl Events {
    pub fn publish(&self, event: WalletEvent) {
        // Nobody listening is not an error.
        let _ = self.0.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<WalletEvent> {
        self.0.subscribe()
    }

    /// Subscribers now: one per open `WatchBalance` stream.
    pub fn subscribers(&self) -> usize {
        self.0.receiver_count()
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
