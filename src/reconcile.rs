//! Reconcile: does the ledger explain the store? For each account, the store's grants (what
//! remains of each) and open holds are compared with what the ledger says, wallet by wallet;
//! a difference is drift, logged and exported as a metric, and an operator can rebuild the
//! account in the store from the ledger.
//!
//! A comparison is only fair once the ledger has everything the store had: the reconciler takes
//! the store's snapshot with its outbox position, waits until the ledger has that position,
//! reads the ledger, and takes the snapshot again. If the account changed meanwhile it is
//! compared next time instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{AccountId, HoldState, WalletId};
use crate::gate::GateError;
use crate::ledger::Ledger;
use crate::shutdown::Shutdown;
use crate::store::{AccountSnapshot, BalanceStore};
use crate::sync::Durability;
use crate::telemetry;

/// Most accounts compared in one round of the periodic reconcile.
pub const ROUND_ACCOUNTS_MAX: usize = 1_000;

/// One wallet in the store and in the ledger, in minor units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletComparison {
    pub wallet: WalletId,
    /// What remains of the grants (granted − charged − voided), less flex used and debt, in
    /// the store.
    pub store_remaining_minor: i64,
    /// The same, as the ledger explains it.
    pub ledger_remaining_minor: i64,
    /// Open holds, in the store.
    pub store_held_minor: i64,
    /// Open holds, as the ledger records them.
    pub ledger_held_minor: i64,
}

impl WalletComparison {
    /// Store minus ledger, remaining and held together.
    pub fn drift_minor(&self) -> i64 {
        (self.store_remaining_minor - self.ledger_remaining_minor).abs()
            + (self.store_held_minor - self.ledger_held_minor).abs()
    }
}

/// What comparing one account found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// Every wallet of the account, store beside ledger (drifting or not).
    Compared {
        wallets: Vec<WalletComparison>,
        /// Whether the account was rebuilt from the ledger afterwards.
        rebuilt: bool,
    },
    /// The account changed while it was being compared; compare it again later.
    Busy,
    /// The store does not have the account.
    Missing,
}

/// Compares store and ledger. See the module documentation.
pub struct Reconciler {
    store: Arc<dyn BalanceStore>,
    ledger: Arc<dyn Ledger>,
    durability: Durability,
    /// How far back ended holds and replies are kept when an account is rebuilt.
    retention_ms: i64,
    /// The longest to wait for the outbox to drain before comparing a drifting account again.
    settle: Duration,
}

/// Remaining (of the grants, less flex used and debt) and held per wallet.
fn totals(snapshot: &AccountSnapshot) -> BTreeMap<WalletId, (i64, i64)> {
    let mut totals: BTreeMap<WalletId, (i64, i64)> = BTreeMap::new();
    for grant in &snapshot.grants {
        totals.entry(grant.terms.wallet.clone()).or_default().0 += grant.remaining_minor;
    }
    for (wallet, postpaid) in &snapshot.postpaid {
        totals.entry(wallet.clone()).or_default().0 -=
            postpaid.flex_used_minor + postpaid.debt_minor;
    }
    for hold in snapshot.holds.iter().filter(|h| h.state == HoldState::Held) {
        totals.entry(hold.wallet.clone()).or_default().1 += hold.amount_minor;
    }
    totals
}

impl Reconciler {
    pub fn new(
        store: Arc<dyn BalanceStore>,
        ledger: Arc<dyn Ledger>,
        durability: Durability,
        retention_ms: i64,
        settle: Duration,
    ) -> Reconciler {
        Reconciler {
            store,
            ledger,
            durability,
            retention_ms,
            settle,
        }
    }

    /// Compares one account; with `rebuild`, then replaces it in the store with the ledger's
    /// version (whether it drifted or not).
    pub async fn compare(
        &self,
        account: &AccountId,
        rebuild: bool,
    ) -> Result<Comparison, GateError> {
        let started_ms = self.store.now_ms().await?;
        let first = self.compare_once(account, false).await?;
        let drifting = matches!(&first, Comparison::Compared { wallets, .. }
            if wallets.iter().any(|w| w.drift_minor() != 0));
        if !rebuild && !drifting {
            return Ok(first);
        }
        // With a shared store, the last records of a quiet account may still be on their way
        // through the outbox: let the sync loops carry them before trusting (or acting on) a
        // difference.
        if drifting {
            self.settle(started_ms).await;
        }
        self.compare_once(account, rebuild).await
    }

