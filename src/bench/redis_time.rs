//! Redis's own cost of a gate call, for a run on Redis: over the measured window, the CPU time
//! of Redis's main thread (`INFO cpu`) and the time its functions ran (`INFO commandstats`,
//! `FCALL`), each divided by the gate calls answered in the window. Summed over every node the
//! URL names (a Cluster's). The functions' time is the figure the scripts are judged by; the
//! CPU time adds what Redis spends around them (reading and answering calls, the sync loop's
//! stream reads).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Seconds of main-thread CPU and microseconds in functions, summed over the nodes.
#[derive(Clone, Copy, Debug, Default)]
struct Spent {
    cpu_s: f64,
    fcall_us: f64,
}

/// What the nodes `urls` (comma-separated) have spent so far; `None` if one cannot be read.
async fn spent(urls: &str) -> Option<Spent> {
    let mut total = Spent::default();
    for url in urls.split(',').map(str::trim) {
        let client = redis::Client::open(url).ok()?;
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("commandstats")
            .query_async(&mut connection)
            .await
            .ok()?;
        for line in info.lines() {
            if let Some((name, value)) = line.split_once(':') {
                match name {
                    "used_cpu_user_main_thread" | "used_cpu_sys_main_thread" => {
                        total.cpu_s += value.trim().parse::<f64>().ok()?;
                    }
                    "cmdstat_fcall" => {
                        let usec = value
                            .split(',')
                            .find_map(|field| field.strip_prefix("usec="))?;
                        total.fcall_us += usec.parse::<f64>().ok()?;
                    }
                    _ => {}
                }
            }
        }
    }
    Some(total)
}

/// Reads what Redis spent at the start and at the end of the window the load measures
/// (`warmup` from now, for `duration`), and answers the difference.
pub(super) fn watch(
    urls: String,
    warmup: Duration,
    duration: Duration,
) -> JoinHandle<Option<Value>> {
    tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        let before = spent(&urls).await?;
        tokio::time::sleep(duration).await;
        let after = spent(&urls).await?;
        Some(json!({
            "cpu_s": after.cpu_s - before.cpu_s,
            "fcall_us": after.fcall_us - before.fcall_us,
        }))
    })
}

/// The report's figures: microseconds of Redis per gate call answered in the window.
pub(super) fn per_call(spent: &Value, answered: f64) -> Value {
    if answered <= 0.0 {
        return Value::Null;
    }
    let per = |v: f64| (v / answered * 10.0).round() / 10.0;
    json!({
        "cpu_us_per_call": per(spent["cpu_s"].as_f64().unwrap_or(0.0) * 1e6),
        "function_us_per_call": per(spent["fcall_us"].as_f64().unwrap_or(0.0)),
    })
}
