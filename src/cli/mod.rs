//! The `creditgate` command's client subcommands, for people and scripts.
//!
//! Each subcommand makes one call and prints its answer: as `field: value` lines, or with
//! `--json` as one JSON object whose field names are the proto's. Exit status: 0 when allowed or
//! done, 3 when denied (the answer is still printed), 1 with a message on stderr when the call
//! itself failed.
//!
//! The subcommands are by family: the gate's calls in `spend.rs`, balances and events in
//! `balance.rs`, wallet settings in `wallet.rs`, grants, usage and reconciling in `account.rs`,
//! prices in `price.rs`, and `creditgate run` in `run.rs`; connections and answers are here.

mod account;
pub mod args;
mod balance;
mod output;
mod price;
mod run;
mod spend;
mod wallet;

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

pub use account::{GrantCall, UsageCall, grant, reconcile, usage};
pub use balance::{balance, events, watch};
pub use output::{eprint, print};
pub use price::{Overrun, PriceCall, price_list, price_set};
pub use run::{RunCall, RunOutcome, run};
pub use spend::{ChargeCall, ReserveCall, charge, check, commit, extend, release, reserve};
pub use wallet::{AlertsCall, alerts_set, limit_set, wallet_set};

use self::balance::{grant_json, wallet_json};
use self::wallet::{alerts_json, limit_json};

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
