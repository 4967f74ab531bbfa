//! The `[limits]` table: limits and intervals, with their defaults. They are checked with the
//! rest of the settings, in [`ServerConfig::resolve`](super::ServerConfig::resolve).

use serde::Deserialize;

/// Limits and intervals. Each field's unit is the last part of its name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// TTL of a hold whose request gives none. Default 60 000 (one minute).
    pub hold_ttl_ms_default: u64,
    /// Longest hold TTL a request may ask for. Default 86 400 000 (24 hours).
    pub hold_ttl_ms_max: u64,
    /// How long idempotency keys and ended holds are remembered. Default 86 400 000 (24 hours).
    pub idempotency_ttl_ms: u64,
    /// Time between sweeps for expired holds; a hold is released at most this long after its
    /// expiry. Default 1 000.
    pub sweep_interval_ms: u64,
    /// Time between outbox flushes when no call is waiting for one. Default 100.
    pub sync_interval_ms: u64,
    /// Most outbox records per ledger transaction. Default 1 024.
    pub sync_batch_len_max: usize,
    /// How long a commit, charge or grant waits for the ledger before answering UNAVAILABLE.
    /// Default 5 000.
    pub ledger_timeout_ms: u64,
    /// How long `serve` waits for calls in flight after SIGTERM. Default 10 000.
    pub shutdown_grace_ms: u64,
    /// Time between reads of grants, voids and prices written to the ledger directly: they
    /// reach the store within this. Default 1 000.
    pub inbound_interval_ms: u64,
    /// Time between comparisons of every account in the store with the ledger. Default 60 000.
    pub reconcile_interval_ms: u64,
    /// Outbox records kept for the ledger before writes are refused with UNAVAILABLE.
    /// Default 1 000 000.
    pub outbox_len_max: usize,
    /// Deadline of every Redis call; past it the call answers UNAVAILABLE. Default 500.
    pub redis_timeout_ms: u64,
    /// Partitions the Redis store spreads accounts over. Fixed for the life of a deployment.
    /// Default 16.
    pub redis_partitions: u32,
    /// Outbox records a replica has left unacknowledged this long are taken over by another
    /// (the first may have died). Default 30 000.
    pub outbox_claim_idle_ms: u64,
    /// Time between looks for webhook deliveries due. Default 500.
    pub webhook_interval_ms: u64,
    /// How long a webhook endpoint has to answer. Default 5 000.
    pub webhook_timeout_ms: u64,
    /// Delay before a failed webhook delivery is tried again; it doubles with each attempt.
    /// Default 1 000.
    pub webhook_retry_ms: u64,
    /// Longest delay between webhook attempts. Default 600 000 (10 minutes).
    pub webhook_retry_max_ms: u64,
    /// Attempts before a webhook delivery is given up (it stays listed as failed). Default 20.
    pub webhook_attempts_max: u32,
    /// Calls one client connection may have open at once, on every port (HTTP/2 streams;
    /// `WatchBalance` streams count). Default 1 024.
    pub max_concurrent_streams: u32,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            hold_ttl_ms_default: 60_000,
            hold_ttl_ms_max: 86_400_000,
            idempotency_ttl_ms: 86_400_000,
            sweep_interval_ms: 1_000,
            sync_interval_ms: 100,
            sync_batch_len_max: 1_024,
            ledger_timeout_ms: 5_000,
            shutdown_grace_ms: 10_000,
            inbound_interval_ms: 1_000,
            reconcile_interval_ms: 60_000,
            outbox_len_max: 1_000_000,
            redis_timeout_ms: 500,
            redis_partitions: crate::store::redis::keys::PARTITIONS_DEFAULT,
            outbox_claim_idle_ms: 30_000,
            webhook_interval_ms: 500,
            webhook_timeout_ms: 5_000,
            webhook_retry_ms: 1_000,
            webhook_retry_max_ms: 600_000,
            webhook_attempts_max: 20,
            max_concurrent_streams: 1_024,
        }
    }
}
