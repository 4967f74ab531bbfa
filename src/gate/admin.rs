//! The operator's side of the gate: accounts, grants, voids, prices and the ledger listing.

use std::sync::Arc;

use super::{Gate, GateError};
use crate::catalog::Catalog;
use crate::domain::alert::{ALERTS_PER_WALLET_MAX, WalletAlerts, top_up_request_id};
use crate::domain::entry_id;
use crate::domain::grant::GRANT_FEATURES_MAX;
use crate::domain::money::MINOR_MAX;
use crate::domain::price::CATALOG_FEATURES_MAX;
use crate::domain::{
    Account, AccountId, Amount, FeatureId, FeaturePrice, GrantId, GrantKind, GrantTerms,
    LimitState, Recurrence, WalletId, format_minor,
};
use crate::domain::{GrantReceipt, VoidReceipt};
use crate::ledger::{EventRecord, UsageGroup, UsageQuery, UsageRow};
use crate::record::LedgerEntry;
use crate::store::{AccountUpdate, AlertsView, GrantEntry, LimitChange, WalletView};

/// Window of a usage query that does not give its start: 30 days.
pub const USAGE_WINDOW_MS_DEFAULT: i64 = 30 * 86_400_000;

/// Spend of one account over a window.
#[derive(Clone, Debug)]
pub struct UsageRequest {
    pub account: AccountId,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub group: UsageGroup,
    pub label: Option<(String, String)>,
}

/// The answer to a [`UsageRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub since_ms: i64,
    pub until_ms: i64,
    pub total: UsageRow,
    pub groups: Vec<UsageRow>,
}

/// Longest reason for a void, in bytes.
pub const REASON_LEN_MAX: usize = 1_024;

/// Credits to add to a wallet.
#[derive(Clone, Debug)]
pub struct GrantRequest {
    pub account: AccountId,
    pub grant: GrantId,
    pub wallet: Option<WalletId>,
    pub amount: Amount,
    pub kind: GrantKind,
    pub priority: Option<u32>,
    pub expires_at_ms: Option<i64>,
    pub features: Vec<FeatureId>,
    /// For a plan's allowance: given again every period.
    pub recurrence: Option<Recurrence>,
    /// Why an operator adds the credit, kept in the ledger entry.
    pub reason: Option<String>,
    /// The commit or charge (ledger entry id) this credit refunds.
    pub refund_of: Option<String>,
    /// The top-up request this credit answers, which it closes.
    pub answers: Option<String>,
}

#[derive(Clone, Debug)]
pub struct VoidRequest {
    pub account: AccountId,
    pub grant: GrantId,
    pub reason: String,
}

impl Gate {
    pub async fn put_account(&self, update: AccountUpdate) -> Result<Account, GateError> {
        let written = self.store.put_account(update).await?;
        self.make_durable(&written.durable).await?;
        Ok(written.value)
    }

    pub async fn account(&self, id: &AccountId) -> Result<Account, GateError> {
        self.store
            .account(id)
            .await?
            .ok_or_else(|| GateError::NotFound(format!("account {id} does not exist")))
    }

