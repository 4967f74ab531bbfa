//! One conversion per request: the gate's request from its protobuf message, every field
//! checked and named when it is wrong ([`GateError::InvalidArgument`]), before anything is
//! asked of the store. Fields are read in the message's order, so the first bad one is named.
//! Idempotency keys come out as the caller sent them; the service scopes them to the caller.

use super::convert;
use crate::domain::account::DISPLAY_NAME_LEN_MAX;
use crate::domain::alert::WalletAlerts;
use crate::domain::price::FeaturePrice;
use crate::domain::{AccountId, Amount, FeatureId, GrantId, WalletId};
use crate::gate::{
    ChargeRequest, CheckRequest, CommitRequest, Cost, ExtendRequest, GateError, GrantRequest,
    ReserveRequest, UsageRequest, VoidRequest,
};
use crate::ledger::ENTRIES_LIMIT_MAX;
use crate::proto;
use crate::store::{AccountUpdate, LimitChange};

impl TryFrom<&proto::ReserveRequest> for ReserveRequest {
    type Error = GateError;

    fn try_from(r: &proto::ReserveRequest) -> Result<ReserveRequest, GateError> {
        use proto::reserve_request::Cost as C;
        let (amount, usage) = match &r.cost {
            Some(C::Amount(a)) => (Some(a), None),
            Some(C::Usage(u)) => (None, Some(u)),
            None => (None, None),
        };
        Ok(ReserveRequest {
            account: convert::account(&r.account_id)?,
            feature: convert::feature(&r.feature)?,
            wallet: convert::wallet(&r.wallet)?,
            cost: convert::cost(amount, usage)?,
            ttl_ms: convert::ttl_ms(r.ttl_ms),
            idempotency_key: convert::idempotency_key(&r.idempotency_key)?,
            labels: convert::labels(&r.labels)?,
            partial_min: convert::partial_min(r.allow_partial, &r.min_amount)?,
        })
    }
}

impl TryFrom<&proto::CommitRequest> for CommitRequest {
    type Error = GateError;

    fn try_from(r: &proto::CommitRequest) -> Result<CommitRequest, GateError> {
        use proto::commit_request::Actual;
        let id = convert::reservation(&r.reservation_id)?;
        let actual = match &r.actual {
            Some(Actual::Amount(a)) => Cost::Amount(convert::amount("amount", a)?),
            Some(Actual::Usage(u)) => Cost::Usage(convert::usage(u)?),
            None => {
                return Err(GateError::invalid(
                    "amount",
                    "one of amount or usage is required",
                ));
            }
        };
        Ok(CommitRequest { id, actual })
    }
}

impl TryFrom<&proto::ExtendRequest> for ExtendRequest {
    type Error = GateError;

    fn try_from(r: &proto::ExtendRequest) -> Result<ExtendRequest, GateError> {
        let id = convert::reservation(&r.reservation_id)?;
        let additional = if r.additional_amount.is_empty() {
            Amount::ZERO
        } else {
            convert::amount("additional_amount", &r.additional_amount)?
        };
        Ok(ExtendRequest {
            id,
            additional,
            ttl_ms: convert::ttl_ms(r.ttl_ms),
            idempotency_key: convert::idempotency_key(&r.idempotency_key)?,
        })
    }
}

impl TryFrom<&proto::ChargeRequest> for ChargeRequest {
    type Error = GateError;

    fn try_from(r: &proto::ChargeRequest) -> Result<ChargeRequest, GateError> {
        use proto::charge_request::Cost as C;
        let (amount, usage) = match &r.cost {
            Some(C::Amount(a)) => (Some(a), None),
            Some(C::Usage(u)) => (None, Some(u)),
            None => (None, None),
        };
        Ok(ChargeRequest {
            account: convert::account(&r.account_id)?,
            feature: convert::feature(&r.feature)?,
            wallet: convert::wallet(&r.wallet)?,
            cost: convert::cost(amount, usage)?,
            idempotency_key: convert::idempotency_key(&r.idempotency_key)?,
            labels: convert::labels(&r.labels)?,
        })
    }
}

impl TryFrom<&proto::CheckRequest> for CheckRequest {
    type Error = GateError;

    fn try_from(r: &proto::CheckRequest) -> Result<CheckRequest, GateError> {
        use proto::check_request::Cost as C;
        let cost = match &r.cost {
            Some(C::Amount(a)) => Some(convert::cost(Some(a), None)?),
            Some(C::Usage(u)) => Some(convert::cost(None, Some(u))?),
            None => None,
        };
        Ok(CheckRequest {
            account: convert::account(&r.account_id)?,
            feature: convert::feature(&r.feature)?,
            wallet: convert::wallet(&r.wallet)?,
            cost,
            labels: convert::labels(&r.labels)?,
        })
    }
}

