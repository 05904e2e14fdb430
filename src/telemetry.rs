//! OpenTelemetry traces over OTLP, configured by the standard `OTEL_*` environment variables
//! and off unless an OTLP endpoint is set.
//!
//! Off (no `OTEL_EXPORTER_OTLP_ENDPOINT` nor `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
//! `OTEL_SDK_DISABLED=true`), nothing of OpenTelemetry runs: no layer, no exporter task, and
//! every span helper here returns [`Span::none`] after one relaxed load, so the hot paths
//! create no span at all.
//!
//! On, [`Telemetry::from_env`] builds the exporter (OTLP/HTTP protobuf, or OTLP/gRPC with
//! `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`) behind the batch processor that runs *on the Tokio
//! runtime*: the exporters are async (reqwest, tonic) and need it; the SDK's default batch
//! processor runs them on its own thread with no runtime, where they fail and the spans are
//! silently dropped. So it must be built from inside the runtime (`serve` does), and
//! [`Telemetry::shutdown`] flushes what is queued on a graceful exit.
//!
//! The spans (names and attributes are listed in README's "Operating it"): `webhook`,
//! `rpc`, `fintoc.call`, `commit`, `push`. None carries a request body, a URL (the link
//! token travels in Fintoc's URLs), a header value, a key or a secret: only the fields named
//! here, and the SDK's events come only from WARN/ERROR log lines, which never hold secrets.
//!
//! The webhook → push link: the webhook span's context is remembered under its event id (in
//! memory, bounded), and a `push` of a result carrying that event id links to it. A push
//! from another replica (PostgreSQL), or after a restart, finds nothing and goes without
//! the link; it still names the `event_id`, by which a trace backend can join the two.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span made here: the OpenTelemetry layer takes these (whatever
/// RUST_LOG says about the log lines), and only WARN and above of everything else.
pub const TARGET: &str = "fintoc_refresh::telemetry";

/// Webhook span contexts kept for the pushes that link back to them. A result is pushed
/// within moments of its webhook (or of its intent's creation, for a held one); this many
/// cover minutes of the heaviest intake measured, at ~100 bytes each.
const REMEMBERED: usize = 16_384;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are on (set once, by [`Telemetry::from_env`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Whether the environment asks for traces: an OTLP endpoint is set (for all signals or for
/// traces) and the SDK is not disabled.
pub fn wanted(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Whether the environment picks OTLP/gRPC (otherwise OTLP/HTTP with protobuf, the
/// specification's default).
fn grpc(env: impl Fn(&str) -> Option<String>) -> bool {
    env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("grpc"))
}

/// The installed trace pipeline: the provider whose batch processor runs on Tokio.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Builds the exporter and provider when the environment asks for traces (None when it
    /// does not: then nothing is started). Must run inside the Tokio runtime.
    pub fn from_env() -> Result<Option<Telemetry>, String> {
        let env = |name: &str| std::env::var(name).ok();
        if !wanted(env) {
            return Ok(None);
        }
        let exporter = if grpc(env) {
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
        } else {
            use opentelemetry_otlp::WithExportConfig;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()
        }
        .map_err(|e| format!("cannot build the OTLP trace exporter: {e}"))?;
        let processor =
            BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        // The SDK's default resource reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES;
        // only a name set by neither becomes ours (instead of "unknown_service").
        let mut resource = opentelemetry_sdk::Resource::builder();
        let attributes = env("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
        if env("OTEL_SERVICE_NAME").is_none() && !attributes.contains("service.name=") {
            resource = resource.with_service_name("fintoc-refresh");
        }
        // The sampler comes from OTEL_TRACES_SAMPLER(_ARG), as the SDK reads them.
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource.build())
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some(Telemetry { provider }))
    }

    /// The tracer the `tracing` layer sends spans to.
    pub fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        self.provider.tracer("fintoc-refresh")
    }

    /// Exports what is queued and stops the exporter, within `within`. The processor waits
    /// on its task blocking, so it waits off the runtime's workers.
    pub async fn shutdown(self, within: Duration) {
        ENABLED.store(false, Ordering::Relaxed);
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || {
            let _ = provider.force_flush();
            provider.shutdown_with_timeout(within)
        });
        match tokio::time::timeout(within, done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the last spans may not be exported"),
            _ => tracing::warn!(?within, "the trace exporter did not finish in time"),
        }
    }
}

