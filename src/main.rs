//! The `creditgate` command: parse, dispatch.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use creditgate::cli::{
    self, Answer, ChargeCall, CliError, Connection, CostArgs, GrantCall, Overrun, PriceCall,
    ReserveCall, UsageCall, parse_duration_ms, parse_label,
};
use creditgate::clock::SystemClock;
use creditgate::config::{CommitDurability, FileConfig, Flags, Listen, ServerConfig, TlsConfig};
use creditgate::proto::StopRule;
use creditgate::server::Server;
use creditgate::telemetry::Traces;

#[global_allocator]
static ALLOCATOR: creditgate::alloc::Allocator = creditgate::alloc::Allocator;

/// A low-latency gRPC credit gate: reserve, commit and release prepaid credits.
#[derive(Parser, Debug)]
#[command(name = "creditgate", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gate and admin services. With no settings: embedded store, SQLite ledger in
    /// ./creditgate-data, gate on 127.0.0.1:50051, admin on 127.0.0.1:50052, /metrics on
    /// 127.0.0.1:9464.
    Serve(ServeArgs),
    /// Apply the ledger's embedded migrations and exit.
    Migrate(LedgerArgs),
    /// Add credits to a wallet (creates the account if needed).
    Grant(GrantArgs),
    /// Show an account's balances per wallet and grant.
    Balance(BalanceArgs),
    /// Hold credits for work about to start.
    Reserve(ReserveArgs),
    /// Charge the actual cost of a hold and release the rest.
    Commit(CommitArgs),
    /// Give a hold back without charging.
    Release(ReleaseArgs),
    /// Add to a hold and/or move its expiry later.
    Extend(ExtendArgs),
    /// Charge credits in one step.
    Charge(ChargeArgs),
    /// Ask whether a hold would be allowed, without holding anything.
    Check(CheckArgs),
    /// Spend over a time window from the ledger, in total or by feature, model, wallet or label.
    Usage(UsageArgs),
    /// Compare balances in the store with the ledger; optionally rebuild an account from it.
    Reconcile(ReconcileArgs),
    /// Show or set prices.
    #[command(subcommand)]
    Price(PriceCommand),
    /// Set a wallet's flex cap.
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// List an account's newest events, with how their webhook deliveries went.
    Events(EventsArgs),
    /// Set a wallet's alert thresholds and auto top-up policy.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Set or remove spend limits on a label of an account.
    #[command(subcommand)]
    Limit(LimitCommand),
    /// Print an account's balance, then its events as they happen (a wallet running out or
    /// spendable again, a hold expiring, a threshold crossed, a limit reached, a top-up
    /// requested), one JSON object a line with --json, until interrupted.
    Watch(WatchArgs),
    /// Run a command as a metered agent: hold --hold worth of the feature's minutes before it
    /// starts, extend the hold while it runs, stop it (SIGTERM, then SIGKILL after --grace)
    /// when credits run out, and commit the minutes it ran. Exits with the command's status,
    /// or 3 when it was stopped for credits or its first hold was denied (it then never
    /// starts). The report goes to stderr.
    Run(RunArgs),
    /// Ask the server at --server whether it serves (gRPC health): exit 0 when SERVING, 3
    /// when not (the store or the ledger does not answer, or it is stopping), 1 when it
    /// cannot be asked. For probes that cannot speak gRPC over TLS themselves.
    Health(HealthArgs),
    /// Put load on the gate (reserve, reserve-commit, reserve-release, charge, check,
    /// ext-authz) and report calls a second and latency percentiles; with --baseline, as
    /// ratios of a no-op gRPC service's measured in the same run. Starts its own server unless
    /// --server.
    Bench(creditgate::bench::BenchArgs),
}

#[derive(Args, Debug)]
struct HealthArgs {
    #[command(flatten)]
    connection: Connection,
    /// The service asked about, e.g. creditgate.v1.Gate [default: the whole server].
    #[arg(long, default_value = "")]
    service: String,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    account: String,
    /// A feature priced per minute, e.g. agent.minutes.
    #[arg(long)]
    feature: String,
    /// [default: the feature's wallet]
    #[arg(long)]
    wallet: Option<String>,
    /// Minutes paid for ahead; the hold is extended by as much whenever half of it is left.
    #[arg(long, default_value = "5m", value_parser = parse_duration_ms)]
    hold: u64,
    /// Time the command has to stop after SIGTERM, before SIGKILL.
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms)]
    grace: u64,
    /// KEY=VALUE kept with the charge (project, task); repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The command and its arguments, after --.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args, Debug)]
