//! Accounts: who pays.

use serde::{Deserialize, Serialize};

use super::ids::AccountId;

/// Whether an account may start spending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Active,
    /// Every new hold and charge is denied; holds already taken can still be committed.
    Suspended,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Suspended => "suspended",
        }
    }

    pub fn parse(text: &str) -> Option<AccountStatus> {
        match text {
            "active" => Some(AccountStatus::Active),
            "suspended" => Some(AccountStatus::Suspended),
            _ => None,
        }
    }
}

/// Longest display name, in bytes.
pub const DISPLAY_NAME_LEN_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub display_name: String,
    pub status: AccountStatus,
    pub created_at_ms: i64,
}

/// Why an account was refused a new hold or charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    InsufficientCredits,
    FeatureNotAllowed,
    AccountNotFound,
    AccountSuspended,
    /// A spend limit on a label of the request has no room left for it.
    SpendLimitReached,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::InsufficientCredits => "insufficient_credits",
            DenyReason::FeatureNotAllowed => "feature_not_allowed",
            DenyReason::AccountNotFound => "account_not_found",
            DenyReason::AccountSuspended => "account_suspended",
            DenyReason::SpendLimitReached => "spend_limit_reached",
        }
    }

    /// A sentence for people, naming the account.
    pub fn explain(self, account: &AccountId) -> String {
        match self {
            DenyReason::InsufficientCredits => {
                format!("account {account} has too few credits for this")
            }
            DenyReason::FeatureNotAllowed => {
                format!("no credit of account {account} may pay for this feature")
            }
            DenyReason::AccountNotFound => format!("account {account} does not exist"),
            DenyReason::AccountSuspended => format!("account {account} is suspended"),
            DenyReason::SpendLimitReached => {
                format!("a spend limit of account {account} has no room for this")
            }
        }
    }
}
