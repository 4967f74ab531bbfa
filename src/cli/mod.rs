//! The `creditgate` command's client subcommands, for people and scripts.
//!
//! Each subcommand makes one call and prints its answer: as `field: value` lines, or with
//! `--json` as one JSON object whose field names are the proto's. Exit status: 0 when allowed or
//! done, 3 when denied (the answer is still printed), 1 with a message on stderr when the call
//! itself failed.

pub mod args;
mod output;
mod run;

use std::collections::HashMap;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::proto::admin_client::AdminClient;
use crate::proto::gate_client::GateClient;
use crate::proto::{self};

pub use output::{eprint, print};
pub use run::{RunCall, RunOutcome, run};

/// Exit status when the call was answered with a denial.
pub const EXIT_DENIED: i32 = 3;
/// Exit status when the call failed.
pub const EXIT_FAILED: i32 = 1;

/// Where the services are, and how to print.
#[derive(Args, Clone, Debug)]
pub struct Connection {
    /// URL of the gate service.
    #[arg(
        long,
        env = "CREDITGATE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// URL of the admin service.
    #[arg(
        long,
        env = "CREDITGATE_ADMIN_SERVER",
        default_value = "http://127.0.0.1:50052"
    )]
    pub admin_server: String,
    /// Print one JSON object with the proto's field names instead of lines.
    #[arg(long)]
    pub json: bool,
    /// PEM CA certificate to trust for https:// servers.
    #[arg(long, env = "CREDITGATE_CA_CERT")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// PEM client certificate for servers that ask for one (mutual TLS), with --client-key.
    #[arg(long, env = "CREDITGATE_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<std::path::PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "CREDITGATE_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,
    /// Bearer token for servers with a caller policy, sent as `authorization: Bearer TOKEN`.
    #[arg(long, env = "CREDITGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A connection to a service that sends the caller's bearer token, if any, with every call.
pub type Client = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to every call when there is a token.
#[derive(Clone, Debug)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// What a call costs: an amount, or usage priced from the catalog.
#[derive(Args, Clone, Debug, Default)]
pub struct CostArgs {
    /// Amount of money, e.g. 2.50.
    #[arg(
        long,
        conflicts_with_all = ["units", "model", "input_tokens", "output_tokens", "cached_input_tokens"]
    )]
    pub amount: Option<String>,
    /// Units of a per-unit (or per-call) price, e.g. 2.5 (minutes).
    #[arg(long)]
    pub units: Option<String>,
    /// Model of a per-token price.
    #[arg(long)]
    pub model: Option<String>,
    /// Input tokens of a per-token price.
    #[arg(long)]
    pub input_tokens: Option<u64>,
    /// Output tokens of a per-token price.
    #[arg(long)]
    pub output_tokens: Option<u64>,
    /// Cached input tokens of a per-token price.
    #[arg(long)]
    pub cached_input_tokens: Option<u64>,
}

impl CostArgs {
    /// The request's cost oneof, whichever message it belongs to: the amount if given, else
    /// the usage, else none.
    fn oneof<T>(
        &self,
        amount: impl FnOnce(String) -> T,
        usage: impl FnOnce(proto::Usage) -> T,
    ) -> Option<T> {
        match (self.amount.clone(), self.usage()) {
            (Some(a), _) => Some(amount(a)),
            (None, Some(u)) => Some(usage(u)),
            (None, None) => None,
        }
    }

    fn usage(&self) -> Option<proto::Usage> {
        let any = self.units.is_some()
            || self.model.is_some()
            || self.input_tokens.is_some()
            || self.output_tokens.is_some()
            || self.cached_input_tokens.is_some();
        any.then(|| proto::Usage {
            units: self.units.clone().unwrap_or_default(),
            model: self.model.clone().unwrap_or_default(),
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            cached_input_tokens: self.cached_input_tokens.unwrap_or(0),
        })
    }
}

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to {url}: {source}")]
    Connect {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("{:?}: {}", .0.code(), .0.message())]
    Call(#[from] tonic::Status),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// An answer to print, and whether it was a denial.
pub struct Answer {
    pub json: Value,
    pub denied: bool,
}

/// Parses `90s`, `5m`, `1h`, `30d` or `500ms` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {text:?} needs a unit: ms, s, m, h or d"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("duration {text:?} must start with a number"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "duration {text:?} has unknown unit {unit:?}: use ms, s, m, h or d"
            ));
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

