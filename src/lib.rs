//! creditgate: a low-latency gRPC credit gate. It answers, before work starts, whether an account
//! may spend credits on a feature; holds the money while the work runs; and charges exactly what
//! was used.
//!
//! # Layout
//!
//! The modules follow the data path of a call:
//!
//! - [`api`]: tonic services (`Gate`, `Admin`, and Envoy's `Authorization` in
//!   [`api::ext_authz`]) and the one place proto messages become domain types and errors become
//!   gRPC statuses; each call's caller is checked against the [`policy`] first.
//! - [`gate`]: the rules in order: catalog, pricing, limits, idempotency, one store operation.
//! - [`domain`]: money, ids, grants and the consumption order, prices, the hold state machine,
//!   decisions and receipts, wallet events, every ledger entry id. No I/O.
//! - [`record`]: what store and ledger exchange (outbox records, account snapshots, the
//!   source a store loads accounts from), below both: neither imports the other.
//! - [`store`]: the [`store::BalanceStore`] trait, atomic per account, with its outbox, in parts
//!   by who calls them; [`store::memory::MemoryStore`] is the embedded default,
//!   [`store::redis::RedisStore`] the store replicas share (one Lua script per operation). Each
//!   store keeps one file per operation (`reserve.rs`, `commit.rs`, …), as the scripts do.
//! - [`cache`]: what this replica remembers of the holds it took.
//! - [`sync`]: outbox → ledger in batches (group commit), ledger → store, durability waits, the
//!   expiry sweep.
//! - [`events`]: what a change caused (a wallet running out, a threshold crossed, a top-up
//!   asked for), fanned out to `WatchBalance` subscribers; [`webhooks`] posts it to endpoints
//!   from the ledger's outbox of deliveries.
//! - [`reconcile`]: does the ledger explain the store?
//! - [`catalog`]: the prices in use.
//! - [`ledger`]: the [`ledger::Ledger`] trait, the authoritative record, and
//!   [`ledger::sql::SqlLedger`] over a SQLite file (the embedded default) or PostgreSQL.
//! - [`server`]: wires the parts together and runs them until shutdown.
//! - [`cli`]: the `creditgate` command's client subcommands; [`bench`], its load generator.
//! - [`config`], [`clock`], [`shutdown`], [`telemetry`], [`alloc`]: settings, time, stopping
//!   cleanly, metrics, and the allocator.

pub mod alloc;
pub mod api;
pub mod bench;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod events;
pub mod gate;
pub mod ledger;
pub mod policy;
pub mod reconcile;
pub mod record;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod webhooks;

/// Generated protocol types and service stubs of `proto/creditgate/v1`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("creditgate.v1");

    /// The protocol's descriptors, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("creditgate");
}
