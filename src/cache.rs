//! The reservation cache: what this replica knows without asking the store. The holds it took
//! (so that pricing a commit by usage needs no store round trip), and the wallets another
//! replica announced empty (so that calls for them are denied from memory).
//!
//! A hint, never the truth: a hold taken by another replica, or forgotten here, is read from the
//! store instead; a wallet is taken for empty only for [`DEPLETED_TTL`] after it was announced,
//! so a refill whose announcement is lost is usable within that bound (at once otherwise).
//! Bounded: when full, an arbitrary entry makes room.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::broadcast::error::RecvError;

use crate::domain::{
    AccountId, FeaturePrice, ReservationId, WalletEvent, WalletEventKind, WalletId,
};
use crate::events::Events;
use crate::shutdown::Shutdown;

/// How long a wallet announced empty is denied from memory without asking the store.
pub const DEPLETED_TTL: Duration = Duration::from_secs(1);

/// Holds remembered when the settings do not say.
pub const HOLDS_MAX_DEFAULT: usize = 100_000;

/// The price a hold was taken at: its feature's catalog entry, shared with the catalog, or
/// none when the feature had no price (an amount was held).
pub type HoldPrice = Option<Arc<FeaturePrice>>;

/// A hold as the cache knows it: 24 bytes instead of its id's two strings. The token's 16
/// random bytes name the hold; the digest of its account keeps an id that pairs the token
/// with another account from finding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct HoldKey {
    token: [u8; 16],
    account: u64,
}

impl HoldKey {
    /// `None` for a token not shaped like the ones [`ReservationId::generate`] makes: such a
    /// hold was not taken by a replica, so it is never remembered.
    fn of(id: &ReservationId) -> Option<HoldKey> {
        let hex = id.token().strip_prefix('r')?.as_bytes();
        if hex.len() != 32 || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut token = [0u8; 16];
        for (byte, pair) in token.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (nibble(pair[0]) << 4) | nibble(pair[1]);
        }
        let mut digest = DefaultHasher::new();
        id.account().hash(&mut digest);
        Some(HoldKey {
            token,
            account: digest.finish(),
        })
    }
}

