//! Metrics: every name in one place, and the Prometheus endpoint that serves them; the layer
//! that gives every call its span (with its request id) and its latency; and the export of
//! those spans to an OpenTelemetry collector.
//!
//! Metrics are recorded with the `metrics` macros wherever they happen; without an endpoint
//! (`--metrics-listen off`) recording costs next to nothing.

use std::net::SocketAddr;

use tracing::Instrument;

/// Outbox records the ledger has not taken yet.
pub const OUTBOX_RECORDS: &str = "creditgate_outbox_records";
/// Age of the oldest outbox record the ledger has not taken, in milliseconds of the store's
/// clock: the sync lag.
pub const OUTBOX_LAG_MS: &str = "creditgate_outbox_lag_ms";
/// Outbox records written to the ledger.
pub const LEDGER_RECORDS_TOTAL: &str = "creditgate_ledger_records_total";
/// Ledger transactions (batches) written.
pub const LEDGER_BATCHES_TOTAL: &str = "creditgate_ledger_batches_total";
/// Ledger writes that failed and were retried.
pub const LEDGER_WRITE_ERRORS_TOTAL: &str = "creditgate_ledger_write_errors_total";
/// Changes read from the ledger and applied to the store.
pub const INBOUND_CHANGES_TOTAL: &str = "creditgate_inbound_changes_total";
/// Ledger changes the store could not take (conflicting terms, too many grants).
pub const INBOUND_REJECTED_TOTAL: &str = "creditgate_inbound_rejected_total";
/// Wallets whose balance in the store differs from the ledger's, at the last reconcile.
pub const RECONCILE_DRIFT_WALLETS: &str = "creditgate_reconcile_drift_wallets";
/// Sum of the absolute differences between store and ledger, in minor units, at the last
/// reconcile.
pub const RECONCILE_DRIFT_MINOR: &str = "creditgate_reconcile_drift_minor";
/// Accounts compared at the last reconcile.
pub const RECONCILE_ACCOUNTS: &str = "creditgate_reconcile_accounts";

/// Decisions on holds, extensions, charges and checks (and Envoy checks), by `rpc`,
/// `decision` (`allowed`, `denied`) and `reason`.
pub const DECISIONS_TOTAL: &str = "creditgate_decisions_total";
/// Time to answer a call, in seconds, by `rpc` (the gRPC method).
pub const RPC_DURATION_SECONDS: &str = "creditgate_rpc_duration_seconds";
/// Calls that failed, by gRPC `code` (UNAVAILABLE: the store or the ledger did not answer).
pub const ERRORS_TOTAL: &str = "creditgate_errors_total";
/// Open `WatchBalance` streams.
pub const WATCHERS: &str = "creditgate_watchers";
/// Holds this replica remembers in its cache.
pub const CACHE_HOLDS: &str = "creditgate_cache_holds";
/// From a store event (a wallet running out, …) to this replica learning of it, in seconds:
/// how fast gating reaches every replica.
pub const GATING_PROPAGATION_SECONDS: &str = "creditgate_gating_propagation_seconds";
/// Outbox records the ledger dropped because Redis lost them (and the account was loaded
/// again without them) before the ledger had them: writes that happened nowhere.
pub const OUTBOX_LOST_RECORDS_TOTAL: &str = "creditgate_outbox_lost_records_total";
/// Times this replica found a Redis partition without its keys (a restart without
/// persistence, a failover to an empty replica, `FLUSHALL`) and made them again.
pub const STORE_RESETS_TOTAL: &str = "creditgate_store_resets_total";
/// Accounts loaded from the ledger into a store that did not have them.
pub const STORE_HYDRATIONS_TOTAL: &str = "creditgate_store_hydrations_total";
/// Operations in each call of the Redis store's batch script: how many calls of a partition
/// went to Redis together.
pub const REDIS_BATCH_OPERATIONS: &str = "creditgate_redis_batch_operations";
/// Webhook delivery attempts, by `outcome` (`delivered`, `failed`).
pub const WEBHOOK_ATTEMPTS_TOTAL: &str = "creditgate_webhook_attempts_total";

