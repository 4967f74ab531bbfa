//! The `creditgate` command's arguments, as clap reads them: one struct per subcommand.
//! `main.rs` parses them and dispatches.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::cli::{Connection, CostArgs, parse_duration_ms, parse_label};
use crate::config::{CommitDurability, Listen};

/// A low-latency gRPC credit gate: reserve, commit and release prepaid credits.
#[derive(Parser, Debug)]
#[command(name = "creditgate", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
    Bench(crate::bench::BenchArgs),
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// The service asked about, e.g. creditgate.v1.Gate [default: the whole server].
    #[arg(long, default_value = "")]
    pub service: String,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[arg(long)]
    pub account: String,
    /// A feature priced per minute, e.g. agent.minutes.
    #[arg(long)]
    pub feature: String,
    /// [default: the feature's wallet]
    #[arg(long)]
    pub wallet: Option<String>,
    /// Minutes paid for ahead; the hold is extended by as much whenever half of it is left.
    #[arg(long, default_value = "5m", value_parser = parse_duration_ms)]
    pub hold: u64,
    /// Time the command has to stop after SIGTERM, before SIGKILL.
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms)]
    pub grace: u64,
    /// KEY=VALUE kept with the charge (project, task); repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// The command and its arguments, after --.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[arg(long)]
    pub account: String,
    /// Only this wallet; repeat for more [default: all].
    #[arg(long = "wallet")]
    pub wallets: Vec<String>,
    /// Only the wallet paying for this feature; repeat for more.
    #[arg(long = "feature")]
    pub features: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum LimitCommand {
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
pub struct LimitTarget {
    #[command(flatten)]
    pub connection: Connection,
    #[arg(long)]
    pub account: String,
    /// KEY=VALUE: the label a hold or charge must carry to count.
    #[arg(long, value_parser = parse_label)]
    pub label: (String, String),
    #[arg(long, value_parser = ["day", "month", "total"])]
    pub per: String,
}

/// Where the ledger is.
#[derive(Args, Debug)]
pub struct LedgerArgs {
    /// PostgreSQL URL of the ledger, e.g. postgres://creditgate@db:5432/creditgate
    /// [default: the SQLite file in the data directory].
    #[arg(long, env = "CREDITGATE_LEDGER")]
    pub ledger: Option<String>,
    /// Directory of the SQLite ledger, created if missing [default: creditgate-data].
    #[arg(long, env = "CREDITGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file (limits, prices); flags and environment variables win over it.
    #[arg(long, env = "CREDITGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the gate service [default: 127.0.0.1:50051].
    #[arg(long, env = "CREDITGATE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Address of the admin service [default: 127.0.0.1:50052].
    #[arg(long, env = "CREDITGATE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Address of the Prometheus /metrics endpoint, or off [default: 127.0.0.1:9464].
    #[arg(long, env = "CREDITGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<Listen>,
    /// Address of the Envoy external authorization service
    /// (envoy.service.auth.v3.Authorization) [default: none, off].
    #[arg(long, env = "CREDITGATE_EXT_AUTHZ_LISTEN")]
    pub ext_authz_listen: Option<SocketAddr>,
    /// PEM certificate chain: serve every gRPC port over TLS (with --tls-key).
    #[arg(long, env = "CREDITGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "CREDITGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates client certificates must chain to: mutual TLS, a client without
    /// one is refused at the handshake [default: no client certificates asked for].
    #[arg(long, env = "CREDITGATE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// OpenTelemetry collector to export the spans of calls to, over OTLP/gRPC, e.g.
    /// http://otel-collector:4317 [default: none].
    #[arg(long, env = "CREDITGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of the traces starting here that are exported, 0 to 1; calls carrying their
    /// caller's trace follow the caller's sampling [default: 1].
    #[arg(long, env = "CREDITGATE_OTLP_SAMPLE_RATIO")]
    pub otlp_sample_ratio: Option<f64>,
    /// Logs (on stderr) as lines for people or as one JSON object a line.
    #[arg(long, env = "CREDITGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// Redis URL of the store shared by every replica, e.g. redis://127.0.0.1:6379
    /// [default: balances in this process].
    #[arg(long, env = "CREDITGATE_REDIS")]
    pub redis: Option<String>,
    /// When commits and charges are acknowledged: once in the ledger, or once in the store
    /// (needs --redis; the in-process store always waits for the ledger) [default: ledger].
    #[arg(long, env = "CREDITGATE_COMMIT_DURABILITY", value_enum)]
    pub commit_durability: Option<CommitDurability>,
    /// Do not apply the ledger's migrations on start (run `creditgate migrate` instead).
    #[arg(long, env = "CREDITGATE_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Check the settings (flags, environment, config file) and exit: 0 and a summary when
    /// they are valid, 1 and what is wrong when not. Nothing is opened or served.
    #[arg(long)]
    pub check_config: bool,
}

/// Flags that name what a call is about.
#[derive(Args, Debug)]
pub struct Target {
    /// Account id.
    #[arg(long)]
    pub account: String,
    /// Feature being paid for, e.g. chat.completions.
    #[arg(long)]
    pub feature: String,
    /// Wallet to draw on [default: the feature's wallet, else "default"].
    #[arg(long)]
    pub wallet: Option<String>,
}

#[derive(Args, Debug)]
pub struct GrantArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[arg(long)]
    pub account: String,
    /// Amount of credits, e.g. 10.00.
    #[arg(long)]
    pub amount: String,
    /// Grant id, which makes the call safe to retry [default: a new random id, so a retry
    /// without it grants again].
    #[arg(long, visible_alias = "id")]
    pub grant_id: Option<String>,
    /// Wallet to add to [default: default].
    #[arg(long)]
    pub wallet: Option<String>,
    /// prepaid, included or promotional.
    #[arg(long, default_value = "prepaid")]
    pub kind: String,
    /// Lower is spent first [default: by kind: included 10, promotional 20, prepaid 30].
    #[arg(long)]
    pub priority: Option<u32>,
    /// Expire the grant this long from now (by this machine's clock), e.g. 30d.
    #[arg(
        long,
        visible_alias = "expires",
        value_parser = parse_duration_ms,
        conflicts_with = "expires_at_ms"
    )]
    pub expires_in: Option<u64>,
    /// Expire the grant at this Unix time in milliseconds; use it with --grant-id to retry.
    #[arg(long)]
    pub expires_at_ms: Option<i64>,
    /// Only these features may spend the grant: repeat it, or give a comma-separated list.
    #[arg(long = "feature", visible_alias = "features", value_delimiter = ',')]
    pub features: Vec<String>,
    /// Make it a plan's allowance, given again every month or year (needs --kind included).
    #[arg(long, value_parser = ["month", "year"])]
    pub period: Option<String>,
    /// When the periods are counted from (the billing day), Unix milliseconds [default: when
    /// the grant is created].
    #[arg(long, requires = "period")]
    pub period_anchor_ms: Option<i64>,
    /// Most unused credit carried into the next period [default: none].
    #[arg(long, requires = "period")]
    pub rollover_max: Option<String>,
    /// Why the credit is added (an adjustment), kept in the ledger.
    #[arg(long)]
    pub reason: Option<String>,
    /// Refund this commit or charge (its ledger entry id, e.g. commit/acme/r…): the credit
    /// goes back to its wallet, at most what it charged.
    #[arg(long)]
    pub refund_of: Option<String>,
    /// Answer this top-up request (from a TOP_UP_REQUESTED event), which closes it.
    #[arg(long)]
    pub top_up_request: Option<String>,
}

