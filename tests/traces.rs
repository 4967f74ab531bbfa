//! OpenTelemetry traces: `creditgate serve --otlp-endpoint` exports the span of each call over
//! OTLP/gRPC, joined to the caller's trace (`traceparent`), to a collector; here a real OTLP
//! receiver (the collector's gRPC service) in the test.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use creditgate::proto::{self, admin_client::AdminClient, gate_client::GateClient};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio_stream::wrappers::TcpListenerStream;

mod common;

/// A collector that keeps what it is sent.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A span as the collector got it: its service, name, trace id and string attributes.
#[derive(Debug)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    attributes: Vec<(String, String)>,
}

impl Collector {
    fn spans(&self) -> Vec<Span> {
        let text = |value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>| match value
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(Value::StringValue(s)) => s.clone(),
            other => format!("{other:?}"),
        };
        let mut spans = Vec::new();
        for request in self.received.lock().unwrap().iter() {
            for resource in &request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .map(|kv| text(&kv.value))
                    .unwrap_or_default();
                for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                    spans.push(Span {
                        service: service.clone(),
                        name: span.name.clone(),
                        trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(&kv.value)))
                            .collect(),
                    });
                }
            }
        }
        spans
    }
}

#[tokio::test]
async fn the_span_of_each_call_reaches_the_collector_in_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let (gate_port, admin_port) = (common::free_port(), common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_creditgate"))
        .args(["serve", "--metrics-listen", "off"])
        .args(["--listen", &format!("127.0.0.1:{gate_port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--otlp-endpoint", &format!("http://{collector_addr}")])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", gate_port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut admin = AdminClient::connect(format!("http://127.0.0.1:{admin_port}"))
        .await
        .unwrap();
    common::grant(&mut admin, "acme", "g1", "5.00").await;
    let mut gate = GateClient::connect(format!("http://127.0.0.1:{gate_port}"))
        .await
        .unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = tonic::Request::new(common::reserve_amount("acme", "chat", "1.00"));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let hold = gate.reserve(request).await.unwrap().into_inner();
    assert_eq!(hold.decision, proto::Decision::Allowed as i32);

    // Spans go out in batches; stopping sends what is left.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");

    let spans = collector.spans();
    let reserve = spans
        .iter()
        .find(|s| s.attributes.contains(&("rpc".into(), "Reserve".into())))
        .unwrap_or_else(|| panic!("no span of the Reserve call in {spans:#?}"));
    assert_eq!(reserve.name, "call");
    assert_eq!(reserve.service, "creditgate");
    assert_eq!(
        reserve.trace_id, trace_id,
        "the call joined its caller's trace"
    );
    assert!(
        reserve.attributes.iter().any(|(k, _)| k == "request_id"),
        "{reserve:?}"
    );
    let grant = spans
        .iter()
        .find(|s| s.attributes.contains(&("rpc".into(), "AddGrant".into())))
        .expect("the AddGrant call has a span too");
    assert_ne!(
        grant.trace_id, trace_id,
        "a call without a caller's trace starts its own"
    );
}