    pub async fn add_grant(&self, request: GrantRequest) -> Result<GrantReceipt, GateError> {
        if request.amount.is_zero() {
            return Err(GateError::invalid(
                "amount",
                "a grant must be greater than zero",
            ));
        }
        if let Some(expires_at_ms) = request.expires_at_ms {
            let now = self.store.now_ms().await?;
            if expires_at_ms <= now {
                return Err(GateError::invalid(
                    "expires_at_ms",
                    format!("{expires_at_ms} is not in the future (the store's clock reads {now})"),
                ));
            }
        }
        if let Some(recurrence) = &request.recurrence {
            self.check_recurrence(recurrence, &request).await?;
        }
        if request
            .reason
            .as_ref()
            .is_some_and(|r| r.len() > REASON_LEN_MAX)
        {
            return Err(GateError::invalid(
                "reason",
                format!("is longer than {REASON_LEN_MAX} bytes"),
            ));
        }
        if let Some(entry) = &request.refund_of {
            self.check_refund(entry, &request).await?;
        }
        if let Some(answered) = &request.answers {
            let wallet = request
                .wallet
                .clone()
                .unwrap_or_else(WalletId::default_wallet);
            let prefix = top_up_request_id(request.account.as_str(), wallet.as_str(), 0);
            let prefix = prefix.trim_end_matches('0');
            let numbered = answered.strip_prefix(prefix).is_some_and(|n| {
                (1..=15).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit())
            });
            if !numbered {
                return Err(GateError::invalid(
                    "top_up_request_id",
                    format!(
                        "{answered:?} is not a top-up request of wallet {wallet} of {} \
                         (they look like {prefix}<n>)",
                        request.account
                    ),
                ));
            }
        }
        let mut features = request.features;
        features.sort();
        features.dedup();
        if features.len() > GRANT_FEATURES_MAX {
            return Err(GateError::invalid(
                "features",
                format!("a grant may be scoped to at most {GRANT_FEATURES_MAX} features"),
            ));
        }
        let terms = GrantTerms {
            id: request.grant,
            wallet: request.wallet.unwrap_or_else(WalletId::default_wallet),
            kind: request.kind,
            priority: request
                .priority
                .unwrap_or_else(|| request.kind.default_priority()),
            amount_minor: request.amount.to_minor(),
            expires_at_ms: request.expires_at_ms,
            features,
            recurrence: request.recurrence,
        };
        let entry = GrantEntry {
            id: entry_id::grant(&request.account, &terms.id),
            reason: request.reason,
            refund_of: request.refund_of,
            answers: request.answers,
        };
        let written = self.store.add_grant(&request.account, terms, entry).await?;
        self.make_durable(&written.durable).await?;
        self.credit_came_in(&request.account, &written.value.grant.terms.wallet);
        Ok(written.value)
    }

    /// Forgets that this replica heard `wallet` run out: credit may have come in, and the
    /// caller that added it may spend it at once, before the event saying so (from Redis, on
    /// its way to every replica) arrives. The store decides anyway; the mark only spares it
    /// calls.
    fn credit_came_in(&self, account: &AccountId, wallet: &WalletId) {
        self.cache.mark_replenished(account.clone(), wallet.clone());
    }

    /// A refund must name a commit or charge of the account, pay into its wallet, and with
    /// earlier refunds of it give back at most what it charged. A repeated grant (same id) is
    /// the same refund and passes.
    async fn check_refund(&self, entry: &str, request: &GrantRequest) -> Result<(), GateError> {
        if self
            .ledger
            .grant(&request.account, &request.grant)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let Some(refundable) = self.ledger.refundable(&request.account, entry).await? else {
            return Err(GateError::invalid(
                "refund_of",
                format!(
                    "account {} has no commit or charge {entry} in the ledger",
                    request.account
                ),
            ));
        };
        let wallet = request
            .wallet
            .clone()
            .unwrap_or_else(WalletId::default_wallet);
        if wallet != refundable.wallet {
            return Err(GateError::invalid(
                "wallet",
                format!("{entry} was paid from wallet {}", refundable.wallet),
            ));
        }
        let left = refundable.amount_minor - refundable.refunded_minor;
        if request.amount.to_minor() > left {
            return Err(GateError::invalid(
                "amount",
                format!(
                    "{entry} charged {} of which {} is refunded already; at most {} is left",
                    format_minor(refundable.amount_minor),
                    format_minor(refundable.refunded_minor),
                    format_minor(left)
                ),
            ));
        }
        Ok(())
    }

    async fn check_recurrence(
        &self,
        recurrence: &Recurrence,
        request: &GrantRequest,
    ) -> Result<(), GateError> {
        if request.kind != GrantKind::Included {
            return Err(GateError::invalid(
                "period",
                "only included grants (a plan's allowance) recur",
            ));
        }
        // A reset leaves what is held plus a new amount plus the rollover: keep twice their
        // sum within the bound, so no reset can pass it.
        let amount = request.amount.to_minor();
        if amount.saturating_add(recurrence.rollover_max_minor) > MINOR_MAX / 2 {
            return Err(GateError::invalid(
                "rollover_max",
                format!(
                    "amount and rollover_max together must stay within {}",
                    format_minor(MINOR_MAX / 2)
                ),
            ));
        }
        if let Some(anchor_ms) = recurrence.anchor_ms {
            let now = self.store.now_ms().await?;
            if !(0..=now).contains(&anchor_ms) {
                return Err(GateError::invalid(
                    "period_anchor_ms",
                    format!(
                        "{anchor_ms} must be between 0 and now (the store's clock reads {now})"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Sets or removes a spend limit; returns the account's limits afterwards.
    pub async fn set_limit(
        &self,
        account: &AccountId,
        change: LimitChange,
    ) -> Result<Vec<LimitState>, GateError> {
        let written = self.store.set_limit(account, change).await?;
        self.make_durable(&written.durable).await?;
        Ok(written.value)
    }

    /// Sets a wallet's flex cap; returns the wallet as it now is, and the store's clock.
    pub async fn set_wallet(
        &self,
        account: AccountId,
        wallet: WalletId,
        flex_cap: Amount,
    ) -> Result<(WalletView, i64), GateError> {
        let written = self
            .store
            .set_wallet(&account, &wallet, flex_cap.to_minor())
            .await?;
        self.make_durable(&written.durable).await?;
        self.credit_came_in(&account, &wallet);
        let view = self.balance(&account).await?;
        let shown = view
            .wallets
            .into_iter()
            .find(|w| w.wallet == wallet)
            .unwrap_or(WalletView {
                wallet,
                grants: Vec::new(),
                postpaid: written.value,
                alerts: None,
            });
        Ok((shown, view.now_ms))
    }

    /// Sets a wallet's thresholds and auto top-up policy (replacing what it had); returns
    /// them with where they stand.
    pub async fn set_alerts(
        &self,
        account: AccountId,
        wallet: WalletId,
        alerts: WalletAlerts,
    ) -> Result<AlertsView, GateError> {
        if alerts.rules.len() > ALERTS_PER_WALLET_MAX {
            return Err(GateError::invalid(
                "alerts",
                format!("a wallet may have at most {ALERTS_PER_WALLET_MAX} thresholds"),
            ));
        }
        let written = self.store.set_alerts(&account, &wallet, alerts).await?;
        self.make_durable(&written.durable).await?;
        Ok(written.value)
    }

    pub async fn void_grant(&self, request: VoidRequest) -> Result<VoidReceipt, GateError> {
        if request.reason.len() > REASON_LEN_MAX {
            return Err(GateError::invalid(
                "reason",
                format!("is longer than {REASON_LEN_MAX} bytes"),
            ));
        }
        let written = self
            .store
            .void_grant(
                &request.account,
                &request.grant,
                request.reason,
                entry_id::void(&request.account, &request.grant),
            )
            .await?;
        self.make_durable(&written.durable).await?;
        Ok(written.value)
    }

    /// Sets the prices of the given features in the ledger, then in the catalog in use.
    pub async fn set_prices(
        &self,
        mut prices: Vec<FeaturePrice>,
    ) -> Result<Arc<Catalog>, GateError> {
        let now = self.store.now_ms().await?;
        for (i, price) in prices.iter_mut().enumerate() {
            match price.effective_at_ms {
                0 => price.effective_at_ms = now,
                at if at < now => {
                    return Err(GateError::invalid(
                        format!("features[{i}].effective_at_ms"),
                        format!(
                            "{at} is in the past (the store's clock reads {now}); use 0 for at once"
                        ),
                    ));
                }
                _ => {}
            }
        }
        let mut catalog = (*self.catalog()).clone();
        for price in &prices {
            catalog.put(price.clone());
        }
        if catalog.len() > CATALOG_FEATURES_MAX {
            return Err(GateError::invalid(
                "features",
                format!("the catalog may hold at most {CATALOG_FEATURES_MAX} features"),
            ));
        }
        self.ledger.put_prices(&prices, now).await?;
        Ok(self.catalog.put_all(prices, now))
    }

    /// The catalog: each feature's price in force and those set ahead.
    pub fn prices(&self) -> Arc<Catalog> {
        let mut catalog = (*self.catalog()).clone();
        catalog.prune(self.clock.now_ms());
        Arc::new(catalog)
    }

    /// Spend over a window, from the ledger: the total, and the groups asked for.
    pub async fn usage(&self, request: UsageRequest) -> Result<Usage, GateError> {
        let until_ms = match request.until_ms {
            Some(until) => until,
            None => self.store.now_ms().await?,
        };
        let since_ms = request
            .since_ms
            .unwrap_or(until_ms.saturating_sub(USAGE_WINDOW_MS_DEFAULT));
        if since_ms >= until_ms {
            return Err(GateError::invalid("since_ms", "must be before until_ms"));
        }
        let query = |group| UsageQuery {
            account: request.account.clone(),
            since_ms,
            until_ms,
            group,
            label: request.label.clone(),
        };
        let total = self
            .ledger
            .usage(&query(UsageGroup::Total))
            .await?
            .pop()
            .unwrap_or(UsageRow {
                key: None,
                amount_minor: 0,
                count: 0,
            });
        let groups = match request.group {
            UsageGroup::Total => Vec::new(),
            group => self.ledger.usage(&query(group)).await?,
        };
        Ok(Usage {
            since_ms,
            until_ms,
            total,
            groups,
        })
    }

    /// Account ids in the store, in order, after `after`.
    pub async fn accounts(
        &self,
        after: Option<&AccountId>,
        limit: usize,
    ) -> Result<Vec<AccountId>, GateError> {
        Ok(self.store.accounts(after, limit).await?)
    }

    pub async fn entries(
        &self,
        account: &AccountId,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, GateError> {
        Ok(self.ledger.entries(account, limit).await?)
    }

    /// The newest `limit` events of an account, with their webhook deliveries.
    pub async fn events(
        &self,
        account: &AccountId,
        limit: usize,
    ) -> Result<Vec<EventRecord>, GateError> {
        Ok(self.ledger.events(account, limit).await?)
    }
}