impl TryFrom<&proto::PutAccountRequest> for AccountUpdate {
    type Error = GateError;

    fn try_from(r: &proto::PutAccountRequest) -> Result<AccountUpdate, GateError> {
        let id = convert::account(&r.account_id)?;
        if r.display_name.len() > DISPLAY_NAME_LEN_MAX
            || r.display_name.chars().any(char::is_control)
        {
            return Err(GateError::invalid(
                "display_name",
                format!(
                    "must be at most {DISPLAY_NAME_LEN_MAX} bytes of text without control characters"
                ),
            ));
        }
        Ok(AccountUpdate {
            id,
            display_name: r.display_name.clone(),
            status: convert::account_status(r.status)?,
        })
    }
}

impl TryFrom<&proto::AddGrantRequest> for GrantRequest {
    type Error = GateError;

    fn try_from(r: &proto::AddGrantRequest) -> Result<GrantRequest, GateError> {
        if r.expires_at_ms < 0 {
            return Err(GateError::invalid("expires_at_ms", "must not be negative"));
        }
        let features = r
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| convert::required(&format!("features[{i}]"), f, FeatureId::parse))
            .collect::<Result<Vec<_>, _>>()?;
        let text = |t: &String| (!t.is_empty()).then(|| t.clone());
        Ok(GrantRequest {
            account: convert::account(&r.account_id)?,
            grant: convert::required("grant_id", &r.grant_id, GrantId::parse)?,
            wallet: convert::wallet(&r.wallet)?,
            amount: convert::amount("amount", &r.amount)?,
            kind: convert::grant_kind(r.kind)?,
            priority: (r.priority != 0).then_some(r.priority),
            expires_at_ms: (r.expires_at_ms != 0).then_some(r.expires_at_ms),
            features,
            recurrence: convert::recurrence(r.period, r.period_anchor_ms, &r.rollover_max)?,
            reason: text(&r.reason),
            refund_of: text(&r.refund_of),
            answers: text(&r.top_up_request_id),
        })
    }
}

impl TryFrom<&proto::VoidGrantRequest> for VoidRequest {
    type Error = GateError;

    fn try_from(r: &proto::VoidGrantRequest) -> Result<VoidRequest, GateError> {
        Ok(VoidRequest {
            account: convert::account(&r.account_id)?,
            grant: convert::required("grant_id", &r.grant_id, GrantId::parse)?,
            reason: r.reason.clone(),
        })
    }
}

impl TryFrom<&proto::GetUsageRequest> for UsageRequest {
    type Error = GateError;

    fn try_from(r: &proto::GetUsageRequest) -> Result<UsageRequest, GateError> {
        let account = convert::account(&r.account_id)?;
        let window = |field: &str, ms: i64| match ms {
            0 => Ok(None),
            ms if ms > 0 => Ok(Some(ms)),
            _ => Err(GateError::invalid(field, "must not be negative")),
        };
        let label = match (r.label_key.is_empty(), r.label_value.is_empty()) {
            (true, true) => None,
            (false, _) => {
                convert::required("label_key", &r.label_key, FeatureId::parse)?;
                Some((r.label_key.clone(), r.label_value.clone()))
            }
            (true, false) => {
                return Err(GateError::invalid(
                    "label_key",
                    "is required with label_value",
                ));
            }
        };
        Ok(UsageRequest {
            account,
            since_ms: window("since_ms", r.since_ms)?,
            until_ms: window("until_ms", r.until_ms)?,
            group: convert::usage_group(&r.group_by)?,
            label,
        })
    }
}

/// A wallet's settings to set (`SetWallet`).
pub struct WalletChange {
    pub account: AccountId,
    pub wallet: WalletId,
    pub flex_cap: Amount,
}

impl TryFrom<&proto::SetWalletRequest> for WalletChange {
    type Error = GateError;

    fn try_from(r: &proto::SetWalletRequest) -> Result<WalletChange, GateError> {
        Ok(WalletChange {
            account: convert::account(&r.account_id)?,
            wallet: convert::wallet(&r.wallet)?.unwrap_or_else(WalletId::default_wallet),
            flex_cap: convert::amount("flex_cap", &r.flex_cap)?,
        })
    }
}

