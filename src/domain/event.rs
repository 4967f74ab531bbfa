//! What a change to a wallet caused, as subscribers and webhooks are told of it: a wallet
//! running out or refilled, a threshold crossed, a top-up asked for, a hold stopped.

use serde::{Deserialize, Serialize};

use super::alert::{AlertRule, Fired};
use super::{AccountId, ReservationId, WalletId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletEventKind {
    /// Nothing is spendable any more (for a feature every grant admits).
    Depleted,
    /// Something is spendable again.
    Replenished,
    /// A hold reached its expiry before it was committed or released, and was given back.
    HoldExpired,
    /// The spendable balance fell below a threshold of the wallet's.
    LowBalance,
    /// A threshold share of the wallet's included allowances is used.
    Alert,
    /// A spend limit has nothing left in its window.
    LimitReached,
    /// The wallet's auto top-up policy asks for credit.
    TopUpRequested,
}

impl WalletEventKind {
    pub const ALL: [WalletEventKind; 7] = [
        WalletEventKind::Depleted,
        WalletEventKind::Replenished,
        WalletEventKind::HoldExpired,
        WalletEventKind::LowBalance,
        WalletEventKind::Alert,
        WalletEventKind::LimitReached,
        WalletEventKind::TopUpRequested,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WalletEventKind::Depleted => "depleted",
            WalletEventKind::Replenished => "replenished",
            WalletEventKind::HoldExpired => "hold_expired",
            WalletEventKind::LowBalance => "low_balance",
            WalletEventKind::Alert => "alert",
            WalletEventKind::LimitReached => "limit_reached",
            WalletEventKind::TopUpRequested => "top_up_requested",
        }
    }

    pub fn parse(text: &str) -> Option<WalletEventKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// What an event is about, beyond its wallet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventDetail {
    #[default]
    None,
    /// The hold that expired.
    Hold { reservation: ReservationId },
    /// The threshold crossed.
    Rule { rule: AlertRule },
    /// The spend limit reached, e.g. `project=atlas/day`.
    Limit { limit: String },
    /// The top-up asked for; the grant that answers it names `request_id`.
    TopUp {
        request_id: String,
        amount_minor: i64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletEvent {
    /// Unique, for de-duplication by whoever receives it: `evt/<account>/<at_ms>.<n>`.
    pub id: String,
    pub kind: WalletEventKind,
    pub account: AccountId,
    pub wallet: WalletId,
    /// The store's clock when it happened.
    pub at_ms: i64,
    /// The wallet's spendable balance right after.
    pub available_minor: i64,
    pub detail: EventDetail,
}

impl WalletEvent {
    /// The id of an account's `n`th event, which happened at `at_ms`.
    pub fn id(account: &AccountId, at_ms: i64, n: u64) -> String {
        format!("evt/{account}/{at_ms}.{n}")
    }

    /// The kind of event a wallet's spendable balance going from `before` to `after` is, if it
    /// crossed zero (the rule the scripts' `wallet_events` follows).
    pub fn crossing(before: i64, after: i64) -> Option<WalletEventKind> {
        match (before > 0, after > 0) {
            (true, false) => Some(WalletEventKind::Depleted),
            (false, true) => Some(WalletEventKind::Replenished),
            _ => None,
        }
    }

    /// The reservation of a `HOLD_EXPIRED` event.
    pub fn reservation(&self) -> Option<&ReservationId> {
        match &self.detail {
            EventDetail::Hold { reservation } => Some(reservation),
            _ => None,
        }
    }
}

impl Fired {
    /// The wallet event that tells of it.
    pub fn event(self) -> (WalletEventKind, EventDetail) {
        match self {
            Fired::Rule(rule @ AlertRule::Below { .. }) => {
                (WalletEventKind::LowBalance, EventDetail::Rule { rule })
            }
            Fired::Rule(rule @ AlertRule::AllowanceUsed { .. }) => {
                (WalletEventKind::Alert, EventDetail::Rule { rule })
            }
            Fired::TopUp {
                request_id,
                amount_minor,
            } => (
                WalletEventKind::TopUpRequested,
                EventDetail::TopUp {
                    request_id,
                    amount_minor,
                },
            ),
        }
    }
}