/// Around any tonic service: runs each call in a span `call{rpc, request_id}` (the request id
/// from the `x-request-id` header, or a new one), so that every log line of the call names it,
/// and records how long the call took, by method.
#[derive(Clone, Copy, Debug, Default)]
pub struct CallLayer;

impl<S> tower::Layer<S> for CallLayer {
    type Service = CallService<S>;

    fn layer(&self, inner: S) -> CallService<S> {
        CallService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct CallService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for CallService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // "/creditgate.v1.Gate/Reserve" → "Reserve"
        let rpc = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|id| id.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let span = tracing::info_span!(
            "call",
            rpc = %rpc,
            request_id = %request_id,
            caller = tracing::field::Empty
        );
        // The caller's trace, when it sends one (W3C `traceparent`) and spans are exported.
        if request.headers().contains_key("traceparent") {
            use opentelemetry::propagation::TextMapPropagator;
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new()
                .extract(&Headers(request.headers()));
            // Refused only when no exporter is installed: then there is no trace to join.
            let _ = span.set_parent(parent);
        }
        let started = std::time::Instant::now();
        let answer = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let answer = answer.await;
                let elapsed = started.elapsed();
                metrics::histogram!(RPC_DURATION_SECONDS, "rpc" => rpc)
                    .record(elapsed.as_secs_f64());
                tracing::debug!(micros = elapsed.as_micros() as u64, "answered");
                answer
            }
            .instrument(span),
        )
    }
}

/// A request's headers, for reading a trace context from them.
struct Headers<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Spans exported to an OpenTelemetry collector; [`Traces::shutdown`] sends what is left.
pub struct Traces {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
}

impl Traces {
    /// Exports spans over OTLP/gRPC to `endpoint` (e.g. `http://otel-collector:4317`), in
    /// batches, as service `creditgate`. Of the traces that start here, `sample_ratio` are
    /// kept; a call that carries its caller's trace follows the caller's decision.
    pub fn otlp(endpoint: &str, sample_ratio: f64) -> Result<Traces, String> {
        use opentelemetry_otlp::WithExportConfig;
        use opentelemetry_sdk::trace::Sampler;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| format!("otlp_endpoint {endpoint:?}: {e}"))?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                sample_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("creditgate")
                    .build(),
            )
            .build();
        Ok(Traces { provider })
    }

    /// The tracer the `tracing` layer records spans with.
    pub fn tracer(&self) -> opentelemetry_sdk::trace::Tracer {
        use opentelemetry::trace::TracerProvider;
        self.provider.tracer("creditgate")
    }

    /// Sends the spans not sent yet, and stops.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(%error, "spans not exported at shutdown");
        }
    }
}

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {message}")]
pub struct MetricsError {
    pub addr: SocketAddr,
    pub message: String,
}

/// Bucket bounds, in seconds, of the latencies exported as Prometheus histograms (which,
/// unlike summaries, add up across replicas): from 100 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Bucket bounds of [`REDIS_BATCH_OPERATIONS`], up to the most a batch takes.
const BATCH_OPERATIONS_BUCKETS: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Serves `/metrics` for Prometheus on `addr`. Once per process: the recorder is global.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), MetricsError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let error = |e: metrics_exporter_prometheus::BuildError| MetricsError {
        addr,
        message: e.to_string(),
    };
    let mut builder = PrometheusBuilder::new().with_http_listener(addr);
    for name in [RPC_DURATION_SECONDS, GATING_PROPAGATION_SECONDS] {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), &LATENCY_BUCKETS_SECONDS)
            .map_err(error)?;
    }
    builder = builder
        .set_buckets_for_metric(
            Matcher::Full(REDIS_BATCH_OPERATIONS.to_owned()),
            &BATCH_OPERATIONS_BUCKETS,
        )
        .map_err(error)?;
    builder.install().map_err(error)
}
