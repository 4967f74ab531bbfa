//! The reservation cache: what this replica knows without asking the store. The holds it took
//! (so that pricing a commit by usage needs no store round trip), and the wallets another
//! replica announced empty (so that calls for them are denied from memory).
//!
//! A hint, never the truth: a hold taken by another replica, or forgotten here, is read from the
//! store instead; a wallet is taken for empty only for [`DEPLETED_TTL`] after it was announced,
//! so a refill whose announcement is lost is usable within that bound (at once otherwise).
//! Bounded: when full, an arbitrary entry makes room.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::domain::{AccountId, FeatureId, PriceRule, ReservationId, WalletId};

/// How long a wallet announced empty is denied from memory without asking the store.
pub const DEPLETED_TTL: Duration = Duration::from_secs(1);

/// Holds remembered when the settings do not say.
pub const HOLDS_MAX_DEFAULT: usize = 100_000;

/// What pricing a commit of a hold needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldPricing {
    pub feature: FeatureId,
    /// The price in force when the hold was taken.
    pub price: Option<PriceRule>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct ReservationCache {
    holds: DashMap<ReservationId, HoldPricing>,
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

    pub fn remember(&self, id: ReservationId, pricing: HoldPricing) {
        if self.holds.len() >= self.holds_max {
            let victim = self.holds.iter().next().map(|entry| entry.key().clone());
            if let Some(victim) = victim {
                self.holds.remove(&victim);
            }
        }
        self.holds.insert(id, pricing);
    }

    pub fn pricing(&self, id: &ReservationId) -> Option<HoldPricing> {
        self.holds.get(id).map(|entry| entry.value().clone())
    }

    pub fn forget(&self, id: &ReservationId) {
        self.holds.remove(id);
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
    use crate::domain::AccountId;

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

    #[test]
    fn the_cache_stays_within_its_bound() {
        let cache = ReservationCache::new(2);
        let account = AccountId::parse("acme").unwrap();
        let pricing = HoldPricing {
            feature: FeatureId::parse("chat").unwrap(),
            price: None,
        };
        let ids: Vec<_> = (0..3).map(|_| ReservationId::generate(&account)).collect();
        for id in &ids {
            cache.remember(id.clone(), pricing.clone());
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.pricing(&ids[2]), Some(pricing));
        cache.forget(&ids[2]);
        assert_eq!(cache.pricing(&ids[2]), None);
    }
}