/// Parses `key=value`.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("label {text:?} must look like key=value"))
}

async fn channel(url: &str, connection: &Connection) -> Result<Client, CliError> {
    let connect = |source| CliError::Connect {
        url: url.to_owned(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(connect)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if url.starts_with("https://") {
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
        };
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &connection.ca_cert {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&connection.client_cert, &connection.client_key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls).map_err(connect)?;
    }
    let bearer = match &connection.token {
        None => None,
        Some(token) => Some(
            MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| CliError::Usage("--token must be printable ASCII".into()))?,
        ),
    };
    let channel = endpoint.connect().await.map_err(connect)?;
    Ok(InterceptedService::new(channel, Bearer(bearer)))
}

pub async fn gate(connection: &Connection) -> Result<GateClient<Client>, CliError> {
    Ok(GateClient::new(
        channel(&connection.server, connection).await?,
    ))
}

pub async fn admin(connection: &Connection) -> Result<AdminClient<Client>, CliError> {
    Ok(AdminClient::new(
        channel(&connection.admin_server, connection).await?,
    ))
}

/// Whether the server at `connection.server` serves `service` (`""`: the whole server), by
/// the gRPC health service.
pub async fn health(connection: &Connection, service: &str) -> Result<Answer, CliError> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut client = tonic_health::pb::health_client::HealthClient::new(
        channel(&connection.server, connection).await?,
    );
    let answer = client
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner();
    let status = ServingStatus::try_from(answer.status).unwrap_or(ServingStatus::Unknown);
    Ok(Answer {
        json: json!({ "service": service, "status": status.as_str_name() }),
        denied: status != ServingStatus::Serving,
    })
}

fn labels(labels: &[(String, String)]) -> HashMap<String, String> {
    labels.iter().cloned().collect()
}

fn decision_name(decision: i32) -> &'static str {
    match proto::Decision::try_from(decision) {
        Ok(proto::Decision::Allowed) => "ALLOWED",
        Ok(proto::Decision::Denied) => "DENIED",
        _ => "UNSPECIFIED",
    }
}

fn reason_name(reason: i32) -> Value {
    match proto::DenyReason::try_from(reason) {
        Ok(proto::DenyReason::Unspecified) | Err(_) => Value::Null,
        Ok(r) => Value::String(
            r.as_str_name()
                .trim_start_matches("DENY_REASON_")
                .to_owned(),
        ),
    }
}

fn split(split: &[proto::GrantPortion]) -> Value {
    split
        .iter()
        .map(|p| json!({"grant_id": p.grant_id, "amount": p.amount}))
        .collect()
}

fn is_denied(decision: i32) -> bool {
    decision == proto::Decision::Denied as i32
}

pub struct ReserveCall {
    /// Hold what is available down to this minimum when less than asked is left.
    pub partial_min: Option<String>,
    pub account: String,
    pub feature: String,
    pub wallet: Option<String>,
    pub cost: CostArgs,
    pub ttl_ms: u64,
    pub idempotency_key: Option<String>,
    pub labels: Vec<(String, String)>,
}

pub async fn reserve(connection: &Connection, call: ReserveCall) -> Result<Answer, CliError> {
    use proto::reserve_request::Cost;
    let cost = call.cost.oneof(Cost::Amount, Cost::Usage);
    let r = gate(connection)
        .await?
        .reserve(proto::ReserveRequest {
            account_id: call.account,
            feature: call.feature,
            wallet: call.wallet.unwrap_or_default(),
            cost,
            ttl_ms: call.ttl_ms,
            idempotency_key: call.idempotency_key.unwrap_or_default(),
            labels: labels(&call.labels),
            allow_partial: call.partial_min.is_some(),
            min_amount: call.partial_min.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: is_denied(r.decision),
        json: json!({
            "decision": decision_name(r.decision),
            "reason": reason_name(r.reason),
            "reservation_id": r.reservation_id,
            "wallet": r.wallet,
            "amount": r.amount,
            "expires_at_ms": r.expires_at_ms,
            "available": r.available,
            "split": split(&r.split),
            "message": r.message,
            "limit": r.limit,
        }),
    })
}

