//! The HTTP edge: axum routes, body limits, request ids, enrichment headers, and the one place
//! where a [`GatewayError`] becomes an HTTP response. Handlers stay thin: they read the body and
//! hand it to the pipeline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::net::TcpListener;

use crate::Gateway;
use crate::engine::pipeline::{self, Output};
use crate::error::GatewayError;
use crate::telemetry::{self, RequestRecord};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const GW_MODEL: HeaderName = HeaderName::from_static("x-gateway-model");
const GW_PROVIDER: HeaderName = HeaderName::from_static("x-gateway-provider");
const GW_UPSTREAM_MODEL: HeaderName = HeaderName::from_static("x-gateway-upstream-model");
const GW_UPSTREAM_MS: HeaderName = HeaderName::from_static("x-gateway-upstream-ms");
const GW_OVERHEAD_MS: HeaderName = HeaderName::from_static("x-gateway-overhead-ms");
const GW_COST_USD: HeaderName = HeaderName::from_static("x-gateway-cost-usd");
const GW_ATTEMPTS: HeaderName = HeaderName::from_static("x-gateway-attempts");
const GW_ROUTE: HeaderName = HeaderName::from_static("x-gateway-route");
const GW_ROUTE_TIER: HeaderName = HeaderName::from_static("x-gateway-route-tier");

pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/route/explain", post(route_explain))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
}

/// Runs the server until `shutdown` resolves, then drains in-flight requests and streams for up to
/// the configured grace period.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let gw = gateway.clone();
    let signal = async move {
        shutdown.await;
        gw.ready.store(false, Ordering::Release);
        tracing::info!("shutdown requested: draining in-flight requests");
        let _ = drain_tx.send(());
    };
    let app = router(gateway.clone());
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    let deadline = async move {
        if drain_rx.await.is_err() {
            return std::future::pending().await;
        }
        let grace = gateway.snapshot().config.server.shutdown_grace;
        tokio::time::sleep(grace).await;
        grace
    };
    tokio::select! {
        result = server => result,
        grace = deadline => {
            tracing::warn!("shutdown grace of {grace:?} ran out; closing the remaining connections");
            Ok(())
        }
    }
}

/// A server on its own task, for tests, benchmarks and embedding.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    pub async fn start(gateway: Arc<Gateway>, listen: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(gateway, listener, async move {
            let _ = rx.await;
        }));
        Ok(Self { addr, shutdown: Some(tx), task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Begins a graceful shutdown and waits for it to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Holds a request's record until the response is built; if the client goes away first and the
/// handler is dropped, the request is still logged.
struct Pending(Option<RequestRecord>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(record) = self.0.take() {
            let overhead = record.overhead();
            record.finish(499, "client_closed", overhead);
        }
    }
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string())
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, GatewayError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(GatewayError::PayloadTooLarge { limit }),
        Err(e) => Err(GatewayError::invalid(format!("could not read the request body: {e}"))),
    }
}

/// Every POST endpoint has one shape: read the body within the limit, run its pipeline function,
/// respond in the endpoint's error format.
macro_rules! body_endpoint {
    ($name:ident, $endpoint:literal, $pipeline:path, $format:expr) => {
        async fn $name(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
            let mut pending = Pending(Some(RequestRecord::new(request_id(&headers), $endpoint)));
            let snapshot = gw.snapshot();
            let result = match read_body(body, &headers, snapshot.config.server.max_body_size).await {
                Ok(bytes) => match pending.0.as_mut() {
                    Some(record) => $pipeline(&snapshot, record, &headers, &bytes).await,
                    None => Err(GatewayError::internal("request record missing")),
                },
                Err(e) => Err(e),
            };
            respond_as(result, &mut pending, $format)
        }
    };
}

body_endpoint!(chat_completions, "chat_completions", pipeline::chat_completions, ErrorFormat::OpenAi);
body_endpoint!(messages, "messages", pipeline::messages, ErrorFormat::Anthropic);
body_endpoint!(embeddings, "embeddings", pipeline::embeddings, ErrorFormat::OpenAi);
body_endpoint!(route_explain, "route_explain", pipeline::explain, ErrorFormat::OpenAi);

async fn list_models(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let mut pending = Pending(Some(RequestRecord::new(request_id(&headers), "models")));
    let snapshot = gw.snapshot();
    let result = match pending.0.as_mut() {
        Some(record) => pipeline::models(&snapshot, record, &headers, None),
        None => Err(GatewayError::internal("request record missing")),
    };
    respond(result, &mut pending)
}

