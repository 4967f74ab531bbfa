//! The price catalog in use: each feature's wallet and price rule, read on every call and
//! replaced whole when prices change (through the Admin API or in the ledger).
//!
//! A feature may have several versions of its price, each in force from its effective time:
//! a price change can be set ahead, and the version in force at a call is the newest one whose
//! time has come.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::domain::{FeatureId, FeaturePrice};

/// Each feature's wallet and price rule, by version.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Every feature's versions, oldest first by effective time. Shared, so that a hold can
    /// keep the price it was taken at without a copy.
    features: BTreeMap<FeatureId, Vec<Arc<FeaturePrice>>>,
}

impl Catalog {
    pub fn from_prices(prices: impl IntoIterator<Item = FeaturePrice>) -> Catalog {
        let mut catalog = Catalog::default();
        for price in prices {
            catalog.put(price);
        }
        catalog
    }

    /// The feature's price in force at `now_ms`.
    pub fn get(&self, feature: &FeatureId, now_ms: i64) -> Option<&Arc<FeaturePrice>> {
        self.features
            .get(feature)?
            .iter()
            .rev()
            .find(|p| p.effective_at_ms <= now_ms)
    }

    /// Adds a version of a feature's price, replacing one with the same effective time; an
    /// older version that a newer one already in force has replaced is dropped.
    pub fn put(&mut self, price: FeaturePrice) {
        let versions = self.features.entry(price.feature.clone()).or_default();
        versions.retain(|p| p.effective_at_ms != price.effective_at_ms);
        versions.push(Arc::new(price));
        versions.sort_by_key(|p| p.effective_at_ms);
    }

    /// Drops the versions that newer ones in force at `now_ms` have replaced.
    pub fn prune(&mut self, now_ms: i64) {
        for versions in self.features.values_mut() {
            if let Some(current) = versions.iter().rposition(|p| p.effective_at_ms <= now_ms) {
                versions.drain(..current);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.features.len()
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Every version of every feature's price, by feature, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &FeaturePrice> {
        self.features.values().flatten().map(|price| &**price)
    }
}

/// The catalog in use, shared by the gate and the sync loop. Readers get a snapshot that stays
/// whole while it is replaced.
#[derive(Debug, Default)]
pub struct SharedCatalog(RwLock<Arc<Catalog>>);

impl SharedCatalog {
    pub fn new(catalog: Catalog) -> SharedCatalog {
        SharedCatalog(RwLock::new(Arc::new(catalog)))
    }

    pub fn get(&self) -> Arc<Catalog> {
        // The lock guards swapping one Arc for another; a poisoned lock still holds a whole
        // catalog.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, catalog: Catalog) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
    }

    /// Sets the given prices on the catalog in use (not on an older snapshot, which a
    /// concurrent change may have replaced) and returns the result.
    /// Versions replaced by newer ones in force at `now_ms` are dropped.
    pub fn put_all(&self, prices: Vec<FeaturePrice>, now_ms: i64) -> Arc<Catalog> {
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut catalog = (**current).clone();
        for price in prices {
            catalog.put(price);
        }
        catalog.prune(now_ms);
        *current = Arc::new(catalog);
        current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Amount, PriceRule, WalletId};

    fn flat(price: &str, effective_at_ms: i64) -> FeaturePrice {
        FeaturePrice {
            feature: FeatureId::parse("chat").unwrap(),
            wallet: WalletId::default_wallet(),
            rule: PriceRule::PerCall {
                price: Amount::parse(price).unwrap(),
            },
            overrun: Default::default(),
            stop: Default::default(),
            effective_at_ms,
        }
    }

    #[test]
    fn the_newest_version_whose_time_has_come_is_in_force() {
        let chat = FeatureId::parse("chat").unwrap();
        let mut catalog = Catalog::from_prices([flat("1", 100), flat("3", 300), flat("2", 200)]);
        let get = |catalog: &Catalog, now_ms| catalog.get(&chat, now_ms).map(|p| (**p).clone());
        assert!(get(&catalog, 99).is_none());
        assert_eq!(get(&catalog, 100), Some(flat("1", 100)));
        assert_eq!(get(&catalog, 299), Some(flat("2", 200)));
        assert_eq!(get(&catalog, 300), Some(flat("3", 300)));
        catalog.put(flat("2.5", 200));
        assert_eq!(get(&catalog, 250), Some(flat("2.5", 200)));
        catalog.prune(250);
        assert_eq!(
            catalog.iter().count(),
            2,
            "only the one in force and the one to come"
        );
        assert_eq!(catalog.len(), 1);
    }
}