/// The value of a lowercase hex digit.
fn nibble(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        _ => digit - b'a' + 10,
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct ReservationCache {
    holds: DashMap<HoldKey, HoldPrice>,
    holds_max: usize,
    /// Wallets announced empty, and when.
    depleted: DashMap<(AccountId, WalletId), Instant>,
}

impl ReservationCache {
    pub fn new(holds_max: usize) -> ReservationCache {
        ReservationCache {
            holds: DashMap::new(),
            holds_max,
            depleted: DashMap::new(),
        }
    }

    /// Remembers the price a hold was taken at.
    pub fn remember(&self, id: &ReservationId, price: HoldPrice) {
        let Some(key) = HoldKey::of(id) else {
            return;
        };
        if self.holds.len() >= self.holds_max {
            let victim = self.holds.iter().next().map(|entry| *entry.key());
            if let Some(victim) = victim {
                self.holds.remove(&victim);
            }
        }
        self.holds.insert(key, price);
    }

    /// The price the hold was taken at, if this replica took it and still remembers it.
    pub fn price(&self, id: &ReservationId) -> Option<HoldPrice> {
        let key = HoldKey::of(id)?;
        self.holds.get(&key).map(|entry| entry.value().clone())
    }

    pub fn forget(&self, id: &ReservationId) {
        if let Some(key) = HoldKey::of(id) {
            self.holds.remove(&key);
        }
    }

    /// Another replica (or this one) emptied the wallet.
    pub fn mark_depleted(&self, account: AccountId, wallet: WalletId) {
        if self.depleted.len() >= self.holds_max {
            self.depleted.clear();
        }
        self.depleted.insert((account, wallet), Instant::now());
    }

    /// The wallet was refilled.
    pub fn mark_replenished(&self, account: AccountId, wallet: WalletId) {
        self.depleted.remove(&(account, wallet));
    }

    /// Forgets every empty wallet, e.g. when announcements may have been missed.
    pub fn forget_depleted(&self) {
        self.depleted.clear();
    }

    /// Marks wallets empty and refilled as `events` announce them, until shutdown; forgets
    /// every mark whenever announcements may have been missed (the store's subscription broke,
    /// or this listener fell behind). Subscribes at once, before the future first runs.
    pub fn follow(
        self: Arc<Self>,
        events: &Events,
        mut shutdown: Shutdown,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut announced = events.subscribe();
        let mut missed = events.misses();
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.wait() => return,
                    changed = missed.changed() => match changed {
                        Ok(()) => self.forget_depleted(),
                        Err(_) => return,
                    },
                    event = announced.recv() => match event {
                        Ok(event) => self.apply(&event),
                        Err(RecvError::Lagged(_)) => self.forget_depleted(),
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        }
    }

    /// What an event says of a wallet's being empty.
    fn apply(&self, event: &WalletEvent) {
        match event.kind {
            WalletEventKind::Depleted => {
                self.mark_depleted(event.account.clone(), event.wallet.clone())
            }
            WalletEventKind::Replenished => {
                self.mark_replenished(event.account.clone(), event.wallet.clone())
            }
            _ => {}
        }
    }

    /// Whether the wallet was announced empty within [`DEPLETED_TTL`].
    pub fn is_depleted(&self, account: &AccountId, wallet: &WalletId) -> bool {
        let key = (account.clone(), wallet.clone());
        match self.depleted.get(&key).map(|at| at.elapsed()) {
            Some(age) if age < DEPLETED_TTL => true,
            Some(_) => {
                self.depleted.remove(&key);
                false
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.holds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Amount, FeatureId, PriceRule};

    #[test]
    fn empty_wallets_are_remembered_until_refilled() {
        let cache = ReservationCache::new(10);
        let account = AccountId::parse("acme").unwrap();
        let wallet = WalletId::default_wallet();
        assert!(!cache.is_depleted(&account, &wallet));
        cache.mark_depleted(account.clone(), wallet.clone());
        assert!(cache.is_depleted(&account, &wallet));
        cache.mark_replenished(account.clone(), wallet.clone());
        assert!(!cache.is_depleted(&account, &wallet));
    }

    fn chat() -> HoldPrice {
        Some(Arc::new(FeaturePrice {
            feature: FeatureId::parse("chat").unwrap(),
            wallet: WalletId::default_wallet(),
            rule: PriceRule::PerCall {
                price: Amount::parse("0.01").unwrap(),
            },
            overrun: Default::default(),
            stop: Default::default(),
            effective_at_ms: 0,
        }))
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let cache = ReservationCache::new(2);
        let account = AccountId::parse("acme").unwrap();
        let ids: Vec<_> = (0..3).map(|_| ReservationId::generate(&account)).collect();
        for id in &ids {
            cache.remember(id, chat());
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.price(&ids[2]), Some(chat()));
        cache.forget(&ids[2]);
        assert_eq!(cache.price(&ids[2]), None);
    }

    #[test]
    fn a_hold_is_found_only_by_its_own_id() {
        let cache = ReservationCache::new(10);
        let acme = AccountId::parse("acme").unwrap();
        let id = ReservationId::generate(&acme);
        cache.remember(&id, chat());
        assert_eq!(cache.price(&id), Some(chat()));
        let unpriced = ReservationId::generate(&acme);
        cache.remember(&unpriced, None);
        assert_eq!(
            cache.price(&unpriced),
            Some(None),
            "known, and known to have no price"
        );
        let token = id.token();
        for other in [
            format!("globex/{token}"),
            format!("acme/{}", token.to_uppercase()),
            format!("acme/{}", &token[..token.len() - 1]),
        ] {
            let other = ReservationId::parse(&other).unwrap();
            assert_eq!(cache.price(&other), None, "{other}");
        }
        // A token a replica did not make is never remembered.
        let foreign = ReservationId::parse("acme/handmade1").unwrap();
        cache.remember(&foreign, chat());
        assert_eq!(cache.price(&foreign), None);
        assert_eq!(cache.len(), 2);
    }
}
