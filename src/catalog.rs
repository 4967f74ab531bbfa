//! The price catalog in use: each feature's wallet and price rule, read on every call and
//! replaced whole when prices change (through the Admin API or in the ledger).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::domain::{FeatureId, FeaturePrice};

/// Each feature's wallet and price rule.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    features: BTreeMap<FeatureId, FeaturePrice>,
}

impl Catalog {
    pub fn from_prices(prices: impl IntoIterator<Item = FeaturePrice>) -> Catalog {
        let mut catalog = Catalog::default();
        for price in prices {
            catalog.put(price);
        }
        catalog
    }

    pub fn get(&self, feature: &FeatureId) -> Option<&FeaturePrice> {
        self.features.get(feature)
    }

    pub fn put(&mut self, price: FeaturePrice) {
        self.features.insert(price.feature.clone(), price);
    }

    pub fn len(&self) -> usize {
        self.features.len()
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FeaturePrice> {
        self.features.values()
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
    pub fn put_all(&self, prices: Vec<FeaturePrice>) -> Arc<Catalog> {
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut catalog = (**current).clone();
        for price in prices {
            catalog.put(price);
        }
        *current = Arc::new(catalog);
        current.clone()
    }
}