#[derive(Args, Debug)]
pub struct BalanceArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[arg(long)]
    pub account: String,
    /// Only this wallet.
    #[arg(long)]
    pub wallet: Option<String>,
}

#[derive(Args, Debug)]
pub struct ReserveArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub cost: CostArgs,
    /// Time to live of the hold, e.g. 90s or 5m [default: the server's, one minute].
    #[arg(long, value_parser = parse_duration_ms)]
    pub ttl: Option<u64>,
    /// Makes retries safe: the same key returns the first answer.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Attribution kept with the charge, key=value; repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// When less than asked is left, hold what is left, down to this minimum (e.g. 0.01).
    #[arg(long)]
    pub partial_min: Option<String>,
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Reservation id, as printed by reserve.
    pub id: String,
    #[command(flatten)]
    pub cost: CostArgs,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Reservation id, as printed by reserve.
    pub id: String,
}

#[derive(Args, Debug)]
pub struct ExtendArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Reservation id, as printed by reserve.
    pub id: String,
    /// Amount to add to the hold.
    #[arg(long)]
    pub amount: Option<String>,
    /// New time to live from now, e.g. 5m.
    #[arg(long, value_parser = parse_duration_ms)]
    pub ttl: Option<u64>,
    /// Makes retries safe: without it, two extends add twice.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Args, Debug)]
