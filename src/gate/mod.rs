//! The gate: the rules, in order, between a parsed request and the store.
//!
//! For every call: resolve the feature's wallet and price from the catalog, price usage (rounded
//! up for holds, half-even for charges), check limits such as the hold TTL, fingerprint the
//! request for its idempotency key, then make exactly one store operation. Calls that move money
//! (commits, charges, grants, voids) return only once the ledger has them, when the settings ask
//! for ledger durability (always, on the embedded default).
//!
//! Requests arrive already parsed into domain types by [`crate::api`], so nothing here sees a
//! malformed field; the checks here are the ones that need the catalog or the limits.

mod admin;
mod error;

use std::sync::Arc;

use serde::Serialize;

pub use admin::{GrantRequest, Usage as UsageReport, UsageRequest, VoidRequest};
pub use error::GateError;

use crate::cache::ReservationCache;
use crate::catalog::{Catalog, SharedCatalog};
use crate::clock::Clock;
use crate::domain::entry_id;
use crate::domain::{
    AccountId, Amount, DenyReason, FeatureId, FeaturePrice, IdempotencyKey, Labels, PriceRule,
    ReservationId, Rounding, Usage, WalletId,
};
use crate::domain::{
    ChargeReceipt, CheckReceipt, CommitReceipt, Decision, Denial, ExtendReceipt, ReleaseReceipt,
    ReserveReceipt,
};
use crate::ledger::Ledger;
use crate::record::OutboxEntry;
use crate::store::{
    AccountView, BalanceStore, ChargeOp, CommitOp, Durable, ExtendOp, Idempotency, ReserveOp,
};
use crate::sync::Durability;

/// Limits the gate enforces, each with its unit in its name.
#[derive(Clone, Debug)]
pub struct Limits {
    /// TTL of a hold whose request gives none.
    pub hold_ttl_ms_default: u64,
    /// Shortest TTL a request may ask for.
    pub hold_ttl_ms_min: u64,
    /// Longest TTL a request may ask for.
    pub hold_ttl_ms_max: u64,
}

/// What a call costs: an amount, or usage to price from the catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cost {
    Amount(Amount),
    Usage(Usage),
}

#[derive(Clone, Debug, Serialize)]
pub struct ReserveRequest {
    pub account: AccountId,
    pub feature: FeatureId,
    pub wallet: Option<WalletId>,
    pub cost: Cost,
    pub ttl_ms: Option<u64>,
    #[serde(skip)]
    pub idempotency_key: Option<IdempotencyKey>,
    pub labels: Labels,
    /// With `Some(min)`, hold what is available down to `min` when the cost is more.
    pub partial_min: Option<Amount>,
}

#[derive(Clone, Debug)]
pub struct CommitRequest {
    pub id: ReservationId,
    pub actual: Cost,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExtendRequest {
    pub id: ReservationId,
    pub additional: Amount,
    pub ttl_ms: Option<u64>,
    #[serde(skip)]
    pub idempotency_key: Option<IdempotencyKey>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChargeRequest {
    pub account: AccountId,
    pub feature: FeatureId,
    pub wallet: Option<WalletId>,
    pub cost: Cost,
    #[serde(skip)]
    pub idempotency_key: Option<IdempotencyKey>,
    pub labels: Labels,
}

#[derive(Clone, Debug)]
pub struct CheckRequest {
    pub account: AccountId,
    pub feature: FeatureId,
    pub wallet: Option<WalletId>,
    pub cost: Option<Cost>,
    pub labels: Labels,
}

/// The answer to a Check, with the amount it was judged for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckAnswer {
    pub wallet: WalletId,
    pub amount_minor: i64,
    pub decision: Decision<CheckReceipt>,
}

/// A denial of a Reserve or Charge, with the amount that was asked for.
pub type Priced<T> = (i64, WalletId, Decision<T>);

/// The rules over a store and a ledger. See the module documentation.
pub struct Gate {
    store: Arc<dyn BalanceStore>,
    /// Decides which version of a price is in force.
    clock: Arc<dyn Clock>,
    ledger: Arc<dyn Ledger>,
    catalog: Arc<SharedCatalog>,
    /// `None` acknowledges writes once the store has them.
    durability: Option<Durability>,
    cache: Arc<ReservationCache>,
    limits: Limits,
}

/// A canonical form of a request, so that equal requests have equal fingerprints.
fn fingerprint(operation: &str, request: &impl Serialize) -> String {
    // Requests are plain data with string map keys; serialising them cannot fail.
    let body = serde_json::to_string(request).expect("requests serialise to JSON");
    format!("{operation}:{body}")
}

impl Gate {
    pub fn new(
        store: Arc<dyn BalanceStore>,
        clock: Arc<dyn Clock>,
        ledger: Arc<dyn Ledger>,
        catalog: Arc<SharedCatalog>,
        durability: Option<Durability>,
        limits: Limits,
        cache: Arc<ReservationCache>,
    ) -> Gate {
        Gate {
            store,
            clock,
            ledger,
            catalog,
            durability,
            limits,
            cache,
        }
    }

