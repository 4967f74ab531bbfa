//! Wallet events: a wallet's spendable balance running out or coming back, and holds expiring,
//! from whichever replica caused them, fanned out in this process to `WatchBalance`
//! subscribers.
//!
//! The in-process store announces the crossings it makes itself; with Redis, the scripts
//! publish them on the events channel and every replica's subscriber forwards them here. A
//! subscriber that falls more than [`EVENTS_BUFFER`] events behind is dropped rather than
//! allowed to slow anything down.

use tokio::sync::broadcast;

use crate::domain::{AccountId, ReservationId, WalletId};

/// Events kept for subscribers that have not read them yet.
pub const EVENTS_BUFFER: usize = 4_096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalletEventKind {
    /// Nothing is spendable any more (for a feature every grant admits).
    Depleted,
    /// Something is spendable again.
    Replenished,
    /// A hold reached its expiry before it was committed or released, and was given back.
    HoldExpired,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletEvent {
    pub kind: WalletEventKind,
    pub account: AccountId,
    pub wallet: WalletId,
    /// The store's clock when it happened.
    pub at_ms: i64,
    /// For a hold that expired: which.
    pub reservation: Option<ReservationId>,
}

impl WalletEvent {
    /// The event of a wallet's spendable balance going from `before` to `after`, if it
    /// crossed zero (the rule the scripts' `publish_crossing` follows).
    pub fn crossing(
        account: &AccountId,
        wallet: &WalletId,
        before: i64,
        after: i64,
        at_ms: i64,
    ) -> Option<WalletEvent> {
        let kind = match (before > 0, after > 0) {
            (true, false) => WalletEventKind::Depleted,
            (false, true) => WalletEventKind::Replenished,
            _ => return None,
        };
        Some(WalletEvent {
            kind,
            account: account.clone(),
            wallet: wallet.clone(),
            at_ms,
            reservation: None,
        })
    }

    pub fn hold_expired(hold: &ReservationId, wallet: &WalletId, at_ms: i64) -> WalletEvent {
        WalletEvent {
            kind: WalletEventKind::HoldExpired,
            account: hold.account().clone(),
            wallet: wallet.clone(),
            at_ms,
            reservation: Some(hold.clone()),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_crossing_zero_is_an_event() {
        let (a, w) = (
            AccountId::parse("acme").unwrap(),
            WalletId::default_wallet(),
        );
        let kind = |before, after| WalletEvent::crossing(&a, &w, before, after, 0).map(|e| e.kind);
        assert_eq!(kind(5, 0), Some(WalletEventKind::Depleted));
        assert_eq!(kind(0, 1), Some(WalletEventKind::Replenished));
        assert_eq!(kind(5, 1), None);
        assert_eq!(kind(0, 0), None);
    }
}