struct WatchArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    account: String,
    /// Only this wallet; repeat for more [default: all].
    #[arg(long = "wallet")]
    wallets: Vec<String>,
    /// Only the wallet paying for this feature; repeat for more.
    #[arg(long = "feature")]
    features: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum LimitCommand {
    /// Cap what holds and charges carrying a label may spend per day, per month or in total,
    /// e.g. --label project=atlas --per day --amount 50.00. Creates the account if needed.
    Set {
        #[command(flatten)]
        target: LimitTarget,
        #[arg(long)]
        amount: String,
    },
    /// Remove a spend limit.
    Remove {
        #[command(flatten)]
        target: LimitTarget,
    },
}

#[derive(Args, Debug)]
struct LimitTarget {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    account: String,
    /// KEY=VALUE: the label a hold or charge must carry to count.
    #[arg(long, value_parser = parse_label)]
    label: (String, String),
    #[arg(long, value_parser = ["day", "month", "total"])]
    per: String,
}

/// Where the ledger is.
#[derive(Args, Debug)]
struct LedgerArgs {
    /// PostgreSQL URL of the ledger, e.g. postgres://creditgate@db:5432/creditgate
    /// [default: the SQLite file in the data directory].
    #[arg(long, env = "CREDITGATE_LEDGER")]
    ledger: Option<String>,
    /// Directory of the SQLite ledger, created if missing [default: creditgate-data].
    #[arg(long, env = "CREDITGATE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file (limits, prices); flags and environment variables win over it.
    #[arg(long, env = "CREDITGATE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address of the gate service [default: 127.0.0.1:50051].
    #[arg(long, env = "CREDITGATE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the admin service [default: 127.0.0.1:50052].
    #[arg(long, env = "CREDITGATE_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Address of the Prometheus /metrics endpoint, or off [default: 127.0.0.1:9464].
    #[arg(long, env = "CREDITGATE_METRICS_LISTEN")]
    metrics_listen: Option<Listen>,
    /// Address of the Envoy external authorization service
    /// (envoy.service.auth.v3.Authorization) [default: none, off].
    #[arg(long, env = "CREDITGATE_EXT_AUTHZ_LISTEN")]
    ext_authz_listen: Option<SocketAddr>,
    /// PEM certificate chain: serve every gRPC port over TLS (with --tls-key).
    #[arg(long, env = "CREDITGATE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CREDITGATE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates client certificates must chain to: mutual TLS, a client without
    /// one is refused at the handshake [default: no client certificates asked for].
    #[arg(long, env = "CREDITGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// OpenTelemetry collector to export the spans of calls to, over OTLP/gRPC, e.g.
    /// http://otel-collector:4317 [default: none].
    #[arg(long, env = "CREDITGATE_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Share of the traces starting here that are exported, 0 to 1; calls carrying their
    /// caller's trace follow the caller's sampling [default: 1].
    #[arg(long, env = "CREDITGATE_OTLP_SAMPLE_RATIO")]
    otlp_sample_ratio: Option<f64>,
    /// Logs (on stderr) as lines for people or as one JSON object a line.
    #[arg(long, env = "CREDITGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    ledger: LedgerArgs,
    /// Redis URL of the store shared by every replica, e.g. redis://127.0.0.1:6379
    /// [default: balances in this process].
    #[arg(long, env = "CREDITGATE_REDIS")]
    redis: Option<String>,
    /// When commits and charges are acknowledged: once in the ledger, or once in the store
    /// (needs --redis; the in-process store always waits for the ledger) [default: ledger].
    #[arg(long, env = "CREDITGATE_COMMIT_DURABILITY", value_enum)]
    commit_durability: Option<CommitDurability>,
    /// Do not apply the ledger's migrations on start (run `creditgate migrate` instead).
    #[arg(long, env = "CREDITGATE_NO_MIGRATE")]
    no_migrate: bool,
    /// Check the settings (flags, environment, config file) and exit: 0 and a summary when
    /// they are valid, 1 and what is wrong when not. Nothing is opened or served.
    #[arg(long)]
    check_config: bool,
}

