//! An in-process HTTP server speaking the OpenAI wire format (also Azure's deployment URLs), with
//! faults on demand. It answers with the same deterministic content as the built-in `mock`
//! provider, records every request it receives, and can split SSE events across writes at
//! awkward byte boundaries.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use serde_json::{Value, json};

use crate::providers::mock;
use crate::types::{ChatRequest, EmbeddingsRequest};

/// One scripted misbehaviour, consumed by the next request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and body (and extra headers such as `retry-after`).
    Status { status: u16, body: String, headers: Vec<(String, String)> },
    /// 200 with a body that is not JSON.
    Garbage,
    /// Wait before answering normally.
    Delay(Duration),
    /// Stream `after` events, then close the connection without `[DONE]`.
    StreamCut { after: usize },
    /// Stream `after` events, then send an event that is not JSON.
    StreamGarbage { after: usize },
    /// Stream `after` events, then hang forever.
    StreamStall { after: usize },
    /// Stream `after` events, then an `{"error": …}` event.
    StreamError { after: usize },
}

impl Fault {
    pub fn status(status: u16) -> Self {
        Fault::Status {
            status,
            body: json!({"error": {"message": format!("mock upstream failure {status}"), "type": "server_error"}})
                .to_string(),
            headers: Vec::new(),
        }
    }

