//! One conversion per gate request: the gate's request from its protobuf message, every field
//! checked and named when it is wrong ([`GateError::InvalidArgument`]), before anything is
//! asked of the store. Fields are read in the message's order, so the first bad one is named.
//! Idempotency keys come out as the caller sent them; the service scopes them to the caller.

use super::convert;
use crate::domain::Amount;
use crate::gate::{
    ChargeRequest, CheckRequest, CommitRequest, Cost, ExtendRequest, GateError, ReserveRequest,
};
use crate::proto;

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
