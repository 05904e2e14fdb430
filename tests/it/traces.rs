//! OpenTelemetry traces end to end: the real binary, with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! pointing at a small OTLP/HTTP collector this test runs (port 0, decoding
//! `ExportTraceServiceRequest`), Fintoc behind a proxy that records the headers of every call,
//! and a watcher. It checks the spans, their parents and links, their attributes, that no
//! span carries a secret, and that without an endpoint nothing is exported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use fintoc_refresh::clock::system_now_ms;
use fintoc_refresh::fintoc::signature;
use fintoc_refresh::pb::{self, refresh_service_client::RefreshServiceClient};
use fintoc_refresh::simulator::{LinkSpec, Outcome, SimConfig, Simulator};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::binary::{Running, Serve};
use crate::common::*;

/// The caller's trace, as a client would send it in `traceparent`.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// What the collector received: every span, with its resource's service name.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    services: Vec<String>,
}

type Shared = Arc<Mutex<Received>>;

/// An OTLP/HTTP (protobuf) trace receiver on port 0.
async fn collector(stop: CancellationToken) -> (String, Shared) {
    async fn export(
        State(received): State<Shared>,
        body: Bytes,
    ) -> impl axum::response::IntoResponse {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
        let mut received = received.lock().unwrap();
        for resource in request.resource_spans {
            if let Some(name) = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
            {
                received.services.push(text(name.value.as_ref()));
            }
            for scope in resource.scope_spans {
                received.spans.extend(scope.spans);
            }
        }
        (
            [("content-type", "application/x-protobuf")],
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
    }
    let received = Shared::default();
    let router = axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .with_state(received.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap()
    });
    (url, received)
}

