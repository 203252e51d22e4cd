//! A provider-agnostic upstream that replays recorded responses byte for byte (any wire format:
//! JSON, SSE, AWS event stream), split into small writes at awkward boundaries, and records what
//! it was sent. The conformance suite runs every adapter against it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use super::Recorded;

/// One recorded answer.
#[derive(Debug, Clone)]
pub struct Replay {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Bytes per write; 0 sends the body in one write.
    pub split: usize,
    /// Wait before answering (for timeout cases).
    pub delay: Duration,
}

impl Replay {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type: content_type.into(),
            headers: Vec::new(),
            body: body.into(),
            split: 5,
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct ReplayState {
    queue: Mutex<VecDeque<Replay>>,
    requests: Mutex<Vec<Recorded>>,
}

pub struct ReplayUpstream {
    pub addr: SocketAddr,
    state: Arc<ReplayState>,
    task: tokio::task::JoinHandle<()>,
}

impl ReplayUpstream {
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ReplayState::default());
        let app = Router::new().fallback(handle).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, replay: Replay) {
        if let Ok(mut queue) = self.state.queue.lock() {
            queue.push_back(replay);
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn last_request(&self) -> Option<Recorded> {
        self.requests().pop()
    }
}

impl Drop for ReplayUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    State(state): State<Arc<ReplayState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(Recorded {
            method,
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        });
    }
    let Some(replay) = state.queue.lock().ok().and_then(|mut q| q.pop_front()) else {
        let mut response = Response::new(Body::from("no replay queued"));
        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return response;
    };
    if !replay.delay.is_zero() {
        tokio::time::sleep(replay.delay).await;
    }
    let pieces: Vec<Bytes> = if replay.split == 0 {
        vec![Bytes::from(replay.body)]
    } else {
        replay.body.chunks(replay.split).map(Bytes::copy_from_slice).collect()
    };
    let body = futures_util::stream::iter(pieces).then(|piece| async move {
        tokio::task::yield_now().await;
        Ok::<_, std::convert::Infallible>(piece)
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = StatusCode::from_u16(replay.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(&replay.content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    for (name, value) in &replay.headers {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            response.headers_mut().insert(n, v);
        }
    }
    response
}