async fn get_model(State(gw): State<Arc<Gateway>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let mut pending = Pending(Some(RequestRecord::new(request_id(&headers), "models")));
    let snapshot = gw.snapshot();
    let result = match pending.0.as_mut() {
        Some(record) => pipeline::models(&snapshot, record, &headers, Some(&id)),
        None => Err(GatewayError::internal("request record missing")),
    };
    respond(result, &mut pending)
}

/// Which API's error shape a route speaks.
#[derive(Clone, Copy)]
enum ErrorFormat {
    OpenAi,
    Anthropic,
}

fn respond(result: Result<Output, GatewayError>, pending: &mut Pending) -> Response {
    respond_as(result, pending, ErrorFormat::OpenAi)
}

/// Builds the response with the enrichment headers and accounts the request (for streams, the
/// body accounts it when the stream ends).
fn respond_as(result: Result<Output, GatewayError>, pending: &mut Pending, format: ErrorFormat) -> Response {
    let Some(mut record) = pending.0.take() else {
        return GatewayError::internal("request record missing").into_response();
    };
    let overhead = record.overhead();
    let mut response = match result {
        Ok(Output::Json(body)) => {
            let mut response = Response::new(Body::from(body));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Ok(Output::Stream(sse)) => {
            let mut response = Response::new(Body::empty());
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"));
            enrich(response.headers_mut(), &record, overhead);
            let mut sse = sse;
            sse.attach_record(record, overhead);
            *response.body_mut() = Body::from_stream(*sse);
            return response;
        }
        Err(error) => {
            record.error = Some(error.kind());
            let body = match format {
                ErrorFormat::OpenAi => None,
                ErrorFormat::Anthropic => Some(crate::providers::anthropic_inbound::error_json(&error).to_string()),
            };
            let mut response = error.into_response();
            if let Some(body) = body {
                *response.body_mut() = Body::from(body);
            }
            response
        }
    };
    enrich(response.headers_mut(), &record, overhead);
    let status = response.status().as_u16();
    let outcome = if record.error.is_some() { "error" } else { "ok" };
    record.finish(status, outcome, overhead);
    response
}

fn enrich(headers: &mut HeaderMap, record: &RequestRecord, overhead: Duration) {
    if let Ok(v) = HeaderValue::from_str(&record.request_id) {
        headers.insert(REQUEST_ID, v);
    }
    let named = [
        (GW_MODEL, record.model.as_deref()),
        (GW_PROVIDER, record.provider.as_deref()),
        (GW_UPSTREAM_MODEL, record.upstream_model.as_deref()),
    ];
    for (name, value) in named {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    }
    if record.provider.is_some() {
        headers.insert(GW_UPSTREAM_MS, millis(record.upstream_time));
    }
    headers.insert(GW_OVERHEAD_MS, millis(overhead));
    if let Some(v) = record.attempts.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert(GW_ATTEMPTS, v);
    }
    if let Some((route, tier)) = &record.route {
        if let Ok(v) = HeaderValue::from_str(route) {
            headers.insert(GW_ROUTE, v);
        }
        headers.insert(GW_ROUTE_TIER, HeaderValue::from_static(tier));
    }
    // Streams send headers before usage is known; their cost is in the log line and metrics.
    if let Some(cost) = record.cost_usd()
        && let Ok(v) = HeaderValue::from_str(&format!("{cost:.8}"))
    {
        headers.insert(GW_COST_USD, v);
    }
}

fn millis(d: Duration) -> HeaderValue {
    let text = format!("{:.3}", d.as_secs_f64() * 1000.0);
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("0"))
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.ready.load(Ordering::Acquire) {
        json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ready"}"#))
    } else {
        GatewayError::ShuttingDown.into_response()
    }
}

async fn metrics() -> Response {
    match telemetry::prometheus() {
        Some(handle) => {
            let mut response = Response::new(Body::from(handle.render()));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            response
        }
        None => GatewayError::internal("metrics recorder is not installed").into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    GatewayError::RouteNotFound { method: method.to_string(), path: uri.path().to_string() }.into_response()
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let mut response = GatewayError::invalid(format!("{method} is not allowed on {}", uri.path())).into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
