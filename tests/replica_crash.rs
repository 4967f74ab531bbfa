//! `kill -9` of one of two replicas under load: every commit that returned OK reaches the ledger
//! exactly once (the survivor takes over the dead one's outbox records), and the dead one's holds
//! expire on time.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::{PgDatabase, free_port};
use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
use sqlx::Connection;

const BIN: &str = env!("CARGO_BIN_EXE_creditgate");

struct Replica {
    child: Child,
    gate: String,
    admin: String,
}

impl Replica {
    fn start(dir: &Path, redis: &RedisServer, ledger: &str) -> Replica {
        let config = dir.join("creditgate.toml");
        std::fs::write(
            &config,
            "[limits]\noutbox_claim_idle_ms = 500\nsweep_interval_ms = 100\nsync_interval_ms = 20\n",
        )
        .unwrap();
        let (gate_port, admin_port) = (free_port(), free_port());
        let child = Command::new(BIN)
            .args(["serve", "--metrics-listen", "off"])
            .args(["--listen", &format!("127.0.0.1:{gate_port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .arg("--data-dir")
            .arg(dir)
            .arg("--config")
            .arg(&config)
            .args(["--redis", &redis.url(), "--ledger", ledger, "--no-migrate"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", gate_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_err()
        {
            assert!(Instant::now() < deadline, "replica did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Replica {
            child,
            gate: format!("http://127.0.0.1:{gate_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reserve(amount: &str, ttl_ms: u64) -> proto::ReserveRequest {
    proto::ReserveRequest {
        account_id: "acme".into(),
        feature: "agent.minutes".into(),
        cost: Some(proto::reserve_request::Cost::Amount(amount.into())),
        ttl_ms,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_replicas_loses_no_acknowledged_commit() {
    let redis = RedisServer::start();
    let database = PgDatabase::create().await;
    let migrated = Command::new(BIN)
        .args(["migrate", "--ledger", &database.url])
        .output()
        .unwrap();
    assert!(migrated.status.success());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut doomed = Replica::start(dir_a.path(), &redis, &database.url);
    let survivor = Replica::start(dir_b.path(), &redis, &database.url);

    let mut admin = AdminClient::connect(survivor.admin.clone()).await.unwrap();
    admin
        .add_grant(proto::AddGrantRequest {
            account_id: "acme".into(),
            grant_id: "g1".into(),
            amount: "1000.00".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Holds the doomed replica takes and never ends: they must still expire on time.
    let mut doomed_gate = GateClient::connect(doomed.gate.clone()).await.unwrap();
    for _ in 0..5 {
        let hold = doomed_gate.reserve(reserve("1.00", 2_000)).await.unwrap();
        assert_eq!(hold.into_inner().decision, proto::Decision::Allowed as i32);
    }
    let orphans_expire_at = Instant::now() + Duration::from_millis(2_000);

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for url in [doomed.gate.clone(), survivor.gate.clone()] {
        let client = GateClient::connect(url).await.unwrap();
        for _ in 0..4 {
            let (mut client, stop) = (client.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(hold) = client.reserve(reserve("0.02", 2_000)).await else {
                        break;
                    };
                    let id = hold.into_inner().reservation_id;
                    let commit = proto::CommitRequest {
                        reservation_id: id.clone(),
                        actual: Some(proto::commit_request::Actual::Amount("0.01".into())),
                    };
                    match client.commit(commit).await {
                        Ok(_) => acknowledged.push(format!("commit/{id}")),
                        Err(_) => break,
                    }
                }
                acknowledged
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(!acknowledged.is_empty());
    eprintln!(
        "{} commits acknowledged around the kill",
        acknowledged.len()
    );

    // The dead replica's holds expire on time, released by the survivor's sweep.
    let mut gate = GateClient::connect(survivor.gate.clone()).await.unwrap();
    let balance = |gate: &mut GateClient<tonic::transport::Channel>| {
        let mut gate = gate.clone();
        async move {
            gate.get_balance(proto::GetBalanceRequest {
                account_id: "acme".into(),
                wallet: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .wallets
            .remove(0)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let wallet = balance(&mut gate).await;
        if wallet.held == "0.00" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead replica's holds never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        Instant::now() >= orphans_expire_at,
        "holds are not released before their expiry"
    );

    // Every acknowledged commit is in the ledger, once; the survivor carried what the dead
    // replica left in the outbox, so the ledger explains the balance.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut db = sqlx::postgres::PgConnection::connect(&database.url)
            .await
            .unwrap();
        let commits: Vec<(String,)> =
            sqlx::query_as("SELECT entry_id FROM entries WHERE kind = 'commit'")
                .fetch_all(&mut db)
                .await
                .unwrap();
        db.close().await.unwrap();
        let in_ledger: HashSet<String> = commits.into_iter().map(|(id,)| id).collect();
        for id in &acknowledged {
            assert!(
                in_ledger.contains(id),
                "acknowledged {id} is not in the ledger"
            );
        }
        let wallet = balance(&mut gate).await;
        let spent = creditgate::domain::Amount::parse(&wallet.spent)
            .unwrap()
            .to_minor();
        if spent == in_ledger.len() as i64 * 10_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ledger never caught up: {} commits for {} spent",
            in_ledger.len(),
            wallet.spent
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(survivor);
    database.drop_database().await;
}
