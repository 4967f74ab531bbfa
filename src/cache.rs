//! The reservation cache: what this replica knows of the holds it took, so that pricing a
//! commit by usage needs no store round trip.
//!
//! A hint, never the truth: a hold taken by another replica, or forgotten here, is read from the
//! store instead. Bounded: when full, an arbitrary entry makes room.

use dashmap::DashMap;

use crate::domain::{FeatureId, PriceRule, ReservationId};

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
}

impl ReservationCache {
    pub fn new(holds_max: usize) -> ReservationCache {
        ReservationCache {
            holds: DashMap::new(),
            holds_max,
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
