//! Settings of `creditgate serve`: command-line flags, then environment variables, then the
//! config file (`--config`, TOML), then the defaults below, in that order of precedence.
//!
//! Every field is documented with its default and unit; unknown fields in the file are an error,
//! so a typo cannot silently leave a default in place.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::api::ext_authz::ExtAuthzSettings;
use crate::domain::{
    Amount, FeatureId, FeaturePrice, ModelId, OverrunPolicy, PriceRule, StopRule, TokenPrice,
    WalletId,
};
use crate::events::WalletEventKind;
use crate::gate::Limits;
use crate::ledger::LedgerTarget;
use crate::policy::{AccountPattern, Caller, Identity, Operation, Policy};
use crate::sync::SyncSettings;
use crate::webhooks::{Webhook, WebhookSettings};

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

/// A caller in the config file: one identity, the accounts and the operations it may use.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerConfig {
    /// 1–64 of `[A-Za-z0-9._-]`, unique: names the caller in logs and keeps its idempotency
    /// keys apart from other callers'.
    pub name: String,
    /// A DNS name, URI (e.g. `spiffe://cluster.local/ns/ai/sa/gateway`) or IP address among
    /// the subject alternative names of its client certificate (needs `tls.client_ca`).
    pub san: Option<String>,
    /// The SHA-256, in hex, of the token it sends as `authorization: Bearer <token>`.
    pub token_sha256: Option<String>,
    /// Account ids, or prefixes ending in `*` (`acme:*`); `"*"` is every account.
    pub accounts: Vec<String>,
    /// Operations, by their method's name in snake case (`reserve`, `get_balance`,
    /// `add_grant`, `ext_authz`, …), or the groups `gate` and `admin`. Default `["gate"]`.
    pub operations: Option<Vec<String>>,
}