/// Flags that name what a call is about.
#[derive(Args, Debug)]
struct Target {
    /// Account id.
    #[arg(long)]
    account: String,
    /// Feature being paid for, e.g. chat.completions.
    #[arg(long)]
    feature: String,
    /// Wallet to draw on [default: the feature's wallet, else "default"].
    #[arg(long)]
    wallet: Option<String>,
}

#[derive(Args, Debug)]
struct GrantArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    account: String,
    /// Amount of credits, e.g. 10.00.
    #[arg(long)]
    amount: String,
    /// Grant id, which makes the call safe to retry [default: a new random id, so a retry
    /// without it grants again].
    #[arg(long, visible_alias = "id")]
    grant_id: Option<String>,
    /// Wallet to add to [default: default].
    #[arg(long)]
    wallet: Option<String>,
    /// prepaid, included or promotional.
    #[arg(long, default_value = "prepaid")]
    kind: String,
    /// Lower is spent first [default: by kind: included 10, promotional 20, prepaid 30].
    #[arg(long)]
    priority: Option<u32>,
    /// Expire the grant this long from now (by this machine's clock), e.g. 30d.
    #[arg(
        long,
        visible_alias = "expires",
        value_parser = parse_duration_ms,
        conflicts_with = "expires_at_ms"
    )]
    expires_in: Option<u64>,
    /// Expire the grant at this Unix time in milliseconds; use it with --grant-id to retry.
    #[arg(long)]
    expires_at_ms: Option<i64>,
    /// Only these features may spend the grant: repeat it, or give a comma-separated list.
    #[arg(long = "feature", visible_alias = "features", value_delimiter = ',')]
    features: Vec<String>,
    /// Make it a plan's allowance, given again every month or year (needs --kind included).
    #[arg(long, value_parser = ["month", "year"])]
    period: Option<String>,
    /// When the periods are counted from (the billing day), Unix milliseconds [default: when
    /// the grant is created].
    #[arg(long, requires = "period")]
    period_anchor_ms: Option<i64>,
    /// Most unused credit carried into the next period [default: none].
    #[arg(long, requires = "period")]
    rollover_max: Option<String>,
    /// Why the credit is added (an adjustment), kept in the ledger.
    #[arg(long)]
    reason: Option<String>,
    /// Refund this commit or charge (its ledger entry id, e.g. commit/acme/r…): the credit
    /// goes back to its wallet, at most what it charged.
    #[arg(long)]
    refund_of: Option<String>,
    /// Answer this top-up request (from a TOP_UP_REQUESTED event), which closes it.
    #[arg(long)]
    top_up_request: Option<String>,
}

#[derive(Args, Debug)]
struct BalanceArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    account: String,
    /// Only this wallet.
    #[arg(long)]
    wallet: Option<String>,
}

#[derive(Args, Debug)]
struct ReserveArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    cost: CostArgs,
    /// Time to live of the hold, e.g. 90s or 5m [default: the server's, one minute].
    #[arg(long, value_parser = parse_duration_ms)]
    ttl: Option<u64>,
    /// Makes retries safe: the same key returns the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Attribution kept with the charge, key=value; repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// When less than asked is left, hold what is left, down to this minimum (e.g. 0.01).
    #[arg(long)]
    partial_min: Option<String>,
}

#[derive(Args, Debug)]
struct CommitArgs {
    #[command(flatten)]
    connection: Connection,
    /// Reservation id, as printed by reserve.
    id: String,
    #[command(flatten)]
    cost: CostArgs,
}

#[derive(Args, Debug)]
struct ReleaseArgs {
    #[command(flatten)]
    connection: Connection,
    /// Reservation id, as printed by reserve.
    id: String,
}

