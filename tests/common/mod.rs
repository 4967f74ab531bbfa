//! Helpers shared by the end-to-end tests: a real server on free loopback ports, with its own
//! data directory, and gRPC clients connected to it.

#![allow(dead_code)]

pub mod certs;
pub mod proxy;
pub mod redis;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use creditgate::clock::{Clock, ManualClock, SystemClock};
use creditgate::config::ServerConfig;
use creditgate::proto::admin_client::AdminClient;
use creditgate::proto::gate_client::GateClient;
use creditgate::proto::{self, reserve_request};
use creditgate::server::Server;
use tonic::transport::Channel;

pub struct TestServer {
    pub server: Server,
    pub gate: GateClient<Channel>,
    pub admin: AdminClient<Channel>,
}

/// Settings for tests: free ports, short sweep interval.
pub fn config(data_dir: &Path) -> ServerConfig {
    let mut config = ServerConfig::for_tests(data_dir.to_owned());
    config.limits.sweep_interval_ms = 20;
    config.limits.sync_interval_ms = 10;
    config
}

pub async fn start(data_dir: &Path) -> TestServer {
    start_with(config(data_dir), Arc::new(SystemClock)).await
}

/// Which balance store a conformance scenario runs on.
pub enum Backend {
    Memory,
    Redis(redis::RedisServer),
    /// The three-node Redis Cluster `./scripts/test` starts, under a namespace of the test's own.
    Cluster {
        namespace: String,
    },
}

/// The nodes of the test Redis Cluster.
pub fn cluster_urls() -> String {
    std::env::var("REDIS_CLUSTER_URLS")
        .expect("REDIS_CLUSTER_URLS names the test Redis Cluster: run ./scripts/test")
}

impl Backend {
    pub fn cluster() -> Backend {
        Backend::Cluster {
            namespace: format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        }
    }

    pub fn config(&self, data_dir: &Path) -> ServerConfig {
        let mut config = config(data_dir);
        match self {
            Backend::Memory => {}
            Backend::Redis(server) => config.redis = Some(server.url()),
            Backend::Cluster { namespace } => {
                config.redis = Some(cluster_urls());
                config.redis_namespace = namespace.clone();
            }
        }
        config
    }
}

/// A server on `backend`, with its ledger in `data_dir`.
pub async fn start_on(backend: &Backend, data_dir: &Path) -> TestServer {
    start_with(backend.config(data_dir), Arc::new(SystemClock)).await
}

/// Runs each scenario (an `async fn(Backend)`) on the in-process store, on a Redis of its own
/// and on the test Redis Cluster, as `scenario::memory`, `scenario::redis` and
/// `scenario::cluster`.
#[macro_export]
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test]
            async fn memory() {
                super::$scenario($crate::common::Backend::Memory).await;
            }

            #[tokio::test]
            async fn redis() {
                let server = $crate::common::redis::RedisServer::start();
                super::$scenario($crate::common::Backend::Redis(server)).await;
            }

            #[tokio::test]
            async fn cluster() {
                super::$scenario($crate::common::Backend::cluster()).await;
            }
        }
    )*};
}

/// A server whose store clock moves only when the test says.
pub async fn start_manual(data_dir: &Path) -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(SystemClock.now_ms()));
    let server = start_with(config(data_dir), clock.clone()).await;
    (server, clock)
}

pub async fn start_with(config: ServerConfig, clock: Arc<dyn Clock>) -> TestServer {
    let server = Server::start(config, clock).await.expect("server starts");
    let gate = GateClient::connect(format!("http://{}", server.gate_addr()))
        .await
        .expect("gate client connects");
    let admin = AdminClient::connect(format!("http://{}", server.admin_addr()))
        .await
        .expect("admin client connects");
    TestServer {
        server,
        gate,
        admin,
    }
}

pub async fn grant(admin: &mut AdminClient<Channel>, account: &str, grant_id: &str, amount: &str) {
    admin
        .add_grant(proto::AddGrantRequest {
            account_id: account.into(),
            grant_id: grant_id.into(),
            amount: amount.into(),
            ..Default::default()
        })
        .await
        .expect("grant succeeds");
}

pub fn reserve_amount(account: &str, feature: &str, amount: &str) -> proto::ReserveRequest {
    proto::ReserveRequest {
        account_id: account.into(),
        feature: feature.into(),
        cost: Some(reserve_request::Cost::Amount(amount.into())),
        ..Default::default()
    }
}

pub fn charge_amount(account: &str, feature: &str, amount: &str) -> proto::ChargeRequest {
    proto::ChargeRequest {
        account_id: account.into(),
        feature: feature.into(),
        cost: Some(proto::charge_request::Cost::Amount(amount.into())),
        ..Default::default()
    }
}

pub fn commit_amount(id: &str, amount: &str) -> proto::CommitRequest {
    proto::CommitRequest {
        reservation_id: id.into(),
        actual: Some(proto::commit_request::Actual::Amount(amount.into())),
    }
}

/// The wallets of an account by name.
pub async fn balance(
    gate: &mut GateClient<Channel>,
    account: &str,
) -> HashMap<String, proto::WalletBalance> {
    gate.get_balance(proto::GetBalanceRequest {
        account_id: account.into(),
        wallet: String::new(),
    })
    .await
    .expect("balance succeeds")
    .into_inner()
    .wallets
    .into_iter()
    .map(|w| (w.wallet.clone(), w))
    .collect()
}

pub async fn default_wallet(gate: &mut GateClient<Channel>, account: &str) -> proto::WalletBalance {
    balance(gate, account)
        .await
        .remove("default")
        .expect("default wallet exists")
}

pub async fn entries(admin: &mut AdminClient<Channel>, account: &str) -> Vec<proto::LedgerEntry> {
    admin
        .list_entries(proto::ListEntriesRequest {
            account_id: account.into(),
            limit: 1_000,
        })
        .await
        .expect("listing succeeds")
        .into_inner()
        .entries
}

/// Polls `probe` until it returns true, failing after `timeout`. For conditions that a
/// background task makes true (the sweeper), so the test does not depend on its timing.
pub async fn eventually<F, Fut>(timeout: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !probe().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub const ALLOWED: i32 = proto::Decision::Allowed as i32;
pub const DENIED: i32 = proto::Decision::Denied as i32;

/// A PostgreSQL database of its own for one test, created on the server at `DATABASE_URL`
/// (default: the local server as `postgres`). Call [`PgDatabase::drop_database`] at the end.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

pub fn postgres_admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::Connection;
        let admin_url = postgres_admin_url();
        let name = format!("creditgate_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::postgres::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL is reachable at DATABASE_URL (./scripts/test starts it)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("test database is created");
        admin.close().await.ok();
        let base = admin_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .expect("DATABASE_URL names a database");
        PgDatabase {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }

    pub async fn drop_database(self) {
        use sqlx::Connection;
        let mut admin = sqlx::postgres::PgConnection::connect(&self.admin_url)
            .await
            .expect("PostgreSQL is reachable");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .expect("test database is dropped");
        admin.close().await.ok();
    }
}

/// The SHA-256 of a bearer token in hex, as a caller policy holds it.
pub fn token_sha256(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A loopback port nothing listens on just now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What Prometheus reads from `/metrics` at `addr`: an HTTP/1.0 GET, read until the server
/// closes or goes quiet.
pub fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    write!(socket, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut bytes = Vec::new();
    let _ = socket.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}
