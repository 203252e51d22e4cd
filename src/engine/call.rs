//! The call step: runs one request across its model's deployments and, when they fail, its
//! fallback models — retries with backoff, in-model failover, fallbacks by error class, a bounded
//! number of attempts, a latency budget that every attempt respects, and hedged requests.
//!
//! A streamed attempt only counts as served once its first chunk arrived, so everything that
//! fails before that fails over invisibly. Every attempt is recorded for `x-gateway-attempts`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::{Instant, sleep, timeout_at};

use super::retry;
use super::{Model, Snapshot};
use crate::config::{ErrorClass, HedgeAfter};
use crate::error::GatewayError;
use crate::providers::{CallLimits, ChatReply, ChunkStream, Completion, StreamChunk, Target};
use crate::telemetry;
use crate::types::{ChatRequest, EmbeddingsRequest};

/// One upstream attempt, as reported in `x-gateway-attempts` and the request log.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub model: Arc<str>,
    pub provider: Arc<str>,
    pub upstream_model: Arc<str>,
    /// `ok`, an error kind, or `cancelled` (a hedge that lost, or a request the client left).
    pub outcome: &'static str,
    pub status: u16,
    pub elapsed: Duration,
    pub hedge: bool,
}

impl Attempt {
    pub fn label(&self) -> String {
        let hedge = if self.hedge { "~" } else { "" };
        format!("{hedge}{}/{}={}:{}", self.provider, self.upstream_model, self.outcome, self.status)
    }
}

pub fn describe(attempts: &[Attempt]) -> String {
    attempts.iter().map(Attempt::label).collect::<Vec<_>>().join(", ")
}

pub enum Reply {
    Complete(Completion),
    Stream { first: Option<StreamChunk>, rest: ChunkStream },
}

/// The winning attempt.
pub struct Served {
    pub reply: Reply,
    pub model: Arc<Model>,
    pub target: usize,
    pub upstream_time: Duration,
}

/// The operation being attempted; cloned only for a hedge.
#[derive(Clone)]
pub enum Operation {
    Chat(ChatRequest),
    Embeddings(EmbeddingsRequest),
}

