//! `creditgate bench`: the load a gateway or an agent runner puts on the gate, measured the way
//! they would judge it, against the fastest thing the same stack can do.
//!
//! The load comes from virtual users (closed loop: `--concurrency` calls at a time over
//! `--connections` HTTP/2 connections) or from a schedule (open loop: `--rate` calls a second,
//! each timed from when it was due, so that queueing is not hidden). With `--baseline`, the
//! same client, connections and message sizes run against a no-op gRPC service in the same
//! process first, and the report gives creditgate's throughput and p99 as ratios of the
//! baseline's.
//!
//! Without `--server`, the server is started in this process: on the embedded store, or on
//! Redis with `--redis`, with its ledger in a temporary directory (or at `--ledger`).
//!
//! Here are the options and the run in order; the scenarios' calls are in `scenario.rs`, the
//! load in `load.rs`, what it measured in `tally.rs`, the server under test in `server.rs`, the
//! no-op service in `baseline.rs`, `--hold-memory` in `memory.rs`, Redis's time per call in
//! `redis_time.rs`, and the table in `report.rs`.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::config::CommitDurability;

mod baseline;
mod load;
mod memory;
mod redis_time;
mod report;
mod scenario;
mod server;
mod tally;

pub use report::table;

use self::baseline::start_baseline;
use self::load::{Accounts, Load, clients, run_load};
use self::memory::hold_memory;
use self::server::{forget, ledger_catch_up, namespace, prepare, start_server};

/// What each virtual user does, over and over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Reserve 0.01 for a second and let it expire: one call.
    Reserve,
    /// Reserve 0.01, then commit 0.005 of it: two calls.
    ReserveCommit,
    /// Reserve 0.01, then release it: two calls.
    ReserveRelease,
    /// Charge 0.001 in one call.
    Charge,
    /// Ask whether 0.01 would be allowed.
    Check,
    /// Envoy's authorization check of one request, charged its per-call price.
    ExtAuthz,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Reserve => "reserve",
            Scenario::ReserveCommit => "reserve-commit",
            Scenario::ReserveRelease => "reserve-release",
            Scenario::Charge => "charge",
            Scenario::Check => "check",
            Scenario::ExtAuthz => "ext-authz",
        }
    }

    /// Calls one iteration makes.
    fn calls(self) -> u32 {
        match self {
            Scenario::ReserveCommit | Scenario::ReserveRelease => 2,
            _ => 1,
        }
    }
}

/// Which account each iteration pays with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Distribution {
    /// Every account equally often.
    Uniform,
    /// A few accounts most of the time: the k-th most used with weight 1/k^s (`--zipf-s`).
    Zipf,
}

/// The options of `creditgate bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// What each virtual user does.
    #[arg(long, value_enum, default_value_t = Scenario::ReserveCommit)]
    pub scenario: Scenario,
    /// Gate service of a running server [default: start one in this process].
    #[arg(long)]
    pub server: Option<String>,
    /// Admin service of the running server, for the set-up grants and prices.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub admin_server: String,
    /// Envoy authorizer of the running server, for --scenario ext-authz.
    #[arg(long, default_value = "http://127.0.0.1:50053")]
    pub ext_authz_server: String,
    /// The started server's Redis store [default: the embedded store]; the report then gives
    /// Redis's time per gate call too.
    #[arg(long)]
    pub redis: Option<String>,
    /// The started server's PostgreSQL ledger [default: SQLite in a temporary directory].
    #[arg(long)]
    pub ledger: Option<String>,
    /// When the started server acknowledges a commit or charge [default: the server's, ledger].
    #[arg(long, value_enum)]
    pub commit_durability: Option<CommitDurability>,
    /// Accounts the load is spread over.
    #[arg(long, default_value_t = 1)]
    pub accounts: u64,
    /// How the load is spread over the accounts.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Exponent s of the zipf distribution.
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,
    /// Grants in each account's wallet (at most 64).
    #[arg(long, default_value_t = 1)]
    pub grants: u32,
    /// Calls in flight at once (closed loop); with --rate, the most in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// HTTP/2 connections the calls share.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Open loop: calls a second, each timed from when it was due [default: closed loop].
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long the load is measured, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = crate::cli::parse_duration_ms)]
    pub duration: u64,
    /// Load before measuring starts, e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = crate::cli::parse_duration_ms)]
    pub warmup: u64,
    /// Also run the load against a no-op gRPC service, and report creditgate / baseline.
    #[arg(long)]
    pub baseline: bool,
    /// Also hold this many holds at once and report the memory each takes: in this process (the
    /// replica: the bytes its heap grew by while they were taken) and in Redis.
    #[arg(long)]
    pub hold_memory: Option<u64>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Setup(String),
}

/// Feature the load pays for; per call, for the Envoy authorizer.
const FEATURE: &str = "bench.call";
/// Credit in each grant: enough that no run empties a wallet.
const GRANT_AMOUNT: &str = "10000000.00";

