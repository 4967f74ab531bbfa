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

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest as AuthzRequest,
    CheckResponse as AuthzResponse, HeaderValue, HeaderValueOption, OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::google::rpc;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};

use crate::clock::SystemClock;
use crate::config::{CommitDurability, FileConfig, Flags, Listen, ServerConfig};
use crate::proto::{self, admin_client::AdminClient, gate_client::GateClient, gate_server};
use crate::server::{REQUEST_LEN_MAX, Server};

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
    /// The started server's Redis store [default: the embedded store].
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

/// Latency and outcomes of the calls of one run.
struct Tally {
    latency_us: Histogram<u64>,
    calls: u64,
    denied: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            calls: 0,
            denied: 0,
            errors: BTreeMap::new(),
        }
    }

    fn record(&mut self, (micros, outcome): &Sample) {
        self.latency_us.saturating_record(*micros);
        self.calls += 1;
        match outcome {
            Outcome::Allowed => {}
            Outcome::Denied => self.denied += 1,
            Outcome::Failed(code) => *self.errors.entry(format!("{code:?}")).or_default() += 1,
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.calls += other.calls;
        self.denied += other.denied;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }

    fn summary(&self, seconds: f64) -> Value {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        // A call that failed is no throughput.
        let answered = self.calls - self.errors.values().sum::<u64>();
        json!({
            "calls": self.calls,
            "answered": answered,
            "rpc_per_s": (answered as f64 / seconds).round() as u64,
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
            "p999_ms": ms(0.999),
            "max_ms": self.latency_us.max() as f64 / 1000.0,
            "denied": self.denied,
            "errors": self.errors.values().sum::<u64>(),
            "errors_by_code": self.errors,
        })
    }
}

enum Outcome {
    Allowed,
    Denied,
    Failed(Code),
}

/// One call: how long it took (µs, from when it was due) and how it ended.
type Sample = (u64, Outcome);

/// The sample of a call that was due at `due` and has just ended.
fn sample(due: Instant, outcome: Outcome) -> Sample {
    (
        due.elapsed().as_micros().clamp(1, 60_000_000) as u64,
        outcome,
    )
}

fn decided(decision: i32) -> Outcome {
    if decision == proto::Decision::Allowed as i32 {
        Outcome::Allowed
    } else {
        Outcome::Denied
    }
}

/// Picks accounts: uniformly, or by a zipf distribution over their ranks.
struct Accounts {
    ids: Vec<String>,
    /// Cumulative weights of the ranks, for zipf.
    cumulative: Option<Vec<f64>>,
}

impl Accounts {
    fn new(n: u64, distribution: Distribution, s: f64) -> Accounts {
        let ids = (0..n).map(|i| format!("bench-{i}")).collect();
        let cumulative = (distribution == Distribution::Zipf).then(|| {
            let mut total = 0.0;
            (1..=n)
                .map(|k| {
                    total += 1.0 / (k as f64).powf(s);
                    total
                })
                .collect()
        });
        Accounts { ids, cumulative }
    }

    fn pick(&self, rng: &mut Rng) -> &str {
        let i = match &self.cumulative {
            None => (rng.next() % self.ids.len() as u64) as usize,
            Some(cumulative) => {
                let total = cumulative[cumulative.len() - 1];
                let u = rng.unit() * total;
                cumulative
                    .partition_point(|&c| c < u)
                    .min(cumulative.len() - 1)
            }
        };
        &self.ids[i]
    }
}

/// splitmix64: each virtual user has its own, seeded by its number, so runs repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Where the load goes: the gate service, or the Envoy authorizer.
#[derive(Clone)]
enum Client {
    Gate(GateClient<Channel>),
    Authz(AuthorizationClient<Channel>),
}