impl CallerConfig {
    fn resolve(&self) -> Result<Caller, String> {
        if !Caller::name_is_valid(&self.name) {
            return Err(format!(
                "name {:?} must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'",
                self.name
            ));
        }
        let identity = match (&self.san, &self.token_sha256) {
            (Some(san), None) if !san.is_empty() => Identity::San(san.clone()),
            (None, Some(hex)) => Identity::TokenSha256(parse_sha256(hex).ok_or_else(|| {
                "token_sha256 must be 64 hex digits: the SHA-256 of the token".to_owned()
            })?),
            _ => return Err("give exactly one of san and token_sha256".into()),
        };
        if self.accounts.is_empty() {
            return Err("accounts must name at least one account, prefix* or \"*\"".into());
        }
        let accounts = self
            .accounts
            .iter()
            .map(|text| AccountPattern::parse(text).map_err(|e| format!("accounts: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let words = match &self.operations {
            Some(words) if words.is_empty() => {
                return Err("operations must name at least one operation".into());
            }
            Some(words) => words.clone(),
            None => vec!["gate".to_owned()],
        };
        let mut operations = std::collections::BTreeSet::new();
        for word in &words {
            operations.extend(Operation::named(word).ok_or_else(|| {
                format!(
                    "operations: {word:?} is not an operation (gate, admin, ext_authz, or a \
                     method such as reserve or add_grant)"
                )
            })?);
        }
        Ok(Caller {
            name: self.name.clone(),
            identity,
            accounts,
            operations,
        })
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// The caller policy of the config file's callers, whose names and identities must be unique.
fn resolve_callers(
    configs: &[CallerConfig],
    tls: Option<&TlsConfig>,
) -> Result<Policy, ConfigError> {
    let mut callers: Vec<Caller> = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        let caller = config
            .resolve()
            .map_err(|message| ConfigError::Limit(format!("callers[{i}]: {message}")))?;
        if callers.iter().any(|c| c.name == caller.name) {
            return Err(ConfigError::Limit(format!(
                "callers[{i}]: name {:?} is used twice",
                caller.name
            )));
        }
        if callers.iter().any(|c| c.identity == caller.identity) {
            return Err(ConfigError::Limit(format!(
                "callers[{i}]: another caller has the same identity"
            )));
        }
        if matches!(caller.identity, Identity::San(_))
            && tls.is_none_or(|tls| tls.client_ca.is_none())
        {
            return Err(ConfigError::Limit(format!(
                "callers[{i}].san needs mutual TLS (tls.client_ca): without it no client \
                 certificate is asked for"
            )));
        }
        callers.push(caller);
    }
    Ok(Policy::new(callers))
}

/// An address to listen on, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Listen {
    Off,
    At(SocketAddr),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(text: &str) -> Result<Listen, String> {
        match text {
            "off" => Ok(Listen::Off),
            _ => text
                .parse()
                .map(Listen::At)
                .map_err(|_| format!("{text:?} is neither an address (host:port) nor off")),
        }
    }
}

impl TryFrom<String> for Listen {
    type Error = String;

    fn try_from(text: String) -> Result<Listen, String> {
        text.parse()
    }
}

impl Listen {
    fn addr(self) -> Option<SocketAddr> {
        match self {
            Listen::Off => None,
            Listen::At(addr) => Some(addr),
        }
    }
}

/// The `[tls]` table: TLS on every gRPC port, and with `client_ca`, mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// The server's private key, PEM.
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; when set, a client
    /// without such a certificate is refused at the handshake. Default: none (no client
    /// certificates asked for).
    pub client_ca: Option<PathBuf>,
}

/// The `[ext_authz]` table: request headers Envoy forwards, as Envoy writes them (lower case).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthzConfig {
    /// Header naming the account. Default `x-creditgate-account`.
    pub account_header: Option<String>,
    /// The account from Envoy's dynamic metadata instead, tried first: the filter's name, then
    /// the keys, separated by `/`, e.g. `envoy.filters.http.jwt_authn/jwt_payload/org_id`.
    /// Default: none.
    pub account_metadata: Option<String>,
    /// Header naming the feature. Default `x-creditgate-feature`.
    pub feature_header: Option<String>,
    /// Feature of requests that name none. Default: none (the header is required).
    pub feature: Option<FeatureId>,
    /// Header with the units of a per-unit price; absent means one. Default
    /// `x-creditgate-units`.
    pub units_header: Option<String>,
    /// Header identifying a request across Envoy's retries, so that a retried check is the
    /// same charge. Default `x-request-id`.
    pub request_id_header: Option<String>,
}

impl ExtAuthzConfig {
    fn resolve(&self) -> Result<ExtAuthzSettings, ConfigError> {
        let defaults = ExtAuthzSettings::default();
        let header = |name: &str, given: &Option<String>, default: String| match given {
            None => Ok(default),
            Some(h)
                if !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Ok(h.clone())
            }
            Some(h) => Err(ConfigError::Limit(format!(
                "ext_authz.{name} {h:?} must be a header name in lower case"
            ))),
        };
        let account_metadata = match &self.account_metadata {
            None => None,
            Some(text) => {
                let mut parts = text.split('/').map(str::to_owned);
                let filter = parts.next().unwrap_or_default();
                let path: Vec<String> = parts.collect();
                if filter.is_empty() || path.is_empty() || path.iter().any(String::is_empty) {
                    return Err(ConfigError::Limit(format!(
                        "ext_authz.account_metadata {text:?} must look like filter/key[/key...]"
                    )));
                }
                Some((filter, path))
            }
        };
        Ok(ExtAuthzSettings {
            account_header: header(
                "account_header",
                &self.account_header,
                defaults.account_header,
            )?,
            account_metadata,
            feature_header: header(
                "feature_header",
                &self.feature_header,
                defaults.feature_header,
            )?,
            feature_default: self.feature.clone(),
            units_header: header("units_header", &self.units_header, defaults.units_header)?,
            request_id_header: header(
                "request_id_header",
                &self.request_id_header,
                defaults.request_id_header,
            )?,
        })
    }
}