/// Fintoc (the simulator) behind a proxy that keeps the headers of every request.
async fn recorded_fintoc(
    sim: &Simulator,
    stop: CancellationToken,
) -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let upstream = sim.url();
    let http = reqwest::Client::new();
    let router = axum::Router::new().fallback({
        let seen = seen.clone();
        move |request: axum::extract::Request| {
            let (seen, upstream, http) = (seen.clone(), upstream.clone(), http.clone());
            async move {
                let (parts, body) = request.into_parts();
                seen.lock().unwrap().push(parts.headers.clone());
                let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut headers = parts.headers.clone();
                headers.remove("host");
                let answer = http
                    .request(parts.method, format!("{upstream}{path}"))
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = answer.status();
                let kind = answer.headers().get("content-type").cloned();
                let body = answer.bytes().await.unwrap();
                let mut response = axum::response::Response::new(axum::body::Body::from(body));
                *response.status_mut() = status;
                if let Some(kind) = kind {
                    response.headers_mut().insert("content-type", kind);
                }
                response
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .unwrap()
    });
    (url, seen)
}

fn serve(db: &std::ffi::OsStr, fintoc: &str, otel: &[(&str, &str)]) -> Running {
    let mut serve = Serve::new()
        .args([
            "--shutdown-grace",
            "5s",
            "--drain-delay",
            "0s",
            "--log-format",
            "json",
        ])
        .stderr_log()
        .database(db)
        .env("FINTOC_SECRET_KEY", API_KEY)
        .env("FINTOC_WEBHOOK_SECRET", SECRET)
        .env("FINTOC_API_URL", fintoc)
        .env("RUST_LOG", "warn")
        // Exports every 100 ms instead of every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_SERVICE_NAME");
    for (key, value) in otel {
        serve = serve.env(key, value);
    }
    serve.start()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every string a span carries: its name, attributes, events and links' attributes.
fn strings(span: &Span) -> Vec<String> {
    let all = |kvs: &[KeyValue]| -> Vec<String> {
        kvs.iter()
            .flat_map(|kv| [kv.key.clone(), text(kv.value.as_ref())])
            .collect()
    };
    let mut out = vec![span.name.clone()];
    out.extend(all(&span.attributes));
    for event in &span.events {
        out.push(event.name.clone());
        out.extend(all(&event.attributes));
    }
    for link in &span.links {
        out.extend(all(&link.attributes));
    }
    out
}

async fn signed_post(http: &reqwest::Client, addr: &str, body: &str) -> u16 {
    let header = signature::header(SECRET, system_now_ms() / 1000, body.as_bytes());
    http.post(format!("http://{addr}/webhooks/fintoc"))
        .header("Fintoc-Signature", header)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread")]
    spans_follow_a_refresh_and_a_webhook_to_its_push_and_carry_no_secret
);
async fn spans_follow_a_refresh_and_a_webhook_to_its_push_and_carry_no_secret(backend: Backend) {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (otlp, received) = collector(stop.clone()).await;
    let sim = Simulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        SimConfig::new(API_KEY),
        stop.clone(),
    )
    .unwrap();
    let link = sim.add_link(LinkSpec::new(vec![Outcome::Succeed { new_movements: 1 }]));
    let (fintoc, fintoc_saw) = recorded_fintoc(&sim, stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let pg = match backend {
        Backend::Postgres => Some(PgDb::create().await),
        Backend::Sqlite => None,
    };
    let db = match &pg {
        Some(pg) => std::ffi::OsString::from(&pg.url),
        None => dir.path().join("traces.db").into_os_string(),
    };
    let mut running = serve(
        db.as_ref(),
        &fintoc,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)],
    );
    let mut client = RefreshServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap();

    // A refresh from a caller that is itself traced.
    let mut call = tonic::Request::new(pb::RequestRefreshRequest {
        link_token: link.token.clone(),
        refresh_type: 0,
        idempotency_key: String::new(),
        keep_link_token: false,
    });
    call.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN}-01").parse().unwrap(),
    );
    client.request_refresh(call).await.unwrap();

    // A webhook for an account someone watches: webhook → commit → push.
    let mut feed = client
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(account_target("acc_traced")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    feed.next().await.unwrap().unwrap(); // the opening heartbeat
    let http = reqwest::Client::new();
    let body = event("evt_traced", "acc_traced", "succeeded", system_now_ms());
    assert_eq!(signed_post(&http, &running.http, &body).await, 200);
    let pushed = feed.next().await.unwrap().unwrap();

    // A forged delivery: refused, with a warning that names its trace.
    let forged = http
        .post(format!("http://{}/webhooks/fintoc", running.http))
        .header("Fintoc-Signature", "t=1,v1=00")
        .body(event(
            "evt_forged",
            "acc_traced",
            "succeeded",
            system_now_ms(),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);

    // A graceful exit flushes what is still queued.
    running.sigterm();
    assert_eq!(running.wait_exit(Duration::from_secs(15)).code(), Some(0));
    let received = std::mem::take(&mut *received.lock().unwrap());
    let spans = &received.spans;
    assert!(
        received.services.iter().all(|s| s == "fintoc-refresh") && !received.services.is_empty(),
        "{:?}",
        received.services
    );

    // The RPC: a child of the caller's span, in the caller's trace, with its code.
    let rpcs = named(spans, "rpc");
    let refresh = rpcs
        .iter()
        .find(|s| attribute(s, "rpc.method").as_deref() == Some("RequestRefresh"))
        .unwrap_or_else(|| panic!("no RequestRefresh span in {rpcs:?}"));
    assert_eq!(hex(&refresh.trace_id), TRACE_ID);
    assert_eq!(hex(&refresh.parent_span_id), PARENT_SPAN);
    assert_eq!(attribute(refresh, "grpc.code").as_deref(), Some("0"));
    assert_eq!(
        attribute(refresh, "rpc.service").as_deref(),
        Some("fintoc.refresh.v1.RefreshService")
    );
    assert!(
        rpcs.iter()
            .any(|s| attribute(s, "rpc.method").as_deref() == Some("WatchRefresh")),
        "{rpcs:?}"
    );

    // Its Fintoc calls: in the same trace, each with its endpoint, attempt and status, and
    // each sent the traceparent of its own span.
    let calls: Vec<&Span> = named(spans, "fintoc.call")
        .into_iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .collect();
    assert!(
        calls.len() >= 2,
        "get_link and create: {:?}",
        named(spans, "fintoc.call")
            .iter()
            .map(|s| (hex(&s.trace_id), hex(&s.parent_span_id), &s.attributes))
            .collect::<Vec<_>>()
    );
    let endpoints: Vec<String> = calls
        .iter()
        .filter_map(|s| attribute(s, "endpoint"))
        .collect();
    assert!(
        endpoints.iter().any(|e| e.contains("link")),
        "{endpoints:?}"
    );
    for call in &calls {
        assert_eq!(attribute(call, "attempt").as_deref(), Some("1"), "{call:?}");
        let status = attribute(call, "http.response.status_code").unwrap_or_default();
        assert!(status.starts_with('2'), "{call:?}");
        assert_eq!(attribute(call, "outcome").as_deref(), Some("ok"));
    }
    let traceparents: Vec<String> = fintoc_saw
        .lock()
        .unwrap()
        .iter()
        .filter_map(|h| h.get("traceparent").map(|v| v.to_str().unwrap().to_owned()))
        .collect();
    for call in &calls {
        let sent = format!("00-{TRACE_ID}-{}-01", hex(&call.span_id));
        assert!(
            traceparents.contains(&sent),
            "{sent} not in {traceparents:?}"
        );
    }

    // The webhook, its group commit and the push, linked back to it.
    let webhook = named(spans, "webhook")
        .into_iter()
        .find(|s| attribute(s, "event_id").as_deref() == Some("evt_traced"))
        .unwrap_or_else(|| panic!("no webhook span in {spans:?}"));
    assert_eq!(
        attribute(webhook, "event_type").as_deref(),
        Some("account.refresh_intent.succeeded")
    );
    assert_eq!(attribute(webhook, "outcome").as_deref(), Some("stored"));
    let wait: f64 = attribute(webhook, "durable_wait_ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 0.0, "{wait}");
    let links_to_webhook = |span: &&Span| {
        span.links
            .iter()
            .any(|l| l.trace_id == webhook.trace_id && l.span_id == webhook.span_id)
    };
    let commit = named(spans, "commit")
        .into_iter()
        .find(links_to_webhook)
        .unwrap_or_else(|| panic!("no commit linked to the webhook in {spans:?}"));
    assert!(attribute(commit, "batch_size").is_some(), "{commit:?}");
    let push = named(spans, "push")
        .into_iter()
        .find(links_to_webhook)
        .unwrap_or_else(|| panic!("no push linked to the webhook in {spans:?}"));
    assert_eq!(
        attribute(push, "sequence"),
        Some(pushed.sequence.to_string())
    );
    assert_eq!(attribute(push, "event_id").as_deref(), Some("evt_traced"));

    // The refusal's log line carries the trace and span ids of its webhook span, which
    // names no event (the body was never read).
    let log = running.stderr();
    let line: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|l: &serde_json::Value| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("webhook refused"))
        })
        .unwrap_or_else(|| panic!("no refusal in {log}"));
    let refused = named(spans, "webhook")
        .into_iter()
        .find(|s| attribute(s, "outcome").as_deref() == Some("rejected_signature"))
        .unwrap_or_else(|| panic!("no refused webhook span in {spans:?}"));
    assert_eq!(line["trace_id"], hex(&refused.trace_id), "{line}");
    assert_eq!(line["span_id"], hex(&refused.span_id), "{line}");
    assert_eq!(attribute(refused, "event_id"), None);

    // No secret anywhere: the link token, the Fintoc key, the webhook secret (nor the
    // webhook's body, whose signature would be the secret's work).
    for span in spans {
        for value in strings(span) {
            for secret in [link.token.as_str(), API_KEY, SECRET] {
                assert!(!value.contains(secret), "{secret:?} in {span:?}");
            }
            assert!(!value.contains("\"object\""), "a body in {span:?}");
        }
    }
}

