//! Exact money end to end: 100 000 commits of 0.000001 sum to exactly 0.10 in the store, in the
//! ledger and in the usage query.

mod common;

use common::*;
use creditgate::proto;

const COMMITS: usize = 100_000;
const TASKS: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_millionths_sum_to_exactly_ten_cents() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = start(dir.path()).await;
    grant(&mut t.admin, "acme", "g1", "1.00").await;

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let mut gate = t.gate.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..COMMITS / TASKS {
                let mut reserve = reserve_amount("acme", "chat", "0.000002");
                reserve
                    .labels
                    .insert("task".into(), format!("{}", (task + n) % 3));
                let hold = gate.reserve(reserve).await.unwrap().into_inner();
                assert_eq!(hold.decision, ALLOWED);
                let commit = gate
                    .commit(commit_amount(&hold.reservation_id, "0.000001"))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(commit.charged, "0.000001");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let wallet = default_wallet(&mut t.gate, "acme").await;
    assert_eq!(wallet.spent, "0.10", "store");
    assert_eq!(wallet.available, "0.90");
    assert_eq!(wallet.held, "0.00");

    let usage = t
        .admin
        .get_usage(proto::GetUsageRequest {
            account_id: "acme".into(),
            group_by: "label:task".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(usage.total, "0.10", "usage query");
    assert_eq!(usage.count, COMMITS as u64);
    let by_task: Vec<_> = usage.groups.iter().map(|g| g.count).collect();
    assert_eq!(by_task.iter().sum::<u64>(), COMMITS as u64);

    // The ledger alone: a store rebuilt from it after a restart shows the same.
    t.server.stop().await;
    let mut t = start(dir.path()).await;
    assert_eq!(default_wallet(&mut t.gate, "acme").await, wallet, "ledger");
    t.server.stop().await;
}
