//! The credit model as plain Rust: money, identifiers, accounts, grants and the consumption
//! order, prices, and the reservation state machine.
//!
//! Nothing here performs I/O or knows about gRPC, Redis or SQL; stores and ledgers are written
//! against these types, and the API converts its messages into them in one place.

pub mod account;
pub mod alert;
pub mod decision;
pub mod entry_id;
pub mod event;
pub mod grant;
pub mod hold;
pub mod ids;
pub mod limit;
pub mod money;
pub mod period;
pub mod price;

pub use account::{Account, AccountStatus, DenyReason};
pub use decision::{
    ChargeReceipt, CheckReceipt, CommitReceipt, Decision, Denial, ExtendReceipt, GrantReceipt,
    ReleaseReceipt, ReserveReceipt, VoidReceipt,
};
pub use event::{EventDetail, WalletEvent, WalletEventKind};
pub use grant::{
    Grant, GrantKind, GrantStatus, GrantTerms, OverrunPolicy, Portion, Postpaid, Shortfall,
    StopRule,
};
pub use hold::{CommitRecord, Hold, HoldState, ReleaseRecord};
pub use ids::{
    AccountId, FeatureId, GrantId, IdError, IdempotencyKey, Labels, ModelId, ReservationId,
    WalletId,
};
pub use limit::{LimitState, LimitWindow, SpendLimit};
pub use money::{Amount, AmountError, Rounding, format_minor};
pub use period::{Period, Recurrence};
pub use price::{FeaturePrice, PriceError, PriceRule, TokenPrice, Units, Usage};