/// What kind of failure an error is, for retries, failover and fallbacks; `None` for errors
/// another deployment could not fix (bad requests).
pub fn classify(error: &GatewayError) -> Option<ErrorClass> {
    match error {
        GatewayError::UpstreamRateLimited { .. } => Some(ErrorClass::RateLimited),
        GatewayError::UpstreamServerError { .. }
        | GatewayError::UpstreamUnreachable { .. }
        | GatewayError::UpstreamProtocol { .. } => Some(ErrorClass::ServerError),
        GatewayError::UpstreamTimeout { .. } => Some(ErrorClass::Timeout),
        GatewayError::UpstreamAuth { .. } => Some(ErrorClass::Auth),
        GatewayError::UpstreamRejected { code, message, .. } => {
            let code = code.as_deref().unwrap_or_default();
            let text = message.to_ascii_lowercase();
            if code == "context_length_exceeded"
                || text.contains("context length")
                || text.contains("context window")
                || text.contains("prompt is too long")
                || text.contains("too many tokens")
            {
                Some(ErrorClass::ContextWindowExceeded)
            } else if code.contains("content_filter")
                || code == "content_policy_violation"
                || text.contains("content management policy")
                || text.contains("content filter")
            {
                Some(ErrorClass::ContentFiltered)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The upstream HTTP status behind an error, for `on_status` fallback rules.
pub fn upstream_status(error: &GatewayError) -> Option<u16> {
    match error {
        GatewayError::UpstreamServerError { status, .. }
        | GatewayError::UpstreamRejected { status, .. }
        | GatewayError::UpstreamAuth { status, .. } => Some(*status),
        GatewayError::UpstreamRateLimited { .. } => Some(429),
        GatewayError::UpstreamTimeout { .. } => Some(504),
        _ => None,
    }
}

/// Runs `op` for `model`, its deployments and its fallback models; `avoid` is a deployment of
/// `model` to try last.
pub async fn run(
    snapshot: &Snapshot,
    model: Arc<Model>,
    op: &mut Operation,
    session: Option<&str>,
    avoid: Option<usize>,
    attempts: &mut Vec<Attempt>,
) -> Result<Served, GatewayError> {
    let started = Instant::now();
    let budget_deadline = model.config.reliability.budget.map(|b| started + b);
    let max_attempts = model.config.reliability.max_attempts;
    let mut visited: Vec<Arc<str>> = vec![model.name.clone()];
    let mut current = model;
    let mut last_error: Option<GatewayError> = None;
    let mut used = 0u32;
    loop {
        let rel = current.config.reliability.clone();
        let mut plan = current.balancer.plan(&current.members, &rel, session);
        // A deployment that just failed this request (a resumed stream) is tried last.
        if let Some(avoid) = avoid.filter(|_| visited.len() == 1) {
            plan.retain(|&i| i != avoid);
            plan.push(avoid);
        }
        let mut may_hedge = rel.hedge.is_some() && attempts.is_empty() && plan.len() > 1;
        'targets: for (position, &index) in plan.iter().enumerate() {
            for try_no in 0..rel.retry.attempts {
                if used >= max_attempts {
                    break 'targets;
                }
                let Some(limits) = limits_for(&current, index, budget_deadline) else { break 'targets };
                used += 1;
                let result = if may_hedge && position == 0 {
                    may_hedge = false;
                    hedged(&current, &plan, op, limits, attempts).await
                } else {
                    let (result, attempt) = attempt(&current, index, op, limits, false).await;
                    attempts.push(attempt);
                    result.map(|(reply, elapsed)| (reply, index, elapsed))
                };
                let error = match result {
                    Ok((reply, target, upstream_time)) => {
                        return Ok(Served { reply, model: current, target, upstream_time });
                    }
                    Err(error) => error,
                };
                let class = classify(&error);
                let retry_after = error.retry_after().map(str::to_string);
                last_error = Some(error);
                match class {
                    // The same model fails the same way on every deployment: go to the fallbacks.
                    None | Some(ErrorClass::ContextWindowExceeded) | Some(ErrorClass::ContentFiltered) => {
                        break 'targets;
                    }
                    Some(class) => {
                        if rel.retry.on.contains(&class) && try_no + 1 < rel.retry.attempts {
                            let remaining = budget_deadline.map(|d| d.saturating_duration_since(Instant::now()));
                            let wait =
                                retry::delay(&rel.retry, try_no, retry_after.as_deref(), remaining, crate::rng::unit());
                            if let Some(wait) = wait {
                                sleep(wait).await;
                                continue;
                            }
                        }
                        continue 'targets;
                    }
                }
            }
        }
        let error = last_error.take().unwrap_or_else(|| GatewayError::UpstreamTimeout {
            provider: "gateway".into(),
            phase: "budget",
            limit: current.config.reliability.budget.unwrap_or_default(),
        });
        if used >= max_attempts || budget_deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(error);
        }
        let class = classify(&error);
        let status = upstream_status(&error);
        let next = current.config.reliability.fallbacks.iter().find(|f| {
            !visited.iter().any(|v| **v == *f.model)
                && (class.is_some_and(|c| f.on.contains(&c)) || status.is_some_and(|s| f.on_status.contains(&s)))
        });
        match next.and_then(|f| snapshot.models.get(&f.model)) {
            Some(model) => {
                visited.push(model.name.clone());
                current = model.clone();
                last_error = Some(error);
            }
            None => return Err(error),
        }
    }
}

/// Limits for one attempt, capped by the latency budget; `None` when the attempt cannot finish
/// in what is left of the budget (judged by the deployment's typical latency).
fn limits_for(model: &Model, index: usize, budget_deadline: Option<Instant>) -> Option<CallLimits> {
    let mut limits = CallLimits::starting_now(model.config.timeouts);
    if let Some(deadline) = budget_deadline {
        let now = Instant::now();
        let typical = model.members[index].health.ewma().unwrap_or_default();
        if now + typical >= deadline {
            return None;
        }
        limits.deadline = limits.deadline.min(deadline);
        limits.first_byte_deadline = limits.first_byte_deadline.min(deadline);
    }
    Some(limits)
}

type AttemptResult = Result<(Reply, usize, Duration), GatewayError>;

/// The primary attempt, and if it has no first byte by the hedge delay, a second one on the next
/// deployment; the first success wins and the other is dropped (which cancels it).
async fn hedged(
    model: &Model,
    plan: &[usize],
    op: &mut Operation,
    limits: CallLimits,
    attempts: &mut Vec<Attempt>,
) -> AttemptResult {
    let (primary_index, backup_index) = (plan[0], plan[1]);
    let Some(hedge) = model.config.reliability.hedge else {
        let (result, a) = attempt(model, primary_index, op, limits, false).await;
        attempts.push(a);
        return result.map(|(r, e)| (r, primary_index, e));
    };
    let delay = match hedge.after {
        HedgeAfter::Fixed(d) => Some(d),
        HedgeAfter::P95 => model.members[primary_index].health.p95(),
    };
    let mut backup_op = op.clone();
    let primary = attempt(model, primary_index, op, limits, false);
    tokio::pin!(primary);
    let Some(delay) = delay else {
        let (result, a) = primary.await;
        attempts.push(a);
        return result.map(|(r, e)| (r, primary_index, e));
    };
    tokio::select! {
        (result, a) = &mut primary => {
            attempts.push(a);
            return result.map(|(r, e)| (r, primary_index, e));
        }
        _ = sleep(delay) => {}
    }
    if !model.balancer.try_hedge(hedge.max_extra) {
        let (result, a) = primary.await;
        attempts.push(a);
        return result.map(|(r, e)| (r, primary_index, e));
    }
    let backup_limits = CallLimits { ..limits };
    let backup = attempt(model, backup_index, &mut backup_op, backup_limits, true);
    tokio::pin!(backup);
    let mark_cancelled = |model: &Model, index: usize, hedge: bool| Attempt {
        model: model.name.clone(),
        provider: Arc::from(model.targets[index].provider_name()),
        upstream_model: model.targets[index].upstream_model.clone(),
        outcome: "cancelled",
        status: 0,
        elapsed: Duration::ZERO,
        hedge,
    };
    tokio::select! {
        (result, a) = &mut primary => {
            attempts.push(a);
            match result {
                Ok((reply, elapsed)) => {
                    attempts.push(mark_cancelled(model, backup_index, true));
                    Ok((reply, primary_index, elapsed))
                }
                Err(_) => {
                    let (result, b) = backup.await;
                    attempts.push(b);
                    result.map(|(r, e)| (r, backup_index, e))
                }
            }
        }
        (result, b) = &mut backup => {
            attempts.push(b);
            match result {
                Ok((reply, elapsed)) => {
                    attempts.push(mark_cancelled(model, primary_index, false));
                    Ok((reply, backup_index, elapsed))
                }
                Err(_) => {
                    let (result, a) = primary.await;
                    attempts.push(a);
                    result.map(|(r, e)| (r, primary_index, e))
                }
            }
        }
    }
}

/// One attempt on one deployment, feeding its health and the upstream-error metric.
async fn attempt(
    model: &Model,
    index: usize,
    op: &mut Operation,
    limits: CallLimits,
    hedge: bool,
) -> (Result<(Reply, Duration), GatewayError>, Attempt) {
    let target = &model.targets[index];
    let health = &model.members[index].health;
    let _in_flight = health.start();
    let started = Instant::now();
    let result = match op {
        Operation::Chat(req) => chat_until_first_chunk(target, req, limits).await,
        Operation::Embeddings(req) => target.embeddings(req, limits).await.map(Reply::Complete),
    };
    let elapsed = started.elapsed();
    let cfg = &model.config.reliability.health;
    let (outcome, status) = match &result {
        Ok(_) => {
            health.record_success(elapsed, cfg);
            ("ok", 200)
        }
        Err(error) => {
            match classify(error) {
                Some(ErrorClass::ServerError | ErrorClass::Timeout | ErrorClass::Auth) => {
                    health.record_failure(true, cfg)
                }
                Some(ErrorClass::RateLimited) => health.record_failure(false, cfg),
                _ => {}
            }
            let status = upstream_status(error).unwrap_or(error.status().as_u16());
            if error.source() == crate::error::ErrorSource::Provider
                || matches!(error, GatewayError::UpstreamRejected { .. })
            {
                telemetry::upstream_error(&model.name, target.provider_name(), status, error.kind());
            }
            (error.kind(), status)
        }
    };
    let record = Attempt {
        model: model.name.clone(),
        provider: Arc::from(target.provider_name()),
        upstream_model: target.upstream_model.clone(),
        outcome,
        status,
        elapsed,
        hedge,
    };
    (result.map(|reply| (reply, elapsed)), record)
}

/// A chat attempt is served once the answer, or a stream's first chunk, is in hand.
async fn chat_until_first_chunk(
    target: &Target,
    req: &mut ChatRequest,
    limits: CallLimits,
) -> Result<Reply, GatewayError> {
    match target.chat(req, limits).await? {
        ChatReply::Complete(completion) => Ok(Reply::Complete(completion)),
        ChatReply::Stream(mut rest) => match timeout_at(limits.first_byte_deadline, rest.next()).await {
            Err(_) => Err(GatewayError::UpstreamTimeout {
                provider: target.provider_name().to_string(),
                phase: "first_byte",
                limit: limits.timeouts.first_byte,
            }),
            Ok(Some(Err(e))) => Err(e),
            Ok(Some(Ok(chunk))) => Ok(Reply::Stream { first: Some(chunk), rest }),
            Ok(None) => Ok(Reply::Stream { first: None, rest }),
        },
    }
}
