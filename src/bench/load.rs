//! Generating the load: which account each iteration pays with, virtual users in a closed
//! loop or a schedule in an open one, over a few connections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::scenario::{Client, iterate};
use super::tally::Tally;
use super::{BenchError, Distribution, Scenario};
use crate::proto::gate_client::GateClient;
use crate::server::REQUEST_LEN_MAX;

/// Picks accounts: uniformly, or by a zipf distribution over their ranks.
pub(super) struct Accounts {
    pub(super) ids: Vec<String>,
    /// Cumulative weights of the ranks, for zipf.
    cumulative: Option<Vec<f64>>,
}

impl Accounts {
    pub(super) fn new(n: u64, distribution: Distribution, s: f64) -> Accounts {
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

/// The load's shape, shared by the runs against creditgate and against the baseline.
pub(super) struct Load {
    pub(super) scenario: Scenario,
    pub(super) accounts: Accounts,
    pub(super) concurrency: usize,
    pub(super) rate: Option<f64>,
    pub(super) warmup: Duration,
    pub(super) duration: Duration,
}

/// Runs the load against `clients` (one per connection); the tally of the measured part.
pub(super) async fn run_load(load: Arc<Load>, clients: Vec<Client>) -> Tally {
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

pub(super) async fn connect(url: &str) -> Result<Channel, BenchError> {
    Endpoint::from_shared(url.to_owned())
        .map_err(|e| BenchError::Usage(format!("{url}: {e}")))?
        .connect()
        .await
        .map_err(|e| BenchError::Setup(format!("cannot connect to {url}: {e}")))
}

/// `connections` clients of the service the scenario calls, each on its own connection.
pub(super) async fn clients(
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