    pub fn rate_limited(retry_after: &str) -> Self {
        Fault::Status {
            status: 429,
            body: json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded"}}).to_string(),
            headers: vec![("retry-after".into(), retry_after.into())],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct MockState {
    record: AtomicBool,
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<VecDeque<Fault>>,
    hits: AtomicUsize,
    /// Bytes per write for streamed bodies; 0 writes one event per write.
    split: AtomicUsize,
    /// Pause before each streamed event, in microseconds; 0 streams without pauses.
    chunk_interval_us: AtomicU64,
    /// Random faults for chaos benchmarks, used when no scripted fault is queued.
    chaos: Mutex<Option<Chaos>>,
}

/// Random misbehaviour, for chaos benchmarks: each request rolls the dice.
#[derive(Debug, Clone, Default)]
pub struct Chaos {
    /// Latency before every answer.
    pub latency: Duration,
    /// Share of requests answered with a 500.
    pub error_rate: f64,
    /// Share of requests answered with a 429 (`retry-after: 1`).
    pub rate_limit_rate: f64,
    /// Share of requests that take `spike_latency` longer.
    pub spike_rate: f64,
    pub spike_latency: Duration,
    /// A full outage (every request 503) from `start` to `end`.
    pub outage: Option<(tokio::time::Instant, tokio::time::Instant)>,
    /// Share of streams that die half-way / stall half-way.
    pub stream_cut_rate: f64,
    pub stream_stall_rate: f64,
}

impl Chaos {
    /// The fault for one request, and the latency before answering.
    fn roll(&self) -> (Option<Fault>, Duration) {
        let now = tokio::time::Instant::now();
        if self.outage.is_some_and(|(start, end)| now >= start && now < end) {
            return (Some(Fault::status(503)), self.latency);
        }
        let mut latency = self.latency;
        if crate::rng::unit() < self.spike_rate {
            latency += self.spike_latency;
        }
        let roll = crate::rng::unit();
        let mut edge = self.error_rate;
        if roll < edge {
            return (Some(Fault::status(500)), latency);
        }
        edge += self.rate_limit_rate;
        if roll < edge {
            return (Some(Fault::rate_limited("1")), latency);
        }
        edge += self.stream_cut_rate;
        if roll < edge {
            return (Some(Fault::StreamCut { after: 5 }), latency);
        }
        edge += self.stream_stall_rate;
        if roll < edge {
            return (Some(Fault::StreamStall { after: 5 }), latency);
        }
        (None, latency)
    }
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    /// Starts on a free loopback port, recording requests and splitting events every 7 bytes.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), true, 7).await
    }

    /// `record`: keep every request (tests); `split`: bytes per streamed write, 0 = per event.
    pub async fn start_on(addr: SocketAddr, record: bool, split: usize) -> std::io::Result<Self> {
        let state = Arc::new(MockState::default());
        state.record.store(record, Ordering::Relaxed);
        state.split.store(split, Ordering::Relaxed);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(state.clone());
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    /// Base URL to configure as an OpenAI-compatible provider (`…/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Base URL for an Azure OpenAI provider.
    pub fn azure_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push_fault(&self, fault: Fault) {
        if let Ok(mut faults) = self.state.faults.lock() {
            faults.push_back(fault);
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn last_request(&self) -> Option<Recorded> {
        self.requests().pop()
    }

    /// Turns on random faults for every request that has no scripted fault.
    pub fn set_chaos(&self, chaos: Chaos) {
        if let Ok(mut slot) = self.state.chaos.lock() {
            *slot = Some(chaos);
        }
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::Relaxed)
    }

    pub fn set_split(&self, bytes: usize) {
        self.state.split.store(bytes, Ordering::Relaxed);
    }

    /// Pauses `interval` before each streamed event and stamps every JSON event with its send
    /// time (`"x_mock_sent_ns"`: Unix time in nanoseconds, taken right before the write), so a
    /// client can measure how long a chunk took to reach it. Each event is its own write (the
    /// `split` setting is ignored). Zero (the default) turns this off.
    pub fn set_chunk_interval(&self, interval: Duration) {
        let micros = u64::try_from(interval.as_micros()).unwrap_or(u64::MAX);
        self.state.chunk_interval_us.store(micros, Ordering::Relaxed);
    }

    /// Runs until the task is aborted (used by the `mock-upstream` command).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error_json(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn json_ok(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn handle(
    State(state): State<Arc<MockState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.hits.fetch_add(1, Ordering::Relaxed);
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    if state.record.load(Ordering::Relaxed)
        && let Ok(mut requests) = state.requests.lock()
    {
        requests.push(Recorded {
            method: method.clone(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers: headers.clone(),
            body: parsed.clone().unwrap_or(Value::Null),
        });
    }
    let mut fault = state.faults.lock().ok().and_then(|mut f| f.pop_front());
    let chaos = state.chaos.lock().ok().and_then(|c| c.clone());
    if fault.is_none()
        && let Some(chaos) = chaos
    {
        let (rolled, latency) = chaos.roll();
        fault = rolled;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }
    match &fault {
        Some(Fault::Status { status, body, headers }) => {
            let mut response = Response::new(Body::from(body.clone()));
            *response.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                    response.headers_mut().insert(n, v);
                }
            }
            return response;
        }
        Some(Fault::Garbage) => return json_ok(b"<html>502 Bad Gateway</html>".to_vec()),
        Some(Fault::Delay(d)) => tokio::time::sleep(*d).await,
        _ => {}
    }
    if method != Method::POST {
        return error_json(StatusCode::METHOD_NOT_ALLOWED, "mock upstream accepts POST only");
    }
    let path = uri.path();
    let Some(parsed) = parsed else {
        return error_json(StatusCode::BAD_REQUEST, "We could not parse the JSON body of your request.");
    };
    if path.ends_with("/embeddings") {
        return match serde_json::from_value::<EmbeddingsRequest>(parsed) {
            Ok(req) => {
                let model = req.model.clone();
                json_ok(mock::embeddings(&req, &model).to_string().into_bytes())
            }
            Err(e) => error_json(StatusCode::BAD_REQUEST, &e.to_string()),
        };
    }
    if !path.ends_with("/chat/completions") {
        return error_json(StatusCode::NOT_FOUND, &format!("no mock route for {path}"));
    }
    let req: ChatRequest = match serde_json::from_value(parsed) {
        Ok(req) => req,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let model = if req.model.is_empty() { "azure-deployment".to_string() } else { req.model.clone() };
    if !req.is_stream() {
        let response = mock::complete(&req, &model);
        return json_ok(serde_json::to_vec(&response).unwrap_or_default());
    }
    let mut events: Vec<Vec<u8>> = mock::chunks(&req, &model, req.wants_stream_usage())
        .iter()
        .map(|c| format!("data: {}\n\n", serde_json::to_string(c).unwrap_or_default()).into_bytes())
        .collect();
    events.push(b"data: [DONE]\n\n".to_vec());
    let mut stall = false;
    match fault {
        Some(Fault::StreamCut { after }) => events.truncate(after),
        Some(Fault::StreamGarbage { after }) => {
            events.truncate(after);
            events.push(b"data: {\"id\":\"chatcmpl-x\",\"choices\":[{\"delta\":{\"content\":\"trunc\n\n".to_vec());
        }
        Some(Fault::StreamError { after }) => {
            events.truncate(after);
            events.push(b"data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\"}}\n\n".to_vec());
        }
        Some(Fault::StreamStall { after }) => {
            events.truncate(after);
            stall = true;
        }
        _ => {}
    }
    let interval = Duration::from_micros(state.chunk_interval_us.load(Ordering::Relaxed));
    if !interval.is_zero() {
        let body = futures_util::stream::iter(events)
            .then(move |event| async move {
                tokio::time::sleep(interval).await;
                Ok::<_, std::convert::Infallible>(Bytes::from(stamp_send_time(event)))
            })
            .chain(futures_util::stream::once(async move {
                if stall {
                    std::future::pending::<()>().await;
                }
                Ok(Bytes::new())
            }));
        let mut response = Response::new(Body::from_stream(body));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        return response;
    }
    let split = state.split.load(Ordering::Relaxed);
    let pieces: Vec<Bytes> = if split == 0 {
        events.into_iter().map(Bytes::from).collect()
    } else {
        let all: Vec<u8> = events.concat();
        all.chunks(split).map(Bytes::copy_from_slice).collect()
    };
    let body = futures_util::stream::iter(pieces)
        .then(|piece| async move {
            // Yield so each piece tends to leave as its own write.
            tokio::task::yield_now().await;
            Ok::<_, std::convert::Infallible>(piece)
        })
        .chain(futures_util::stream::once(async move {
            if stall {
                std::future::pending::<()>().await;
            }
            Ok(Bytes::new())
        }));
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response
}

/// Adds `"x_mock_sent_ns": <now>` as the last member of a `data: {…}` event; other events are
/// returned unchanged.
fn stamp_send_time(event: Vec<u8>) -> Vec<u8> {
    const TAIL: &[u8] = b"}\n\n";
    if !event.starts_with(b"data: {") || !event.ends_with(TAIL) {
        return event;
    }
    let sent = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut out = event;
    out.truncate(out.len() - TAIL.len());
    out.extend_from_slice(format!(",\"x_mock_sent_ns\":{sent}}}\n\n").as_bytes());
    out
}
