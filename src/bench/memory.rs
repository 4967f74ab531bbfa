//! `--hold-memory`: the bytes one live hold takes, in this process and in Redis.

use std::sync::Arc;

use serde_json::{Value, json};
use tonic::Status;

use super::BenchError;
use super::load::{Accounts, connect};
use super::scenario::hold_of;
use crate::proto::{self, gate_client::GateClient};

/// Bytes Redis uses for data.
async fn redis_bytes(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
}

/// Takes `holds` holds (an hour long) and reports the memory each takes in this process and
/// in Redis.
pub(super) async fn hold_memory(
    holds: u64,
    gate_url: &str,
    redis: Option<&str>,
    in_process: bool,
    accounts: &Accounts,
) -> Result<Value, BenchError> {
    let gate = GateClient::new(connect(gate_url).await?);
    let redis_before = match redis {
        Some(url) => redis_bytes(url).await,
        None => None,
    };
    let heap = if in_process {
        crate::alloc::HeapCount::start()
    } else {
        None
    };
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ids = Arc::new(accounts.ids.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (next, ids, mut gate) = (next.clone(), ids.clone(), gate.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= holds {
                    return Ok::<(), Status>(());
                }
                let answer = gate
                    .reserve(hold_of(&ids[(i % ids.len() as u64) as usize], 3_600_000))
                    .await?
                    .into_inner();
                if answer.decision != proto::Decision::Allowed as i32 {
                    return Err(Status::failed_precondition(answer.message));
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a hold task does not panic")
            .map_err(|e| BenchError::Setup(format!("holding: {e}")))?;
    }
    let per_hold = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) => json!(a.saturating_sub(b) as f64 / holds as f64),
        _ => Value::Null,
    };
    let redis_after = match redis {
        Some(url) => redis_bytes(url).await,
        None => None,
    };
    Ok(json!({
        "holds": holds,
        "replica_bytes_per_hold": match heap {
            Some(heap) => json!(heap.bytes() as f64 / holds as f64),
            None => Value::Null,
        },
        "redis_bytes_per_hold": per_hold(redis_before, redis_after),
    }))
}
