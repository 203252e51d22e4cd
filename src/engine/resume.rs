//! `stream_failover: continue`: when a stream's deployment dies after the first chunk, resume on
//! another deployment by sending the partial answer as a continuation prefix, and splice the new
//! stream in so the client sees one coherent stream: same id and model, no second role chunk, no
//! repeated text, and a final `x_gateway` field saying where it switched. Streams that already
//! carried tool calls are not resumed (half a tool call cannot be spliced safely).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;

use super::call::{self, Operation, Reply};
use super::{Model, Snapshot};
use crate::error::GatewayError;
use crate::providers::{ChunkStream, StreamChunk};
use crate::types::{ChatChunk, ChatRequest, Message, MessageContent, Role};

pub const CONTINUE_PROMPT: &str = "Your previous answer was cut off. Continue it exactly where it stopped, without repeating anything already written.";

/// Continuation text shorter than this is held back until the overlap with the partial answer is known.
const SPLICE_LOOKAHEAD: usize = 48;
/// Overlaps shorter than this are taken as coincidence, not repetition.
const MIN_OVERLAP: usize = 8;

/// What a resume needs: the request as the client sent it and where it was served.
pub struct ResumeContext {
    pub snapshot: Arc<Snapshot>,
    pub model: Arc<Model>,
    pub target: usize,
    pub request: ChatRequest,
    /// Where the switch is reported for the request log.
    pub notes: Arc<Mutex<Vec<String>>>,
}

struct State {
    inner: ChunkStream,
    context: Option<ResumeContext>,
    text: String,
    saw_tools: bool,
    original: Option<(String, u64, String)>,
    splice: Option<Splice>,
    done: bool,
}

struct Splice {
    pending: String,
    flushed: bool,
    label: String,
}

/// Wraps a committed stream (its first chunk included) so a mid-stream failure resumes elsewhere.
pub fn resumable(first: Option<StreamChunk>, rest: ChunkStream, context: ResumeContext) -> ChunkStream {
    let inner: ChunkStream = Box::pin(futures_util::stream::iter(first.map(Ok)).chain(rest));
    let state = State {
        inner,
        context: Some(context),
        text: String::new(),
        saw_tools: false,
        original: None,
        splice: None,
        done: false,
    };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            match st.inner.next().await {
                None => {
                    // A continuation that ended while still held back: flush what is left.
                    if let Some(chunk) = st.flush_pending() {
                        st.done = true;
                        return Some((Ok(chunk), st));
                    }
                    return None;
                }
                Some(Ok(chunk)) => {
                    let chunk = if st.splice.is_some() { st.spliced(chunk) } else { Some(st.observe(chunk)) };
                    if let Some(chunk) = chunk {
                        return Some((Ok(chunk), st));
                    }
                }
                Some(Err(error)) => {
                    let resumable = !st.saw_tools && call::classify(&error).is_some() && st.original.is_some();
                    if let Some(context) = st.context.take().filter(|_| resumable) {
                        // If no other deployment can continue, the original error stands.
                        if let Ok((stream, label)) = resume(context, &st.text).await {
                            st.inner = stream;
                            st.splice = Some(Splice { pending: String::new(), flushed: false, label });
                            continue;
                        }
                    }
                    st.done = true;
                    return Some((Err(error), st));
                }
            }
        }
    }))
}

impl State {
    /// Before any failure: remember the id and the text so far, pass the chunk on untouched.
    fn observe(&mut self, chunk: StreamChunk) -> StreamChunk {
        if let Ok(parsed) = serde_json::from_slice::<ChatChunk>(&chunk.data) {
            if self.original.is_none() {
                self.original = Some((parsed.id.clone(), parsed.created, parsed.model.clone()));
            }
            for choice in parsed.choices.iter().filter(|c| c.index == 0) {
                if let Some(text) = &choice.delta.content {
                    self.text.push_str(text);
                }
                self.saw_tools |= choice.delta.tool_calls.is_some();
            }
        }
        chunk
    }

