//! Anthropic Messages API adapter: canonical (OpenAI-shaped) request → `POST /v1/messages`, and the
//! answer back, including the full SSE event sequence (`message_start`, `content_block_*`,
//! `message_delta`, `message_stop`, `ping`, `error`) with streamed tool input (`input_json_delta`).
//! Translation is pure functions and one stateful stream translator; `Anthropic` only sends.

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::sse::{SseDecoder, SseEvent};
use super::stream::{self, Framing, Translate};
use super::translate::{provider_headers, push_turn, system_text, unsupported};
use super::{CallLimits, ChatReply, Completion, StreamChunk, error_from_status, transport};
use crate::config::ProviderConfig;
use crate::error::GatewayError;
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Delta, FunctionCall, FunctionCallDelta, MessageContent,
    ResponseMessage, Role, ToolCall, ToolCallDelta, Usage,
};

/// Anthropic requires `max_tokens`; used when the client sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

#[derive(Debug)]
pub struct Anthropic {
    headers: HeaderMap,
}

impl Anthropic {
    pub fn new(config: &ProviderConfig) -> Result<Self, GatewayError> {
        let key = config.api_key.as_ref().map(|k| (HeaderName::from_static("x-api-key"), k.expose().to_string()));
        let mut headers = provider_headers(config, key)?;
        let version = config.api_version.as_deref().unwrap_or("2023-06-01");
        let version = HeaderValue::from_str(version)
            .map_err(|_| GatewayError::internal(format!("provider {}: bad api_version", config.name)))?;
        headers.insert(HeaderName::from_static("anthropic-version"), version);
        Ok(Self { headers })
    }

    pub fn url(config: &ProviderConfig) -> String {
        format!("{}/messages", config.base_url)
    }

    pub async fn chat(
        &self,
        client: &reqwest::Client,
        url: &str,
        config: &ProviderConfig,
        req: &ChatRequest,
        limits: CallLimits,
    ) -> Result<ChatReply, GatewayError> {
        let wire = to_wire(req, &config.name)?;
        let body =
            serde_json::to_vec(&wire).map_err(|e| GatewayError::internal(format!("cannot encode request: {e}")))?;
        let request = client.post(url).headers(self.headers.clone()).body(body);
        let response = transport::send(request, config, limits, error_from_status).await?;
        if !req.is_stream() {
            let body = transport::read_body(response, config, limits).await?;
            let parsed = from_wire(&body)
                .map_err(|message| GatewayError::UpstreamProtocol { provider: config.name.clone(), message })?;
            let usage = parsed.usage;
            let body = serde_json::to_vec(&parsed).map_err(|e| GatewayError::internal(e.to_string()))?;
            return Ok(ChatReply::Complete(Completion { body: body.into(), usage }));
        }
        if !transport::is_event_stream(&response, "text/event-stream") {
            return Err(GatewayError::UpstreamProtocol {
                provider: config.name.clone(),
                message: "expected an event stream".into(),
            });
        }
        let translator = Box::new(StreamTranslator::new(&config.name));
        Ok(ChatReply::Stream(stream::drive(
            config.name.clone(),
            Box::pin(response.bytes_stream()),
            Framing::Sse(SseDecoder::new()),
            translator,
            limits,
        )))
    }
}

/// Request fields with no Anthropic equivalent that change the answer: rejected, never dropped.
const REJECTED_FIELDS: &[&str] = &["logit_bias", "audio", "prediction", "seed", "reasoning_effort", "modalities"];
/// Request fields that are bookkeeping for OpenAI and safe to ignore.
const IGNORED_FIELDS: &[&str] = &["store", "metadata", "service_tier", "user"];

