//! The one place that knows the order of a request's steps:
//!
//! ```text
//! auth → parse → resolve model → plan → call → account
//! ```
//!
//! Later steps (guardrails, limits, semantic routing, cache, fallbacks) are inserted here and only
//! here. Each step is a small function over the per-request [`RequestRecord`]; the HTTP edge
//! (`server`) turns the [`Output`] or [`GatewayError`] into a response.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::HeaderMap;
use serde::de::DeserializeOwned;

use super::call::{self, Operation, Reply, Served};
use super::resume::{self, ResumeContext};
use super::{Model, Snapshot};
use crate::config::StreamFailover;
use crate::error::GatewayError;
use crate::providers::{ChunkStream, StreamChunk, anthropic_inbound};
use crate::route::{Decision, Router, instruction};
use crate::telemetry::{self, RequestRecord};
use crate::types::{ChatRequest, EmbeddingsRequest};

pub enum Output {
    Json(Bytes),
    Stream(Box<SseBody>),
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    snapshot: &Arc<Snapshot>,
    record: &mut RequestRecord,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Output, GatewayError> {
    authenticate(snapshot, headers, record)?;
    let req: ChatRequest = parse_json(body)?;
    chat(snapshot, record, headers, req).await
}

/// `POST /v1/messages`: the Anthropic-compatible API, served by any configured model.
pub async fn messages(
    snapshot: &Arc<Snapshot>,
    record: &mut RequestRecord,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Output, GatewayError> {
    authenticate(snapshot, headers, record)?;
    let inbound: anthropic_inbound::MessagesRequest = parse_json(body)?;
    let req = anthropic_inbound::to_canonical(inbound)?;
    match chat(snapshot, record, headers, req).await? {
        Output::Json(body) => Ok(Output::Json(anthropic_inbound::response_body(&body)?)),
        Output::Stream(mut sse) => {
            sse.anthropic = Some(Box::default());
            Ok(Output::Stream(sse))
        }
    }
}

/// The chat steps shared by both chat APIs, from a parsed canonical request.
async fn chat(
    snapshot: &Arc<Snapshot>,
    record: &mut RequestRecord,
    headers: &HeaderMap,
    mut req: ChatRequest,
) -> Result<Output, GatewayError> {
    validate_chat(&req)?;
    record.stream = req.is_stream();
    if snapshot.config.server.log_prompts {
        record.prompt_excerpt =
            req.messages.last().and_then(|m| m.content.as_ref()).map(|c| c.text().chars().take(200).collect());
    }
    if let Some(router) = snapshot.router.as_ref().filter(|r| r.config.model_name == req.model) {
        let mut decision = route(snapshot, router, &req).await;
        record.route = Some((decision.route.clone(), decision.tier));
        if !snapshot.config.server.log_prompts {
            // The trace quotes the prompt's instruction: prompt text stays out of logs by default.
            decision.instruction.clear();
        }
        record.route_trace = Some(decision.to_json().to_string());
        req.model = decision.model;
    }
    let model = resolve_model(snapshot, &req.model, record)?;
    let client_wants_usage = req.wants_stream_usage();
    let session = session_of(&model, headers);
    let mut op = Operation::Chat(req);
    let served = call_step(snapshot, record, model, &mut op, session).await?;
    match served.reply {
        Reply::Complete(completion) => {
            record.usage = completion.usage;
            Ok(Output::Json(completion.body))
        }
        Reply::Stream { first, rest } => {
            let keepalive = snapshot.config.server.sse_keepalive;
            let continues = served.model.config.reliability.stream_failover == StreamFailover::Continue;
            let (first, rest, notes) = match op {
                Operation::Chat(request) if continues => {
                    let notes = Arc::new(Mutex::new(Vec::new()));
                    let context = ResumeContext {
                        snapshot: snapshot.clone(),
                        model: served.model.clone(),
                        target: served.target,
                        request,
                        notes: notes.clone(),
                    };
                    (None, resume::resumable(first, rest, context), Some(notes))
                }
                _ => (first, rest, None),
            };
            let mut body = SseBody::new(first, rest, client_wants_usage, keepalive);
            body.notes = notes;
            Ok(Output::Stream(Box::new(body)))
        }
    }
}

/// Route step: keyword rules, then embeddings (off the async executor), then the classifier
/// model, then the default route.
pub async fn route(snapshot: &Arc<Snapshot>, router: &Arc<Router>, req: &ChatRequest) -> Decision {
    decide(snapshot, router, &instruction::last_user_text(&req.messages), true).await
}

/// Runs the tiers on a prompt; `use_classifier: false` never calls a model (explain, evaluation).
pub async fn decide(snapshot: &Snapshot, router: &Arc<Router>, prompt: &str, use_classifier: bool) -> Decision {
    let mut decision = router.keyword_tier(prompt);
    if !decision.decided() && router.has_embeddings() {
        let router = router.clone();
        let pending = decision.clone();
        decision = tokio::task::spawn_blocking(move || {
            let mut d = pending;
            router.embedding_tier(&mut d);
            d
        })
        .await
        .unwrap_or(decision);
    }
    if router.wants_classifier(&decision) {
        if use_classifier {
            classify(snapshot, router, &mut decision).await;
        } else {
            decision.classifier.note = Some("not run: explain and --no-classifier never call a model".into());
        }
    }
    router.finish(&mut decision);
    decision
}

/// `POST /v1/route/explain`: the routing decision for `{"prompt": …}` or `{"messages": […]}`,
/// without calling any model.
pub async fn explain(
    snapshot: &Arc<Snapshot>,
    record: &mut RequestRecord,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Output, GatewayError> {
    authenticate(snapshot, headers, record)?;
    let router = snapshot.router.as_ref().ok_or_else(|| {
        GatewayError::invalid("this gateway has no `router:` configured, so there is nothing to explain")
    })?;
    let value: serde_json::Value = parse_json(body)?;
    let prompt = match (value.get("prompt").and_then(|p| p.as_str()), value.get("messages")) {
        (Some(prompt), _) => prompt.to_string(),
        (None, Some(messages)) => {
            let messages: Vec<crate::types::Message> =
                serde_json::from_value(messages.clone()).map_err(|e| GatewayError::InvalidRequest {
                    message: format!("invalid messages: {e}"),
                    param: Some("messages".into()),
                })?;
            instruction::last_user_text(&messages)
        }
        (None, None) => {
            return Err(GatewayError::InvalidRequest {
                message: "send {\"prompt\": \"…\"} or {\"messages\": […]}".into(),
                param: Some("prompt".into()),
            });
        }
    };
    let decision = decide(snapshot, router, &prompt, false).await;
    Ok(Output::Json(Bytes::from(serde_json::to_vec(&decision).unwrap_or_default())))
}

/// Tier 3: asks the classifier model (cached by instruction); a timeout or a bad answer leaves
/// the decision to the default route.
async fn classify(snapshot: &Snapshot, router: &Router, decision: &mut Decision) {
    let started = tokio::time::Instant::now();
    if let Some(cached) = router.cached_classification(decision) {
        router.apply_classification(decision, Ok(cached), 0, true);
        return;
    }
    let cfg = &router.config.classifier;
    let answer = async {
        let name = cfg.model.as_deref().unwrap_or_default();
        let model =
            snapshot.models.get(name).cloned().ok_or_else(|| format!("classifier model {name:?} is missing"))?;
        let request: ChatRequest =
            serde_json::from_value(router.classifier_request(decision)).map_err(|e| e.to_string())?;
        let mut op = Operation::Chat(request);
        let mut attempts = Vec::new();
        let call = call::run(snapshot, model, &mut op, None, None, &mut attempts);
        let served = tokio::time::timeout(cfg.timeout, call)
            .await
            .map_err(|_| format!("classifier timed out after {} ms", cfg.timeout.as_millis()))?
            .map_err(|e| format!("classifier failed: {e}"))?;
        let Reply::Complete(completion) = served.reply else {
            return Err("classifier answered with a stream".to_string());
        };
        let response: crate::types::ChatResponse =
            serde_json::from_slice(&completion.body).map_err(|e| format!("classifier answer unreadable: {e}"))?;
        let text = response.choices.first().and_then(|c| c.message.content.clone()).unwrap_or_default();
        router.parse_classification(decision, &text)
    }
    .await;
    router.apply_classification(decision, answer, started.elapsed().as_micros() as u64, false);
}

/// Plan and call: the reliability engine picks deployments, retries and falls back; the record
/// learns who answered and what every attempt did.
async fn call_step(
    snapshot: &Snapshot,
    record: &mut RequestRecord,
    model: Arc<Model>,
    op: &mut Operation,
    session: Option<&str>,
) -> Result<Served, GatewayError> {
    let mut attempts = Vec::new();
    let result = call::run(snapshot, model.clone(), op, session, None, &mut attempts).await;
    record.attempts = (!attempts.is_empty()).then(|| call::describe(&attempts));
    let served = result?;
    let target = &served.model.targets[served.target];
    record.model = Some(served.model.name.clone());
    record.provider = Some(Arc::from(target.provider_name()));
    record.upstream_model = Some(target.upstream_model.clone());
    record.price = target.price;
    record.upstream_time = served.upstream_time;
    if let (Some(session), Some(sticky)) = (session, &model.config.reliability.sticky)
        && Arc::ptr_eq(&served.model, &model)
    {
        model.balancer.stick(session, served.target, sticky.ttl);
    }
    Ok(served)
}

/// The sticky-session key, when the model pins sessions and the client sent one.
fn session_of<'h>(model: &Model, headers: &'h HeaderMap) -> Option<&'h str> {
    let sticky = model.config.reliability.sticky.as_ref()?;
    headers.get(sticky.header.as_str())?.to_str().ok().filter(|s| !s.is_empty() && s.len() <= 256)
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    snapshot: &Snapshot,
    record: &mut RequestRecord,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Output, GatewayError> {
    authenticate(snapshot, headers, record)?;
    let req: EmbeddingsRequest = parse_json(body)?;
    if req.input.is_null() {
        return Err(GatewayError::InvalidRequest {
            message: "`input` is required".into(),
            param: Some("input".into()),
        });
    }
    let model = resolve_model(snapshot, &req.model, record)?;
    let session = session_of(&model, headers);
    let mut op = Operation::Embeddings(req);
    let served = call_step(snapshot, record, model, &mut op, session).await?;
    match served.reply {
        Reply::Complete(completion) => {
            record.usage = completion.usage;
            Ok(Output::Json(completion.body))
        }
        Reply::Stream { .. } => Err(GatewayError::internal("an embeddings call returned a stream")),
    }
}

/// `GET /v1/models` and `/v1/models/{id}`.
pub fn models(
    snapshot: &Snapshot,
    record: &mut RequestRecord,
    headers: &HeaderMap,
    id: Option<&str>,
) -> Result<Output, GatewayError> {
    authenticate(snapshot, headers, record)?;
    match id {
        None => Ok(Output::Json(snapshot.model_list.clone())),
        Some(id) => snapshot
            .model_entry(id)
            .map(|entry| Output::Json(entry.clone()))
            .ok_or_else(|| GatewayError::ModelNotFound { model: id.to_string() }),
    }
}

/// Auth step: a static client key from `Authorization: Bearer` (or `x-api-key`). With no keys
/// configured the gateway is open, which `serve` allows only on loopback.
fn authenticate(snapshot: &Snapshot, headers: &HeaderMap, record: &mut RequestRecord) -> Result<(), GatewayError> {
    let keys = &snapshot.config.client_keys;
    if keys.is_empty() {
        return Ok(());
    }
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(GatewayError::Unauthorized {
            message: "missing API key: send `Authorization: Bearer <key>` with a key issued by the gateway operator",
        });
    };
    match keys.get(presented) {
        Some(name) => {
            record.client = Some(name.clone());
            Ok(())
        }
        None => Err(GatewayError::Unauthorized { message: "invalid API key: the gateway does not know this key" }),
    }
}

/// Parses a JSON body; on failure, says where it broke (line/column or the field path).
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    match serde_json::from_slice(body) {
        Ok(value) => Ok(value),
        Err(e) if e.is_data() => {
            // Parse again only on failure, to learn which field was wrong.
            let mut de = serde_json::Deserializer::from_slice(body);
            let path = match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Err(err) => err.path().to_string(),
                Ok(_) => String::new(),
            };
            let param = (!path.is_empty() && path != ".").then_some(path);
            let message = match &param {
                Some(p) => format!("invalid request body at `{p}`: {e}"),
                None => format!("invalid request body: {e}"),
            };
            Err(GatewayError::InvalidRequest { message, param })
        }
        Err(e) => Err(GatewayError::MalformedJson { detail: e.to_string() }),
    }
}