pub struct ChargeArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub cost: CostArgs,
    /// Makes retries safe: the same key returns the first answer.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Attribution kept with the charge, key=value; repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

#[derive(Subcommand, Debug)]
pub enum PriceCommand {
    /// The whole price catalog.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Set a feature's price: --flat, --per-unit with --unit, or --model with token prices.
    Set(Box<PriceSetArgs>),
}

#[derive(Args, Debug)]
pub struct PriceSetArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[arg(long)]
    pub feature: String,
    /// Wallet that pays for the feature [default: default].
    #[arg(long)]
    pub wallet: Option<String>,
    /// Flat price per call.
    #[arg(long, conflicts_with_all = ["per_unit", "model"])]
    pub flat: Option<String>,
    /// Price per unit; give --unit too.
    #[arg(long, requires = "unit", conflicts_with = "model")]
    pub per_unit: Option<String>,
    /// Name of the unit, e.g. minute.
    #[arg(long)]
    pub unit: Option<String>,
    /// Model whose token prices to set (other models of the feature are kept).
    #[arg(long, requires_all = ["input_per_1m", "output_per_1m"])]
    pub model: Option<String>,
    /// Price per 1M input tokens of --model.
    #[arg(long)]
    pub input_per_1m: Option<String>,
    /// Price per 1M output tokens of --model.
    #[arg(long)]
    pub output_per_1m: Option<String>,
    /// Price per 1M cached input tokens of --model [default: the input price].
    #[arg(long, requires = "model")]
    pub cached_input_per_1m: Option<String>,
    /// What a commit larger than its hold is charged [default: the feature's current policy,
    /// else cap-at-hold].
    #[arg(long, value_enum)]
    pub overrun: Option<OverrunArg>,
    /// With --overrun allow-up-to: how much beyond the hold may be charged.
    #[arg(long)]
    pub overrun_allowance: Option<String>,
    /// What happens to holds still running when the wallet runs out [default: the feature's
    /// current rule, else finish-running].
    #[arg(long, value_enum)]
    pub stop: Option<StopArg>,
    /// Set the price ahead: it takes over at this Unix time in milliseconds [default: at once].
    #[arg(long)]
    pub effective_at_ms: Option<i64>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OverrunArg {
    /// Charge at most the hold.
    CapAtHold,
    /// Charge up to --overrun-allowance beyond the hold, from what the wallet can pay.
    AllowUpTo,
    /// Charge it all; what the wallet cannot pay becomes debt and gates it until a top-up.
    ChargeActual,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StopArg {
    /// Holds already taken run to their end; new work is refused.
    FinishRunning,
    /// Work stops at once: extending a hold is refused while nothing is spendable.
    StopRunning,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[arg(long)]
    pub account: String,
    /// At most this many, newest first (at most 1000).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
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
pub enum WalletCommand {
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
pub struct ReconcileArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Only this account [default: every account].
    #[arg(long)]
    pub account: Option<String>,
    /// Replace the account in the store with the ledger's version (needs --account).
    #[arg(long, requires = "account")]
    pub rebuild: bool,
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[arg(long)]
    pub account: String,
    /// Group by feature, model, wallet or label:NAME (e.g. label:project) [default: total only].
    #[arg(long = "by", default_value = "")]
    pub group_by: String,
    /// Window ending now, e.g. 24h or 30d.
    #[arg(long, value_parser = parse_duration_ms, default_value = "30d")]
    pub since: u64,
    /// Only spend carrying this label, key=value (e.g. task=42 for the cost of one task).
    #[arg(long, value_parser = parse_label)]
    pub label: Option<(String, String)>,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub cost: CostArgs,
    /// KEY=VALUE the hold would carry, for its spend limits; repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

/// How `serve` writes its logs.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}
