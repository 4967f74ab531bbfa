//! `/metrics` of a replica on Redis: how many calls of a partition went to Redis together. One
//! test in this file: the metrics recorder is global to the process.

mod common;

use std::sync::Arc;

use common::redis::RedisServer;
use common::*;
use creditgate::clock::SystemClock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operations_of_each_batch_are_exported_as_a_histogram() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Redis(RedisServer::start());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut config = backend.config(dir.path());
    config.metrics_listen = Some(addr);
    let mut t = start_with(config, Arc::new(SystemClock)).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;
    // One after another: each call of the batch script carries one operation.
    for _ in 0..3 {
        let hold = t
            .gate
            .reserve(reserve_amount("acme", "chat", "0.10"))
            .await
            .unwrap()
            .into_inner();
        t.gate
            .commit(commit_amount(&hold.reservation_id, "0.05"))
            .await
            .unwrap();
    }

    // The exporter answers on this runtime: scrape from a thread of its own.
    let text = tokio::task::spawn_blocking(move || scrape(addr))
        .await
        .unwrap();
    for wanted in [
        "creditgate_redis_batch_operations_count 6\n",
        "creditgate_redis_batch_operations_sum 6\n",
        r#"creditgate_redis_batch_operations_bucket{le="1"} 6"#,
        r#"creditgate_redis_batch_operations_bucket{le="64"} 6"#,
    ] {
        assert!(text.contains(wanted), "{wanted} in\n{text}");
    }
    t.server.stop().await;
}