pub async fn commit(
    connection: &Connection,
    id: String,
    cost: CostArgs,
) -> Result<Answer, CliError> {
    use proto::commit_request::Actual;
    let actual = cost.oneof(Actual::Amount, Actual::Usage);
    let r = gate(connection)
        .await?
        .commit(proto::CommitRequest {
            reservation_id: id,
            actual,
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: json!({
            "reservation_id": r.reservation_id,
            "requested": r.requested,
            "overrun": r.overrun,
            "charged": r.charged,
            "released": r.released,
            "split": split(&r.split),
            "entry_id": r.entry_id,
            "available": r.available,
        }),
    })
}

pub async fn release(connection: &Connection, id: String) -> Result<Answer, CliError> {
    let r = gate(connection)
        .await?
        .release(proto::ReleaseRequest { reservation_id: id })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: json!({
            "reservation_id": r.reservation_id,
            "released": r.released,
            "available": r.available,
        }),
    })
}

pub async fn extend(
    connection: &Connection,
    id: String,
    amount: Option<String>,
    ttl_ms: u64,
    idempotency_key: Option<String>,
) -> Result<Answer, CliError> {
    let r = gate(connection)
        .await?
        .extend(proto::ExtendRequest {
            reservation_id: id,
            additional_amount: amount.unwrap_or_default(),
            ttl_ms,
            idempotency_key: idempotency_key.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: is_denied(r.decision),
        json: json!({
            "decision": decision_name(r.decision),
            "reason": reason_name(r.reason),
            "reservation_id": r.reservation_id,
            "amount": r.amount,
            "expires_at_ms": r.expires_at_ms,
            "available": r.available,
            "split": split(&r.split),
            "message": r.message,
            "limit": r.limit,
        }),
    })
}

pub struct ChargeCall {
    pub account: String,
    pub feature: String,
    pub wallet: Option<String>,
    pub cost: CostArgs,
    pub idempotency_key: Option<String>,
    pub labels: Vec<(String, String)>,
}

pub async fn charge(connection: &Connection, call: ChargeCall) -> Result<Answer, CliError> {
    use proto::charge_request::Cost;
    let cost = call.cost.oneof(Cost::Amount, Cost::Usage);
    let r = gate(connection)
        .await?
        .charge(proto::ChargeRequest {
            account_id: call.account,
            feature: call.feature,
            wallet: call.wallet.unwrap_or_default(),
            cost,
            idempotency_key: call.idempotency_key.unwrap_or_default(),
            labels: labels(&call.labels),
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: is_denied(r.decision),
        json: json!({
            "decision": decision_name(r.decision),
            "reason": reason_name(r.reason),
            "wallet": r.wallet,
            "charged": r.charged,
            "split": split(&r.split),
            "entry_id": r.entry_id,
            "available": r.available,
            "message": r.message,
            "limit": r.limit,
        }),
    })
}

pub async fn check(
    connection: &Connection,
    account: String,
    feature: String,
    wallet: Option<String>,
    cost: CostArgs,
    labels: Vec<(String, String)>,
) -> Result<Answer, CliError> {
    use proto::check_request::Cost;
    let cost = cost.oneof(Cost::Amount, Cost::Usage);
    let r = gate(connection)
        .await?
        .check(proto::CheckRequest {
            account_id: account,
            feature,
            wallet: wallet.unwrap_or_default(),
            cost,
            labels: labels.into_iter().collect(),
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: is_denied(r.decision),
        json: json!({
            "decision": decision_name(r.decision),
            "reason": reason_name(r.reason),
            "wallet": r.wallet,
            "amount": r.amount,
            "available": r.available,
            "message": r.message,
            "limit": r.limit,
        }),
    })
}

