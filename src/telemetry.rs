//! Metrics: every name in one place, and the Prometheus endpoint that serves them.
//!
//! Metrics are recorded with the `metrics` macros wherever they happen; without an endpoint
//! (`--metrics-listen` unset) recording costs next to nothing.

use std::net::SocketAddr;

/// Outbox records the ledger has not taken yet.
pub const OUTBOX_RECORDS: &str = "creditgate_outbox_records";
/// Age of the oldest outbox record the ledger has not taken, in milliseconds of the store's
/// clock: the sync lag.
pub const OUTBOX_LAG_MS: &str = "creditgate_outbox_lag_ms";
/// Outbox records written to the ledger.
pub const LEDGER_RECORDS_TOTAL: &str = "creditgate_ledger_records_total";
/// Ledger transactions (batches) written.
pub const LEDGER_BATCHES_TOTAL: &str = "creditgate_ledger_batches_total";
/// Ledger writes that failed and were retried.
pub const LEDGER_WRITE_ERRORS_TOTAL: &str = "creditgate_ledger_write_errors_total";
/// Changes read from the ledger and applied to the store.
pub const INBOUND_CHANGES_TOTAL: &str = "creditgate_inbound_changes_total";
/// Ledger changes the store could not take (conflicting terms, too many grants).
pub const INBOUND_REJECTED_TOTAL: &str = "creditgate_inbound_rejected_total";
/// Wallets whose balance in the store differs from the ledger's, at the last reconcile.
pub const RECONCILE_DRIFT_WALLETS: &str = "creditgate_reconcile_drift_wallets";
/// Sum of the absolute differences between store and ledger, in minor units, at the last
/// reconcile.
pub const RECONCILE_DRIFT_MINOR: &str = "creditgate_reconcile_drift_minor";
/// Accounts compared at the last reconcile.
pub const RECONCILE_ACCOUNTS: &str = "creditgate_reconcile_accounts";

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {message}")]
pub struct MetricsError {
    pub addr: SocketAddr,
    pub message: String,
}

/// Serves `/metrics` for Prometheus on `addr`. Once per process: the recorder is global.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), MetricsError> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| MetricsError {
            addr,
            message: e.to_string(),
        })
}