fn validate_chat(req: &ChatRequest) -> Result<(), GatewayError> {
    if req.messages.is_empty() {
        return Err(GatewayError::InvalidRequest {
            message: "`messages` must contain at least one message".into(),
            param: Some("messages".into()),
        });
    }
    if req.n.is_some_and(|n| n == 0) {
        return Err(GatewayError::InvalidRequest { message: "`n` must be at least 1".into(), param: Some("n".into()) });
    }
    Ok(())
}

/// Route step (for now: the configured model by name).
fn resolve_model(snapshot: &Snapshot, name: &str, record: &mut RequestRecord) -> Result<Arc<Model>, GatewayError> {
    let model =
        snapshot.models.get(name).cloned().ok_or_else(|| GatewayError::ModelNotFound { model: name.to_string() })?;
    record.model = Some(model.name.clone());
    Ok(model)
}

const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";
const KEEPALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

enum Phase {
    Streaming,
    SendDone,
    Finished,
}

/// The client-facing SSE body: OpenAI chunks as `data:` events, then exactly one `data: [DONE]`.
/// An upstream failure after the first chunk becomes one OpenAI error event before `[DONE]`, so
/// the client never sees truncated JSON. When the body is dropped (stream end or client gone),
/// the request is accounted; dropping it also drops, and so cancels, the upstream request.
///
/// While the upstream is silent, an SSE comment goes out every `keepalive`, so idle-timeout
/// proxies between the client and the gateway do not cut a stream that is merely slow.
pub struct SseBody {
    first: Option<StreamChunk>,
    upstream: ChunkStream,
    client_wants_usage: bool,
    keepalive: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    phase: Phase,
    record: Option<(RequestRecord, Duration)>,
    error: Option<GatewayError>,
    /// Set for `/v1/messages`: re-frames the OpenAI chunks as Anthropic events.
    pub(crate) anthropic: Option<Box<anthropic_inbound::EventWriter>>,
    /// Mid-stream failovers (`stream_failover: continue`), for the request log.
    notes: Option<Arc<Mutex<Vec<String>>>>,
}