/// One iteration of the scenario for `account`, each call's sample added to `samples`; the
/// first is timed from `due`.
async fn iterate(
    scenario: Scenario,
    client: &mut Client,
    account: &str,
    request_id: u64,
    due: Instant,
    samples: &mut Vec<Sample>,
) {
    match (scenario, client) {
        (Scenario::Reserve, Client::Gate(gate)) => {
            let outcome = match gate
                .reserve(hold_of(account, crate::config::HOLD_TTL_MS_MIN))
                .await
            {
                Ok(answer) => decided(answer.into_inner().decision),
                Err(status) => Outcome::Failed(status.code()),
            };
            samples.push(sample(due, outcome));
        }
        (Scenario::ReserveCommit | Scenario::ReserveRelease, Client::Gate(gate)) => {
            let reserved = gate.reserve(hold_of(account, 0)).await;
            let id = match reserved {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    samples.push(sample(due, decided(answer.decision)));
                    answer.reservation_id
                }
                Err(status) => {
                    samples.push(sample(due, Outcome::Failed(status.code())));
                    return;
                }
            };
            if id.is_empty() {
                return;
            }
            let started = Instant::now();
            let ended = if scenario == Scenario::ReserveCommit {
                gate.commit(proto::CommitRequest {
                    reservation_id: id,
                    actual: Some(proto::commit_request::Actual::Amount("0.005".into())),
                })
                .await
                .map(drop)
            } else {
                gate.release(proto::ReleaseRequest { reservation_id: id })
                    .await
                    .map(drop)
            };
            let outcome = match ended {
                Ok(()) => Outcome::Allowed,
                Err(status) => Outcome::Failed(status.code()),
            };
            samples.push(sample(started, outcome));
        }
        (Scenario::Charge, Client::Gate(gate)) => {
            let outcome = match gate
                .charge(proto::ChargeRequest {
                    account_id: account.to_owned(),
                    feature: FEATURE.into(),
                    cost: Some(proto::charge_request::Cost::Amount("0.001".into())),
                    ..Default::default()
                })
                .await
            {
                Ok(answer) => decided(answer.into_inner().decision),
                Err(status) => Outcome::Failed(status.code()),
            };
            samples.push(sample(due, outcome));
        }
        (Scenario::Check, Client::Gate(gate)) => {
            let outcome = match gate
                .check(proto::CheckRequest {
                    account_id: account.to_owned(),
                    feature: FEATURE.into(),
                    cost: Some(proto::check_request::Cost::Amount("0.01".into())),
                    ..Default::default()
                })
                .await
            {
                Ok(answer) => decided(answer.into_inner().decision),
                Err(status) => Outcome::Failed(status.code()),
            };
            samples.push(sample(due, outcome));
        }
        (Scenario::ExtAuthz, Client::Authz(authz)) => {
            let outcome = match authz.check(envoy_check(account, request_id)).await {
                Ok(answer) => match answer.into_inner().http_response {
                    Some(HttpResponse::OkResponse(_)) => Outcome::Allowed,
                    _ => Outcome::Denied,
                },
                Err(status) => Outcome::Failed(status.code()),
            };
            samples.push(sample(due, outcome));
        }
        _ => unreachable!("the client matches the scenario"),
    }
}

/// A hold of 0.01 on `account` for `ttl_ms` (0: the server's default).
fn hold_of(account: &str, ttl_ms: u64) -> proto::ReserveRequest {
    proto::ReserveRequest {
        account_id: account.to_owned(),
        feature: FEATURE.into(),
        cost: Some(proto::reserve_request::Cost::Amount("0.01".into())),
        ttl_ms,
        ..Default::default()
    }
}