/// Off unless an endpoint is set: a run with the collector's address everywhere but the
/// endpoint variables, and one with the SDK disabled, export nothing.
#[tokio::test(flavor = "multi_thread")]
async fn without_an_endpoint_nothing_is_exported() {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (otlp, received) = collector(stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let runs: [&[(&str, &str)]; 2] = [
        &[
            ("OTEL_SERVICE_NAME", "quiet"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    ];
    for (n, otel) in runs.into_iter().enumerate() {
        let mut running = serve(
            dir.path().join(format!("quiet{n}.db")).as_os_str(),
            "http://127.0.0.1:9",
            otel,
        );
        let body = event(
            &format!("evt_quiet{n}"),
            "acc_q",
            "succeeded",
            system_now_ms(),
        );
        assert_eq!(signed_post(&http, &running.http, &body).await, 200);
        running.sigterm();
        assert_eq!(running.wait_exit(Duration::from_secs(15)).code(), Some(0));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(received.lock().unwrap().spans.is_empty());
}

/// An OTLP/gRPC trace receiver on port 0, keeping every span.
async fn grpc_collector(stop: CancellationToken) -> (String, Shared) {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    struct Receiver(Shared);
    #[tonic::async_trait]
    impl TraceService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut received = self.0.lock().unwrap();
            for resource in request.into_inner().resource_spans {
                for scope in resource.scope_spans {
                    received.spans.extend(scope.spans);
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }
    let received = Shared::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let service = TraceServiceServer::new(Receiver(received.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
            .unwrap()
    });
    (url, received)
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` exports over OTLP/gRPC (tonic, on our runtime).
#[tokio::test(flavor = "multi_thread")]
async fn grpc_is_exported_when_asked_for() {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (otlp, received) = grpc_collector(stop.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut running = serve(
        dir.path().join("grpc.db").as_os_str(),
        "http://127.0.0.1:9",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ],
    );
    let mut client = RefreshServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap();
    let mut call = tonic::Request::new(pb::GetLinkRequest {
        link_id: "link_unknown".into(),
    });
    call.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN}-01").parse().unwrap(),
    );
    let _ = client.get_link(call).await;
    running.sigterm();
    assert_eq!(running.wait_exit(Duration::from_secs(15)).code(), Some(0));
    let spans = std::mem::take(&mut received.lock().unwrap().spans);
    let rpc = named(&spans, "rpc")
        .into_iter()
        .find(|s| attribute(s, "rpc.method").as_deref() == Some("GetLink"))
        .unwrap_or_else(|| panic!("no GetLink span in {spans:?}"));
    assert_eq!(hex(&rpc.trace_id), TRACE_ID);
    assert_eq!(hex(&rpc.parent_span_id), PARENT_SPAN);
    assert!(attribute(rpc, "grpc.code").is_some(), "{rpc:?}");
}

/// Across replicas: the webhook is taken by one replica, the result pushed by another (a
/// watcher on it); the push span links to the webhook span through the trace context stored
/// with the result, which the pushing process never saw in memory.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_on_another_replica_links_to_the_webhook_span() {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (otlp, received) = collector(stop.clone()).await;
    let pg = PgDb::create().await;
    let db = std::ffi::OsString::from(&pg.url);
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str())];
    let intake = serve(db.as_ref(), "http://127.0.0.1:9", &otel);
    let pusher = serve(db.as_ref(), "http://127.0.0.1:9", &otel);
    let mut client = RefreshServiceClient::connect(format!("http://{}", pusher.grpc))
        .await
        .unwrap();
    let mut stream = client
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(account_target("acc_across")),
            after_sequence: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let http = reqwest::Client::new();
    let body = event("evt_across", "acc_across", "succeeded", system_now_ms());
    assert_eq!(signed_post(&http, &intake.http, &body).await, 200);
    let pushed = loop {
        let message = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("the result reaches the other replica's watcher")
            .unwrap()
            .unwrap();
        if let Some(pb::watch_refresh_response::Event::AccountResult(r)) = &message.event {
            assert_eq!(r.event_id, "evt_across");
            break message.sequence;
        }
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let linked = {
            let received = received.lock().unwrap();
            let spans = &received.spans;
            let webhook = named(spans, "webhook")
                .into_iter()
                .find(|s| attribute(s, "event_id").as_deref() == Some("evt_across"))
                .cloned();
            webhook.and_then(|webhook| {
                named(spans, "push")
                    .into_iter()
                    .find(|p| {
                        attribute(p, "sequence") == Some(pushed.to_string())
                            && p.links.iter().any(|l| {
                                l.trace_id == webhook.trace_id && l.span_id == webhook.span_id
                            })
                    })
                    .cloned()
            })
        };
        if linked.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no push on the other replica linked to the webhook span"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((intake, pusher));
}