    fn catalog(&self) -> Arc<Catalog> {
        self.catalog.get()
    }

    async fn make_durable(&self, durable: &Durable) -> Result<(), GateError> {
        if let Some(durability) = &self.durability {
            durability.wait(durable).await?;
        }
        Ok(())
    }

    /// Whether a call can be denied without asking the store: its wallet was announced empty,
    /// and it has no idempotency key (a repeat must get its first answer, from the store).
    fn denied_from_memory(
        &self,
        account: &AccountId,
        wallet: &WalletId,
        key: &Option<IdempotencyKey>,
    ) -> bool {
        key.is_none() && self.cache.is_depleted(account, wallet)
    }

    fn empty_wallet() -> Denial {
        Denial {
            reason: DenyReason::InsufficientCredits,
            available_minor: 0,
            limit: None,
        }
    }

    /// The wallet that pays for `feature`, as the catalog says now.
    pub fn wallet_of(&self, feature: &FeatureId) -> WalletId {
        self.catalog()
            .get(feature, self.clock.now_ms())
            .map_or_else(WalletId::default_wallet, |price| price.wallet.clone())
    }

    /// The wallet that pays for `feature` and its catalog entry (shared with the catalog; a hold
    /// keeps it), checking a wallet the caller named.
    fn resolve(
        &self,
        feature: &FeatureId,
        wallet: Option<WalletId>,
    ) -> Result<(WalletId, Option<Arc<FeaturePrice>>), GateError> {
        match (self.catalog().get(feature, self.clock.now_ms()), wallet) {
            (Some(price), Some(wallet)) if wallet != price.wallet => Err(GateError::invalid(
                "wallet",
                format!(
                    "feature {feature} is paid from wallet {}, not {wallet}",
                    price.wallet
                ),
            )),
            (Some(price), _) => Ok((price.wallet.clone(), Some(price.clone()))),
            (None, wallet) => Ok((wallet.unwrap_or_else(WalletId::default_wallet), None)),
        }
    }

    fn cost_minor(
        feature: &FeatureId,
        cost: &Cost,
        price: Option<&PriceRule>,
        rounding: Rounding,
    ) -> Result<i64, GateError> {
        match cost {
            Cost::Amount(amount) => Ok(amount.to_minor()),
            Cost::Usage(usage) => {
                let price = price.ok_or_else(|| {
                    GateError::invalid(
                        "usage",
                        format!("feature {feature} has no price in the catalog; send an amount"),
                    )
                })?;
                price.cost_minor(usage, rounding).map_err(|e| {
                    let text = e.to_string();
                    let (field, message) = text.split_once(": ").unwrap_or(("usage", &text));
                    GateError::invalid(field, message)
                })
            }
        }
    }

    fn ttl_ms(&self, requested: Option<u64>) -> Result<i64, GateError> {
        let ttl = requested.unwrap_or(self.limits.hold_ttl_ms_default);
        let (min, max) = (self.limits.hold_ttl_ms_min, self.limits.hold_ttl_ms_max);
        if !(min..=max).contains(&ttl) {
            return Err(GateError::invalid(
                "ttl_ms",
                format!("must be between {min} and {max} milliseconds"),
            ));
        }
        Ok(ttl as i64)
    }

