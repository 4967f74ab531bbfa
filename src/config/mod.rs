//! Settings of `creditgate serve`: command-line flags, then environment variables, then the
//! config file (`--config`, TOML), then the defaults below, in that order of precedence.
//!
//! Every field is documented with its default and unit; unknown fields in the file are an error,
//! so a typo cannot silently leave a default in place.
//!
//! The file's tables each have a file here (`listen.rs` with `[tls]`, `ext_authz.rs`,
//! `limits.rs`, `prices.rs`, `webhooks.rs`, `callers.rs`); this one merges them with the flags
//! into a [`ServerConfig`] and checks it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::ext_authz::ExtAuthzSettings;
use crate::domain::FeaturePrice;
use crate::gate::Limits;
use crate::ledger::LedgerTarget;
use crate::policy::Policy;
use crate::sync::SyncSettings;
use crate::webhooks::{Webhook, WebhookSettings};

mod callers;
mod ext_authz;
mod limits;
mod listen;
mod prices;
mod webhooks;

pub use callers::CallerConfig;
pub use ext_authz::ExtAuthzConfig;
pub use limits::LimitsConfig;
pub use listen::{Listen, TlsConfig};
pub use prices::{PerUnitConfig, PriceConfig};
pub use webhooks::WebhookConfig;

use self::callers::resolve_callers;
use self::webhooks::resolve_webhooks;

/// Default address of the gate service.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:50051";
/// Default address of the admin service.
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:50052";
/// Default address of the Prometheus `/metrics` endpoint.
pub const METRICS_LISTEN_DEFAULT: &str = "127.0.0.1:9464";
/// Default data directory, relative to the working directory.
pub const DATA_DIR_DEFAULT: &str = "creditgate-data";
/// Shortest hold TTL anyone may ask for.
pub const HOLD_TTL_MS_MIN: u64 = 1_000;
/// Longest hold TTL the settings may allow: one year.
pub const HOLD_TTL_MS_MAX_MAX: u64 = 366 * 86_400_000;
/// Shortest time idempotency keys may be kept: the 24 hours creditgate promises.
pub const IDEMPOTENCY_TTL_MS_MIN: u64 = 86_400_000;
/// Longest time idempotency keys may be kept: 30 days.
pub const IDEMPOTENCY_TTL_MS_MAX: u64 = 30 * 86_400_000;
/// Longest interval or timeout any setting may give: one hour.
pub const INTERVAL_MS_MAX: u64 = 3_600_000;

/// The config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address of the gate service. Default `127.0.0.1:50051`.
    pub listen: Option<SocketAddr>,
    /// Address of the admin service. Default `127.0.0.1:50052`.
    pub admin_listen: Option<SocketAddr>,
    /// Address of the Prometheus `/metrics` endpoint, or `off`. Default `127.0.0.1:9464`.
    pub metrics_listen: Option<Listen>,
    /// Address of the Envoy external authorization service. Default: none (off).
    pub ext_authz_listen: Option<SocketAddr>,
    /// Where the external authorizer finds the account, feature and units of a request.
    #[serde(default)]
    pub ext_authz: ExtAuthzConfig,
    /// OpenTelemetry collector the spans of calls are exported to over OTLP/gRPC, e.g.
    /// `http://otel-collector:4317`. Default: none (no traces exported).
    pub otlp_endpoint: Option<String>,
    /// Share of the traces that start here that are exported, 0 to 1; a call carrying its
    /// caller's trace (`traceparent`) follows the caller's decision. Default 1.
    pub otlp_sample_ratio: Option<f64>,
    /// TLS for every gRPC port. Default: none (plain text).
    pub tls: Option<TlsConfig>,
    /// Directory of the SQLite ledger. Default `creditgate-data`.
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL of the ledger. Default: the SQLite file in `data_dir`.
    pub ledger: Option<String>,
    /// Redis URL of the shared store, e.g. `redis://127.0.0.1:6379`, or the nodes of a Redis
    /// Cluster separated by commas. Default: the in-memory store.
    pub redis: Option<String>,
    /// Starts every Redis key, so several deployments can share a Redis. Default `cg`.
    pub redis_namespace: Option<String>,
    /// `ledger` (default) or `store`: when commits and charges are acknowledged.
    pub commit_durability: Option<CommitDurability>,
    /// Whether `serve` applies the ledger's migrations on start. Default true.
    pub migrate: Option<bool>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Prices written to the ledger at start, replacing those of the same features.
    #[serde(default)]
    pub prices: Vec<PriceConfig>,
    /// Endpoints every event (or some kinds of event) is posted to. Default: none.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Who may call, and for which accounts and operations. Default: none, and then every
    /// call is served.
    #[serde(default)]
    pub callers: Vec<CallerConfig>,
}

/// Why the settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Limit(String),
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        for (i, price) in config.prices.iter().enumerate() {
            price
                .rule()
                .and(price.overrun())
                .and(price.stop())
                .map_err(|message| ConfigError::Invalid {
                    path: path.to_owned(),
                    message: format!("prices[{i}] ({}): {message}", price.feature),
                })?;
        }
        Ok(config)
    }
}