/// Runs the benchmark and returns its report (see `docs/benchmarks.md`).
///
/// Long, but in the order a run goes: the options checked, the server started (or found),
/// the accounts granted, the baseline's load then creditgate's, the memory of holds, and the
/// report; each step but the report is a call into this module's files.
pub async fn run(args: BenchArgs) -> Result<Value, BenchError> {
    if args.accounts == 0 {
        return Err(BenchError::Usage("--accounts must be at least 1".into()));
    }
    if !(1..=64).contains(&args.grants) {
        return Err(BenchError::Usage(
            "--grants must be between 1 and 64".into(),
        ));
    }
    if args.concurrency == 0 || args.connections == 0 {
        return Err(BenchError::Usage(
            "--concurrency and --connections must be at least 1".into(),
        ));
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(BenchError::Usage(
            "--rate must be a number of calls a second above 0".into(),
        ));
    }
    if args.duration == 0 {
        return Err(BenchError::Usage("--duration must be above 0".into()));
    }
    let started = match &args.server {
        Some(_) => None,
        None => Some(start_server(&args).await?),
    };
    let (gate_url, admin_url, authz_url) = match &started {
        Some(s) => (
            format!("http://{}", s.server.gate_addr()),
            format!("http://{}", s.server.admin_addr()),
            s.server
                .ext_authz_addr()
                .map(|a| format!("http://{a}"))
                .unwrap_or_default(),
        ),
        None => (
            args.server.clone().unwrap_or_default(),
            args.admin_server.clone(),
            args.ext_authz_server.clone(),
        ),
    };
    let target_url = if args.scenario == Scenario::ExtAuthz {
        &authz_url
    } else {
        &gate_url
    };
    let load = Arc::new(Load {
        scenario: args.scenario,
        accounts: Accounts::new(args.accounts, args.distribution, args.zipf_s),
        concurrency: args.concurrency,
        rate: args.rate,
        warmup: Duration::from_millis(args.warmup),
        duration: Duration::from_millis(args.duration),
    });
    eprintln!(
        "creditgate bench: granting {} account(s) {} grant(s) each",
        args.accounts, args.grants
    );
    prepare(&args, &admin_url, &load.accounts).await?;
    let seconds = args.duration as f64 / 1000.0;

    let baseline = if args.baseline {
        eprintln!("creditgate bench: the baseline (a no-op service)");
        let addr = start_baseline().await?;
        let clients = clients(args.scenario, &format!("http://{addr}"), args.connections).await?;
        Some(run_load(load.clone(), clients).await.summary(seconds))
    } else {
        None
    };
    eprintln!("creditgate bench: creditgate");
    let clients = clients(args.scenario, target_url, args.connections).await?;
    let redis_spent = args
        .redis
        .clone()
        .map(|urls| redis_time::watch(urls, load.warmup, load.duration));
    let mut measured = run_load(load.clone(), clients).await.summary(seconds);
    if let Some(watching) = redis_spent
        && let Ok(Some(spent)) = watching.await
    {
        let answered = measured["answered"].as_f64().unwrap_or(0.0);
        measured["redis"] = redis_time::per_call(&spent, answered);
    }
    if let Some(started) = &started {
        // What the store took faster than the ledger did is still to be written: a rate the
        // ledger cannot keep up with counts the time it takes to catch up.
        let catch_up_s = ledger_catch_up(&started.server).await;
        let answered = measured["answered"].as_f64().unwrap_or(0.0);
        measured["ledger_catch_up_s"] = json!((catch_up_s * 1000.0).round() / 1000.0);
        measured["sustained_rpc_per_s"] = json!((answered / (seconds + catch_up_s)).round() as u64);
    }
    let memory = match args.hold_memory {
        Some(holds) => Some(
            hold_memory(
                holds,
                &gate_url,
                args.redis.as_deref().filter(|url| !url.contains(',')),
                started.is_some(),
                &load.accounts,
            )
            .await?,
        ),
        None => None,
    };

    let mut report = json!({
        "scenario": args.scenario.name(),
        "server": if started.is_some() { "in-process" } else { "external" },
        "store": if args.redis.is_some() { "redis" } else if started.is_some() { "memory" } else { "external" },
        "commit_durability": match started.as_ref().map(|s| s.durability) {
            Some(CommitDurability::Store) => json!("store"),
            Some(CommitDurability::Ledger) => json!("ledger"),
            None => Value::Null,
        },
        "accounts": args.accounts,
        "distribution": match args.distribution {
            Distribution::Uniform => "uniform".to_owned(),
            Distribution::Zipf => format!("zipf(s={})", args.zipf_s),
        },
        "grants_per_wallet": args.grants,
        "load": match args.rate {
            None => json!({"loop": "closed", "concurrency": args.concurrency, "connections": args.connections}),
            Some(rate) => json!({"loop": "open", "rate": rate, "max_in_flight": args.concurrency, "connections": args.connections}),
        },
        "duration_s": seconds,
        "warmup_s": args.warmup as f64 / 1000.0,
        "creditgate": measured,
    });
    if let Some(baseline) = baseline {
        let ratio = |key: &str| {
            let (ours, theirs) = (
                measured[key].as_f64().unwrap_or(0.0),
                baseline[key].as_f64().unwrap_or(0.0),
            );
            if theirs > 0.0 {
                json!((ours / theirs * 1000.0).round() / 1000.0)
            } else {
                Value::Null
            }
        };
        report["ratio"] = json!({"throughput": ratio("rpc_per_s"), "p99": ratio("p99_ms")});
        if measured.get("sustained_rpc_per_s").is_some() {
            let sustained = measured["sustained_rpc_per_s"].as_f64().unwrap_or(0.0)
                / baseline["rpc_per_s"].as_f64().unwrap_or(f64::INFINITY);
            report["ratio"]["sustained_throughput"] = json!((sustained * 1000.0).round() / 1000.0);
        }
        report["baseline"] = baseline;
    }
    if let Some(memory) = memory {
        report["memory"] = memory;
    }
    if let Some(started) = started {
        started.server.stop().await;
        if let Some(url) = args.redis.as_deref().filter(|url| !url.contains(',')) {
            forget(url, &namespace(&started.dir)).await;
        }
        let _ = std::fs::remove_dir_all(&started.dir);
    }
    Ok(report)
}
