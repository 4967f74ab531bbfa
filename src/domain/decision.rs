//! What the gate answers: a decision (allowed, with its receipt, or denied, with the reason)
//! for each operation. Stores make them; the API turns them into messages.

use serde::{Deserialize, Serialize};

use super::{DenyReason, Grant, Portion, ReservationId, WalletId};

/// An allowed answer, or a denial: denials are answers, not errors, and change nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision<T> {
    Allowed(T),
    Denied(Denial),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    pub reason: DenyReason,
    /// Spendable balance for the feature when the denial was made; for a spend limit, what
    /// the limit still allows.
    pub available_minor: i64,
    /// The spend limit that denied (`project=atlas/day`), for `SpendLimitReached`.
    #[serde(default)]
    pub limit: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveReceipt {
    pub id: ReservationId,
    pub wallet: WalletId,
    pub amount_minor: i64,
    pub expires_at_ms: i64,
    pub split: Vec<Portion>,
    pub available_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitReceipt {
    pub id: ReservationId,
    pub entry_id: String,
    /// What the commit asked to charge.
    pub requested_minor: i64,
    /// How far the request went beyond the hold (0 when it fit).
    pub overrun_minor: i64,
    pub charged_minor: i64,
    pub released_minor: i64,
    pub split: Vec<Portion>,
    pub available_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseReceipt {
    pub id: ReservationId,
    pub released_minor: i64,
    pub available_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendReceipt {
    pub id: ReservationId,
    pub amount_minor: i64,
    pub expires_at_ms: i64,
    pub split: Vec<Portion>,
    pub available_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeReceipt {
    pub entry_id: String,
    pub wallet: WalletId,
    pub charged_minor: i64,
    pub split: Vec<Portion>,
    pub available_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReceipt {
    pub available_minor: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantReceipt {
    pub grant: Grant,
    /// False when the same grant already existed and nothing changed.
    pub created: bool,
    /// Spendable balance of the wallet (any feature) after the call.
    pub available_minor: i64,
    /// The store's clock at the call, to judge the grant's status by.
    pub now_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoidReceipt {
    pub grant: Grant,
    pub voided_minor: i64,
    pub available_minor: i64,
}