/// Canonical request → Anthropic Messages request body (pure).
pub fn to_wire(req: &ChatRequest, provider: &str) -> Result<Value, GatewayError> {
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in req.messages.iter().enumerate() {
        match message.role {
            Role::System | Role::Developer => {
                if let Some(text) = system_text(message, provider, i)? {
                    system.push(text);
                }
            }
            Role::User => push_turn(&mut messages, "user", user_blocks(message.content.as_ref(), provider, i)?),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if let Some(content) = &message.content {
                    let text = content.text();
                    if !text.is_empty() {
                        blocks.push(json!({"type": "text", "text": text}));
                    }
                }
                for call in message.tool_calls.iter().flatten() {
                    let input: Value =
                        serde_json::from_str(&call.function.arguments).map_err(|e| GatewayError::InvalidRequest {
                            message: format!("tool call `{}` arguments are not valid JSON: {e}", call.id),
                            param: Some(format!("messages[{i}].tool_calls")),
                        })?;
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": input}));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            Role::Tool => {
                let id = message.tool_call_id.as_deref().ok_or_else(|| GatewayError::InvalidRequest {
                    message: "a tool message needs `tool_call_id`".into(),
                    param: Some(format!("messages[{i}].tool_call_id")),
                })?;
                let text = message.content.as_ref().map(MessageContent::text).unwrap_or_default();
                push_turn(
                    &mut messages,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})],
                );
            }
            Role::Function => return Err(unsupported(provider, "the deprecated `function` role (use tools)")),
        }
    }
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported(provider, "`n` greater than 1"));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(req.model));
    let max_tokens = req.max_completion_tokens.or(req.max_tokens).unwrap_or(DEFAULT_MAX_TOKENS);
    body.insert("max_tokens".into(), json!(max_tokens));
    if let Some(format) = &req.response_format {
        match format.get("type").and_then(Value::as_str) {
            Some("text") | None => {}
            Some("json_object") => system.push("Respond with a single valid JSON object and nothing else.".into()),
            Some(other) => return Err(unsupported(provider, format!("response_format `{other}`"))),
        }
    }
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    body.insert(
        "messages".into(),
        Value::Array(messages.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect()),
    );
    if let Some(t) = req.temperature {
        if !(0.0..=1.0).contains(&t) {
            return Err(unsupported(provider, format!("temperature {t} (Anthropic accepts 0 to 1)")));
        }
        body.insert("temperature".into(), json!(t));
    }
    if req.is_stream() {
        body.insert("stream".into(), json!(true));
    }
    if let Some(tools) = &req.tools {
        let mut wire_tools = Vec::new();
        for tool in tools {
            let Some(function) = tool.function.as_ref().filter(|_| tool.kind == "function") else {
                return Err(unsupported(provider, format!("tools of type `{}`", tool.kind)));
            };
            let schema = function.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            let mut wire = json!({"name": function.name, "input_schema": schema});
            if let Some(description) = &function.description {
                wire["description"] = json!(description);
            }
            wire_tools.push(wire);
        }
        body.insert("tools".into(), Value::Array(wire_tools));
    }
    let parallel = req.extra.get("parallel_tool_calls").and_then(Value::as_bool);
    let mut choice = match req.tool_choice.as_ref() {
        None => None,
        Some(Value::String(s)) if s == "auto" => Some(json!({"type": "auto"})),
        Some(Value::String(s)) if s == "required" => Some(json!({"type": "any"})),
        Some(Value::String(s)) if s == "none" => Some(json!({"type": "none"})),
        Some(_) => match req.forced_tool() {
            Some(name) => Some(json!({"type": "tool", "name": name})),
            None => {
                return Err(GatewayError::InvalidRequest {
                    message: "unrecognised `tool_choice`".into(),
                    param: Some("tool_choice".into()),
                });
            }
        },
    };
    if parallel == Some(false) && req.tools.is_some() {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        c["disable_parallel_tool_use"] = json!(true);
    }
    if let Some(choice) = choice {
        body.insert("tool_choice".into(), choice);
    }
    for (key, value) in &req.extra {
        match key.as_str() {
            "parallel_tool_calls" => {}
            "top_p" | "top_k" => {
                body.insert(key.clone(), value.clone());
            }
            "stop" => {
                let stops = match value {
                    Value::String(s) => vec![json!(s)],
                    Value::Array(items) => items.clone(),
                    _ => Vec::new(),
                };
                body.insert("stop_sequences".into(), Value::Array(stops));
            }
            "user" => {
                body.insert("metadata".into(), json!({"user_id": value}));
            }
            "presence_penalty" | "frequency_penalty" if value.as_f64() == Some(0.0) => {}
            "logprobs" if value.as_bool() == Some(false) => {}
            k if IGNORED_FIELDS.contains(&k) => {}
            k if REJECTED_FIELDS.contains(&k) => return Err(unsupported(provider, format!("`{k}`"))),
            k => return Err(unsupported(provider, format!("the request field `{k}`"))),
        }
    }
    Ok(Value::Object(body))
}

fn user_blocks(content: Option<&MessageContent>, provider: &str, index: usize) -> Result<Vec<Value>, GatewayError> {
    match content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(text)) => Ok(vec![json!({"type": "text", "text": text})]),
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .map(|part| match part.kind.as_str() {
                "text" => Ok(json!({"type": "text", "text": part.text.clone().unwrap_or_default()})),
                "image_url" => {
                    let url = part
                        .image_url
                        .as_ref()
                        .and_then(|u| u.get("url").or(Some(u)))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    Ok(image_block(url))
                }
                other => Err(unsupported(provider, format!("content parts of type `{other}` (messages[{index}])"))),
            })
            .collect(),
    }
}

/// An OpenAI image URL (a `data:` URL or a link) as an Anthropic image block.
fn image_block(url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}});
    }
    json!({"type": "image", "source": {"type": "url", "url": url}})
}

