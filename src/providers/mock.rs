//! The built-in `mock` provider: deterministic chat completions (text, streaming, tool calls) and
//! embeddings, computed in-process. It answers the offline demo config, and the testkit's HTTP mock
//! upstream serves the same answers over the real OpenAI wire format.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep, sleep_until};

use super::{CallLimits, ChatReply, Completion, StreamChunk, error_from_status};
use crate::config::{MockBehaviour, MockStep, ProviderConfig};
use crate::error::GatewayError;

use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Delta, EmbeddingsRequest, FunctionCall, FunctionCallDelta,
    ResponseMessage, Role, ToolCall, ToolCallDelta, Usage,
};

/// The `mock` provider's adapter: deterministic answers, with the latency and scripted faults of
/// its `mock:` settings. All waiting is tokio time, so paused-time tests run it instantly.
#[derive(Debug)]
pub struct MockAdapter {
    behaviour: MockBehaviour,
    script: Mutex<VecDeque<MockStep>>,
}

impl MockAdapter {
    pub fn new(config: &ProviderConfig) -> Self {
        Self { behaviour: config.mock.clone(), script: Mutex::new(config.mock.script.iter().cloned().collect()) }
    }

    fn next_step(&self) -> (MockStep, Duration) {
        let b = &self.behaviour;
        let scripted = self.script.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let mut latency = b.latency;
        let step = match scripted {
            Some(step) => step,
            None => {
                if b.spike_rate > 0.0 && crate::rng::unit() < b.spike_rate {
                    latency += b.spike_latency;
                }
                if b.error_rate > 0.0 && crate::rng::unit() < b.error_rate {
                    MockStep::Status { status: 500, retry_after: None }
                } else {
                    MockStep::Ok
                }
            }
        };
        (step, latency)
    }

    pub async fn chat(
        &self,
        config: &ProviderConfig,
        req: &ChatRequest,
        model: &str,
        limits: CallLimits,
    ) -> Result<ChatReply, GatewayError> {
        let (step, mut latency) = self.next_step();
        if let MockStep::Delay(extra) = step {
            latency += extra;
        }
        let first_byte_at = Instant::now() + latency;
        if step == MockStep::Hang || first_byte_at > limits.first_byte_deadline {
            sleep_until(limits.first_byte_deadline).await;
            return Err(GatewayError::UpstreamTimeout {
                provider: config.name.clone(),
                phase: "first_byte",
                limit: limits.timeouts.first_byte,
            });
        }
        sleep_until(first_byte_at).await;
        let rejection = match step {
            MockStep::ContextOverflow => {
                Some(("context_length_exceeded", "This model's maximum context length is 8192 tokens."))
            }
            MockStep::ContentFilter => {
                Some(("content_filter", "The response was filtered by the content management policy."))
            }
            _ => None,
        };
        if let Some((code, message)) = rejection {
            let body = json!({"error": {"message": message, "type": "invalid_request_error", "code": code}});
            return Err(error_from_status(config, 400, None, body.to_string().as_bytes()));
        }
        if let MockStep::Status { status, retry_after } = step {
            let body = json!({"error": {"message": format!("scripted mock failure {status}"), "type": "server_error"}});
            return Err(error_from_status(
                config,
                status,
                retry_after.map(|r| r.to_string()),
                body.to_string().as_bytes(),
            ));
        }
        if !req.is_stream() {
            if let MockStep::Cut(_) | MockStep::Stall(_) = step {
                return Err(GatewayError::UpstreamUnreachable {
                    provider: config.name.clone(),
                    message: "scripted mock connection loss".into(),
                });
            }
            let response = complete(req, model);
            return Ok(ChatReply::Complete(Completion {
                usage: response.usage,
                body: Bytes::from(serde_json::to_vec(&response).unwrap_or_default()),
            }));
        }
        let mut items: VecDeque<Result<StreamChunk, GatewayError>> = chunks(req, model, true)
            .into_iter()
            .map(|c| {
                Ok(StreamChunk {
                    usage: c.usage,
                    usage_only: c.choices.is_empty(),
                    data: Bytes::from(serde_json::to_vec(&c).unwrap_or_default()),
                })
            })
            .collect();
        let provider = config.name.clone();
        let ending = match step {
            MockStep::Cut(n) => {
                items.truncate(n);
                Some(GatewayError::UpstreamUnreachable {
                    provider,
                    message: "scripted mock connection loss mid-stream".into(),
                })
            }
            MockStep::Stall(n) => {
                items.truncate(n);
                Some(GatewayError::UpstreamTimeout { provider, phase: "total", limit: limits.timeouts.total })
            }
            _ => None,
        };
        let interval = self.behaviour.chunk_interval;
        let state = (items, ending, true, limits.deadline);
        let stream = futures_util::stream::unfold(state, move |(mut items, mut ending, first, deadline)| async move {
            if let Some(item) = items.pop_front() {
                if !first && !interval.is_zero() {
                    sleep(interval).await;
                }
                return Some((item, (items, ending, false, deadline)));
            }
            let error = ending.take()?;
            if matches!(error, GatewayError::UpstreamTimeout { .. }) {
                sleep_until(deadline).await;
            }
            Some((Err(error), (items, None, false, deadline)))
        });
        Ok(ChatReply::Stream(Box::pin(stream)))
    }
}