/// A wallet's thresholds and auto top-up to set (`SetAlerts`).
pub struct AlertsChange {
    pub account: AccountId,
    pub wallet: WalletId,
    pub alerts: WalletAlerts,
}

impl TryFrom<&proto::SetAlertsRequest> for AlertsChange {
    type Error = GateError;

    fn try_from(r: &proto::SetAlertsRequest) -> Result<AlertsChange, GateError> {
        Ok(AlertsChange {
            account: convert::account(&r.account_id)?,
            wallet: convert::wallet(&r.wallet)?.unwrap_or_else(WalletId::default_wallet),
            alerts: convert::alerts_request(r)?,
        })
    }
}

/// A spend limit to set or remove (`SetLimit`).
pub struct LimitRequest {
    pub account: AccountId,
    pub change: LimitChange,
}

impl TryFrom<&proto::SetLimitRequest> for LimitRequest {
    type Error = GateError;

    fn try_from(r: &proto::SetLimitRequest) -> Result<LimitRequest, GateError> {
        Ok(LimitRequest {
            account: convert::account(&r.account_id)?,
            change: convert::limit_change(r)?,
        })
    }
}

/// The prices to set (`SetPricesRequest`): at least one.
pub struct PricesRequest(pub Vec<FeaturePrice>);

impl TryFrom<&proto::SetPricesRequest> for PricesRequest {
    type Error = GateError;

    fn try_from(r: &proto::SetPricesRequest) -> Result<PricesRequest, GateError> {
        if r.features.is_empty() {
            return Err(GateError::invalid(
                "features",
                "at least one feature price is required",
            ));
        }
        let prices = r
            .features
            .iter()
            .enumerate()
            .map(|(i, p)| convert::feature_price(i, p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PricesRequest(prices))
    }
}

/// Items a listing returns when the caller does not say.
const LISTING_LIMIT_DEFAULT: usize = 100;

/// What a listing of one account asks for (`ListEntries`, `ListEvents`): 0 items means the
/// default, and there is a most.
pub struct Listing {
    pub account: AccountId,
    pub limit: usize,
}

impl Listing {
    fn new(account_id: &str, limit: u32) -> Result<Listing, GateError> {
        let account = convert::account(account_id)?;
        let limit = match limit as usize {
            0 => LISTING_LIMIT_DEFAULT,
            n if n > ENTRIES_LIMIT_MAX => {
                return Err(GateError::invalid(
                    "limit",
                    format!("must be at most {ENTRIES_LIMIT_MAX}"),
                ));
            }
            n => n,
        };
        Ok(Listing { account, limit })
    }
}

impl TryFrom<&proto::ListEntriesRequest> for Listing {
    type Error = GateError;

    fn try_from(r: &proto::ListEntriesRequest) -> Result<Listing, GateError> {
        Listing::new(&r.account_id, r.limit)
    }
}

impl TryFrom<&proto::ListEventsRequest> for Listing {
    type Error = GateError;

    fn try_from(r: &proto::ListEventsRequest) -> Result<Listing, GateError> {
        Listing::new(&r.account_id, r.limit)
    }
}

/// Accounts reconciled in one call when the caller does not say.
const RECONCILE_LIMIT_DEFAULT: usize = 100;

/// Which accounts a reconcile compares (`Reconcile`): one, or a page of them in id order.
pub struct ReconcileScope {
    /// The one account, if one is named.
    pub only: Option<AccountId>,
    /// Where the page starts, after this account.
    pub after: Option<AccountId>,
    pub limit: usize,
    /// Whether to rebuild the one account from the ledger.
    pub rebuild: bool,
}

impl TryFrom<&proto::ReconcileRequest> for ReconcileScope {
    type Error = GateError;

    fn try_from(r: &proto::ReconcileRequest) -> Result<ReconcileScope, GateError> {
        let limit = match r.limit as usize {
            0 => RECONCILE_LIMIT_DEFAULT,
            n if n > crate::reconcile::ROUND_ACCOUNTS_MAX => {
                return Err(GateError::invalid(
                    "limit",
                    format!("must be at most {}", crate::reconcile::ROUND_ACCOUNTS_MAX),
                ));
            }
            n => n,
        };
        let only = convert::optional("account_id", &r.account_id, AccountId::parse)?;
        let after = convert::optional("after_account_id", &r.after_account_id, AccountId::parse)?;
        if r.rebuild && only.is_none() {
            return Err(GateError::invalid(
                "account_id",
                "is required to rebuild: name the account to rebuild",
            ));
        }
        Ok(ReconcileScope {
            only,
            after,
            limit,
            rebuild: r.rebuild,
        })
    }
}