fn propagator() -> &'static TraceContextPropagator {
    static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The span of one webhook delivery; its fields are filled by [`webhook_event`] and
/// [`webhook_done`]. Never the body.
pub fn webhook_span() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "webhook",
        otel.kind = "server",
        event_id = Empty,
        event_type = Empty,
        outcome = Empty,
        durable_wait_ms = Empty,
    )
}

/// The verified event's id and type, on its webhook span. The span is remembered under the
/// event id now, before the commit: the result may reach a watcher before this handler
/// hears back from the store. The first delivery of an event keeps it (a redelivery is a
/// duplicate, whose result was logged by the first).
pub fn webhook_event(span: &Span, event_id: Option<&str>, event_type: &str) {
    if span.is_none() {
        return;
    }
    span.record("event_type", event_type);
    if let Some(id) = event_id {
        span.record("event_id", id);
        remember(id, span.context().span().span_context().clone());
    }
}

/// The intake's outcome and how long it waited for its commit to be durable. A delivery that
/// logged nothing of its own is forgotten again, so a later one can be remembered.
pub fn webhook_done(span: &Span, event_id: Option<&str>, outcome: &str, durable_wait: Duration) {
    if span.is_none() {
        return;
    }
    span.record("outcome", outcome);
    span.record("durable_wait_ms", durable_wait.as_secs_f64() * 1e3);
    if let Some(id) = event_id
        && matches!(outcome, "error" | "unparseable")
    {
        forget(id, span.context().span().span_context());
    }
}

/// The span of one RPC, a child of the caller's trace when its metadata carries a W3C
/// `traceparent`. `grpc.code` is filled by [`rpc_code`].
pub fn rpc_span(method: &'static str, metadata: &HeaderMap) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "rpc",
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = "fintoc.refresh.v1.RefreshService",
        rpc.method = method,
        grpc.code = Empty,
    );
    let parent = propagator().extract(&Headers(metadata));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// The RPC's status code, on the current (`rpc`) span.
pub fn rpc_code(code: tonic::Code) {
    if enabled() {
        Span::current().record("grpc.code", code as i64);
    }
}

/// The span of one attempt of a Fintoc call: `endpoint` is the metrics label (never the
/// URL, which may hold a link token).
pub fn fintoc_span(endpoint: &'static str, attempt: u32) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "fintoc.call",
        otel.kind = "client",
        endpoint,
        attempt = i64::from(attempt),
        http.response.status_code = Empty,
        outcome = Empty,
    )
}

/// Puts the current span's `traceparent` on an outgoing request (nothing when traces are
/// off or there is no span).
pub fn inject(headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    let context = Span::current().context();
    if context.span().span_context().is_valid() {
        propagator().inject_context(&context, &mut HeadersMut(headers));
    }
}

/// Records a field on the current span (a no-op when traces are off).
pub fn record(field: &'static str, value: impl tracing::Value) {
    if enabled() {
        Span::current().record(field, value);
    }
}

/// The span of one group commit of `batch` jobs, linked to the span each job was submitted
/// from (a webhook's, an RPC's).
pub fn commit_span<'a>(batch: usize, from: impl Iterator<Item = &'a Span>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span =
        tracing::info_span!(target: TARGET, "commit", batch_size = batch as i64, error = Empty);
    for job in from {
        let context = job.context().span().span_context().clone();
        span.add_link(context);
    }
    span
}

/// The W3C traceparent of the webhook span that brought `event_id` (empty when traces are
/// off or this process did not take it): stored with the result, so a push on any replica
/// links back to it.
pub fn traceparent_of(event_id: &str) -> String {
    if !enabled() {
        return String::new();
    }
    let Some(origin) = origin(event_id) else {
        return String::new();
    };
    format!(
        "00-{}-{}-{:02x}",
        origin.trace_id(),
        origin.span_id(),
        origin.trace_flags().to_u8()
    )
}

/// A stored traceparent as a span context (a remote one), if it reads.
fn stored_context(traceparent: &str) -> Option<SpanContext> {
    if traceparent.is_empty() {
        return None;
    }
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    let context = propagator().extract(&carrier);
    let span = context.span();
    let found = span.span_context();
    found.is_valid().then(|| found.clone())
}