/// What the mock decided to answer.
enum Answer {
    Text(String),
    ToolCall { name: String, arguments: String },
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

fn prompt_tokens(req: &ChatRequest) -> u64 {
    req.messages.iter().map(|m| 4 + m.content.as_ref().map_or(0, |c| estimate_tokens(&c.text()))).sum()
}

fn answer(req: &ChatRequest, model: &str) -> Answer {
    let last = req.messages.last();
    let last_text = last.and_then(|m| m.content.as_ref()).map(|c| c.text()).unwrap_or_default();
    if let Some(m) = last
        && m.role == Role::Tool
    {
        return Answer::Text(format!("The tool returned: {last_text}"));
    }
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty() && !req.tools_disabled()) {
        let chosen = req
            .forced_tool()
            .and_then(|name| tools.iter().find(|t| t.function.as_ref().is_some_and(|f| f.name == name)))
            .or_else(|| tools.first());
        if let Some(function) = chosen.and_then(|t| t.function.as_ref()) {
            let arguments = arguments_for(function.parameters.as_ref()).to_string();
            return Answer::ToolCall { name: function.name.clone(), arguments };
        }
    }
    let excerpt: String = last_text.chars().take(80).collect();
    if req.response_format.as_ref().and_then(|f| f.get("type")).and_then(Value::as_str) == Some("json_object") {
        return Answer::Text(json!({"model": model, "echo": excerpt}).to_string());
    }
    Answer::Text(format!("Mock reply from {model}: you said \"{excerpt}\"."))
}

/// Arguments that satisfy a JSON schema's required properties with placeholder values.
fn arguments_for(schema: Option<&Value>) -> Value {
    let mut args = serde_json::Map::new();
    let Some(schema) = schema else { return Value::Object(args) };
    let properties = schema.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for name in required {
        let prop = properties.and_then(|p| p.get(name));
        let value = match prop.and_then(|p| p.get("enum")).and_then(Value::as_array).and_then(|e| e.first()) {
            Some(first) => first.clone(),
            None => match prop.and_then(|p| p.get("type")).and_then(Value::as_str) {
                Some("number") | Some("integer") => json!(1),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => json!(format!("mock-{name}")),
            },
        };
        args.insert(name.to_string(), value);
    }
    Value::Object(args)
}

fn completion_id(req: &ChatRequest, model: &str) -> String {
    let last = req.messages.last().and_then(|m| m.content.as_ref()).map(|c| c.text()).unwrap_or_default();
    format!("chatcmpl-mock{:016x}", fnv1a(&last) ^ fnv1a(model))
}

pub fn complete(req: &ChatRequest, model: &str) -> ChatResponse {
    let prompt = prompt_tokens(req);
    let (message, finish, completion) = match answer(req, model) {
        Answer::Text(text) => {
            let tokens = estimate_tokens(&text);
            (ResponseMessage { role: Role::Assistant, content: Some(text), tool_calls: None }, "stop", tokens)
        }
        Answer::ToolCall { name, arguments } => {
            let tokens = estimate_tokens(&arguments) + 4;
            let call = ToolCall {
                id: format!("call_mock{:08x}", fnv1a(&name) as u32),
                kind: "function".into(),
                function: FunctionCall { name, arguments },
            };
            (
                ResponseMessage { role: Role::Assistant, content: None, tool_calls: Some(vec![call]) },
                "tool_calls",
                tokens,
            )
        }
    };
    ChatResponse {
        id: completion_id(req, model),
        object: "chat.completion".into(),
        created: now(),
        model: model.to_string(),
        choices: vec![Choice { index: 0, message, finish_reason: Some(finish.into()) }],
        usage: Some(Usage::new(prompt, completion)),
        extra: Default::default(),
    }
}

