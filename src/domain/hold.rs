//! Reservations (holds): money set aside for work that has started, and the one way each ends.
//!
//! A hold is `Held` until exactly one of commit, release or expiry ends it. Every other move is
//! refused, which is what makes retries, sweeps and racing replicas safe.

use serde::{Deserialize, Serialize};

use super::grant::{OverrunPolicy, Portion, StopRule};
use super::ids::{AccountId, FeatureId, IdempotencyKey, Labels, ModelId, ReservationId, WalletId};
use super::price::PriceRule;

/// Where a hold is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Held,
    Committed,
    Released,
    Expired,
}

/// A move the state machine refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("reservation is already {}", from.as_str())]
pub struct TransitionError {
    pub from: HoldState,
    pub to: HoldState,
}

impl HoldState {
    /// Moves to `to`: only a held reservation may end, and it ends once.
    pub fn transition(self, to: HoldState) -> Result<HoldState, TransitionError> {
        match (self, to) {
            (HoldState::Held, HoldState::Committed | HoldState::Released | HoldState::Expired) => {
                Ok(to)
            }
            _ => Err(TransitionError { from: self, to }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Held => "held",
            HoldState::Committed => "committed",
            HoldState::Released => "released",
            HoldState::Expired => "expired",
        }
    }
}

/// How a hold ended by commit: remembered so that a repeated commit returns the same reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub entry_id: String,
    /// What the commit asked to charge; a repeated commit must ask the same.
    pub requested_minor: i64,
    /// How far the request went beyond the hold.
    #[serde(default)]
    pub overrun_minor: i64,
    pub charged_minor: i64,
    pub released_minor: i64,
    pub split: Vec<Portion>,
    /// Spendable balance for the hold's feature right after the commit.
    pub available_minor: i64,
    pub at_ms: i64,
}

/// How a hold ended by release (or expiry), remembered for repeated releases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub released_minor: i64,
    pub available_minor: i64,
    pub at_ms: i64,
}

/// A reservation and everything needed to end it on any replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: ReservationId,
    pub wallet: WalletId,
    pub feature: FeatureId,
    pub amount_minor: i64,
    /// What each grant set aside, in the order taken; sums to `amount_minor`.
    pub split: Vec<Portion>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub state: HoldState,
    pub labels: Labels,
    /// The price in force when the hold was taken, used to price a commit by usage.
    pub price: Option<PriceRule>,
    /// The spend limits (ids) the hold counts against, as they were when it was taken.
    #[serde(default)]
    pub limits: Vec<String>,
    /// What a commit above the hold is charged, as the feature's policy was when it was taken.
    #[serde(default)]
    pub overrun: OverrunPolicy,
    /// Whether the hold may be extended once nothing is spendable, as the feature's rule was
    /// when it was taken.
    #[serde(default)]
    pub stop: StopRule,
    /// Model of the usage the hold was priced from, kept with its commit.
    pub model: Option<ModelId>,
    pub idempotency_key: Option<IdempotencyKey>,
    pub commit: Option<CommitRecord>,
    pub release: Option<ReleaseRecord>,
    /// Grows with every change, so that the ledger keeps the newest version of the hold even
    /// when replicas deliver its records out of order.
    #[serde(default)]
    pub version: u64,
}

impl Hold {
    pub fn account(&self) -> &AccountId {
        self.id.account()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HoldState::*;

    #[test]
    fn a_held_reservation_ends_in_exactly_one_way() {
        for end in [Committed, Released, Expired] {
            assert_eq!(Held.transition(end), Ok(end));
        }
    }

    #[test]
    fn an_ended_reservation_never_moves_again() {
        for from in [Committed, Released, Expired] {
            for to in [Held, Committed, Released, Expired] {
                assert_eq!(from.transition(to), Err(TransitionError { from, to }));
            }
        }
        assert!(
            Held.transition(Held).is_err(),
            "holding twice is not a move"
        );
    }

    #[test]
    fn refusals_say_where_the_reservation_is() {
        let error = Committed.transition(Released).unwrap_err();
        assert_eq!(error.to_string(), "reservation is already committed");
    }
}
