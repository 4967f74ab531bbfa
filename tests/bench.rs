//! `creditgate bench`, the real binary: every scenario runs, its report has the fields
//! docs/benchmarks.md reads, and the load it puts on a server is charged exactly. Speed is
//! never asserted here: the figures are the benchmark's to report, not a test's to time.

mod common;

use std::process::{Command, Output};

use common::redis::RedisServer;
use common::*;
use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_creditgate"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

fn report(args: &[&str]) -> Value {
    let done = bench(args);
    assert!(
        done.status.success(),
        "bench {args:?}: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    serde_json::from_slice(&done.stdout).expect("--json prints one JSON object")
}

/// The figures of one side of a report, checked for sense: calls made, none failed or denied,
/// percentiles in order.
fn assert_sound(side: &Value) {
    assert!(side["calls"].as_u64().unwrap() > 0, "{side}");
    assert!(side["rpc_per_s"].as_u64().unwrap() > 0, "{side}");
    assert_eq!(side["errors"], 0, "{side}");
    assert_eq!(side["denied"], 0, "{side}");
    let p = |key: &str| side[key].as_f64().unwrap();
    assert!(p("p50_ms") > 0.0, "{side}");
    assert!(
        p("p50_ms") <= p("p90_ms")
            && p("p90_ms") <= p("p99_ms")
            && p("p99_ms") <= p("p999_ms")
            && p("p999_ms") <= p("max_ms"),
        "{side}"
    );
}

#[test]
fn every_scenario_runs_against_creditgate_and_the_baseline() {
    for scenario in [
        "reserve-commit",
        "reserve-release",
        "charge",
        "check",
        "ext-authz",
    ] {
        let report = report(&[
            "--scenario",
            scenario,
            "--accounts",
            "3",
            "--grants",
            "2",
            "--concurrency",
            "4",
            "--connections",
            "2",
            "--duration",
            "400ms",
            "--warmup",
            "100ms",
            "--baseline",
            "--json",
        ]);
        assert_eq!(report["scenario"], scenario);
        assert_eq!(report["store"], "memory");
        assert_eq!(report["load"]["loop"], "closed");
        assert_sound(&report["creditgate"]);
        assert_sound(&report["baseline"]);
        assert_eq!(report["commit_durability"], "ledger");
        let ratio = &report["ratio"];
        assert!(ratio["throughput"].as_f64().unwrap() > 0.0, "{report}");
        assert!(ratio["p99"].as_f64().unwrap() > 0.0, "{report}");
        // What the ledger still had to write when the load stopped slows the sustained rate.
        let ours = &report["creditgate"];
        assert!(ours["ledger_catch_up_s"].as_f64().unwrap() >= 0.0, "{ours}");
        assert!(
            ours["sustained_rpc_per_s"].as_u64().unwrap() <= ours["rpc_per_s"].as_u64().unwrap(),
            "{ours}"
        );
        assert!(
            ratio["sustained_throughput"].as_f64().unwrap()
                <= ratio["throughput"].as_f64().unwrap(),
            "{report}"
        );
    }
}

#[test]
fn an_open_loop_on_redis_reports_memory_per_hold() {
    let redis = RedisServer::start();
    let report = report(&[
        "--redis",
        &redis.url(),
        "--scenario",
        "reserve-release",
        "--accounts",
        "50",
        "--distribution",
        "zipf",
        "--rate",
        "200",
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
        "--hold-memory",
        "500",
        "--json",
    ]);
    assert_eq!(report["store"], "redis");
    assert_eq!(report["distribution"], "zipf(s=1)");
    assert_eq!(report["load"]["loop"], "open");
    assert_sound(&report["creditgate"]);
    assert!(report.get("baseline").is_none());
    let memory = &report["memory"];
    assert_eq!(memory["holds"], 500);
    assert!(
        memory["redis_bytes_per_hold"].as_f64().unwrap() > 0.0,
        "{memory}"
    );
    assert!(memory["replica_bytes_per_hold"].is_number(), "{memory}");
}

#[tokio::test]
async fn the_load_on_a_running_server_is_charged_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    let (gate, admin) = (
        format!("http://{}", t.server.gate_addr()),
        format!("http://{}", t.server.admin_addr()),
    );
    let report = tokio::task::spawn_blocking(move || {
        report(&[
            "--server",
            &gate,
            "--admin-server",
            &admin,
            "--scenario",
            "reserve-commit",
            "--accounts",
            "1",
            "--concurrency",
            "8",
            "--duration",
            "500ms",
            "--warmup",
            "0s",
            "--json",
        ])
    })
    .await
    .unwrap();
    assert_eq!(report["server"], "external");
    assert_sound(&report["creditgate"]);
    // Every iteration is a reserve of 0.01 and a commit of 0.005 of it: with no warm-up
    // every call is counted, so the ledger must show exactly half a cent per pair.
    let calls = report["creditgate"]["calls"].as_u64().unwrap();
    assert_eq!(calls % 2, 0, "{report}");
    let wallet = default_wallet(&mut t.gate, "bench-0").await;
    assert_eq!(micros(&wallet.spent), calls / 2 * 5_000, "{report}");
    assert_eq!(micros(&wallet.held), 0, "no hold is left");
    t.server.stop().await;
}

/// A money string in millionths.
fn micros(money: &str) -> u64 {
    let (whole, fraction) = money.split_once('.').unwrap_or((money, ""));
    whole.parse::<u64>().unwrap() * 1_000_000 + format!("{fraction:0<6}").parse::<u64>().unwrap()
}

#[test]
fn bad_options_are_refused_naming_the_option() {
    for (args, named) in [
        (&["--grants", "65"][..], "--grants"),
        (&["--accounts", "0"], "--accounts"),
        (&["--rate", "0"], "--rate"),
    ] {
        let done = bench(args);
        assert_eq!(done.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}