#[derive(Debug, Deserialize)]
struct WireResponse {
    id: String,
    model: String,
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    fn canonical(self) -> Usage {
        Usage::with_cache(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
        )
    }
}

pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Anthropic response body → canonical chat completion (pure).
pub fn from_wire(body: &[u8]) -> Result<ChatResponse, String> {
    let wire: WireResponse =
        serde_json::from_slice(body).map_err(|e| format!("response is not an Anthropic message ({e})"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in wire.content {
        match block {
            WireBlock::Text { text: t } => text.push_str(&t),
            WireBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                id,
                kind: "function".into(),
                function: FunctionCall { name, arguments: input.to_string() },
            }),
            WireBlock::Other => {}
        }
    }
    let message = ResponseMessage {
        role: Role::Assistant,
        content: (!text.is_empty() || calls.is_empty()).then_some(text),
        tool_calls: (!calls.is_empty()).then_some(calls),
    };
    Ok(ChatResponse {
        id: wire.id,
        object: "chat.completion".into(),
        created: now(),
        model: wire.model,
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(finish_reason(wire.stop_reason.as_deref().unwrap_or("end_turn")).into()),
        }],
        usage: Some(wire.usage.canonical()),
        extra: Default::default(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: StartBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: WireDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<WireUsagePatch>,
    },
    MessageStop {},
    Ping {},
    Error {
        error: WireError,
    },
}

#[derive(Debug, Deserialize)]
struct StartMessage {
    id: String,
    model: String,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

/// `message_delta.usage`: cumulative counts; any field may be present.
#[derive(Debug, Deserialize)]
struct WireUsagePatch {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// Anthropic events → OpenAI chunks. Emits exactly one role chunk, one finish chunk, and a final
/// usage chunk (`choices: []`) at `message_stop`.
pub struct StreamTranslator {
    provider: String,
    id: String,
    model: String,
    created: u64,
    started: bool,
    usage: WireUsage,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_index: HashMap<u32, u32>,
    finish: Option<&'static str>,
}

impl StreamTranslator {
    pub fn new(provider: &str) -> Self {
        Self {
            provider: provider.to_string(),
            id: String::new(),
            model: String::new(),
            created: now(),
            started: false,
            usage: WireUsage::default(),
            tool_index: HashMap::new(),
            finish: None,
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk::delta(&self.id, self.created, &self.model, delta, finish)
    }

    fn protocol(&self, message: String) -> GatewayError {
        GatewayError::UpstreamProtocol { provider: self.provider.clone(), message }
    }
}

impl Translate for StreamTranslator {
    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<StreamChunk>) -> Result<bool, GatewayError> {
        let parsed: WireEvent = match serde_json::from_slice(&event.data) {
            Ok(parsed) => parsed,
            Err(e) => {
                // Unknown event types are skipped (Anthropic may add new ones); broken JSON is fatal.
                if serde_json::from_slice::<Value>(&event.data).is_ok() {
                    return Ok(false);
                }
                return Err(self.protocol(format!("stream event is not valid JSON ({e})")));
            }
        };
        if !self.started
            && !matches!(parsed, WireEvent::MessageStart { .. } | WireEvent::Ping {} | WireEvent::Error { .. })
        {
            return Err(self.protocol("stream did not begin with message_start".into()));
        }
        match parsed {
            WireEvent::MessageStart { message } => {
                if self.started {
                    return Ok(false); // a repeated message_start must not produce a second role chunk
                }
                self.started = true;
                self.id = message.id;
                self.model = message.model;
                self.usage = message.usage;
                out.push_back(stream::chunk(&self.chunk(
                    Delta { role: Some(Role::Assistant), content: Some(String::new()), tool_calls: None },
                    None,
                )));
            }
            WireEvent::ContentBlockStart { index, content_block } => match content_block {
                StartBlock::ToolUse { id, name } => {
                    let tool = self.tool_index.len() as u32;
                    self.tool_index.insert(index, tool);
                    let delta = ToolCallDelta {
                        index: tool,
                        id: Some(id),
                        kind: Some("function".into()),
                        function: FunctionCallDelta { name: Some(name), arguments: Some(String::new()) },
                    };
                    out.push_back(stream::chunk(
                        &self.chunk(Delta { tool_calls: Some(vec![delta]), ..Delta::default() }, None),
                    ));
                }
                StartBlock::Text { text } if !text.is_empty() => {
                    out.push_back(stream::chunk(&self.chunk(Delta { content: Some(text), ..Delta::default() }, None)));
                }
                _ => {}
            },
            WireEvent::ContentBlockDelta { index, delta } => match delta {
                WireDelta::TextDelta { text } => {
                    out.push_back(stream::chunk(&self.chunk(Delta { content: Some(text), ..Delta::default() }, None)));
                }
                WireDelta::InputJsonDelta { partial_json } => {
                    let tool = *self.tool_index.get(&index).ok_or_else(|| {
                        self.protocol(format!("input_json_delta for block {index}, which is not a tool_use block"))
                    })?;
                    let delta = ToolCallDelta {
                        index: tool,
                        id: None,
                        kind: None,
                        function: FunctionCallDelta { name: None, arguments: Some(partial_json) },
                    };
                    out.push_back(stream::chunk(
                        &self.chunk(Delta { tool_calls: Some(vec![delta]), ..Delta::default() }, None),
                    ));
                }
                WireDelta::Other => {}
            },
            WireEvent::ContentBlockStop {} | WireEvent::Ping {} => {}
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(patch) = usage {
                    let u = &mut self.usage;
                    u.input_tokens = patch.input_tokens.unwrap_or(u.input_tokens);
                    u.output_tokens = patch.output_tokens.unwrap_or(u.output_tokens);
                    u.cache_creation_input_tokens = patch.cache_creation_input_tokens.or(u.cache_creation_input_tokens);
                    u.cache_read_input_tokens = patch.cache_read_input_tokens.or(u.cache_read_input_tokens);
                }
                if let Some(reason) = delta.stop_reason
                    && self.finish.is_none()
                {
                    let finish = finish_reason(&reason);
                    self.finish = Some(finish);
                    out.push_back(stream::chunk(&self.chunk(Delta::default(), Some(finish))));
                }
            }
            WireEvent::MessageStop {} => {
                if self.finish.is_none() {
                    self.finish = Some("stop");
                    out.push_back(stream::chunk(&self.chunk(Delta::default(), Some("stop"))));
                }
                let mut last = self.chunk(Delta::default(), None);
                last.choices.clear();
                last.usage = Some(self.usage.canonical());
                out.push_back(stream::chunk(&last));
                return Ok(true);
            }
            WireEvent::Error { error } => return Err(stream_error(&self.provider, &error.kind, error.message)),
        }
        Ok(false)
    }