    /// After a resume: rewrite the continuation's chunks into the original stream.
    fn spliced(&mut self, chunk: StreamChunk) -> Option<StreamChunk> {
        let mut parsed: ChatChunk = serde_json::from_slice(&chunk.data).ok()?;
        let (id, created, model) = self.original.clone()?;
        parsed.id = id;
        parsed.created = created;
        parsed.model = model;
        let splice = self.splice.as_mut()?;
        let mut finished = false;
        if let Some(choice) = parsed.choices.iter_mut().find(|c| c.index == 0) {
            choice.delta.role = None;
            if !splice.flushed {
                splice.pending.push_str(&choice.delta.content.take().unwrap_or_default());
                if splice.pending.len() < SPLICE_LOOKAHEAD && choice.finish_reason.is_none() {
                    return None;
                }
                splice.flushed = true;
                let overlap = overlap(&self.text, &splice.pending);
                choice.delta.content = Some(splice.pending[overlap..].to_string());
            }
            if choice.finish_reason.is_some() {
                finished = true;
            }
            let empty = choice.delta.content.as_deref().is_none_or(str::is_empty)
                && choice.delta.tool_calls.is_none()
                && choice.finish_reason.is_none();
            if empty {
                return None;
            }
        }
        if finished {
            parsed.extra.insert("x_gateway".into(), json!({"resumed": true, "resumed_on": splice.label}));
        }
        Some(StreamChunk {
            usage: parsed.usage,
            usage_only: chunk.usage_only,
            data: Bytes::from(serde_json::to_vec(&parsed).ok()?),
        })
    }

    fn flush_pending(&mut self) -> Option<StreamChunk> {
        let splice = self.splice.as_mut().filter(|s| !s.flushed && !s.pending.is_empty())?;
        splice.flushed = true;
        let (id, created, model) = self.original.clone()?;
        let overlap = overlap(&self.text, &splice.pending);
        let delta = crate::types::Delta { content: Some(splice.pending[overlap..].to_string()), ..Default::default() };
        let chunk = ChatChunk::delta(&id, created, &model, delta, None);
        Some(StreamChunk { usage: None, usage_only: false, data: Bytes::from(serde_json::to_vec(&chunk).ok()?) })
    }
}

/// Length of the longest prefix of `next` that `previous` already ends with (at least
/// [`MIN_OVERLAP`] bytes, on char boundaries), so a continuation that restates the tail is trimmed.
pub fn overlap(previous: &str, next: &str) -> usize {
    let max = previous.len().min(next.len());
    (MIN_OVERLAP..=max).rev().find(|&k| next.is_char_boundary(k) && previous.ends_with(&next[..k])).unwrap_or(0)
}

/// Asks another deployment to continue `partial`, returning its stream (first chunk included).
async fn resume(context: ResumeContext, partial: &str) -> Result<(ChunkStream, String), GatewayError> {
    // The failure did not pass through an attempt, so tell the health tracker here.
    let cfg = &context.model.config.reliability.health;
    context.model.members[context.target].health.record_failure(true, cfg);
    let mut request = context.request;
    let message = |role, text: &str| Message {
        role,
        content: Some(MessageContent::Text(text.to_string())),
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Default::default(),
    };
    request.messages.push(message(Role::Assistant, partial));
    request.messages.push(message(Role::User, CONTINUE_PROMPT));
    let mut op = Operation::Chat(request);
    let mut attempts = Vec::new();
    let result =
        call::run(&context.snapshot, context.model.clone(), &mut op, None, Some(context.target), &mut attempts).await;
    if let Ok(mut notes) = context.notes.lock() {
        notes.push(format!("resumed: {}", call::describe(&attempts)));
    }
    let served = result?;
    let target = &served.model.targets[served.target];
    let label = format!("{}/{}", target.provider_name(), target.upstream_model);
    match served.reply {
        Reply::Stream { first, rest } => Ok((Box::pin(futures_util::stream::iter(first.map(Ok)).chain(rest)), label)),
        Reply::Complete(_) => Err(GatewayError::internal("a continuation came back without a stream")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_trims_restated_tails_only() {
        assert_eq!(overlap("The quick brown fox jumps", "fox jumps over the dog"), 9);
        assert_eq!(overlap("The quick brown fox", " jumps over"), 0);
        assert_eq!(overlap("ends with a", "a new start"), 0, "one letter is coincidence");
        assert_eq!(overlap("héllo wörld, ", "wörld, again"), "wörld, ".len());
    }
}
