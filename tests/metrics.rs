//! `/metrics`: decisions by outcome and reason, call latencies by method, errors by code,
//! watchers, sync lag and outbox depth, as Prometheus reads them. One test in this file: the
//! metrics recorder is global to the process.

mod common;

use std::sync::Arc;

use common::*;
use creditgate::clock::SystemClock;
use creditgate::proto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_latencies_and_errors_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut config = common::config(dir.path());
    config.metrics_listen = Some(addr);
    let mut t = start_with(config, Arc::new(SystemClock)).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    t.gate
        .reserve(reserve_amount("acme", "chat", "0.60"))
        .await
        .unwrap();
    let denied = t
        .gate
        .reserve(reserve_amount("acme", "chat", "0.60"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(denied.decision(), proto::Decision::Denied);
    let invalid = t
        .gate
        .reserve(reserve_amount("a b", "chat", "0.60"))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    let _watching = t
        .gate
        .watch_balance(proto::WatchBalanceRequest {
            account_id: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // The exporter answers on this runtime: scrape from a thread of its own.
    let mut text = String::new();
    for _ in 0..50 {
        text = tokio::task::spawn_blocking(move || scrape(addr))
            .await
            .unwrap();
        // An idle replica's outbox gauge falls to zero once its records are in the ledger.
        if text.contains("creditgate_watchers 1") && text.contains("creditgate_outbox_records 0\n")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for wanted in [
        r#"creditgate_decisions_total{rpc="reserve",decision="allowed",reason="none"} 1"#,
        r#"creditgate_decisions_total{rpc="reserve",decision="denied",reason="insufficient_credits"} 1"#,
        r#"creditgate_errors_total{code="InvalidArgument"} 1"#,
        r#"creditgate_rpc_duration_seconds_count{rpc="Reserve"} 3"#,
        // A histogram, which adds up across replicas, not a summary.
        r#"creditgate_rpc_duration_seconds_bucket{rpc="Reserve",le="10"} 3"#,
        r#"creditgate_rpc_duration_seconds_bucket{rpc="Reserve",le="+Inf"} 3"#,
        "creditgate_outbox_records 0\n",
        "creditgate_outbox_lag_ms 0\n",
        "creditgate_cache_holds",
    ] {
        assert!(text.contains(wanted), "{wanted} in\n{text}");
    }
    assert!(!text.contains("quantile="), "no summaries in\n{text}");
    t.server.stop().await;
}