    fn end_of_input(&mut self, _out: &mut VecDeque<StreamChunk>) -> Result<(), GatewayError> {
        Err(self.protocol("the stream ended before message_stop".into()))
    }
}

/// An `error` event inside a stream, by Anthropic's error type.
fn stream_error(provider: &str, kind: &str, message: String) -> GatewayError {
    let provider = provider.to_string();
    match kind {
        "rate_limit_error" => GatewayError::UpstreamRateLimited { provider, retry_after: None, message },
        "overloaded_error" => GatewayError::UpstreamServerError { provider, status: 529, message },
        "invalid_request_error" => {
            GatewayError::UpstreamRejected { provider, status: 400, message, code: None, param: None }
        }
        "authentication_error" | "permission_error" => GatewayError::UpstreamAuth { provider, status: 401 },
        _ => GatewayError::UpstreamServerError { provider, status: 500, message },
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn system_tools_and_tool_results_translate() {
        let req = request(json!({
            "model": "claude", "max_tokens": 100, "temperature": 0.5, "stop": "END", "user": "u1",
            "parallel_tool_calls": false,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "42"},
                {"role": "user", "content": "and?"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required"
        }));
        let wire = to_wire(&req, "anthropic").unwrap();
        assert_eq!(wire["system"], "be brief");
        assert_eq!(wire["max_tokens"], 100);
        assert_eq!(wire["stop_sequences"], json!(["END"]));
        assert_eq!(wire["metadata"], json!({"user_id": "u1"}));
        assert_eq!(wire["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
        assert_eq!(wire["tools"][0], json!({"name": "f", "input_schema": {"type": "object"}}));
        let messages = wire["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "tool result and the next user turn merge: {messages:?}");
        assert_eq!(
            messages[0]["content"][1]["source"],
            json!({"type": "base64", "media_type": "image/png", "data": "AAAA"})
        );
        assert_eq!(messages[1]["content"][0], json!({"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}));
        assert_eq!(messages[2]["content"][0], json!({"type": "tool_result", "tool_use_id": "t1", "content": "42"}));
        assert_eq!(messages[2]["content"][1], json!({"type": "text", "text": "and?"}));
    }

    #[test]
    fn unsupported_features_are_rejected_naming_provider_and_feature() {
        for (field, value) in [
            ("n", json!(2)),
            ("logit_bias", json!({"1": 1})),
            ("temperature", json!(1.5)),
            ("frequency_penalty", json!(0.5)),
        ] {
            let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
            body[field] = value;
            let err = to_wire(&request(body), "claude-prod").unwrap_err();
            assert_eq!(err.status(), 400);
            let text = err.to_string();
            assert!(text.contains("claude-prod") && text.contains("does not support"), "{text}");
        }
    }
}