impl SseBody {
    fn new(first: Option<StreamChunk>, upstream: ChunkStream, client_wants_usage: bool, keepalive: Duration) -> Self {
        Self {
            first,
            upstream,
            client_wants_usage,
            keepalive,
            idle: Box::pin(tokio::time::sleep(keepalive)),
            phase: Phase::Streaming,
            record: None,
            error: None,
            anthropic: None,
            notes: None,
        }
    }

    fn reset_idle(&mut self) {
        let next = tokio::time::Instant::now() + self.keepalive;
        self.idle.as_mut().reset(next);
    }

    /// Hands the request record to the body, which emits it when the stream ends.
    pub fn attach_record(&mut self, record: RequestRecord, overhead: Duration) {
        self.record = Some((record, overhead));
    }

    fn frame(data: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(data.len() + 8);
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\n\n");
        Bytes::from(out)
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.phase {
                Phase::Finished => return Poll::Ready(None),
                Phase::SendDone => {
                    self.phase = Phase::Finished;
                    let failed = self.error.is_some();
                    let end = match self.anthropic.as_mut() {
                        // After an Anthropic `error` event nothing follows.
                        Some(_) if failed => continue,
                        Some(writer) => writer.finish(),
                        None => Bytes::from_static(DONE_EVENT),
                    };
                    return Poll::Ready(Some(Ok(end)));
                }
                Phase::Streaming => {}
            }
            let item = match self.first.take() {
                Some(chunk) => Some(Ok(chunk)),
                None => match self.upstream.poll_next_unpin(cx) {
                    Poll::Pending => {
                        if self.idle.as_mut().poll(cx).is_ready() {
                            self.reset_idle();
                            return Poll::Ready(Some(Ok(Bytes::from_static(KEEPALIVE_COMMENT))));
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(item) => item,
                },
            };
            match item {
                None => self.phase = Phase::SendDone,
                Some(Ok(chunk)) => {
                    if let (Some(usage), Some((record, _))) = (chunk.usage, self.record.as_mut()) {
                        record.usage = Some(usage);
                    }
                    if let Some(writer) = self.anthropic.as_mut() {
                        match writer.chunk(&chunk.data) {
                            Ok(events) if events.is_empty() => continue,
                            Ok(events) => {
                                self.reset_idle();
                                return Poll::Ready(Some(Ok(events)));
                            }
                            Err(error) => {
                                let event = writer.error(&error);
                                self.error = Some(error);
                                self.phase = Phase::SendDone;
                                return Poll::Ready(Some(Ok(event)));
                            }
                        }
                    }
                    if chunk.usage_only && !self.client_wants_usage {
                        continue;
                    }
                    self.reset_idle();
                    return Poll::Ready(Some(Ok(Self::frame(&chunk.data))));
                }
                Some(Err(error)) => {
                    let event = match self.anthropic.as_mut() {
                        Some(writer) => writer.error(&error),
                        None => error.to_sse_event(),
                    };
                    self.error = Some(error);
                    self.phase = Phase::SendDone;
                    return Poll::Ready(Some(Ok(event)));
                }
            }
        }
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        let Some((mut record, overhead)) = self.record.take() else { return };
        let notes = self.notes.as_ref().and_then(|n| n.lock().ok().map(|n| n.join(", ")));
        if let Some(notes) = notes.filter(|n| !n.is_empty()) {
            record.attempts = Some(match record.attempts.take() {
                Some(before) => format!("{before}, {notes}"),
                None => notes,
            });
        }
        let outcome = match (&self.phase, &self.error) {
            (Phase::Finished, None) => "ok",
            (Phase::Finished, Some(_)) => "error",
            _ => "client_closed",
        };
        if let Some(error) = &self.error {
            record.error = Some(error.kind());
            if let (Some(model), Some(provider)) = (&record.model, &record.provider) {
                let status = match error {
                    GatewayError::UpstreamServerError { status, .. } => *status,
                    other => other.status().as_u16(),
                };
                telemetry::upstream_error(model, provider, status, error.kind());
            }
        }
        // nginx's convention: 499 for a client that closed the connection before the end.
        let status = if outcome == "client_closed" { 499 } else { 200 };
        record.finish(status, outcome, overhead);
    }
}