    /// Holds credit for work about to start.
    pub async fn reserve(
        &self,
        request: ReserveRequest,
    ) -> Result<Priced<ReserveReceipt>, GateError> {
        let (wallet, entry) = self.resolve(&request.feature, request.wallet.clone())?;
        let amount = Self::cost_minor(
            &request.feature,
            &request.cost,
            entry.as_ref().map(|entry| &entry.rule),
            Rounding::Hold,
        )?;
        if amount == 0 {
            let field = match request.cost {
                Cost::Amount(_) => "amount",
                Cost::Usage(_) => "usage",
            };
            return Err(GateError::invalid(
                field,
                "a hold must be greater than zero",
            ));
        }
        let ttl_ms = self.ttl_ms(request.ttl_ms)?;
        let min_amount = match request.partial_min {
            None => amount,
            Some(min) if min.is_zero() => {
                return Err(GateError::invalid(
                    "min_amount",
                    "must be greater than zero",
                ));
            }
            Some(min) if min.to_minor() > amount => {
                return Err(GateError::invalid(
                    "min_amount",
                    "must not be more than the amount asked for",
                ));
            }
            Some(min) => min.to_minor(),
        };
        if self.denied_from_memory(&request.account, &wallet, &request.idempotency_key) {
            return Ok((amount, wallet, Decision::Denied(Self::empty_wallet())));
        }
        let idempotency = request.idempotency_key.clone().map(|key| Idempotency {
            key,
            fingerprint: fingerprint("reserve", &request),
        });
        let op = ReserveOp {
            id: ReservationId::generate(&request.account),
            wallet: wallet.clone(),
            feature: request.feature,
            amount_minor: amount,
            min_amount_minor: min_amount,
            ttl_ms,
            labels: request.labels,
            price: entry.as_ref().map(|entry| entry.rule.clone()),
            overrun: entry
                .as_ref()
                .map(|entry| entry.overrun)
                .unwrap_or_default(),
            stop: entry.as_ref().map(|entry| entry.stop).unwrap_or_default(),
            model: match &request.cost {
                Cost::Usage(usage) => usage.model.clone(),
                Cost::Amount(_) => None,
            },
            idempotency,
        };
        let written = self.store.reserve(op).await?;
        // A hold itself need not be in the ledger before it is answered, but a plan allowance
        // it reset must be, before anything spends it.
        if let Durable::Record(record) = &written.durable
            && record
                .entries
                .iter()
                .any(|e| matches!(e, OutboxEntry::Reset { .. }))
        {
            self.make_durable(&written.durable).await?;
        }
        if let Decision::Allowed(hold) = &written.value {
            self.cache.remember(&hold.id, entry);
        }
        Ok((amount, wallet, written.value))
    }

    /// Charges the actual cost of a hold and releases the rest.
    pub async fn commit(&self, request: CommitRequest) -> Result<CommitReceipt, GateError> {
        let amount = match &request.actual {
            Cost::Amount(amount) => amount.to_minor(),
            Cost::Usage(_) => {
                // The price of the hold: known here if this replica took it, else the store's.
                let remembered = self.cache.price(&request.id);
                let stored;
                let priced = match &remembered {
                    Some(entry) => entry.as_deref().map(|e| (&e.feature, &e.rule)),
                    None => {
                        stored = self.store.hold(&request.id).await?.ok_or_else(|| {
                            GateError::NotFound(format!(
                                "reservation {} does not exist",
                                request.id
                            ))
                        })?;
                        stored.price.as_ref().map(|price| (&stored.feature, price))
                    }
                };
                let (feature, price) = priced.ok_or_else(|| {
                    GateError::invalid(
                        "usage",
                        "the reservation was not priced from the catalog; commit an amount",
                    )
                })?;
                Self::cost_minor(feature, &request.actual, Some(price), Rounding::Charge)?
            }
        };
        let op = CommitOp {
            // A hold is committed once, so its entry id can be derived from it.
            entry_id: entry_id::commit(&request.id),
            id: request.id,
            amount_minor: amount,
            usage: match request.actual {
                Cost::Usage(usage) => Some(usage),
                Cost::Amount(_) => None,
            },
        };
        let id = op.id.clone();
        let written = self.store.commit(op).await?;
        self.cache.forget(&id);
        self.make_durable(&written.durable).await?;
        Ok(written.value)
    }

