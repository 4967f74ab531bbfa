//! `creditgate run`: the real binary metering a real command by the minute against a server,
//! stopping it when credits run out and committing the minutes it ran.

mod common;

use std::process::{Command, Output};
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::*;
use creditgate::proto;
use rust_decimal::Decimal;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_creditgate");

/// Agent minutes at 1.20 a minute: 1.5 s of them cost exactly 0.03.
async fn price_minutes(t: &mut TestServer, stop: proto::StopRule) {
    t.admin
        .set_prices(proto::SetPricesRequest {
            features: vec![proto::FeaturePrice {
                feature: "agent.minutes".into(),
                rule: Some(proto::feature_price::Rule::PerUnit(proto::PerUnitPrice {
                    unit: "minute".into(),
                    price: "1.20".into(),
                })),
                stop: stop as i32,
                ..Default::default()
            }],
        })
        .await
        .unwrap();
}

/// `creditgate run … -- command`, in a thread of its own; its output and how long it took.
fn run(
    t: &TestServer,
    hold: &str,
    command: &[&str],
) -> tokio::task::JoinHandle<(Output, Duration)> {
    let mut args: Vec<String> = [
        "run",
        "--account",
        "acme",
        "--feature",
        "agent.minutes",
        "--hold",
        hold,
        "--grace",
        "5s",
        "--label",
        "task=t1",
        "--json",
        "--server",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("http://{}", t.server.gate_addr()));
    args.push("--".into());
    args.extend(command.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let output = Command::new(BIN)
            .args(&args)
            .output()
            .expect("creditgate runs");
        (output, started.elapsed())
    })
}

/// The runner's report: the last line of its stderr.
fn report(output: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|_| panic!("a JSON report, not {stderr:?}"))
}

fn decimal(value: &Value) -> Decimal {
    Decimal::from_str(value.as_str().expect("a decimal string")).unwrap()
}

#[tokio::test]
async fn a_long_sleep_is_stopped_when_credits_run_out_and_charged_the_minutes_it_ran() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    price_minutes(&mut t, proto::StopRule::FinishRunning).await;
    // Three windows of 1.5 s: the command is paid for 4.5 s.
    grant(&mut t.admin, "acme", "g1", "0.09").await;

    let (output, took) = run(&t, "1500ms", &["sleep", "1000"]).await.unwrap();
    let report = report(&output);
    assert_eq!(output.status.code(), Some(3), "{report}");
    assert_eq!(report["stopped"], "out_of_credits");
    assert_eq!(report["exit_status"], 128 + 15, "stopped by SIGTERM");
    assert!(took < Duration::from_secs(60), "stopped, not slept out");
    let minutes = decimal(&report["minutes"]);
    assert!(
        minutes >= Decimal::from_str("0.075").unwrap(),
        "ran the 4.5 s paid for: {minutes} minutes"
    );
    // It ran at least what was paid for, so it was charged all of it, and no more.
    assert_eq!(
        decimal(&report["charged"]),
        Decimal::from_str("0.09").unwrap()
    );
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(
        (wallet.spent.as_str(), wallet.held.as_str()),
        ("0.09", "0.00")
    );
    let entries = entries(&mut t.admin, "acme").await;
    let commit = entries
        .iter()
        .find(|e| e.amount == "0.09")
        .expect("the commit's entry");
    assert_eq!(commit.labels["task"], "t1");
    t.server.stop().await;
}

#[tokio::test]
async fn under_stop_running_the_command_stops_as_soon_as_the_wallet_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    price_minutes(&mut t, proto::StopRule::StopRunning).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;

    let running = run(&t, "1m", &["sleep", "1000"]);
    // Once its minute is held, something else spends everything left.
    eventually(Duration::from_secs(30), || {
        let mut gate = t.gate.clone();
        async move { default_wallet(&mut gate, "acme").await.held == "1.20" }
    })
    .await;
    let spent_at = Instant::now();
    let spent = t
        .gate
        .charge(charge_amount("acme", "chat", "8.80"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spent.available, "0.00");

    let (output, _) = running.await.unwrap();
    let stopped_after = spent_at.elapsed();
    let report = report(&output);
    assert_eq!(output.status.code(), Some(3), "{report}");
    assert_eq!(report["stopped"], "depleted");
    eprintln!("stopped {stopped_after:?} after the wallet ran out");
    assert!(
        stopped_after < Duration::from_secs(10),
        "stopped at once, not when its minute ran out: {stopped_after:?}"
    );
    // Charged the minutes it ran, at the price of a minute, rounded half-even.
    let minutes = decimal(&report["minutes"]);
    let expected = (minutes * Decimal::from_str("1.20").unwrap())
        .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointNearestEven);
    assert_eq!(decimal(&report["charged"]), expected);
    assert!(expected < Decimal::from_str("1.20").unwrap());
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(wallet.held, "0.00", "the rest of the hold came back");
    t.server.stop().await;
}

#[tokio::test]
async fn a_command_that_exits_by_itself_passes_its_status_through() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    price_minutes(&mut t, proto::StopRule::FinishRunning).await;
    grant(&mut t.admin, "acme", "g1", "10.00").await;

    let (output, _) = run(&t, "5m", &["sh", "-c", "echo working; exit 7"])
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "working\n");
    let report = report(&output);
    assert_eq!(report["stopped"], Value::Null);
    assert_eq!(report["exit_status"], 7);
    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(wallet.held, "0.00");
    assert_eq!(
        Decimal::from_str(&wallet.spent).unwrap(),
        decimal(&report["charged"])
    );
    t.server.stop().await;
}

#[tokio::test]
async fn without_credits_the_command_never_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    price_minutes(&mut t, proto::StopRule::FinishRunning).await;
    grant(&mut t.admin, "acme", "g1", "0.01").await;
    let marker = dir.path().join("started");

    let (output, _) = run(&t, "5m", &["touch", marker.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(report(&output)["reason"], "INSUFFICIENT_CREDITS");
    assert!(!marker.exists(), "the command did not run");
    t.server.stop().await;
}

#[tokio::test]
async fn under_stop_running_its_own_last_window_is_used_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    price_minutes(&mut t, proto::StopRule::StopRunning).await;
    // Two windows of 1.5 s: the second hold empties the wallet, which is no reason to stop
    // before the time it paid for.
    grant(&mut t.admin, "acme", "g1", "0.06").await;

    let (output, _) = run(&t, "1500ms", &["sleep", "1000"]).await.unwrap();
    let report = report(&output);
    assert_eq!(output.status.code(), Some(3), "{report}");
    assert_eq!(report["stopped"], "out_of_credits");
    assert!(
        decimal(&report["minutes"]) >= Decimal::from_str("0.05").unwrap(),
        "ran the 3 s paid for: {report}"
    );
    assert_eq!(
        decimal(&report["charged"]),
        Decimal::from_str("0.06").unwrap()
    );
    t.server.stop().await;
}