/// When a commit or charge is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CommitDurability {
    /// Once the store has it (a durable store's own persistence decides what a crash loses).
    Store,
    /// Once its ledger entry is committed in the ledger database.
    #[default]
    Ledger,
}

/// Settings given on the command line or in the environment; each wins over the file.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub metrics_listen: Option<Listen>,
    pub ext_authz_listen: Option<SocketAddr>,
    pub tls: Option<TlsConfig>,
    pub data_dir: Option<PathBuf>,
    pub ledger: Option<String>,
    pub redis: Option<String>,
    pub commit_durability: Option<CommitDurability>,
    pub no_migrate: bool,
    pub otlp_endpoint: Option<String>,
    pub otlp_sample_ratio: Option<f64>,
}

/// Everything `serve` needs, resolved.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Where `/metrics` is served; `None` serves no metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// Where the Envoy external authorizer is served; `None` serves none.
    pub ext_authz_listen: Option<SocketAddr>,
    pub ext_authz: ExtAuthzSettings,
    /// TLS (and mutual TLS) for every gRPC port; `None` is plain text.
    pub tls: Option<TlsConfig>,
    pub data_dir: PathBuf,
    pub ledger: LedgerTarget,
    /// URL of the shared Redis store (comma-separated nodes for a Cluster); `None` keeps
    /// balances in this process.
    pub redis: Option<String>,
    /// Starts every Redis key.
    pub redis_namespace: String,
    pub commit_durability: CommitDurability,
    /// Whether `serve` applies the ledger's migrations on start.
    pub migrate: bool,
    pub limits: LimitsConfig,
    pub prices: Vec<FeaturePrice>,
    pub webhooks: Vec<Webhook>,
    /// Who may call; off when it has no callers.
    pub policy: Policy,
    /// Where the spans of calls are exported (OTLP/gRPC); `None` exports none.
    pub otlp_endpoint: Option<String>,
    /// Share of the traces starting here that are exported.
    pub otlp_sample_ratio: f64,
}

