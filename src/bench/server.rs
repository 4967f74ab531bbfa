//! The server under test: started in this process unless `--server`, given its grants and the
//! load's price before the run, waited for until its ledger catches up, and cleaned up after.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;

use super::load::{Accounts, connect};
use super::{BenchArgs, BenchError, FEATURE, GRANT_AMOUNT, Scenario};
use crate::clock::SystemClock;
use crate::config::{CommitDurability, FileConfig, Flags, Listen, ServerConfig};
use crate::proto::{self, admin_client::AdminClient};
use crate::server::Server;

/// Gives every account its grants (and the feature its price), many at a time.
pub(super) async fn prepare(
    args: &BenchArgs,
    admin_url: &str,
    accounts: &Accounts,
) -> Result<(), BenchError> {
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

/// The Redis namespace of the run whose ledger is in `dir`.
pub(super) fn namespace(dir: &std::path::Path) -> String {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("bench");
    format!("cgb{}", &name[name.len().saturating_sub(8)..])
}

/// Deletes the keys a run left in a single Redis (not a Cluster): its namespace's.
pub(super) async fn forget(url: &str, namespace: &str) {
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
pub(super) async fn ledger_catch_up(server: &Server) -> f64 {
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
pub(super) struct Started {
    pub(super) server: Server,
    pub(super) dir: PathBuf,
    pub(super) durability: CommitDurability,
}

pub(super) async fn start_server(args: &BenchArgs) -> Result<Started, BenchError> {
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