fn grant_json(g: &proto::GrantBalance) -> Value {
    let kind = proto::GrantKind::try_from(g.kind)
        .map(|k| k.as_str_name().trim_start_matches("GRANT_KIND_").to_owned())
        .unwrap_or_default();
    let status = proto::GrantStatus::try_from(g.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("GRANT_STATUS_")
                .to_owned()
        })
        .unwrap_or_default();
    let mut json = json!({
        "grant_id": g.grant_id,
        "kind": kind,
        "priority": g.priority,
        "amount": g.amount,
        "remaining": g.remaining,
        "held": g.held,
        "expires_at_ms": g.expires_at_ms,
        "features": g.features,
        "status": status,
        "used_percent": g.used_percent,
    });
    if let Ok(period @ (proto::Period::Month | proto::Period::Year)) =
        proto::Period::try_from(g.period)
    {
        json["period"] = json!({
            "every": period.as_str_name().trim_start_matches("PERIOD_").to_ascii_lowercase(),
            "start_ms": g.period_start_ms,
            "next_reset_ms": g.next_reset_ms,
            "rollover_max": g.rollover_max,
        });
    }
    json
}

pub async fn balance(
    connection: &Connection,
    account: String,
    wallet: Option<String>,
) -> Result<Answer, CliError> {
    let r = gate(connection)
        .await?
        .get_balance(proto::GetBalanceRequest {
            account_id: account,
            wallet: wallet.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let wallets: Vec<Value> = r.wallets.iter().map(wallet_json).collect();
    let mut json = json!({"account_id": r.account_id, "wallets": wallets});
    if !r.limits.is_empty() {
        json["limits"] = r.limits.iter().map(limit_json).collect();
    }
    Ok(Answer {
        denied: false,
        json,
    })
}

fn wallet_json(w: &proto::WalletBalance) -> Value {
    json!({
        "wallet": w.wallet,
        "granted": w.granted,
        "held": w.held,
        "spent": w.spent,
        "available": w.available,
        "flex": {"cap": w.flex_cap, "used": w.flex_used, "held": w.flex_held},
        "debt": w.debt,
        "grants": w.grants.iter().map(grant_json).collect::<Vec<_>>(),
        "alerts": w.alerts.as_ref().map(alerts_json),
    })
}

/// Watches an account: hands each event (the snapshot first) to `print` until the stream ends.
pub async fn watch(
    connection: &Connection,
    account: String,
    (wallets, features): (Vec<String>, Vec<String>),
    mut print: impl FnMut(Answer),
) -> Result<(), CliError> {
    let mut stream = gate(connection)
        .await?
        .watch_balance(proto::WatchBalanceRequest {
            account_id: account,
            wallets,
            features,
        })
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        let json = event_json(&event);
        print(Answer {
            json,
            denied: false,
        });
    }
    Ok(())
}

/// A wallet's alert thresholds and auto top-up, as given on the command line.
pub struct AlertsCall {
    pub account: String,
    pub wallet: Option<String>,
    /// LOW_BALANCE thresholds: amounts.
    pub below: Vec<String>,
    /// ALERT thresholds: percentages of the included allowances used.
    pub allowance_used: Vec<u32>,
    /// Auto top-up: below this, ask for `top_up_amount` or up to `top_up_to`.
    pub top_up_below: Option<String>,
    pub top_up_amount: Option<String>,
    pub top_up_to: Option<String>,
}

/// Sets a wallet's alert thresholds and auto top-up policy, replacing what it had.
pub async fn alerts_set(connection: &Connection, call: AlertsCall) -> Result<Answer, CliError> {
    use proto::alert_threshold::When;
    use proto::auto_top_up::Size;
    let thresholds = call
        .below
        .into_iter()
        .map(When::Below)
        .chain(
            call.allowance_used
                .into_iter()
                .map(When::AllowanceUsedPercent),
        )
        .map(|when| proto::AlertThreshold {
            when: Some(when),
            armed: false,
        })
        .collect();
    let size = match (call.top_up_amount, call.top_up_to) {
        (Some(amount), None) => Some(Size::Amount(amount)),
        (None, Some(target)) => Some(Size::Target(target)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(CliError::Usage(
                "give --top-up-amount or --top-up-to, not both".into(),
            ));
        }
    };
    let auto_top_up = match (call.top_up_below, size) {
        (Some(below), Some(size)) => Some(proto::AutoTopUp {
            below,
            size: Some(size),
        }),
        (None, None) => None,
        _ => {
            return Err(CliError::Usage(
                "--top-up-below goes with --top-up-amount or --top-up-to".into(),
            ));
        }
    };
    let r = admin(connection)
        .await?
        .set_alerts(proto::SetAlertsRequest {
            account_id: call.account,
            wallet: call.wallet.unwrap_or_default(),
            thresholds,
            auto_top_up,
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: alerts_json(&r),
    })
}

fn alerts_json(alerts: &proto::WalletAlerts) -> Value {
    use proto::alert_threshold::When;
    use proto::auto_top_up::Size;
    let thresholds: Vec<Value> = alerts
        .thresholds
        .iter()
        .map(|t| match &t.when {
            Some(When::Below(amount)) => json!({"below": amount, "armed": t.armed}),
            Some(When::AllowanceUsedPercent(p)) => {
                json!({"allowance_used_percent": p, "armed": t.armed})
            }
            None => Value::Null,
        })
        .collect();
    let top_up = alerts.auto_top_up.as_ref().map(|t| match &t.size {
        Some(Size::Amount(amount)) => json!({"below": t.below, "amount": amount}),
        Some(Size::Target(target)) => json!({"below": t.below, "target": target}),
        None => json!({"below": t.below}),
    });
    json!({
        "thresholds": thresholds,
        "auto_top_up": top_up,
        "open_top_up_request_id": alerts.open_top_up_request_id,
    })
}

fn event_json(event: &proto::BalanceEvent) -> Value {
    let kind = proto::BalanceEventKind::try_from(event.kind)
        .unwrap_or_default()
        .as_str_name()
        .trim_start_matches("BALANCE_EVENT_KIND_")
        .to_owned();
    let mut json = json!({"event": kind, "account_id": event.account_id});
    if let Some(snapshot) = &event.snapshot {
        json["wallets"] = snapshot.wallets.iter().map(wallet_json).collect();
        return json;
    }
    json["event_id"] = json!(event.event_id);
    json["wallet"] = json!(event.wallet);
    json["at_ms"] = json!(event.at_ms);
    json["available"] = json!(event.available);
    let details = [
        ("reservation_id", &event.reservation_id),
        ("threshold", &event.threshold),
        ("limit", &event.limit),
        ("top_up_request_id", &event.top_up_request_id),
        ("top_up_amount", &event.top_up_amount),
    ];
    for (field, value) in details {
        if !value.is_empty() {
            json[field] = json!(value);
        }
    }
    if event.allowance_used_percent > 0 {
        json["allowance_used_percent"] = json!(event.allowance_used_percent);
    }
    json
}

/// An account's newest events, with their webhook deliveries.
pub async fn events(
    connection: &Connection,
    account: String,
    limit: u32,
) -> Result<Answer, CliError> {
    let r = admin(connection)
        .await?
        .list_events(proto::ListEventsRequest {
            account_id: account,
            limit,
        })
        .await?
        .into_inner();
    let events: Vec<Value> = r
        .events
        .iter()
        .map(|record| {
            let mut json = record.event.as_ref().map(event_json).unwrap_or_default();
            if !record.answered_by_grant_id.is_empty() {
                json["answered_by_grant_id"] = json!(record.answered_by_grant_id);
            }
            json["deliveries"] = record
                .deliveries
                .iter()
                .map(|d| {
                    let status = proto::DeliveryStatus::try_from(d.status)
                        .unwrap_or_default()
                        .as_str_name()
                        .trim_start_matches("DELIVERY_STATUS_")
                        .to_owned();
                    json!({
                        "endpoint": d.endpoint, "status": status, "attempts": d.attempts,
                        "delivered_at_ms": d.delivered_at_ms,
                        "next_attempt_at_ms": d.next_attempt_at_ms,
                        "last_error": d.last_error,
                    })
                })
                .collect();
            json
        })
        .collect();
    Ok(Answer {
        denied: false,
        json: json!({ "events": events }),
    })
}

/// Sets a spend limit (`amount` given) or removes it.
pub async fn limit_set(
    connection: &Connection,
    account: String,
    label_key: String,
    label_value: String,
    per: &str,
    amount: Option<String>,
) -> Result<Answer, CliError> {
    let per = match per {
        "day" => proto::LimitPer::Day,
        "month" => proto::LimitPer::Month,
        _ => proto::LimitPer::Total,
    };
    let r = admin(connection)
        .await?
        .set_limit(proto::SetLimitRequest {
            account_id: account,
            label_key,
            label_value,
            per: per as i32,
            remove: amount.is_none(),
            amount: amount.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: json!({
            "account_id": r.account_id,
            "limits": r.limits.iter().map(limit_json).collect::<Vec<_>>(),
        }),
    })
}

fn limit_json(l: &proto::SpendLimit) -> Value {
    let per = proto::LimitPer::try_from(l.per)
        .unwrap_or_default()
        .as_str_name()
        .trim_start_matches("LIMIT_PER_")
        .to_ascii_lowercase();
    json!({
        "id": l.id,
        "label": format!("{}={}", l.label_key, l.label_value),
        "per": per,
        "amount": l.amount,
        "used": l.used,
        "held": l.held,
        "available": l.available,
        "resets_at_ms": l.resets_at_ms,
    })
}

/// Sets a wallet's flex cap.
pub async fn wallet_set(
    connection: &Connection,
    account: String,
    wallet: Option<String>,
    flex_cap: String,
) -> Result<Answer, CliError> {
    let w = admin(connection)
        .await?
        .set_wallet(proto::SetWalletRequest {
            account_id: account.clone(),
            wallet: wallet.unwrap_or_default(),
            flex_cap,
        })
        .await?
        .into_inner();
    let mut json = wallet_json(&w);
    json["account_id"] = json!(account);
    Ok(Answer {
        denied: false,
        json,
    })
}

pub struct GrantCall {
    pub account: String,
    pub grant_id: String,
    pub wallet: Option<String>,
    pub amount: String,
    pub kind: String,
    pub priority: u32,
    pub expires_at_ms: i64,
    pub features: Vec<String>,
    /// `month` or `year` for a plan's allowance.
    pub period: Option<String>,
    pub period_anchor_ms: i64,
    pub rollover_max: String,
    pub reason: String,
    pub refund_of: String,
    pub top_up_request_id: String,
}

pub async fn grant(connection: &Connection, call: GrantCall) -> Result<Answer, CliError> {
    let kind = match call.kind.as_str() {
        "prepaid" => proto::GrantKind::Prepaid,
        "included" => proto::GrantKind::Included,
        "promotional" => proto::GrantKind::Promotional,
        other => {
            return Err(CliError::Usage(format!(
                "--kind {other:?}: use prepaid, included or promotional"
            )));
        }
    };
    let r = admin(connection)
        .await?
        .add_grant(proto::AddGrantRequest {
            account_id: call.account,
            grant_id: call.grant_id,
            wallet: call.wallet.unwrap_or_default(),
            amount: call.amount,
            kind: kind as i32,
            priority: call.priority,
            expires_at_ms: call.expires_at_ms,
            features: call.features,
            period: match call.period.as_deref() {
                Some("month") => proto::Period::Month,
                Some("year") => proto::Period::Year,
                _ => proto::Period::Unspecified,
            } as i32,
            period_anchor_ms: call.period_anchor_ms,
            rollover_max: call.rollover_max,
            reason: call.reason,
            refund_of: call.refund_of,
            top_up_request_id: call.top_up_request_id,
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: json!({
            "wallet": r.wallet,
            "created": r.created,
            "available": r.available,
            "grant": r.grant.as_ref().map(grant_json).unwrap_or(Value::Null),
        }),
    })
}

pub struct UsageCall {
    pub account: String,
    pub group_by: String,
    pub since_ms: i64,
    pub label: Option<(String, String)>,
}

pub async fn usage(connection: &Connection, call: UsageCall) -> Result<Answer, CliError> {
    let (label_key, label_value) = call.label.unwrap_or_default();
    let r = admin(connection)
        .await?
        .get_usage(proto::GetUsageRequest {
            account_id: call.account,
            since_ms: call.since_ms,
            until_ms: 0,
            group_by: call.group_by,
            label_key,
            label_value,
        })
        .await?
        .into_inner();
    let groups: Vec<Value> = r
        .groups
        .iter()
        .map(|g| json!({"key": g.key, "amount": g.amount, "count": g.count}))
        .collect();
    Ok(Answer {
        denied: false,
        json: json!({
            "account_id": r.account_id,
            "since_ms": r.since_ms,
            "until_ms": r.until_ms,
            "total": r.total,
            "count": r.count,
            "groups": groups,
        }),
    })
}

/// Compares store and ledger for one account (optionally rebuilding it) or for all of them,
/// page by page.
pub async fn reconcile(
    connection: &Connection,
    account: Option<String>,
    rebuild: bool,
) -> Result<Answer, CliError> {
    let mut client = admin(connection).await?;
    let mut accounts = Vec::new();
    let mut after = String::new();
    loop {
        let r = client
            .reconcile(proto::ReconcileRequest {
                account_id: account.clone().unwrap_or_default(),
                rebuild,
                after_account_id: after.clone(),
                limit: 0,
            })
            .await?
            .into_inner();
        for a in &r.accounts {
            let outcome = proto::ReconcileOutcome::try_from(a.outcome)
                .map(|o| {
                    o.as_str_name()
                        .trim_start_matches("RECONCILE_OUTCOME_")
                        .to_owned()
                })
                .unwrap_or_default();
            let wallets: Vec<Value> = a
                .wallets
                .iter()
                .map(|w| {
                    json!({
                        "wallet": w.wallet,
                        "store_remaining": w.store_remaining,
                        "ledger_remaining": w.ledger_remaining,
                        "store_held": w.store_held,
                        "ledger_held": w.ledger_held,
                        "drift": w.drift,
                    })
                })
                .collect();
            accounts.push(json!({
                "account_id": a.account_id,
                "outcome": outcome,
                "rebuilt": a.rebuilt,
                "wallets": wallets,
            }));
        }
        if r.next_after_account_id.is_empty() {
            break;
        }
        after = r.next_after_account_id;
    }
    Ok(Answer {
        denied: false,
        json: json!({ "accounts": accounts }),
    })
}

/// A feature's price as given on the command line.
pub enum PriceCall {
    Flat(String),
    PerUnit {
        unit: String,
        price: String,
    },
    Model {
        model: String,
        input: String,
        output: String,
        cached_input: Option<String>,
    },
}

/// A feature's overrun policy as given on the command line.
pub enum Overrun {
    CapAtHold,
    AllowUpTo(String),
    ChargeActual,
}

fn price_json(price: &proto::FeaturePrice) -> Value {
    use proto::feature_price::Rule;
    let rule = match &price.rule {
        Some(Rule::PerCall(p)) => json!({"per_call": {"price": p.price}}),
        Some(Rule::PerUnit(p)) => json!({"per_unit": {"unit": p.unit, "price": p.price}}),
        Some(Rule::PerMillionTokens(p)) => json!({"per_million_tokens": {"models": p
            .models
            .iter()
            .map(|m| json!({
                "model": m.model, "input": m.input, "output": m.output,
                "cached_input": m.cached_input,
            }))
            .collect::<Vec<_>>()}}),
        None => Value::Null,
    };
    let overrun = proto::Overrun::try_from(price.overrun)
        .unwrap_or_default()
        .as_str_name()
        .trim_start_matches("OVERRUN_")
        .to_ascii_lowercase();
    let mut json = json!({
        "feature": price.feature,
        "wallet": price.wallet,
        "rule": rule,
        "effective_at_ms": price.effective_at_ms,
    });
    json["overrun"] = match overrun.as_str() {
        "allow_up_to" => json!({"policy": overrun, "allowance": price.overrun_allowance}),
        "unspecified" => json!({"policy": "cap_at_hold"}),
        _ => json!({"policy": overrun}),
    };
    json["stop"] = match proto::StopRule::try_from(price.stop).unwrap_or_default() {
        proto::StopRule::StopRunning => json!("stop_running"),
        _ => json!("finish_running"),
    };
    json
}

fn catalog_json(catalog: &proto::PriceCatalog) -> Value {
    json!({"features": catalog.features.iter().map(price_json).collect::<Vec<_>>()})
}

/// The price catalog.
pub async fn price_list(connection: &Connection) -> Result<Answer, CliError> {
    let catalog = admin(connection)
        .await?
        .get_prices(proto::GetPricesRequest {})
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: catalog_json(&catalog),
    })
}

