//! The report as a table for people (`--json` prints the report itself).

use serde_json::Value;

/// The report as a table for people.
pub fn table(report: &Value) -> String {
    let mut out = format!(
        "scenario {} on {} store ({} server), {} account(s) {}, {} grant(s) per wallet\n",
        report["scenario"].as_str().unwrap_or_default(),
        report["store"].as_str().unwrap_or_default(),
        report["server"].as_str().unwrap_or_default(),
        report["accounts"],
        report["distribution"].as_str().unwrap_or_default(),
        report["grants_per_wallet"],
    );
    if let Some(durability) = report["commit_durability"].as_str() {
        out += &format!("commits and charges acknowledged once in the {durability}\n");
    }
    let load = &report["load"];
    out += &match load["loop"].as_str() {
        Some("open") => format!(
            "open loop at {} calls/s (at most {} in flight) over {} connection(s)",
            load["rate"], load["max_in_flight"], load["connections"]
        ),
        _ => format!(
            "closed loop: {} calls in flight over {} connection(s)",
            load["concurrency"], load["connections"]
        ),
    };
    out += &format!(
        ", {} s measured after {} s of warm-up\n\n",
        report["duration_s"], report["warmup_s"]
    );
    out += &format!(
        "{:<11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}\n",
        "", "RPC/s", "p50 ms", "p90 ms", "p99 ms", "p999 ms", "max ms", "errors", "denied"
    );
    for name in ["creditgate", "baseline"] {
        let row = &report[name];
        if row.is_null() {
            continue;
        }
        let ms = |key: &str| format!("{:.3}", row[key].as_f64().unwrap_or(0.0));
        out += &format!(
            "{:<11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7}\n",
            name,
            row["rpc_per_s"].to_string(),
            ms("p50_ms"),
            ms("p90_ms"),
            ms("p99_ms"),
            ms("p999_ms"),
            ms("max_ms"),
            row["errors"].to_string(),
            row["denied"].to_string(),
        );
    }
    if let Some(catch_up) = report["creditgate"]["ledger_catch_up_s"].as_f64() {
        out += &format!(
            "\nthe ledger had every write {catch_up:.1} s after the load stopped: {} RPC/s sustained\n",
            report["creditgate"]["sustained_rpc_per_s"]
        );
    }
    let redis = &report["creditgate"]["redis"];
    if !redis.is_null() {
        out += &format!(
            "\nRedis per gate call: {} µs in functions, {} µs of its main thread's CPU\n",
            redis["function_us_per_call"], redis["cpu_us_per_call"]
        );
    }
    if let Some(ratio) = report.get("ratio") {
        out += &format!(
            "\ncreditgate / baseline: throughput {}, p99 {}\n",
            ratio["throughput"], ratio["p99"]
        );
    }
    if let Some(memory) = report.get("memory") {
        let bytes = |key: &str| match memory[key].as_f64() {
            Some(b) => format!("{b:.0} bytes"),
            None => "not measured".to_owned(),
        };
        out += &format!(
            "\nmemory per live hold ({} holds): replica {}, Redis {}\n",
            memory["holds"],
            bytes("replica_bytes_per_hold"),
            bytes("redis_bytes_per_hold")
        );
    }
    out
}