/// The streamed form of [`complete`]; with `include_usage`, a final chunk with `choices: []` carries usage.
pub fn chunks(req: &ChatRequest, model: &str, include_usage: bool) -> Vec<ChatChunk> {
    let full = complete(req, model);
    let id = full.id.clone();
    let created = full.created;
    let chunk = |delta: Delta, finish: Option<&str>| ChatChunk::delta(&id, created, model, delta, finish);
    let mut out =
        vec![chunk(Delta { role: Some(Role::Assistant), content: Some(String::new()), tool_calls: None }, None)];
    let Some(choice) = full.choices.into_iter().next() else { return out };
    if let Some(text) = choice.message.content {
        for (i, word) in text.split(' ').enumerate() {
            let piece = if i == 0 { word.to_string() } else { format!(" {word}") };
            out.push(chunk(Delta { content: Some(piece), ..Delta::default() }, None));
        }
    }
    for (index, call) in choice.message.tool_calls.unwrap_or_default().into_iter().enumerate() {
        out.push(chunk(
            Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index: index as u32,
                    id: Some(call.id),
                    kind: Some("function".into()),
                    function: FunctionCallDelta { name: Some(call.function.name), arguments: Some(String::new()) },
                }]),
                ..Delta::default()
            },
            None,
        ));
        let args: Vec<char> = call.function.arguments.chars().collect();
        for piece in args.chunks(7) {
            out.push(chunk(
                Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index: index as u32,
                        id: None,
                        kind: None,
                        function: FunctionCallDelta { name: None, arguments: Some(piece.iter().collect()) },
                    }]),
                    ..Delta::default()
                },
                None,
            ));
        }
    }
    out.push(chunk(Delta::default(), choice.finish_reason.as_deref()));
    if include_usage {
        let mut last = chunk(Delta::default(), None);
        last.choices.clear();
        last.usage = full.usage;
        out.push(last);
    }
    out
}

pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 16;

/// Deterministic unit vectors derived from the text; equal inputs give equal vectors.
pub fn embeddings(req: &EmbeddingsRequest, model: &str) -> Value {
    let dims = req
        .extra
        .get("dimensions")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_EMBEDDING_DIMENSIONS, |d| d.clamp(1, 4096) as usize);
    let inputs = req.inputs();
    let mut tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            tokens += estimate_tokens(text);
            let mut state = fnv1a(text);
            let mut vector: Vec<f64> = (0..dims)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 2000) as f64 / 1000.0 - 1.0
                })
                .collect();
            let norm = vector.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-9);
            vector.iter_mut().for_each(|v| *v /= norm);
            json!({"object": "embedding", "index": index, "embedding": vector})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn tool_call_fills_required_arguments_and_streams_them() {
        let req = request(json!({
            "model": "m",
            "messages": [{"role": "user", "content": "weather in Paris?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city", "unit"]}}}]
        }));
        let full = complete(&req, "m");
        let call = &full.choices[0].message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.function.name, "get_weather");
        let args: Value = serde_json::from_str(&call.function.arguments).unwrap();
        assert_eq!(args, json!({"city": "mock-city", "unit": "c"}));
        let streamed: String = chunks(&req, "m", false)
            .iter()
            .filter_map(|c| c.choices.first()?.delta.tool_calls.as_ref()?.first()?.function.arguments.clone())
            .collect();
        assert_eq!(streamed, call.function.arguments);
    }

    #[test]
    fn streamed_text_equals_complete_text_and_usage_chunk_is_last() {
        let req = request(json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}]}));
        let text = complete(&req, "m").choices[0].message.content.clone().unwrap();
        let parts = chunks(&req, "m", true);
        let streamed: String = parts.iter().filter_map(|c| c.choices.first()?.delta.content.clone()).collect();
        assert_eq!(streamed, text);
        let last = parts.last().unwrap();
        assert!(last.choices.is_empty());
        assert!(last.usage.is_some());
    }
}