#[derive(Args, Debug)]
struct ExtendArgs {
    #[command(flatten)]
    connection: Connection,
    /// Reservation id, as printed by reserve.
    id: String,
    /// Amount to add to the hold.
    #[arg(long)]
    amount: Option<String>,
    /// New time to live from now, e.g. 5m.
    #[arg(long, value_parser = parse_duration_ms)]
    ttl: Option<u64>,
    /// Makes retries safe: without it, two extends add twice.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Args, Debug)]
struct ChargeArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    cost: CostArgs,
    /// Makes retries safe: the same key returns the first answer.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Attribution kept with the charge, key=value; repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

#[derive(Subcommand, Debug)]
enum PriceCommand {
    /// The whole price catalog.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Set a feature's price: --flat, --per-unit with --unit, or --model with token prices.
    Set(Box<PriceSetArgs>),
}

#[derive(Args, Debug)]
struct PriceSetArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    feature: String,
    /// Wallet that pays for the feature [default: default].
    #[arg(long)]
    wallet: Option<String>,
    /// Flat price per call.
    #[arg(long, conflicts_with_all = ["per_unit", "model"])]
    flat: Option<String>,
    /// Price per unit; give --unit too.
    #[arg(long, requires = "unit", conflicts_with = "model")]
    per_unit: Option<String>,
    /// Name of the unit, e.g. minute.
    #[arg(long)]
    unit: Option<String>,
    /// Model whose token prices to set (other models of the feature are kept).
    #[arg(long, requires_all = ["input_per_1m", "output_per_1m"])]
    model: Option<String>,
    /// Price per 1M input tokens of --model.
    #[arg(long)]
    input_per_1m: Option<String>,
    /// Price per 1M output tokens of --model.
    #[arg(long)]
    output_per_1m: Option<String>,
    /// Price per 1M cached input tokens of --model [default: the input price].
    #[arg(long, requires = "model")]
    cached_input_per_1m: Option<String>,
    /// What a commit larger than its hold is charged [default: the feature's current policy,
    /// else cap-at-hold].
    #[arg(long, value_enum)]
    overrun: Option<OverrunArg>,
    /// With --overrun allow-up-to: how much beyond the hold may be charged.
    #[arg(long)]
    overrun_allowance: Option<String>,
    /// What happens to holds still running when the wallet runs out [default: the feature's
    /// current rule, else finish-running].
    #[arg(long, value_enum)]
    stop: Option<StopArg>,
    /// Set the price ahead: it takes over at this Unix time in milliseconds [default: at once].
    #[arg(long)]
    effective_at_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum OverrunArg {
    /// Charge at most the hold.
    CapAtHold,
    /// Charge up to --overrun-allowance beyond the hold, from what the wallet can pay.
    AllowUpTo,
    /// Charge it all; what the wallet cannot pay becomes debt and gates it until a top-up.
    ChargeActual,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum StopArg {
    /// Holds already taken run to their end; new work is refused.
    FinishRunning,
    /// Work stops at once: extending a hold is refused while nothing is spendable.
    StopRunning,
}

#[derive(Args, Debug)]
struct EventsArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    account: String,
    /// At most this many, newest first (at most 1000).
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

#[derive(Subcommand, Debug)]
enum AlertsCommand {
    /// Replace a wallet's thresholds and auto top-up policy (none given removes them), e.g.
    /// --below 5.00 --allowance-used 80 --top-up-below 2.00 --top-up-to 20.00. Each threshold
    /// fires once per crossing; creates the account if needed.
    Set {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        account: String,
        /// [default: default]
        #[arg(long)]
        wallet: Option<String>,
        /// LOW_BALANCE when the spendable balance falls below this amount; repeat for more.
        #[arg(long)]
        below: Vec<String>,
        /// ALERT when this percentage of the wallet's included allowances is used; repeat
        /// for more.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        allowance_used: Vec<u32>,
        /// Auto top-up: when the spendable balance falls below this, request a top-up.
        #[arg(long)]
        top_up_below: Option<String>,
        /// The amount each top-up request asks for.
        #[arg(long, requires = "top_up_below", conflicts_with = "top_up_to")]
        top_up_amount: Option<String>,
        /// Ask for what brings the spendable balance back to this.
        #[arg(long, requires = "top_up_below")]
        top_up_to: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum WalletCommand {
    /// Set a wallet's flex cap: spending past its grants up to this much, billed afterwards
    /// (0 turns flex off). Creates the account if needed.
    Set {
        #[command(flatten)]
        connection: Connection,
        #[arg(long)]
        account: String,
        /// [default: default]
        #[arg(long)]
        wallet: Option<String>,
        #[arg(long)]
        flex_cap: String,
    },
}

#[derive(Args, Debug)]
struct ReconcileArgs {
    #[command(flatten)]
    connection: Connection,
    /// Only this account [default: every account].
    #[arg(long)]
    account: Option<String>,
    /// Replace the account in the store with the ledger's version (needs --account).
    #[arg(long, requires = "account")]
    rebuild: bool,
}

#[derive(Args, Debug)]
struct UsageArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    account: String,
    /// Group by feature, model, wallet or label:NAME (e.g. label:project) [default: total only].
    #[arg(long = "by", default_value = "")]
    group_by: String,
    /// Window ending now, e.g. 24h or 30d.
    #[arg(long, value_parser = parse_duration_ms, default_value = "30d")]
    since: u64,
    /// Only spend carrying this label, key=value (e.g. task=42 for the cost of one task).
    #[arg(long, value_parser = parse_label)]
    label: Option<(String, String)>,
}

#[derive(Args, Debug)]
struct CheckArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    cost: CostArgs,
    /// KEY=VALUE the hold would carry, for its spend limits; repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

/// Logs on stderr, at the level `RUST_LOG` says (default `info`), and the spans of calls to
/// the collector if there is one.
fn init_logging(format: LogFormat, traces: Option<&Traces>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        // One JSON object a line, with the call's span (method and request id) in each.
        LogFormat::Json => logs.json().with_current_span(true).boxed(),
    };
    let spans = traces.map(|traces| tracing_opentelemetry::layer().with_tracer(traces.tracer()));
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .init();
}

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Takes over SIGTERM and Ctrl-C at once (before the server starts listening, so that a
/// signal that comes early still stops it cleanly); the future resolves on either.
fn termination() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (mut term, mut interrupt) = (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        );
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

fn resolve(ledger: LedgerArgs, flags: Flags) -> Result<ServerConfig, Box<dyn std::error::Error>> {
    let file = match &ledger.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let flags = Flags {
        data_dir: ledger.data_dir,
        ledger: ledger.ledger,
        ..flags
    };
    Ok(ServerConfig::resolve(flags, file)?)
}

async fn migrate(args: LedgerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = resolve(args, Flags::default())?;
    let ledger = creditgate::ledger::sql::SqlLedger::connect(
        &config.ledger,
        std::time::Duration::from_millis(config.limits.ledger_timeout_ms),
    )
    .await?;
    ledger.migrate().await?;
    ledger.close().await;
    println!("ledger {} is up to date", config.ledger.describe());
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let flags = Flags {
        listen: args.listen,
        admin_listen: args.admin_listen,
        metrics_listen: args.metrics_listen,
        ext_authz_listen: args.ext_authz_listen,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig {
                cert,
                key,
                client_ca: args.tls_client_ca,
            }),
            _ => None,
        },
        commit_durability: args.commit_durability,
        no_migrate: args.no_migrate,
        redis: args.redis,
        otlp_endpoint: args.otlp_endpoint,
        otlp_sample_ratio: args.otlp_sample_ratio,
        ..Flags::default()
    };
    let config = resolve(args.ledger, flags)?;
    if args.check_config {
        println!(
            "config ok: gate {}, admin {}, ledger {}, store {}, {} prices, {} webhooks, {}",
            config.listen,
            config.admin_listen,
            config.ledger.describe(),
            if config.redis.is_some() {
                "redis"
            } else {
                "memory"
            },
            config.prices.len(),
            config.webhooks.len(),
            if config.policy.is_on() {
                "callers checked"
            } else {
                "every caller served"
            },
        );
        return Ok(());
    }
    let traces = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| Traces::otlp(endpoint, config.otlp_sample_ratio))
        .transpose()?;
    init_logging(args.log_format, traces.as_ref());
    let terminated = termination()?;
    let server = Server::start(config, Arc::new(SystemClock)).await?;
    terminated.await;
    tracing::info!("shutting down");
    server.stop().await;
    if let Some(traces) = traces {
        traces.shutdown();
    }
    Ok(())
}