    /// Gives a hold back. Durable before it answers: a release lost in a crash would bring the
    /// hold back to life.
    pub async fn release(&self, id: ReservationId) -> Result<ReleaseReceipt, GateError> {
        let written = self.store.release(&id).await?;
        self.cache.forget(&id);
        self.make_durable(&written.durable).await?;
        Ok(written.value)
    }

    /// Adds to a hold and/or moves its expiry later.
    pub async fn extend(
        &self,
        request: ExtendRequest,
    ) -> Result<Decision<ExtendReceipt>, GateError> {
        if request.additional.is_zero() && request.ttl_ms.is_none() {
            return Err(GateError::invalid(
                "additional_amount",
                "an extend needs an additional amount, a ttl_ms, or both",
            ));
        }
        let ttl_ms = request.ttl_ms.map(|t| self.ttl_ms(Some(t))).transpose()?;
        let idempotency = request.idempotency_key.clone().map(|key| Idempotency {
            key,
            fingerprint: fingerprint("extend", &request),
        });
        let op = ExtendOp {
            id: request.id,
            additional_minor: request.additional.to_minor(),
            ttl_ms,
            idempotency,
        };
        let written = self.store.extend(op).await?;
        if matches!(written.value, Decision::Allowed(_)) {
            self.make_durable(&written.durable).await?;
        }
        Ok(written.value)
    }

    /// Debits credit in one step.
    pub async fn charge(&self, request: ChargeRequest) -> Result<Priced<ChargeReceipt>, GateError> {
        let (wallet, entry) = self.resolve(&request.feature, request.wallet.clone())?;
        let amount = Self::cost_minor(
            &request.feature,
            &request.cost,
            entry.as_ref().map(|entry| &entry.rule),
            Rounding::Charge,
        )?;
        if amount == 0 {
            let field = match request.cost {
                Cost::Amount(_) => "amount",
                Cost::Usage(_) => "usage",
            };
            return Err(GateError::invalid(
                field,
                "a charge must be greater than zero",
            ));
        }
        let idempotency = request.idempotency_key.clone().map(|key| Idempotency {
            key,
            fingerprint: fingerprint("charge", &request),
        });
        let op = ChargeOp {
            account: request.account,
            wallet: wallet.clone(),
            feature: request.feature,
            amount_minor: amount,
            labels: request.labels,
            // Not derived from the idempotency key: a key may be used again once forgotten.
            entry_id: new_entry_id(),
            usage: match request.cost {
                Cost::Usage(usage) => Some(usage),
                Cost::Amount(_) => None,
            },
            idempotency,
        };
        let written = self.store.charge(op).await?;
        if matches!(written.value, Decision::Allowed(_)) {
            self.make_durable(&written.durable).await?;
        }
        Ok((amount, wallet, written.value))
    }

    /// Whether a hold of the cost would be allowed now; without a cost, whether anything is
    /// spendable for the feature.
    pub async fn check(&self, request: CheckRequest) -> Result<CheckAnswer, GateError> {
        let (wallet, entry) = self.resolve(&request.feature, request.wallet)?;
        let price = entry.as_ref().map(|entry| &entry.rule);
        let amount = match &request.cost {
            Some(cost) => Self::cost_minor(&request.feature, cost, price, Rounding::Hold)?,
            None => 0,
        };
        if self.denied_from_memory(&request.account, &wallet, &None) {
            return Ok(CheckAnswer {
                wallet,
                amount_minor: amount,
                decision: Decision::Denied(Self::empty_wallet()),
            });
        }
        // "Anything spendable" is a hold of one minor unit.
        let judged = amount.max(1);
        let decision = self
            .store
            .check(
                &request.account,
                &wallet,
                &request.feature,
                judged,
                &request.labels,
            )
            .await?;
        Ok(CheckAnswer {
            wallet,
            amount_minor: amount,
            decision,
        })
    }

    /// Balances of an account.
    pub async fn balance(&self, account: &AccountId) -> Result<AccountView, GateError> {
        self.store
            .balance(account)
            .await?
            .ok_or_else(|| GateError::NotFound(format!("account {account} does not exist")))
    }
}

/// A new, unique ledger entry id, sorting by when it was made (a UUIDv7), so that the ledger's
/// index of entries grows at its end.
fn new_entry_id() -> String {
    format!("e{}", uuid::Uuid::now_v7().simple())
}
