//! The README walk-through with the real `creditgate` binary: a server process, the client
//! subcommands with `--json`, `kill -9`, and a restart on the same data directory.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use serde_json::Value;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_creditgate");

struct Serve {
    child: Child,
    gate: String,
    admin: String,
}

impl Serve {
    fn start(data_dir: &Path, gate_port: u16, admin_port: u16) -> Serve {
        Serve::start_with(data_dir, gate_port, admin_port, &[])
    }

    fn start_with(data_dir: &Path, gate_port: u16, admin_port: u16, extra: &[&str]) -> Serve {
        let child = Command::new(BIN)
            .args(["serve", "--metrics-listen", "off"])
            .args(extra)
            .arg("--listen")
            .arg(format!("127.0.0.1:{gate_port}"))
            .arg("--admin-listen")
            .arg(format!("127.0.0.1:{admin_port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("creditgate serve starts");
        let serve = Serve {
            child,
            gate: format!("http://127.0.0.1:{gate_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", gate_port)).is_err()
        {
            assert!(Instant::now() < deadline, "server did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        serve
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .args([
                "--server",
                &self.gate,
                "--admin-server",
                &self.admin,
                "--json",
            ])
            .output()
            .expect("creditgate client runs")
    }

    /// Runs a client subcommand, checks its exit status, and parses its JSON.
    fn json(&self, args: &[&str], status: i32) -> Value {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(status),
            "{args:?}: stderr {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("one JSON object")
    }

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `creditgate` commands of the README's "Five credit systems" examples, in order, each
/// as its arguments (continuation lines joined; the examples use no quoting).
fn readme_credit_systems() -> Vec<Vec<String>> {
    let readme = include_str!("../README.md");
    let start = readme
        .find("### Five credit systems, configured")
        .expect("the README has the section");
    let section = &readme[start..];
    let section = &section[..section.find("\n## ").expect("a section follows")];
    let mut commands = Vec::new();
    for block in section.split("```sh\n").skip(1) {
        let block = &block[..block.find("```").expect("the block ends")];
        for command in block.replace("\\\n", " ").lines() {
            let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
            assert_eq!(words[0], "creditgate", "{command}");
            commands.push(words[1..].to_vec());
        }
    }
    commands
}

#[test]
fn the_readme_credit_systems_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), free_port(), free_port());
    let commands = readme_credit_systems();
    assert!(commands.len() >= 20, "{commands:?}");
    for command in &commands {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        serve.json(&args, 0);
    }

    // The trial pays for agent minutes first, and never for the router's models.
    let minutes = serve.json(
        &[
            "charge",
            "--account",
            "dev1",
            "--feature",
            "agent.minutes",
            "--units",
            "4",
        ],
        0,
    );
    assert_eq!(minutes["split"][0]["grant_id"], "trial");
    let balance = serve.json(&["balance", "--account", "dev1"], 0);
    assert_eq!(balance["wallets"][0]["available"], "20.80");
    // The plan allowance pays before the pack, and resets monthly.
    let balance = serve.json(&["balance", "--account", "team1"], 0);
    let grants = &balance["wallets"][0]["grants"];
    assert_eq!(grants[0]["grant_id"], "pro-plan");
    assert_eq!(grants[0]["period"]["every"], "month");
    // Flex up to the billing threshold, after the allowance and the bundle.
    let balance = serve.json(&["balance", "--account", "ws1"], 0);
    assert_eq!(balance["wallets"][0]["available"], "10750.00");
    assert_eq!(balance["wallets"][0]["flex"]["cap"], "250.00");
    // Build and cloud are separate wallets.
    let balance = serve.json(&["balance", "--account", "app1"], 0);
    let wallets: Vec<&str> = balance["wallets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["wallet"].as_str().unwrap())
        .collect();
    assert_eq!(wallets, ["build", "cloud", "default"]);
    // The task's cost.
    let usage = serve.json(&["usage", "--account", "u1", "--label", "task=run-42"], 0);
    assert_eq!(usage["total"], "8.00");
}

#[test]
fn watch_prints_one_json_event_a_line() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), free_port(), free_port());
    serve.json(
        &[
            "grant",
            "--account",
            "acme",
            "--grant-id",
            "g1",
            "--amount",
            "1.00",
        ],
        0,
    );
    let mut watch = Command::new(BIN)
        .args([
            "watch",
            "--account",
            "acme",
            "--json",
            "--server",
            &serve.gate,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("creditgate watch starts");
    let (sender, lines) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let next = || -> Value {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("watch prints an event in time");
        serde_json::from_str(&line).unwrap()
    };
    let snapshot = next();
    assert_eq!(snapshot["event"], "SNAPSHOT");
    assert_eq!(snapshot["wallets"][0]["available"], "1.00");
    serve.json(
        &[
            "charge",
            "--account",
            "acme",
            "--feature",
            "chat",
            "--amount",
            "1.00",
        ],
        0,
    );
    let depleted = next();
    assert_eq!(
        (&depleted["event"], &depleted["wallet"]),
        (&Value::from("DEPLETED"), &Value::from("default"))
    );
    watch.kill().unwrap();
    watch.wait().unwrap();
}

#[test]
fn the_readme_walk_through_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (gate_port, admin_port) = (free_port(), free_port());
    let serve = Serve::start(dir.path(), gate_port, admin_port);

    let grant = serve.json(&["grant", "--account", "acme", "--amount", "10.00"], 0);
    assert_eq!(grant["available"], "10.00");

    let hold = serve.json(
        &[
            "reserve",
            "--account",
            "acme",
            "--feature",
            "chat",
            "--amount",
            "3.00",
            "--ttl",
            "5m",
        ],
        0,
    );
    assert_eq!(hold["decision"], "ALLOWED");
    assert_eq!(hold["available"], "7.00");
    let id = hold["reservation_id"].as_str().unwrap().to_owned();

    let commit = serve.json(&["commit", &id, "--amount", "2.50"], 0);
    assert_eq!(commit["charged"], "2.50");
    assert_eq!(commit["released"], "0.50");

    let balance = serve.json(&["balance", "--account", "acme"], 0);
    assert_eq!(balance["wallets"][0]["available"], "7.50");

    let usage = serve.json(&["usage", "--account", "acme", "--by", "feature"], 0);
    assert_eq!(usage["total"], "2.50");
    assert_eq!(usage["groups"][0]["key"], "chat");
    // Prices: a model's token prices join the feature's others; a flat price per call.
    serve.json(&["grant", "--account", "beta", "--amount", "10.00"], 0);
    for (model, input, output) in [("m1", "1.00", "2.00"), ("m2", "3.00", "4.00")] {
        serve.json(
            &[
                "price",
                "set",
                "--feature",
                "llm",
                "--model",
                model,
                "--input-per-1m",
                input,
                "--output-per-1m",
                output,
            ],
            0,
        );
    }
    serve.json(&["price", "set", "--feature", "image", "--flat", "0.04"], 0);
    let catalog = serve.json(&["price", "list"], 0);
    let llm = &catalog["features"][1];
    assert_eq!(llm["feature"], "llm");
    assert_eq!(
        llm["rule"]["per_million_tokens"]["models"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let images = serve.json(
        &[
            "charge",
            "--account",
            "beta",
            "--feature",
            "image",
            "--units",
            "3",
        ],
        0,
    );
    assert_eq!(images["charged"], "0.12");
    let tokens = serve.json(
        &[
            "charge",
            "--account",
            "beta",
            "--feature",
            "llm",
            "--model",
            "m2",
            "--input-tokens",
            "1000",
            "--output-tokens",
            "500",
        ],
        0,
    );
    assert_eq!(tokens["charged"], "0.005", "1000 × 3.00/1M + 500 × 4.00/1M");
    serve.json(
        &[
            "price",
            "set",
            "--feature",
            "llm",
            "--model",
            "m3",
            "--input-per-1m",
            "2.00",
            "--output-per-1m",
            "8.00",
            "--cached-input-per-1m",
            "0.50",
        ],
        0,
    );
    let cached = serve.json(
        &[
            "charge",
            "--account",
            "beta",
            "--feature",
            "llm",
            "--model",
            "m3",
            "--input-tokens",
            "1000",
            "--cached-input-tokens",
            "2000",
        ],
        0,
    );
    assert_eq!(
        cached["charged"], "0.003",
        "1000 × 2.00/1M + 2000 × 0.50/1M"
    );
    let partial = serve.json(
        &[
            "reserve",
            "--account",
            "beta",
            "--feature",
            "chat",
            "--amount",
            "100",
            "--partial-min",
            "1",
        ],
        0,
    );
    assert_eq!(partial["amount"], "9.872", "what is left of beta's 10.00");

    let reconcile = serve.json(&["reconcile", "--account", "acme"], 0);
    assert_eq!(reconcile["accounts"][0]["outcome"], "COMPARED");
    assert_eq!(reconcile["accounts"][0]["wallets"][0]["drift"], "0.00");

    let denied = serve.json(
        &[
            "reserve",
            "--account",
            "acme",
            "--feature",
            "chat",
            "--amount",
            "8.00",
        ],
        3,
    );
    assert_eq!(denied["decision"], "DENIED");
    assert_eq!(denied["reason"], "INSUFFICIENT_CREDITS");

    let failed = serve.run(&[
        "reserve",
        "--account",
        "acme",
        "--feature",
        "chat",
        "--amount",
        "1e3",
    ]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("amount"));

    // An acknowledged commit is in the ledger file: SIGKILL loses nothing.
    serve.kill_9();
    let serve = Serve::start(dir.path(), gate_port, admin_port);
    let balance = serve.json(&["balance", "--account", "acme"], 0);
    assert_eq!(balance["wallets"][0]["available"], "7.50");
    assert_eq!(balance["wallets"][0]["spent"], "2.50");
    let again = serve.json(&["commit", &id, "--amount", "2.50"], 0);
    assert_eq!(again, commit, "a retried commit returns the first answer");
}

/// Charges in flight from many tasks when the server is killed: every acknowledged charge is
/// in the ledger after the restart, and retrying every attempted key charges each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_charges_survive_kill_9_and_retries_charge_once() {
    use creditgate::proto::{self, gate_client::GateClient};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let (gate_port, admin_port) = (free_port(), free_port());
    let serve = Serve::start(dir.path(), gate_port, admin_port);
    serve.json(&["grant", "--account", "acme", "--amount", "1000.00"], 0);

    let charge = |key: String| proto::ChargeRequest {
        account_id: "acme".into(),
        feature: "chat".into(),
        cost: Some(proto::charge_request::Cost::Amount("0.01".into())),
        idempotency_key: key,
        ..Default::default()
    };
    let client = GateClient::connect(serve.gate.clone()).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (mut client, stop) = (client.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut attempted, mut acknowledged) = (Vec::new(), 0);
            for n in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("t{task}-{n}");
                attempted.push(key.clone());
                match client.charge(charge(key)).await {
                    Ok(r) if r.get_ref().decision == proto::Decision::Allowed as i32 => {
                        acknowledged += 1
                    }
                    Ok(_) => panic!("denied with credit left"),
                    Err(_) => break,
                }
            }
            (attempted, acknowledged)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    serve.kill_9();
    stop.store(true, Ordering::Relaxed);
    let (mut attempted, mut acknowledged) = (Vec::new(), 0);
    for task in tasks {
        let (keys, acked) = task.await.unwrap();
        attempted.extend(keys);
        acknowledged += acked;
    }
    assert!(
        acknowledged > 0,
        "some charges were acknowledged before the kill"
    );
    eprintln!(
        "{acknowledged} charges acknowledged, {} attempted before SIGKILL",
        attempted.len()
    );

    let serve = Serve::start(dir.path(), gate_port, admin_port);
    let spent_minor = |balance: &Value| {
        let text = balance["wallets"][0]["spent"].as_str().unwrap();
        let minor = creditgate::domain::Amount::parse(text).unwrap().to_minor();
        (minor / 10_000) as usize
    };
    let after_crash = spent_minor(&serve.json(&["balance", "--account", "acme"], 0));
    assert!(
        after_crash >= acknowledged,
        "{acknowledged} charges were acknowledged but only {after_crash} are in the ledger"
    );
    let mut client = GateClient::connect(serve.gate.clone()).await.unwrap();
    for key in &attempted {
        let r = client
            .charge(charge(key.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.decision, proto::Decision::Allowed as i32);
    }
    let after_retries = spent_minor(&serve.json(&["balance", "--account", "acme"], 0));
    assert_eq!(
        after_retries,
        attempted.len(),
        "each attempted key charged exactly once"
    );
}

/// Commits in flight on a PostgreSQL ledger when the server is killed: every commit that
/// returned OK is in the ledger exactly once after the restart, and the ledger explains the
/// balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_commits_on_postgres_survive_kill_9_exactly_once() {
    use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
    use sqlx::Connection;
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let database = common::PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (gate_port, admin_port) = (free_port(), free_port());
    let migrated = Command::new(BIN)
        .args(["migrate", "--ledger", &database.url])
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    assert!(String::from_utf8_lossy(&migrated.stdout).contains("up to date"));
    let ledger = ["--ledger", database.url.as_str(), "--no-migrate"];
    let serve = Serve::start_with(dir.path(), gate_port, admin_port, &ledger);
    serve.json(&["grant", "--account", "acme", "--amount", "1000.00"], 0);

    let client = GateClient::connect(serve.gate.clone()).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (mut client, stop) = (client.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let reserve = proto::ReserveRequest {
                    account_id: "acme".into(),
                    feature: "agent.minutes".into(),
                    cost: Some(proto::reserve_request::Cost::Amount("0.02".into())),
                    ..Default::default()
                };
                let Ok(hold) = client.reserve(reserve).await else {
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
    tokio::time::sleep(Duration::from_millis(700)).await;
    serve.kill_9();
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    assert!(
        !acknowledged.is_empty(),
        "some commits were acknowledged before the kill"
    );
    eprintln!("{} commits acknowledged before SIGKILL", acknowledged.len());

    let serve = Serve::start_with(dir.path(), gate_port, admin_port, &ledger);
    let mut db = sqlx::postgres::PgConnection::connect(&database.url)
        .await
        .unwrap();
    let in_ledger: Vec<(String,)> =
        sqlx::query_as("SELECT entry_id FROM entries WHERE kind = 'commit'")
            .fetch_all(&mut db)
            .await
            .unwrap();
    db.close().await.unwrap();
    let in_ledger: HashSet<String> = in_ledger.into_iter().map(|(id,)| id).collect();
    for id in &acknowledged {
        assert!(
            in_ledger.contains(id),
            "acknowledged {id} is missing from the ledger"
        );
    }
    let spent = serve.json(&["balance", "--account", "acme"], 0)["wallets"][0]["spent"]
        .as_str()
        .unwrap()
        .to_owned();
    let spent_minor = creditgate::domain::Amount::parse(&spent)
        .unwrap()
        .to_minor();
    assert_eq!(
        spent_minor,
        in_ledger.len() as i64 * 10_000,
        "the balance is what the ledger explains: one 0.01 per commit entry"
    );
    let mut admin = AdminClient::connect(serve.admin.clone()).await.unwrap();
    let report = admin
        .reconcile(proto::ReconcileRequest {
            account_id: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(report.accounts[0].wallets[0].drift, "0.00");
    drop(serve);
    database.drop_database().await;
}

/// SIGTERM while calls are coming in: the server stops taking new ones, answers every call it
/// took, writes everything it acknowledged to the ledger, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_accepted_call_and_flushes_the_outbox() {
    use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let (gate_port, admin_port) = (free_port(), free_port());
    let mut serve = Serve::start(dir.path(), gate_port, admin_port);
    serve.json(
        &[
            "grant",
            "--account",
            "acme",
            "--grant-id",
            "g1",
            "--amount",
            "1000.00",
        ],
        0,
    );
    let gate = GateClient::connect(serve.gate.clone()).await.unwrap();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(Mutex::new(Vec::<(String, tonic::Status)>::new()));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (mut gate, acknowledged, failures) =
                (gate.clone(), acknowledged.clone(), failures.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("w{w}-{i}");
                    let mut request = common::charge_amount("acme", "chat", "0.01");
                    request.idempotency_key = key.clone();
                    match gate.charge(request).await {
                        Ok(answer) => {
                            let answer = answer.into_inner();
                            assert_eq!(answer.decision(), proto::Decision::Allowed);
                            acknowledged.lock().unwrap().push(answer.entry_id);
                        }
                        Err(status) => {
                            failures.lock().unwrap().push((key, status));
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    // Stopped well before the ledger listing's 1000 entries.
    tokio::time::sleep(Duration::from_millis(250)).await;
    // SAFETY: kill only sends a signal to the server process this test started.
    unsafe {
        libc::kill(serve.child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = serve.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0), "a clean exit");
    for worker in workers {
        worker.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 10,
        "calls were answered: {}",
        acknowledged.len()
    );
    // A call the server did not take fails on the connection (refused, cancelled, or sent
    // after the server's GOAWAY), never with an answer other than UNAVAILABLE; either way it
    // is safe to retry with its key, and below it is shown that nothing was charged for it.
    let failures = failures.lock().unwrap().clone();
    for (_, status) in &failures {
        let on_the_connection = std::error::Error::source(status).is_some();
        assert!(
            on_the_connection || status.code() == tonic::Code::Unavailable,
            "{status:?}"
        );
    }

    // Everything acknowledged is in the ledger, and nothing else was charged.
    let serve = Serve::start(dir.path(), gate_port, admin_port);
    let mut admin = AdminClient::connect(serve.admin.clone()).await.unwrap();
    let entries = admin
        .list_entries(proto::ListEntriesRequest {
            account_id: "acme".into(),
            limit: 1_000,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let ids: std::collections::HashSet<&str> =
        entries.iter().map(|e| e.entry_id.as_str()).collect();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !ids.contains(id.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the ledger: {missing:?}"
    );
    assert_eq!(
        entries.len(),
        acknowledged.len() + 1,
        "the grant and the answered charges"
    );
    for (key, _) in &failures {
        assert!(
            entries.iter().all(|e| &e.idempotency_key != key),
            "{key} was charged but not answered"
        );
    }
    println!(
        "{} calls answered before SIGTERM took effect, {} refused",
        acknowledged.len(),
        failures.len()
    );
}

/// `--log-format json`: one JSON object a line, each line of a call naming its request id.
#[tokio::test]
async fn json_logs_name_the_request_id_of_each_call() {
    use creditgate::proto::{self, gate_client::GateClient};

    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let gate_port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--metrics-listen",
            "off",
            "--log-format",
            "json",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{gate_port}"))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "creditgate=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", gate_port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut gate = GateClient::connect(format!("http://127.0.0.1:{gate_port}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(proto::GetBalanceRequest {
        account_id: "nobody".into(),
        wallet: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "req-42".parse().unwrap());
    let _ = gate.get_balance(request).await;
    drop(gate);
    // SAFETY: kill only sends a signal to the server this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    // Waited for on a thread of its own, so that the client's connection can close meanwhile.
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0));

    let logs = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON: {line}")))
        .collect();
    assert!(lines.len() > 2, "{logs}");
    let answered = lines
        .iter()
        .find(|l| l["span"]["request_id"] == "req-42")
        .unwrap_or_else(|| panic!("a line of the call in\n{logs}"));
    assert_eq!(answered["span"]["rpc"], "GetBalance");
}

#[test]
fn a_bad_config_stops_serve_with_a_message_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |config: &str, extra: &[&str]| {
        let path = dir.path().join("creditgate.toml");
        std::fs::write(&path, config).unwrap();
        Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra)
            .env_remove("CREDITGATE_CONFIG")
            .output()
            .unwrap()
    };
    for (config, named) in [
        ("lisen = \"127.0.0.1:1\"\n", "lisen"),
        ("[limits]\nhold_ttl_ms_max = 5\n", "limits.hold_ttl_ms_max"),
        (
            "[[callers]]\nname = \"gw\"\nsan = \"gw.example\"\naccounts = [\"*\"]\n",
            "callers[0].san needs mutual TLS",
        ),
    ] {
        for extra in [&["--check-config"][..], &[]] {
            let done = serve(config, extra);
            let stderr = String::from_utf8_lossy(&done.stderr);
            assert_eq!(done.status.code(), Some(1), "{config} {extra:?}: {stderr}");
            assert!(stderr.contains(named), "{config}: {stderr}");
        }
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing was opened or created"
    );
    let good = format!(
        "[[callers]]\nname = \"gw\"\ntoken_sha256 = \"{}\"\naccounts = [\"acme:*\"]\n",
        "0".repeat(64)
    );
    let done = serve(&good, &["--check-config"]);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        stdout.starts_with("config ok") && stdout.contains("callers checked"),
        "{stdout}"
    );
}