impl ServerConfig {
    /// Merges flags and environment (already merged by the argument parser) over the file.
    pub fn resolve(flags: Flags, file: FileConfig) -> Result<ServerConfig, ConfigError> {
        let default_addr = |text: &str| text.parse().expect("default addresses parse");
        let data_dir = flags
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT));
        let ledger = LedgerTarget::parse(flags.ledger.or(file.ledger).as_deref(), data_dir.clone())
            .map_err(ConfigError::Limit)?;
        let tls = flags.tls.or(file.tls);
        let policy = resolve_callers(&file.callers, tls.as_ref())?;
        let config = ServerConfig {
            listen: flags
                .listen
                .or(file.listen)
                .unwrap_or_else(|| default_addr(LISTEN_DEFAULT)),
            admin_listen: flags
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or_else(|| default_addr(ADMIN_LISTEN_DEFAULT)),
            metrics_listen: flags
                .metrics_listen
                .or(file.metrics_listen)
                .unwrap_or_else(|| Listen::At(default_addr(METRICS_LISTEN_DEFAULT)))
                .addr(),
            ext_authz_listen: flags.ext_authz_listen.or(file.ext_authz_listen),
            tls,
            ext_authz: file.ext_authz.resolve()?,
            data_dir,
            ledger,
            redis: flags.redis.or(file.redis),
            redis_namespace: file
                .redis_namespace
                .unwrap_or_else(|| crate::store::redis::keys::NAMESPACE_DEFAULT.to_owned()),
            commit_durability: flags
                .commit_durability
                .or(file.commit_durability)
                .unwrap_or_default(),
            migrate: !flags.no_migrate && file.migrate.unwrap_or(true),
            prices: file
                .prices
                .iter()
                .map(PriceConfig::to_feature_price)
                .collect(),
            webhooks: resolve_webhooks(&file.webhooks)?,
            policy,
            otlp_endpoint: flags.otlp_endpoint.or(file.otlp_endpoint),
            otlp_sample_ratio: flags
                .otlp_sample_ratio
                .or(file.otlp_sample_ratio)
                .unwrap_or(1.0),
            limits: file.limits,
        };
        config.check()?;
        Ok(config)
    }

    /// Settings for a server on free loopback ports with the given data directory, for tests.
    pub fn for_tests(data_dir: PathBuf) -> ServerConfig {
        let any = "127.0.0.1:0".parse().expect("literal address");
        ServerConfig {
            listen: any,
            admin_listen: any,
            metrics_listen: None,
            ext_authz_listen: None,
            ext_authz: ExtAuthzSettings::default(),
            tls: None,
            ledger: LedgerTarget::Sqlite {
                data_dir: data_dir.clone(),
            },
            data_dir,
            redis: None,
            redis_namespace: crate::store::redis::keys::NAMESPACE_DEFAULT.to_owned(),
            commit_durability: CommitDurability::Ledger,
            migrate: true,
            limits: LimitsConfig::default(),
            prices: Vec::new(),
            webhooks: Vec::new(),
            policy: Policy::default(),
            otlp_endpoint: None,
            otlp_sample_ratio: 1.0,
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(ConfigError::Limit(format!(
                "otlp_endpoint {endpoint:?} must be an http:// or https:// URL, e.g. \
                 http://otel-collector:4317"
            )));
        }
        if !(0.0..=1.0).contains(&self.otlp_sample_ratio) {
            return Err(ConfigError::Limit(
                "otlp_sample_ratio must be between 0 and 1".into(),
            ));
        }
        let l = &self.limits;
        if !(HOLD_TTL_MS_MIN..=HOLD_TTL_MS_MAX_MAX).contains(&l.hold_ttl_ms_max) {
            return Err(ConfigError::Limit(format!(
                "limits.hold_ttl_ms_max must be between {HOLD_TTL_MS_MIN} and {HOLD_TTL_MS_MAX_MAX}"
            )));
        }
        if !(IDEMPOTENCY_TTL_MS_MIN..=IDEMPOTENCY_TTL_MS_MAX).contains(&l.idempotency_ttl_ms) {
            return Err(ConfigError::Limit(format!(
                "limits.idempotency_ttl_ms must be between {IDEMPOTENCY_TTL_MS_MIN} and {IDEMPOTENCY_TTL_MS_MAX}"
            )));
        }
        if !(1..=1_024).contains(&l.redis_partitions) {
            return Err(ConfigError::Limit(
                "limits.redis_partitions must be between 1 and 1024".into(),
            ));
        }
        if !(1..=100_000_000).contains(&l.outbox_len_max) {
            return Err(ConfigError::Limit(
                "limits.outbox_len_max must be between 1 and 100000000".into(),
            ));
        }
        if !(1..=1_000_000).contains(&l.sync_batch_len_max) {
            return Err(ConfigError::Limit(
                "limits.sync_batch_len_max must be between 1 and 1000000".into(),
            ));
        }
        if !(HOLD_TTL_MS_MIN..=l.hold_ttl_ms_max).contains(&l.hold_ttl_ms_default) {
            return Err(ConfigError::Limit(format!(
                "limits.hold_ttl_ms_default must be between {HOLD_TTL_MS_MIN} and limits.hold_ttl_ms_max"
            )));
        }
        let intervals = [
            ("limits.sweep_interval_ms", l.sweep_interval_ms),
            ("limits.sync_interval_ms", l.sync_interval_ms),
            ("limits.ledger_timeout_ms", l.ledger_timeout_ms),
            ("limits.shutdown_grace_ms", l.shutdown_grace_ms),
            ("limits.inbound_interval_ms", l.inbound_interval_ms),
            ("limits.reconcile_interval_ms", l.reconcile_interval_ms),
            ("limits.redis_timeout_ms", l.redis_timeout_ms),
            ("limits.outbox_claim_idle_ms", l.outbox_claim_idle_ms),
            ("limits.webhook_interval_ms", l.webhook_interval_ms),
            ("limits.webhook_timeout_ms", l.webhook_timeout_ms),
            ("limits.webhook_retry_ms", l.webhook_retry_ms),
            ("limits.webhook_retry_max_ms", l.webhook_retry_max_ms),
        ];
        for (name, value) in intervals {
            if !(1..=INTERVAL_MS_MAX).contains(&value) {
                return Err(ConfigError::Limit(format!(
                    "{name} must be between 1 and {INTERVAL_MS_MAX}"
                )));
            }
        }
        if !(1..=100_000).contains(&l.max_concurrent_streams) {
            return Err(ConfigError::Limit(
                "limits.max_concurrent_streams must be between 1 and 100000".into(),
            ));
        }
        if !(1..=1_000).contains(&l.webhook_attempts_max) {
            return Err(ConfigError::Limit(
                "limits.webhook_attempts_max must be between 1 and 1000".into(),
            ));
        }
        Ok(())
    }

    pub fn webhook_settings(&self) -> WebhookSettings {
        let l = &self.limits;
        WebhookSettings {
            interval: std::time::Duration::from_millis(l.webhook_interval_ms),
            timeout: std::time::Duration::from_millis(l.webhook_timeout_ms),
            retry_ms: l.webhook_retry_ms as i64,
            retry_max_ms: l.webhook_retry_max_ms as i64,
            attempts_max: l.webhook_attempts_max,
        }
    }

    pub fn gate_limits(&self) -> Limits {
        Limits {
            hold_ttl_ms_default: self.limits.hold_ttl_ms_default,
            hold_ttl_ms_min: HOLD_TTL_MS_MIN,
            hold_ttl_ms_max: self.limits.hold_ttl_ms_max,
        }
    }

    pub fn sync_settings(&self) -> SyncSettings {
        SyncSettings {
            batch_len_max: self.limits.sync_batch_len_max,
            interval_ms: self.limits.sync_interval_ms,
            sweep_interval_ms: self.limits.sweep_interval_ms,
            sweep_batch_len_max: 1_024,
            retention_ms: self.limits.idempotency_ttl_ms as i64,
            retry_backoff_ms: 50,
            ledger_timeout_ms: self.limits.ledger_timeout_ms,
            inbound_interval_ms: self.limits.inbound_interval_ms,
        }
    }
}

#[cfg(test)]
mod tests;