/// What Envoy sends about one HTTP request.
fn envoy_check(account: &str, request_id: u64) -> AuthzRequest {
    let headers = [
        ("x-creditgate-account", account.to_owned()),
        ("x-creditgate-feature", FEATURE.to_owned()),
        ("x-request-id", format!("bench-{request_id}")),
        (":path", "/v1/chat/completions".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    AuthzRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/v1/chat/completions".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The load's shape, shared by the runs against creditgate and against the baseline.
struct Load {
    scenario: Scenario,
    accounts: Accounts,
    concurrency: usize,
    rate: Option<f64>,
    warmup: Duration,
    duration: Duration,
}

/// Runs the load against `clients` (one per connection); the tally of the measured part.
async fn run_load(load: Arc<Load>, clients: Vec<Client>) -> Tally {
    let started = Instant::now();
    let measure_from = started + load.warmup;
    let until = measure_from + load.duration;
    match load.rate {
        None => {
            let workers: Vec<_> = (0..load.concurrency)
                .map(|n| {
                    let load = load.clone();
                    let mut client = clients[n % clients.len()].clone();
                    tokio::spawn(async move {
                        let mut rng = Rng(n as u64);
                        let mut tally = Tally::new();
                        let mut samples = Vec::with_capacity(2);
                        let mut i = 0u64;
                        loop {
                            let now = Instant::now();
                            if now >= until {
                                return tally;
                            }
                            let account = load.accounts.pick(&mut rng);
                            let id = (n as u64) << 40 | i;
                            iterate(load.scenario, &mut client, account, id, now, &mut samples)
                                .await;
                            if now >= measure_from {
                                samples.iter().for_each(|s| tally.record(s));
                            }
                            samples.clear();
                            i += 1;
                        }
                    })
                })
                .collect();
            let mut tally = Tally::new();
            for worker in workers {
                tally.merge(&worker.await.expect("a worker does not panic"));
            }
            tally
        }
        Some(rate) => {
            // Iterations are due at even intervals; each is timed from when it was due.
            let interval = Duration::from_secs_f64(load.scenario.calls() as f64 / rate);
            let in_flight = Arc::new(tokio::sync::Semaphore::new(load.concurrency.max(1)));
            let tally = Arc::new(Mutex::new(Tally::new()));
            let mut rng = Rng(0);
            let mut tasks = tokio::task::JoinSet::new();
            let mut due = started;
            let mut i = 0u64;
            while due < until {
                tokio::time::sleep_until(due).await;
                let permit = in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("never closed");
                let mut client = clients[i as usize % clients.len()].clone();
                let account = load.accounts.pick(&mut rng).to_owned();
                let (load, tally) = (load.clone(), tally.clone());
                let measured = due >= measure_from;
                tasks.spawn(async move {
                    let mut samples = Vec::with_capacity(2);
                    iterate(load.scenario, &mut client, &account, i, due, &mut samples).await;
                    drop(permit);
                    if measured {
                        let mut tally = tally.lock().expect("not poisoned");
                        samples.iter().for_each(|s| tally.record(s));
                    }
                });
                due += interval;
                i += 1;
                // Reap finished calls as we go, so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
            Arc::try_unwrap(tally)
                .ok()
                .expect("every task is done")
                .into_inner()
                .expect("not poisoned")
        }
    }
}

async fn connect(url: &str) -> Result<Channel, BenchError> {
    Endpoint::from_shared(url.to_owned())
        .map_err(|e| BenchError::Usage(format!("{url}: {e}")))?
        .connect()
        .await
        .map_err(|e| BenchError::Setup(format!("cannot connect to {url}: {e}")))
}

/// `connections` clients of the service the scenario calls, each on its own connection.
async fn clients(
    scenario: Scenario,
    url: &str,
    connections: usize,
) -> Result<Vec<Client>, BenchError> {
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let channel = connect(url).await?;
        clients.push(match scenario {
            Scenario::ExtAuthz => Client::Authz(
                AuthorizationClient::new(channel).max_decoding_message_size(REQUEST_LEN_MAX),
            ),
            _ => Client::Gate(GateClient::new(channel)),
        });
    }
    Ok(clients)
}

/// Gives every account its grants (and the feature its price), many at a time.
async fn prepare(args: &BenchArgs, admin_url: &str, accounts: &Accounts) -> Result<(), BenchError> {
    let mut admin = AdminClient::new(connect(admin_url).await?);
    admin
        .set_prices(proto::SetPricesRequest {
            features: vec![proto::FeaturePrice {
                feature: FEATURE.into(),
                rule: Some(proto::feature_price::Rule::PerCall(proto::PerCallPrice {
                    price: "0.001".into(),
                })),
                ..Default::default()
            }],
        })
        .await
        .map_err(|e| BenchError::Setup(format!("setting the price: {e}")))?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ids = Arc::new(accounts.ids.clone());
    let grants = args.grants;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.clamp(1, 64) {
        let (next, ids, mut admin) = (next.clone(), ids.clone(), admin.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(account) = ids.get(i) else {
                    return Ok::<(), Status>(());
                };
                for g in 0..grants {
                    admin
                        .add_grant(proto::AddGrantRequest {
                            account_id: account.clone(),
                            grant_id: format!("{account}-{g}"),
                            amount: GRANT_AMOUNT.into(),
                            // Lower priority first: the first grant is spent first.
                            priority: g + 1,
                            ..Default::default()
                        })
                        .await?;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a set-up task does not panic")
            .map_err(|e| BenchError::Setup(format!("granting: {e}")))?;
    }
    Ok(())
}

/// Bytes Redis uses for data.
async fn redis_bytes(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Takes `holds` holds (an hour long) and reports the memory each takes in this process and
/// in Redis.
async fn hold_memory(
    holds: u64,
    gate_url: &str,
    redis: Option<&str>,
    in_process: bool,
    accounts: &Accounts,
) -> Result<Value, BenchError> {
    let gate = GateClient::new(connect(gate_url).await?);
    let redis_before = match redis {
        Some(url) => redis_bytes(url).await,
        None => None,
    };
    let heap = if in_process {
        crate::alloc::HeapCount::start()
    } else {
        None
    };
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ids = Arc::new(accounts.ids.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (next, ids, mut gate) = (next.clone(), ids.clone(), gate.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= holds {
                    return Ok::<(), Status>(());
                }
                let answer = gate
                    .reserve(hold_of(&ids[(i % ids.len() as u64) as usize], 3_600_000))
                    .await?
                    .into_inner();
                if answer.decision != proto::Decision::Allowed as i32 {
                    return Err(Status::failed_precondition(answer.message));
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a hold task does not panic")
            .map_err(|e| BenchError::Setup(format!("holding: {e}")))?;
    }
    let per_hold = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) => json!(a.saturating_sub(b) as f64 / holds as f64),
        _ => Value::Null,
    };
    let redis_after = match redis {
        Some(url) => redis_bytes(url).await,
        None => None,
    };
    Ok(json!({
        "holds": holds,
        "replica_bytes_per_hold": match heap {
            Some(heap) => json!(heap.bytes() as f64 / holds as f64),
            None => Value::Null,
        },
        "redis_bytes_per_hold": per_hold(redis_before, redis_after),
    }))
}

/// The Redis namespace of the run whose ledger is in `dir`.
fn namespace(dir: &std::path::Path) -> String {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("bench");
    format!("cgb{}", &name[name.len().saturating_sub(8)..])
}

/// Deletes the keys a run left in a single Redis (not a Cluster): its namespace's.
async fn forget(url: &str, namespace: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let mut cursor = 0u64;
    loop {
        let scanned: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{namespace}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await;
        let Ok((next, keys)) = scanned else {
            return;
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<u64> = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut connection)
                .await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// Seconds from now until the server's ledger has every record its store wrote (at most ten
/// minutes).
async fn ledger_catch_up(server: &Server) -> f64 {
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(600)
        && server
            .outbox_records()
            .await
            .is_ok_and(|records| records > 0)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    since.elapsed().as_secs_f64()
}

/// A started server, the directory its ledger is in, and when it acknowledges a commit.
struct Started {
    server: Server,
    dir: PathBuf,
    durability: CommitDurability,
}

async fn start_server(args: &BenchArgs) -> Result<Started, BenchError> {
    let dir = std::env::temp_dir().join(format!(
        "creditgate-bench-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| BenchError::Setup(format!("{}: {e}", dir.display())))?;
    let any: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let flags = Flags {
        listen: Some(any),
        admin_listen: Some(any),
        metrics_listen: Some(Listen::Off),
        ext_authz_listen: (args.scenario == Scenario::ExtAuthz).then_some(any),
        data_dir: Some(dir.clone()),
        ledger: args.ledger.clone(),
        redis: args.redis.clone(),
        commit_durability: args.commit_durability,
        ..Flags::default()
    };
    // A namespace of its own, so that nothing left in Redis by an earlier run is counted.
    let file = FileConfig {
        redis_namespace: Some(namespace(&dir)),
        ..FileConfig::default()
    };
    let config =
        ServerConfig::resolve(flags, file).map_err(|e| BenchError::Usage(e.to_string()))?;
    let durability = config.commit_durability;
    let server = Server::start(config, Arc::new(SystemClock))
        .await
        .map_err(|e| BenchError::Setup(format!("starting the server: {e}")))?;
    Ok(Started {
        server,
        dir,
        durability,
    })
}

/// A gate that answers at once with messages shaped like creditgate's: the baseline.
#[derive(Clone, Copy, Default)]
struct NoopGate;

fn noop_split() -> Vec<proto::GrantPortion> {
    vec![proto::GrantPortion {
        grant_id: "bench-0-0".into(),
        amount: "0.010000".into(),
    }]
}

#[tonic::async_trait]
impl gate_server::Gate for NoopGate {
    async fn reserve(
        &self,
        request: tonic::Request<proto::ReserveRequest>,
    ) -> Result<Response<proto::ReserveResponse>, Status> {
        let account = request.into_inner().account_id;
        Ok(Response::new(proto::ReserveResponse {
            decision: proto::Decision::Allowed as i32,
            reservation_id: format!("{account}/r{}", "0".repeat(32)),
            amount: "0.010000".into(),
            expires_at_ms: 1_800_000_000_000,
            available: "9999999.990000".into(),
            split: noop_split(),
            wallet: "default".into(),
            ..Default::default()
        }))
    }

    async fn commit(
        &self,
        request: tonic::Request<proto::CommitRequest>,
    ) -> Result<Response<proto::CommitResponse>, Status> {
        Ok(Response::new(proto::CommitResponse {
            reservation_id: request.into_inner().reservation_id,
            charged: "0.005000".into(),
            released: "0.005000".into(),
            split: noop_split(),
            entry_id: "e0000000000000000000000000000000".into(),
            available: "9999999.995000".into(),
            requested: "0.005000".into(),
            overrun: "0.000000".into(),
        }))
    }

    async fn release(
        &self,
        request: tonic::Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::ReleaseResponse>, Status> {
        Ok(Response::new(proto::ReleaseResponse {
            reservation_id: request.into_inner().reservation_id,
            released: "0.010000".into(),
            available: "10000000.000000".into(),
        }))
    }

    async fn extend(
        &self,
        _request: tonic::Request<proto::ExtendRequest>,
    ) -> Result<Response<proto::ExtendResponse>, Status> {
        Ok(Response::new(proto::ExtendResponse::default()))
    }

    async fn charge(
        &self,
        _request: tonic::Request<proto::ChargeRequest>,
    ) -> Result<Response<proto::ChargeResponse>, Status> {
        Ok(Response::new(proto::ChargeResponse {
            decision: proto::Decision::Allowed as i32,
            charged: "0.001000".into(),
            split: noop_split(),
            entry_id: "e0000000000000000000000000000000".into(),
            available: "9999999.999000".into(),
            wallet: "default".into(),
            ..Default::default()
        }))
    }

    async fn check(
        &self,
        _request: tonic::Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckResponse>, Status> {
        Ok(Response::new(proto::CheckResponse {
            decision: proto::Decision::Allowed as i32,
            amount: "0.010000".into(),
            available: "10000000.000000".into(),
            wallet: "default".into(),
            ..Default::default()
        }))
    }

    async fn get_balance(
        &self,
        _request: tonic::Request<proto::GetBalanceRequest>,
    ) -> Result<Response<proto::GetBalanceResponse>, Status> {
        Ok(Response::new(proto::GetBalanceResponse::default()))
    }

    type WatchBalanceStream = tokio_stream::Empty<Result<proto::BalanceEvent, Status>>;

    async fn watch_balance(
        &self,
        _request: tonic::Request<proto::WatchBalanceRequest>,
    ) -> Result<Response<Self::WatchBalanceStream>, Status> {
        Err(Status::unimplemented("the baseline does not stream"))
    }
}

#[tonic::async_trait]
impl Authorization for NoopGate {
    async fn check(
        &self,
        _request: tonic::Request<AuthzRequest>,
    ) -> Result<Response<AuthzResponse>, Status> {
        let header = |key: &str, value: &str| HeaderValueOption {
            header: Some(HeaderValue {
                key: key.into(),
                value: value.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let headers = vec![
            header("x-creditgate-available", "9999999.999000"),
            header("x-creditgate-charged", "0.001000"),
        ];
        Ok(Response::new(AuthzResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: headers.clone(),
                response_headers_to_add: headers,
                ..Default::default()
            })),
            ..Default::default()
        }))
    }
}

/// Serves the no-op gate and authorizer on a free loopback port, with creditgate's limits.
async fn start_baseline() -> Result<SocketAddr, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::Setup(format!("baseline: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Setup(format!("baseline: {e}")))?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(Some(
                crate::config::LimitsConfig::default().max_concurrent_streams,
            ))
            .add_service(
                gate_server::GateServer::new(NoopGate).max_decoding_message_size(REQUEST_LEN_MAX),
            )
            .add_service(
                AuthorizationServer::new(NoopGate).max_decoding_message_size(REQUEST_LEN_MAX),
            )
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    Ok(addr)
}

/// Runs the benchmark and returns its report (see `docs/benchmarks.md`).
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
    let mut measured = run_load(load.clone(), clients).await.summary(seconds);
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

/// The report as a table for people.
pub fn table(report: &Value) -> String {
    let mut out = format!(
        "scenario {} on {} store ({} server), {} account(s) {}, {} grant(s) per wallet\n",
        report["scenario"].as_str().unwrap_or_default(),
        report["store"].as_str().unwrap_or_default(),
        report["server"].as_str().unwrap_or_default(),
        report["accounts"],
        report["distribution"].as_str().unwrap_or_default(),
        report["grants_per_wallet"],
    );
    if let Some(durability) = report["commit_durability"].as_str() {
        out += &format!("commits and charges acknowledged once in the {durability}\n");
    }
    let load = &report["load"];
    out += &match load["loop"].as_str() {
        Some("open") => format!(
            "open loop at {} calls/s (at most {} in flight) over {} connection(s)",
            load["rate"], load["max_in_flight"], load["connections"]
        ),
        _ => format!(
            "closed loop: {} calls in flight over {} connection(s)",
            load["concurrency"], load["connections"]
        ),
    };
    out += &format!(
        ", {} s measured after {} s of warm-up\n\n",
        report["duration_s"], report["warmup_s"]
    );
    out += &format!(
        "{:<11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}\n",
        "", "RPC/s", "p50 ms", "p90 ms", "p99 ms", "p999 ms", "max ms", "errors", "denied"
    );
    for name in ["creditgate", "baseline"] {
        let row = &report[name];
        if row.is_null() {
            continue;
        }
        let ms = |key: &str| format!("{:.3}", row[key].as_f64().unwrap_or(0.0));
        out += &format!(
            "{:<11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}\n",
            name,
            row["rpc_per_s"].to_string(),
            ms("p50_ms"),
            ms("p90_ms"),
            ms("p99_ms"),
            ms("p999_ms"),
            ms("max_ms"),
            row["errors"].to_string(),
            row["denied"].to_string(),
        );
    }
    if let Some(catch_up) = report["creditgate"]["ledger_catch_up_s"].as_f64() {
        out += &format!(
            "\nthe ledger had every write {catch_up:.1} s after the load stopped: {} RPC/s sustained\n",
            report["creditgate"]["sustained_rpc_per_s"]
        );
    }
    if let Some(ratio) = report.get("ratio") {
        out += &format!(
            "\ncreditgate / baseline: throughput {}, p99 {}\n",
            ratio["throughput"], ratio["p99"]
        );
    }
    if let Some(memory) = report.get("memory") {
        let bytes = |key: &str| match memory[key].as_f64() {
            Some(b) => format!("{b:.0} bytes"),
            None => "not measured".to_owned(),
        };
        out += &format!(
            "\nmemory per live hold ({} holds): replica {}, Redis {}\n",
            memory["holds"],
            bytes("replica_bytes_per_hold"),
            bytes("redis_bytes_per_hold")
        );
    }
    out
}