async fn client(command: Command) -> Result<(Answer, bool), CliError> {
    Ok(match command {
        Command::Serve(_) | Command::Migrate(_) => unreachable!("dispatched before"),
        Command::Grant(a) => {
            let expires_at_ms = match (a.expires_in, a.expires_at_ms) {
                (Some(ms), _) => {
                    let ms = i64::try_from(ms)
                        .map_err(|_| CliError::Usage("--expires-in is too long".into()))?;
                    creditgate::clock::Clock::now_ms(&SystemClock).saturating_add(ms)
                }
                (None, Some(at)) => at,
                (None, None) => 0,
            };
            let call = GrantCall {
                account: a.account,
                grant_id: a
                    .grant_id
                    .unwrap_or_else(|| format!("g{}", uuid::Uuid::new_v4().simple())),
                wallet: a.wallet,
                amount: a.amount,
                kind: a.kind,
                priority: a.priority.unwrap_or(0),
                expires_at_ms,
                features: a.features,
                period: a.period,
                period_anchor_ms: a.period_anchor_ms.unwrap_or(0),
                rollover_max: a.rollover_max.unwrap_or_default(),
                reason: a.reason.unwrap_or_default(),
                refund_of: a.refund_of.unwrap_or_default(),
                top_up_request_id: a.top_up_request.unwrap_or_default(),
            };
            (cli::grant(&a.connection, call).await?, a.connection.json)
        }
        Command::Balance(a) => (
            cli::balance(&a.connection, a.account, a.wallet).await?,
            a.connection.json,
        ),
        Command::Reserve(a) => {
            let call = ReserveCall {
                partial_min: a.partial_min,
                account: a.target.account,
                feature: a.target.feature,
                wallet: a.target.wallet,
                cost: a.cost,
                ttl_ms: a.ttl.unwrap_or(0),
                idempotency_key: a.idempotency_key,
                labels: a.labels,
            };
            (cli::reserve(&a.connection, call).await?, a.connection.json)
        }
        Command::Commit(a) => (
            cli::commit(&a.connection, a.id, a.cost).await?,
            a.connection.json,
        ),
        Command::Release(a) => (cli::release(&a.connection, a.id).await?, a.connection.json),
        Command::Extend(a) => (
            cli::extend(
                &a.connection,
                a.id,
                a.amount,
                a.ttl.unwrap_or(0),
                a.idempotency_key,
            )
            .await?,
            a.connection.json,
        ),
        Command::Charge(a) => {
            let call = ChargeCall {
                account: a.target.account,
                feature: a.target.feature,
                wallet: a.target.wallet,
                cost: a.cost,
                idempotency_key: a.idempotency_key,
                labels: a.labels,
            };
            (cli::charge(&a.connection, call).await?, a.connection.json)
        }
        Command::Price(PriceCommand::List { connection }) => {
            (cli::price_list(&connection).await?, connection.json)
        }
        Command::Price(PriceCommand::Set(a)) => {
            let price = match (a.flat, a.per_unit, a.unit, a.model) {
                (Some(flat), _, _, _) => PriceCall::Flat(flat),
                (None, Some(price), Some(unit), _) => PriceCall::PerUnit { unit, price },
                (None, None, _, Some(model)) => PriceCall::Model {
                    model,
                    input: a.input_per_1m.unwrap_or_default(),
                    output: a.output_per_1m.unwrap_or_default(),
                    cached_input: a.cached_input_per_1m,
                },
                _ => {
                    return Err(CliError::Usage(
                        "give --flat, --per-unit with --unit, or --model with token prices".into(),
                    ));
                }
            };
            let overrun = match (a.overrun, a.overrun_allowance) {
                (None, None) => None,
                (Some(OverrunArg::AllowUpTo), Some(allowance)) => {
                    Some(Overrun::AllowUpTo(allowance))
                }
                (Some(OverrunArg::AllowUpTo), None) => {
                    return Err(CliError::Usage(
                        "--overrun allow-up-to needs --overrun-allowance".into(),
                    ));
                }
                (Some(OverrunArg::CapAtHold), None) => Some(Overrun::CapAtHold),
                (Some(OverrunArg::ChargeActual), None) => Some(Overrun::ChargeActual),
                (_, Some(_)) => {
                    return Err(CliError::Usage(
                        "--overrun-allowance goes only with --overrun allow-up-to".into(),
                    ));
                }
            };
            (
                cli::price_set(
                    &a.connection,
                    a.feature,
                    a.wallet,
                    price,
                    overrun,
                    a.stop.map(|stop| match stop {
                        StopArg::FinishRunning => StopRule::FinishRunning,
                        StopArg::StopRunning => StopRule::StopRunning,
                    }),
                    a.effective_at_ms.unwrap_or(0),
                )
                .await?,
                a.connection.json,
            )
        }
        Command::Health(a) => (
            cli::health(&a.connection, &a.service).await?,
            a.connection.json,
        ),
        Command::Watch(_) => unreachable!("watch streams and is handled in main"),
        Command::Bench(_) => unreachable!("bench is handled in main"),
        Command::Run(_) => unreachable!("run has its own exit status and is handled in main"),
        Command::Limit(command) => {
            let (target, amount) = match command {
                LimitCommand::Set { target, amount } => (target, Some(amount)),
                LimitCommand::Remove { target } => (target, None),
            };
            let (key, value) = target.label;
            let answer = cli::limit_set(
                &target.connection,
                target.account,
                key,
                value,
                &target.per,
                amount,
            )
            .await?;
            (answer, target.connection.json)
        }
        Command::Wallet(WalletCommand::Set {
            connection,
            account,
            wallet,
            flex_cap,
        }) => (
            cli::wallet_set(&connection, account, wallet, flex_cap).await?,
            connection.json,
        ),
        Command::Events(a) => (
            cli::events(&a.connection, a.account, a.limit).await?,
            a.connection.json,
        ),
        Command::Alerts(AlertsCommand::Set {
            connection,
            account,
            wallet,
            below,
            allowance_used,
            top_up_below,
            top_up_amount,
            top_up_to,
        }) => {
            let call = cli::AlertsCall {
                account,
                wallet,
                below,
                allowance_used,
                top_up_below,
                top_up_amount,
                top_up_to,
            };
            (cli::alerts_set(&connection, call).await?, connection.json)
        }
        Command::Reconcile(a) => (
            cli::reconcile(&a.connection, a.account, a.rebuild).await?,
            a.connection.json,
        ),
        Command::Usage(a) => {
            let since = i64::try_from(a.since)
                .map_err(|_| CliError::Usage("--since is too long".into()))?;
            let call = UsageCall {
                account: a.account,
                group_by: a.group_by,
                since_ms: creditgate::clock::Clock::now_ms(&SystemClock).saturating_sub(since),
                label: a.label,
            };
            (cli::usage(&a.connection, call).await?, a.connection.json)
        }
        Command::Check(a) => (
            cli::check(
                &a.connection,
                a.target.account,
                a.target.feature,
                a.target.wallet,
                a.cost,
                a.labels,
            )
            .await?,
            a.connection.json,
        ),
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Migrate(args) = cli.command {
        return match migrate(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("creditgate: {error}");
                ExitCode::from(cli::EXIT_FAILED as u8)
            }
        };
    }
    if let Command::Bench(args) = cli.command {
        let json = args.json;
        return match creditgate::bench::run(args).await {
            Ok(report) => {
                if json {
                    println!("{report}");
                } else {
                    print!("{}", creditgate::bench::table(&report));
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("creditgate: {error}");
                ExitCode::from(cli::EXIT_FAILED as u8)
            }
        };
    }
    if let Command::Serve(args) = cli.command {
        return match serve(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("creditgate: {error}");
                ExitCode::from(cli::EXIT_FAILED as u8)
            }
        };
    }
    if let Command::Watch(args) = cli.command {
        let filter = (args.wallets, args.features);
        let watched = cli::watch(&args.connection, args.account, filter, |answer| {
            cli::print(&answer, args.connection.json)
        });
        return match watched.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("creditgate: {error}");
                ExitCode::from(cli::EXIT_FAILED as u8)
            }
        };
    }
    if let Command::Run(args) = cli.command {
        let call = cli::RunCall {
            account: args.account,
            feature: args.feature,
            wallet: args.wallet,
            hold_ms: args.hold,
            grace_ms: args.grace,
            labels: args.labels,
            command: args.command,
        };
        return match cli::run(&args.connection, call).await {
            Ok(outcome) => {
                cli::eprint(&outcome.report, args.connection.json);
                ExitCode::from(outcome.status.clamp(0, 255) as u8)
            }
            Err(error) => {
                eprintln!("creditgate: {error}");
                ExitCode::from(cli::EXIT_FAILED as u8)
            }
        };
    }
    match client(cli.command).await {
        Ok((answer, json)) => {
            cli::print(&answer, json);
            if answer.denied {
                ExitCode::from(cli::EXIT_DENIED as u8)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(error) => {
            eprintln!("creditgate: {error}");
            ExitCode::from(cli::EXIT_FAILED as u8)
        }
    }
}