    /// Waits until the outbox holds nothing written before `since_ms` (every sync loop has
    /// carried it to the ledger), or `settle` has passed.
    async fn settle(&self, since_ms: i64) {
        let drained = async {
            let mut pause = Duration::from_millis(5);
            loop {
                // The clock is read before the outbox, so the oldest record found is at least
                // as old as `now - lag` says.
                if let Ok(now) = self.store.now_ms().await
                    && let Ok(stats) = self.store.outbox_stats().await
                    && (stats.records == 0 || now - stats.lag_ms > since_ms)
                {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        };
        let _ = tokio::time::timeout(self.settle, drained).await;
    }

    async fn compare_once(
        &self,
        account: &AccountId,
        rebuild: bool,
    ) -> Result<Comparison, GateError> {
        let Some(before) = self.store.snapshot(account).await? else {
            return Ok(Comparison::Missing);
        };
        self.durability.wait(&before.durable).await?;
        let now = self.store.now_ms().await?;
        let ledger = self
            .ledger
            .load_accounts(Some(account), now, self.retention_ms)
            .await?
            .pop()
            .unwrap_or_default();
        let after = self.store.snapshot(account).await?;
        if after.as_ref().map(|a| &a.value) != Some(&before.value) {
            return Ok(Comparison::Busy);
        }
        let store_totals = totals(&before.value);
        let ledger_totals = totals(&ledger);
        let wallets = store_totals
            .keys()
            .chain(ledger_totals.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|wallet| {
                let (store_remaining, store_held) =
                    store_totals.get(wallet).copied().unwrap_or_default();
                let (ledger_remaining, ledger_held) =
                    ledger_totals.get(wallet).copied().unwrap_or_default();
                WalletComparison {
                    wallet: wallet.clone(),
                    store_remaining_minor: store_remaining,
                    ledger_remaining_minor: ledger_remaining,
                    store_held_minor: store_held,
                    ledger_held_minor: ledger_held,
                }
            })
            .collect();
        // A hold the ledger does not have yet (a shared store's sync loop may still be carrying
        // it) would be lost by a rebuild: wait for it instead.
        let ledger_holds: std::collections::BTreeSet<_> = ledger
            .holds
            .iter()
            .filter(|h| h.state == HoldState::Held)
            .map(|h| &h.id)
            .collect();
        let lagging = before
            .value
            .holds
            .iter()
            .any(|h| h.state == HoldState::Held && !ledger_holds.contains(&h.id));
        if rebuild && lagging {
            return Ok(Comparison::Busy);
        }
        let rebuilt = rebuild && self.store.replace(ledger, &before.value).await?;
        if rebuild && !rebuilt {
            return Ok(Comparison::Busy);
        }
        Ok(Comparison::Compared { wallets, rebuilt })
    }

    /// Compares every account, `ROUND_ACCOUNTS_MAX` per `interval`, until shutdown, exporting
    /// the drift found in each round.
    pub async fn run(self: Arc<Self>, interval: Duration, mut shutdown: Shutdown) {
        let mut after: Option<AccountId> = None;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            after = self.round(after).await;
        }
    }

    /// One round from `after`; returns where the next round starts.
    pub async fn round(&self, after: Option<AccountId>) -> Option<AccountId> {
        let accounts = match self
            .store
            .accounts(after.as_ref(), ROUND_ACCOUNTS_MAX)
            .await
        {
            Ok(accounts) => accounts,
            Err(error) => {
                tracing::warn!(%error, "reconcile cannot list accounts");
                return after;
            }
        };
        let (mut drifting, mut drift_minor) = (0u64, 0i64);
        for account in &accounts {
            match self.compare(account, false).await {
                Ok(Comparison::Compared { wallets, .. }) => {
                    for wallet in wallets.iter().filter(|w| w.drift_minor() != 0) {
                        drifting += 1;
                        drift_minor = drift_minor.saturating_add(wallet.drift_minor());
                        tracing::warn!(
                            %account,
                            wallet = %wallet.wallet,
                            store_remaining_minor = wallet.store_remaining_minor,
                            ledger_remaining_minor = wallet.ledger_remaining_minor,
                            store_held_minor = wallet.store_held_minor,
                            ledger_held_minor = wallet.ledger_held_minor,
                            "store and ledger disagree"
                        );
                    }
                }
                Ok(Comparison::Busy | Comparison::Missing) => {}
                Err(error) => tracing::warn!(%account, %error, "reconcile failed"),
            }
        }
        metrics::gauge!(telemetry::RECONCILE_ACCOUNTS).set(accounts.len() as f64);
        metrics::gauge!(telemetry::RECONCILE_DRIFT_WALLETS).set(drifting as f64);
        metrics::gauge!(telemetry::RECONCILE_DRIFT_MINOR).set(drift_minor as f64);
        if accounts.len() < ROUND_ACCOUNTS_MAX {
            None
        } else {
            accounts.last().cloned()
        }
    }
}