/// Sets a feature's price. A model's token prices are added to the feature's other models
/// (read, then written: two people setting models of one feature at once may lose one).
pub async fn price_set(
    connection: &Connection,
    feature: String,
    wallet: Option<String>,
    price: PriceCall,
    overrun: Option<Overrun>,
    stop: Option<proto::StopRule>,
    effective_at_ms: i64,
) -> Result<Answer, CliError> {
    use proto::feature_price::Rule;
    let mut client = admin(connection).await?;
    let current = client
        .get_prices(proto::GetPricesRequest {})
        .await?
        .into_inner()
        .features
        .into_iter()
        .rfind(|p| p.feature == feature);
    // The feature keeps its overrun policy unless one is given.
    let (overrun, overrun_allowance) = match (overrun, &current) {
        (Some(Overrun::CapAtHold), _) => (proto::Overrun::CapAtHold as i32, String::new()),
        (Some(Overrun::ChargeActual), _) => (proto::Overrun::ChargeActual as i32, String::new()),
        (Some(Overrun::AllowUpTo(allowance)), _) => (proto::Overrun::AllowUpTo as i32, allowance),
        (None, Some(current)) => (current.overrun, current.overrun_allowance.clone()),
        (None, None) => (proto::Overrun::CapAtHold as i32, String::new()),
    };
    // And its stop rule.
    let stop = match (stop, &current) {
        (Some(stop), _) => stop as i32,
        (None, Some(current)) => current.stop,
        (None, None) => proto::StopRule::FinishRunning as i32,
    };
    let rule = match price {
        PriceCall::Flat(price) => Rule::PerCall(proto::PerCallPrice { price }),
        PriceCall::PerUnit { unit, price } => Rule::PerUnit(proto::PerUnitPrice { unit, price }),
        PriceCall::Model {
            model,
            input,
            output,
            cached_input,
        } => {
            let mut models: Vec<proto::ModelPrice> = current
                .and_then(|p| match p.rule {
                    Some(Rule::PerMillionTokens(tokens)) => Some(tokens.models),
                    _ => None,
                })
                .unwrap_or_default();
            models.retain(|m| m.model != model);
            models.push(proto::ModelPrice {
                model,
                input,
                output,
                cached_input: cached_input.unwrap_or_default(),
            });
            Rule::PerMillionTokens(proto::PerMillionTokensPrice { models })
        }
    };
    let catalog = client
        .set_prices(proto::SetPricesRequest {
            features: vec![proto::FeaturePrice {
                feature,
                wallet: wallet.unwrap_or_default(),
                rule: Some(rule),
                overrun,
                overrun_allowance,
                effective_at_ms,
                stop,
            }],
        })
        .await?
        .into_inner();
    Ok(Answer {
        denied: false,
        json: catalog_json(&catalog),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("30d"), Ok(2_592_000_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert!(parse_duration_ms("90").is_err());
        assert!(parse_duration_ms("m").is_err());
        assert!(parse_duration_ms("5 m").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
    }

    #[test]
    fn labels_are_key_value() {
        assert_eq!(
            parse_label("project=atlas"),
            Ok(("project".into(), "atlas".into()))
        );
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_label("project").is_err());
    }
}
