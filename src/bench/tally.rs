//! What a run measured: each call's latency and outcome, tallied per virtual user and merged
//! into one summary.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::Instant;
use tonic::Code;

/// Latency and outcomes of the calls of one run.
pub(super) struct Tally {
    latency_us: Histogram<u64>,
    calls: u64,
    denied: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    pub(super) fn new() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            calls: 0,
            denied: 0,
            errors: BTreeMap::new(),
        }
    }

    pub(super) fn record(&mut self, (micros, outcome): &Sample) {
        self.latency_us.saturating_record(*micros);
        self.calls += 1;
        match outcome {
            Outcome::Allowed => {}
            Outcome::Denied => self.denied += 1,
            Outcome::Failed(code) => *self.errors.entry(format!("{code:?}")).or_default() += 1,
        }
    }

    pub(super) fn merge(&mut self, other: &Tally) {
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.calls += other.calls;
        self.denied += other.denied;
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }

    pub(super) fn summary(&self, seconds: f64) -> Value {
        let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
        // A call that failed is no throughput.
        let answered = self.calls - self.errors.values().sum::<u64>();
        json!({
            "calls": self.calls,
            "answered": answered,
            "rpc_per_s": (answered as f64 / seconds).round() as u64,
            "p50_ms": ms(0.5),
            "p90_ms": ms(0.9),
            "p99_ms": ms(0.99),
            "p999_ms": ms(0.999),
            "max_ms": self.latency_us.max() as f64 / 1000.0,
            "denied": self.denied,
            "errors": self.errors.values().sum::<u64>(),
            "errors_by_code": self.errors,
        })
    }
}

pub(super) enum Outcome {
    Allowed,
    Denied,
    Failed(Code),
}

/// One call: how long it took (µs, from when it was due) and how it ended.
pub(super) type Sample = (u64, Outcome);

/// The sample of a call that was due at `due` and has just ended.
pub(super) fn sample(due: Instant, outcome: Outcome) -> Sample {
    (
        due.elapsed().as_micros().clamp(1, 60_000_000) as u64,
        outcome,
    )
}