/// The span of one result sent on a watch stream, linked to the webhook that brought it:
/// through the context stored with the result (`stored`, any replica), else the one this
/// process remembers.
pub fn push_span(sequence: i64, event_id: &str, replay: bool, stored: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        "push",
        otel.kind = "producer",
        sequence,
        event_id,
        replay,
    );
    if let Some(origin) = stored_context(stored).or_else(|| origin(event_id)) {
        span.add_link(origin);
    }
    span
}

/// Remembered webhook span contexts, oldest first out.
#[derive(Default)]
struct Origins {
    by_event: HashMap<String, SpanContext>,
    order: VecDeque<String>,
}

fn origins() -> &'static Mutex<Origins> {
    static ORIGINS: OnceLock<Mutex<Origins>> = OnceLock::new();
    ORIGINS.get_or_init(Mutex::default)
}

fn remember(event_id: &str, context: SpanContext) {
    if !context.is_valid() || event_id.is_empty() {
        return;
    }
    let mut origins = origins().lock().unwrap_or_else(|e| e.into_inner());
    if origins.by_event.contains_key(event_id) {
        return;
    }
    origins.by_event.insert(event_id.to_owned(), context);
    origins.order.push_back(event_id.to_owned());
    while origins.order.len() > REMEMBERED {
        if let Some(old) = origins.order.pop_front() {
            origins.by_event.remove(&old);
        }
    }
}

/// Drops the remembered context of `event_id` if it is `context`. (Its slot in `order`
/// stays: at worst a later delivery's context ages out early, losing one link.)
fn forget(event_id: &str, context: &SpanContext) {
    let mut origins = origins().lock().unwrap_or_else(|e| e.into_inner());
    if origins.by_event.get(event_id) == Some(context) {
        origins.by_event.remove(event_id);
    }
}

fn origin(event_id: &str) -> Option<SpanContext> {
    if event_id.is_empty() {
        return None;
    }
    let origins = origins().lock().unwrap_or_else(|e| e.into_inner());
    origins.by_event.get(event_id).cloned()
}

/// The trace and span ids of the current span, for the JSON log lines.
pub fn current_ids() -> Option<(String, String)> {
    if !enabled() {
        return None;
    }
    let context = Span::current().context();
    let span = context.span();
    let ids = span.span_context();
    ids.is_valid()
        .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn traces_are_on_only_with_an_endpoint_and_not_disabled() {
        assert!(!wanted(env(&[])));
        assert!(!wanted(env(&[("OTEL_SERVICE_NAME", "x")])));
        assert!(!wanted(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(wanted(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://c:4318"
        )])));
        assert!(wanted(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4318/v1/traces"
        )])));
        assert!(!wanted(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "TRUE")
        ])));
        assert!(wanted(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "false")
        ])));
    }

    #[test]
    fn grpc_only_when_asked() {
        assert!(!grpc(env(&[])));
        assert!(!grpc(env(&[(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "http/protobuf"
        )])));
        assert!(grpc(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])));
        assert!(!grpc(env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
        ])));
    }

    /// Off, the helpers make no span and remember nothing (the service's default).
    #[test]
    fn off_makes_no_spans() {
        assert!(!enabled());
        assert!(webhook_span().is_none());
        assert!(rpc_span("GetLink", &HeaderMap::new()).is_none());
        assert!(fintoc_span("get_link", 1).is_none());
        assert!(commit_span(1, std::iter::empty()).is_none());
        assert!(push_span(1, "evt_1", false, "").is_none());
        assert!(current_ids().is_none());
        let mut headers = HeaderMap::new();
        inject(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn remembered_contexts_are_bounded() {
        use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
        let context = |n: u64| {
            SpanContext::new(
                TraceId::from(u128::from(n) + 1),
                SpanId::from(n + 1),
                TraceFlags::SAMPLED,
                true,
                TraceState::default(),
            )
        };
        for n in 0..(REMEMBERED as u64 + 10) {
            remember(&format!("evt_bound_{n}"), context(n));
        }
        assert!(origin("evt_bound_0").is_none());
        assert_eq!(
            origin(&format!("evt_bound_{}", REMEMBERED + 9)),
            Some(context(REMEMBERED as u64 + 9))
        );
        assert!(origins().lock().unwrap().by_event.len() <= REMEMBERED);
    }
}