/// A webhook endpoint in the config file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the endpoint in delivery listings: 1–64 of `[A-Za-z0-9._-]`, unique.
    pub name: String,
    /// `http://host[:port]/path`.
    pub url: String,
    /// Key of the HMAC-SHA256 signature of each request, at least 16 bytes.
    pub secret: String,
    /// Kinds of event sent: `depleted`, `replenished`, `hold_expired`, `low_balance`,
    /// `alert`, `limit_reached`, `top_up_requested`. Default: every kind.
    #[serde(default)]
    pub events: Vec<String>,
}

impl WebhookConfig {
    fn resolve(&self) -> Result<Webhook, String> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err(format!(
                "name {:?} must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-'",
                self.name
            ));
        }
        let url: hyper::Uri = self
            .url
            .parse()
            .map_err(|e| format!("url {:?}: {e}", self.url))?;
        match url.scheme_str() {
            Some("http") if url.host().is_some() => {}
            Some("https") => {
                return Err(format!(
                    "url {:?}: https endpoints are not supported yet; reach them through a \
                     local proxy or a mesh sidecar that adds TLS",
                    self.url
                ));
            }
            _ => {
                return Err(format!(
                    "url {:?} must look like http://host/path",
                    self.url
                ));
            }
        }
        if self.secret.len() < 16 {
            return Err("secret must be at least 16 bytes".into());
        }
        let kinds = self
            .events
            .iter()
            .map(|kind| {
                WalletEventKind::parse(kind).ok_or_else(|| {
                    let known: Vec<&str> =
                        WalletEventKind::ALL.iter().map(|k| k.as_str()).collect();
                    format!("unknown event {kind:?} (events are {})", known.join(", "))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Webhook {
            name: self.name.clone(),
            url,
            secret: self.secret.clone(),
            kinds,
        })
    }
}

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

/// One feature's price in the config file: exactly one of `per_call`, `per_unit` and
/// `per_million_tokens`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub feature: FeatureId,
    /// Wallet that pays for the feature. Default `default`.
    pub wallet: Option<WalletId>,
    /// Flat price per call, e.g. `"0.002"`.
    pub per_call: Option<Amount>,
    /// Price per unit, e.g. `{ unit = "minute", price = "0.05" }`.
    pub per_unit: Option<PerUnitConfig>,
    /// Prices per 1M tokens by model, e.g. `{ "gpt-x" = { input = "3.00", output = "15.00" } }`.
    pub per_million_tokens: Option<BTreeMap<ModelId, TokenPrice>>,
    /// What a commit larger than its hold is charged: `cap_at_hold` (the default),
    /// `allow_up_to` (with `overrun_allowance`) or `charge_actual`.
    pub overrun: Option<String>,
    /// With `overrun = "allow_up_to"`: how much beyond the hold may be charged.
    pub overrun_allowance: Option<Amount>,
    /// What happens to holds still running when the wallet runs out: `finish_running`
    /// (default) or `stop_running`.
    pub stop: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerUnitConfig {
    pub unit: String,
    pub price: Amount,
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

impl PriceConfig {
    fn rule(&self) -> Result<PriceRule, String> {
        match (&self.per_call, &self.per_unit, &self.per_million_tokens) {
            (Some(price), None, None) => Ok(PriceRule::PerCall { price: *price }),
            (None, Some(p), None) => {
                if p.unit.is_empty()
                    || !p
                        .unit
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err("per_unit.unit must be letters, digits or _".into());
                }
                Ok(PriceRule::PerUnit {
                    unit: p.unit.clone(),
                    price: p.price,
                })
            }
            (None, None, Some(models)) if !models.is_empty() => Ok(PriceRule::PerMillionTokens {
                models: models.clone(),
            }),
            _ => Err("give exactly one of per_call, per_unit or per_million_tokens".into()),
        }
    }

    fn overrun(&self) -> Result<OverrunPolicy, String> {
        match (self.overrun.as_deref(), self.overrun_allowance) {
            (None | Some("cap_at_hold"), None) => Ok(OverrunPolicy::CapAtHold),
            (Some("charge_actual"), None) => Ok(OverrunPolicy::ChargeActual),
            (Some("allow_up_to"), Some(allowance)) => Ok(OverrunPolicy::AllowUpTo {
                allowance_minor: allowance.to_minor(),
            }),
            (Some("allow_up_to"), None) => {
                Err("overrun = \"allow_up_to\" needs overrun_allowance".into())
            }
            (Some("cap_at_hold" | "charge_actual") | None, Some(_)) => {
                Err("overrun_allowance goes only with overrun = \"allow_up_to\"".into())
            }
            (Some(other), _) => Err(format!(
                "overrun must be cap_at_hold, allow_up_to or charge_actual, not {other:?}"
            )),
        }
    }

    fn stop(&self) -> Result<StopRule, String> {
        match self.stop.as_deref() {
            None => Ok(StopRule::default()),
            Some(text) => StopRule::parse(text).ok_or_else(|| {
                format!("stop must be finish_running or stop_running, not {text:?}")
            }),
        }
    }

    pub fn to_feature_price(&self) -> FeaturePrice {
        FeaturePrice {
            feature: self.feature.clone(),
            wallet: self.wallet.clone().unwrap_or_else(WalletId::default_wallet),
            rule: self.rule().expect("checked when the file was loaded"),
            overrun: self.overrun().expect("checked when the file was loaded"),
            stop: self.stop().expect("checked when the file was loaded"),
            effective_at_ms: 0,
        }
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

fn resolve_webhooks(configs: &[WebhookConfig]) -> Result<Vec<Webhook>, ConfigError> {
    let mut webhooks: Vec<Webhook> = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let webhook = config
            .resolve()
            .map_err(|message| ConfigError::Limit(format!("webhooks[{i}]: {message}")))?;
        if webhooks.iter().any(|w| w.name == webhook.name) {
            return Err(ConfigError::Limit(format!(
                "webhooks[{i}]: name {:?} is used twice",
                webhook.name
            )));
        }
        webhooks.push(webhook);
    }
    Ok(webhooks)
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
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses_into_prices_and_limits() {
        let text = r#"
            listen = "127.0.0.1:6000"
            [limits]
            hold_ttl_ms_default = 30000
            [[prices]]
            feature = "chat.completions"
            per_million_tokens = { "gpt-x" = { input = "3.00", output = "15.00" } }
            [[prices]]
            feature = "agent.minutes"
            wallet = "cloud"
            per_unit = { unit = "minute", price = "0.05" }
            [[prices]]
            feature = "image.generate"
            per_call = "0.04"
        "#;
        let file: FileConfig = toml::from_str(text).unwrap();
        let config = ServerConfig::resolve(Flags::default(), file).unwrap();
        assert_eq!(config.listen.port(), 6000);
        assert_eq!(config.admin_listen.to_string(), ADMIN_LISTEN_DEFAULT);
        assert_eq!(config.limits.hold_ttl_ms_default, 30_000);
        assert_eq!(config.limits.hold_ttl_ms_max, 86_400_000);
        assert_eq!(config.prices.len(), 3);
        assert_eq!(config.prices[1].wallet.as_str(), "cloud");
        assert_eq!(config.prices[2].rule.describe(), "0.04 per call");
    }

    #[test]
    fn flags_win_over_the_file() {
        let file: FileConfig = toml::from_str(r#"listen = "127.0.0.1:6000""#).unwrap();
        let flags = Flags {
            listen: Some("127.0.0.1:7000".parse().unwrap()),
            ..Flags::default()
        };
        let config = ServerConfig::resolve(flags, file).unwrap();
        assert_eq!(config.listen.port(), 7000);
    }

    #[test]
    fn metrics_are_served_on_loopback_unless_turned_off() {
        let resolve = |text: &str| {
            let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
            ServerConfig::resolve(Flags::default(), file).map_err(|e| e.to_string())
        };
        assert_eq!(
            resolve("").unwrap().metrics_listen,
            Some(METRICS_LISTEN_DEFAULT.parse().unwrap())
        );
        assert_eq!(
            resolve("metrics_listen = \"off\"").unwrap().metrics_listen,
            None
        );
        assert_eq!(
            resolve("metrics_listen = \"0.0.0.0:9000\"")
                .unwrap()
                .metrics_listen
                .map(|a| a.port()),
            Some(9000)
        );
        let error = resolve("metrics_listen = \"9000\"").unwrap_err();
        assert!(error.contains("neither an address"), "{error}");
        let flags = Flags {
            metrics_listen: Some("off".parse().unwrap()),
            ..Flags::default()
        };
        let file: FileConfig = toml::from_str("metrics_listen = \"0.0.0.0:9000\"").unwrap();
        assert_eq!(
            ServerConfig::resolve(flags, file).unwrap().metrics_listen,
            None
        );
    }

    #[test]
    fn otlp_settings_are_checked() {
        let resolve = |text: &str| {
            let file: FileConfig = toml::from_str(text).unwrap();
            ServerConfig::resolve(Flags::default(), file).map_err(|e| e.to_string())
        };
        let config = resolve("otlp_endpoint = \"http://collector:4317\"").unwrap();
        assert_eq!(config.otlp_sample_ratio, 1.0);
        for (text, complaint) in [
            ("otlp_endpoint = \"collector:4317\"", "otlp_endpoint"),
            ("otlp_sample_ratio = 1.5", "otlp_sample_ratio"),
            ("otlp_sample_ratio = -0.1", "otlp_sample_ratio"),
        ] {
            let error = resolve(text).unwrap_err();
            assert!(error.contains(complaint), "{text}: {error}");
        }
    }

    #[test]
    fn unknown_fields_and_bad_prices_are_refused() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
        assert!(
            toml::from_str::<FileConfig>("[[prices]]\nfeature = \"f\"\nper_call = \"1e3\"")
                .is_err()
        );
        let both: FileConfig = toml::from_str(
            "[[prices]]\nfeature = \"f\"\nper_call = \"1\"\nper_unit = { unit = \"m\", price = \"1\" }",
        )
        .unwrap();
        assert!(both.prices[0].rule().is_err());
    }

    /// The first TOML example of the README's section `heading`, resolved.
    fn readme_example(heading: &str) -> ServerConfig {
        let readme = include_str!("../README.md");
        let section = readme
            .find(&format!("\n## {heading}\n"))
            .expect("the README has the section");
        let start = section
            + readme[section..]
                .find("```toml\n")
                .expect("the section has a TOML example")
            + 8;
        let end = start + readme[start..].find("```").expect("the example ends");
        let file: FileConfig = toml::from_str(&readme[start..end]).unwrap();
        ServerConfig::resolve(Flags::default(), file).unwrap()
    }

    #[test]
    fn the_readme_callers_example_is_a_valid_config() {
        let config = readme_example("Callers: who may move a balance");
        assert!(config.policy.is_on());
    }

    #[test]
    fn the_readme_example_is_a_valid_config() {
        let config = readme_example("Configuration");
        assert_eq!(
            config.limits,
            LimitsConfig::default(),
            "the example shows the defaults"
        );
        assert_eq!(config.prices.len(), 3);
    }

    #[test]
    fn the_ext_authz_table_is_checked() {
        let resolve = |text: &str| {
            let file: FileConfig = toml::from_str(&format!("[ext_authz]\n{text}")).unwrap();
            ServerConfig::resolve(Flags::default(), file)
        };
        let config = resolve("account_metadata = \"jwt/payload/org\"").unwrap();
        assert_eq!(
            config.ext_authz.account_metadata,
            Some(("jwt".into(), vec!["payload".into(), "org".into()]))
        );
        assert_eq!(config.ext_authz.feature_header, "x-creditgate-feature");
        for (text, complaint) in [
            ("account_metadata = \"jwt\"", "account_metadata"),
            ("account_metadata = \"jwt//org\"", "account_metadata"),
            ("feature_header = \"X-Feature\"", "feature_header"),
        ] {
            let error = resolve(text).unwrap_err().to_string();
            assert!(error.contains(complaint), "{text}: {error}");
        }
        assert!(toml::from_str::<FileConfig>("[ext_authz]\naccount = \"x\"").is_err());
    }

    #[test]
    fn webhooks_are_checked() {
        let webhook = |fields: &str| -> Result<ServerConfig, ConfigError> {
            let file: FileConfig = toml::from_str(&format!("[[webhooks]]\n{fields}")).unwrap();
            ServerConfig::resolve(Flags::default(), file)
        };
        let good = "name = \"b\"\nurl = \"http://127.0.0.1:9/x\"\nsecret = \"0123456789abcdef\"";
        let config = webhook(good).unwrap();
        assert_eq!(config.webhooks[0].name, "b");
        assert!(config.webhooks[0].kinds.is_empty(), "every kind by default");
        for (fields, complaint) in [
            (good.replace("http:", "https:"), "https"),
            (good.replace("0123456789abcdef", "short"), "secret"),
            (good.replace("\"b\"", "\"a b\""), "name"),
            (
                format!("{good}\nevents = [\"lowbalance\"]"),
                "unknown event",
            ),
            (good.replace("http://127.0.0.1:9/x", "127.0.0.1"), "url"),
        ] {
            let error = webhook(&fields).unwrap_err().to_string();
            assert!(error.contains(complaint), "{fields}: {error}");
            assert!(error.contains("webhooks[0]"), "{error}");
        }
        let twice: FileConfig =
            toml::from_str(&format!("[[webhooks]]\n{good}\n[[webhooks]]\n{good}")).unwrap();
        let error = ServerConfig::resolve(Flags::default(), twice).unwrap_err();
        assert!(error.to_string().contains("used twice"), "{error}");
    }

    #[test]
    fn callers_are_checked() {
        let hash = "a".repeat(64);
        let mtls = "[tls]\ncert = \"s.crt\"\nkey = \"s.key\"\nclient_ca = \"ca.crt\"\n";
        let resolve = |text: &str| {
            let file: FileConfig = toml::from_str(text).unwrap();
            ServerConfig::resolve(Flags::default(), file)
        };
        let caller = |fields: &str| format!("[[callers]]\nname = \"gw\"\n{fields}\n");
        let good = caller(&format!(
            "token_sha256 = \"{hash}\"\naccounts = [\"acme:*\"]"
        ));
        let config = resolve(&good).unwrap();
        assert!(config.policy.is_on());
        assert!(!resolve("").unwrap().policy.is_on(), "off without callers");
        let by_san = caller("san = \"gw.example\"\naccounts = [\"*\"]\noperations = [\"admin\"]");
        resolve(&format!("{mtls}{by_san}")).unwrap();
        for (text, complaint) in [
            (by_san.clone(), "client_ca"),
            (
                caller("accounts = [\"*\"]"),
                "exactly one of san and token_sha256",
            ),
            (
                caller(&format!(
                    "san = \"x\"\ntoken_sha256 = \"{hash}\"\naccounts = [\"*\"]"
                )),
                "exactly one",
            ),
            (
                caller("token_sha256 = \"abc\"\naccounts = [\"*\"]"),
                "64 hex digits",
            ),
            (
                caller(&format!("token_sha256 = \"{hash}\"\naccounts = []")),
                "accounts",
            ),
            (
                caller(&format!("token_sha256 = \"{hash}\"\naccounts = [\"a/b\"]")),
                "accounts",
            ),
            (
                format!("{good}operations = [\"refund\"]"),
                "\"refund\" is not an operation",
            ),
            (good.replace("\"gw\"", "\"g w\""), "name"),
            (format!("{good}{good}"), "used twice"),
            (
                format!("{good}{}", good.replace("\"gw\"", "\"gw2\"")),
                "same identity",
            ),
        ] {
            let error = resolve(&text).unwrap_err().to_string();
            assert!(error.contains(complaint), "{text}: {error}");
            assert!(error.contains("callers["), "{error}");
        }
        assert!(toml::from_str::<FileConfig>(&format!("{good}tokens = 1")).is_err());
    }

    #[test]
    fn limits_are_checked() {
        let file: FileConfig = toml::from_str("[limits]\nhold_ttl_ms_default = 10").unwrap();
        assert!(ServerConfig::resolve(Flags::default(), file).is_err());
    }
}
