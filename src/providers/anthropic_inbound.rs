//! The inbound Anthropic-compatible API (`POST /v1/messages`): an Anthropic Messages request
//! becomes a canonical request that any configured model can serve, and the canonical answer
//! (JSON or OpenAI chunks) becomes an Anthropic message or its exact SSE event sequence.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::GatewayError;
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, ContentPart, FunctionCall, FunctionDef, Message, MessageContent, Role,
    StreamOptions, Tool, ToolCall, Usage,
};

#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub system: Option<Value>,
    #[serde(default)]
    pub tools: Option<Vec<InTool>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<u64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub metadata: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    pub content: Value,
}

#[derive(Debug, Deserialize)]
pub struct InTool {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub input_schema: Option<Value>,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// Anthropic request fields that only tune Anthropic's own service; ignoring them keeps the answer valid.
const IGNORED_FIELDS: &[&str] = &["service_tier", "thinking"];

fn invalid(message: impl Into<String>, param: &str) -> GatewayError {
    GatewayError::InvalidRequest { message: message.into(), param: Some(param.into()) }
}

/// Text of a `system` value or of a `tool_result` content: a string or a list of text blocks.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

fn message(role: Role, content: Option<MessageContent>) -> Message {
    Message { role, content, name: None, tool_calls: None, tool_call_id: None, extra: Map::new() }
}

/// Anthropic Messages request → canonical request (pure).
pub fn to_canonical(req: MessagesRequest) -> Result<ChatRequest, GatewayError> {
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        messages.push(message(Role::System, Some(MessageContent::Text(text_of(system)))));
    }
    for (i, m) in req.messages.iter().enumerate() {
        let blocks: Vec<Value> = match &m.content {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(blocks) => blocks.clone(),
            _ => {
                return Err(invalid("content must be a string or a list of blocks", &format!("messages[{i}].content")));
            }
        };
        match m.role.as_str() {
            "user" => {
                let mut parts = Vec::new();
                for (j, block) in blocks.iter().enumerate() {
                    let at = format!("messages[{i}].content[{j}]");
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            parts.push(text_part(block.get("text").and_then(Value::as_str).unwrap_or_default()))
                        }
                        Some("image") => parts.push(image_part(block, &at)?),
                        Some("tool_result") => {
                            let id = block
                                .get("tool_use_id")
                                .and_then(Value::as_str)
                                .ok_or_else(|| invalid("tool_result needs tool_use_id", &at))?;
                            let mut text = block.get("content").map(text_of).unwrap_or_default();
                            if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                                text = format!("Error: {text}");
                            }
                            // Tool results answer the previous assistant turn, so they come first.
                            let mut tool = message(Role::Tool, Some(MessageContent::Text(text)));
                            tool.tool_call_id = Some(id.to_string());
                            messages.push(tool);
                        }
                        other => {
                            return Err(invalid(
                                format!("content blocks of type {other:?} are not supported in user turns"),
                                &at,
                            ));
                        }
                    }
                }
                if !parts.is_empty() {
                    let content = match parts.as_slice() {
                        [only] if only.kind == "text" => MessageContent::Text(only.text.clone().unwrap_or_default()),
                        _ => MessageContent::Parts(parts),
                    };
                    messages.push(message(Role::User, Some(content)));
                }
            }
            "assistant" => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for (j, block) in blocks.iter().enumerate() {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
                        Some("tool_use") => calls.push(ToolCall {
                            id: block.get("id").and_then(Value::as_str).unwrap_or_default().to_string(),
                            kind: "function".into(),
                            function: FunctionCall {
                                name: block.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                                arguments: block.get("input").cloned().unwrap_or_else(|| json!({})).to_string(),
                            },
                        }),
                        // Earlier reasoning cannot be replayed to another vendor's model.
                        Some("thinking") | Some("redacted_thinking") => {}
                        other => {
                            return Err(invalid(
                                format!("content blocks of type {other:?} are not supported in assistant turns"),
                                &format!("messages[{i}].content[{j}]"),
                            ));
                        }
                    }
                }
                let mut m = message(Role::Assistant, (!text.is_empty()).then_some(MessageContent::Text(text)));
                m.tool_calls = (!calls.is_empty()).then_some(calls);
                messages.push(m);
            }
            other => {
                return Err(invalid(
                    format!("role must be user or assistant, not {other:?}"),
                    &format!("messages[{i}].role"),
                ));
            }
        }
    }
    let tools = req.tools.as_ref().map(|tools| {
        tools
            .iter()
            .filter(|t| t.kind.as_deref().is_none_or(|k| k == "custom"))
            .map(|t| Tool {
                kind: "function".into(),
                function: Some(FunctionDef {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    parameters: t.input_schema.clone(),
                    extra: Map::new(),
                }),
                extra: Map::new(),
            })
            .collect::<Vec<_>>()
    });
    let mut extra = Map::new();
    let tool_choice = match &req.tool_choice {
        None => None,
        Some(choice) => {
            if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
                extra.insert("parallel_tool_calls".into(), json!(false));
            }
            match choice.get("type").and_then(Value::as_str) {
                Some("auto") => Some(json!("auto")),
                Some("any") => Some(json!("required")),
                Some("none") => Some(json!("none")),
                Some("tool") => {
                    let name = choice
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("tool_choice of type tool needs a name", "tool_choice"))?;
                    Some(json!({"type": "function", "function": {"name": name}}))
                }
                _ => return Err(invalid("tool_choice type must be auto, any, tool or none", "tool_choice")),
            }
        }
    };
    if let Some(stops) = &req.stop_sequences {
        extra.insert("stop".into(), json!(stops));
    }
    if let Some(top_p) = req.top_p {
        extra.insert("top_p".into(), json!(top_p));
    }
    if let Some(top_k) = req.top_k {
        extra.insert("top_k".into(), json!(top_k));
    }
    if let Some(user) = req.metadata.as_ref().and_then(|m| m.get("user_id")).and_then(Value::as_str) {
        extra.insert("user".into(), json!(user));
    }
    for key in req.extra.keys() {
        if !IGNORED_FIELDS.contains(&key.as_str()) {
            return Err(invalid(format!("the field `{key}` is not supported by this gateway's /v1/messages"), key));
        }
    }
    let stream = req.stream.unwrap_or(false);
    Ok(ChatRequest {
        model: req.model,
        messages,
        stream: stream.then_some(true),
        // The final message_delta reports usage, so streams always ask for it.
        stream_options: stream.then(|| StreamOptions { include_usage: Some(true), extra: Map::new() }),
        tools: tools.filter(|t| !t.is_empty()),
        tool_choice,
        response_format: None,
        max_tokens: Some(req.max_tokens),
        max_completion_tokens: None,
        temperature: req.temperature,
        n: None,
        extra,
    })
}

fn text_part(text: &str) -> ContentPart {
    ContentPart { kind: "text".into(), text: Some(text.to_string()), image_url: None, extra: Map::new() }
}

fn image_part(block: &Value, at: &str) -> Result<ContentPart, GatewayError> {
    let source = block.get("source").ok_or_else(|| invalid("image needs a source", at))?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            source.get("media_type").and_then(Value::as_str).unwrap_or("image/png"),
            source.get("data").and_then(Value::as_str).unwrap_or_default()
        ),
        Some("url") => source.get("url").and_then(Value::as_str).unwrap_or_default().to_string(),
        _ => return Err(invalid("image source must be base64 or url", at)),
    };
    Ok(ContentPart { kind: "image_url".into(), text: None, image_url: Some(json!({"url": url})), extra: Map::new() })
}

pub fn stop_reason(finish_reason: Option<&str>) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Anthropic's usage: `input_tokens` excludes cache reads and writes.
fn anthropic_usage(usage: Option<Usage>) -> Value {
    let u = usage.unwrap_or_default();
    let cached = u.cached_tokens();
    let written = u.cache_creation_input_tokens.unwrap_or(0);
    json!({
        "input_tokens": u.prompt_tokens.saturating_sub(cached + written),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    })
}

fn message_id(id: &str) -> String {
    if id.starts_with("msg_") { id.to_string() } else { format!("msg_{id}") }
}

fn tool_input(arguments: &str) -> Value {
    // A model may emit arguments that are not an object; Anthropic clients need an object.
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        Ok(other) => json!({ "value": other }),
        Err(_) => json!({ "_raw": arguments }),
    }
}

/// Canonical (OpenAI JSON) answer → Anthropic message JSON.
pub fn response_body(openai_json: &[u8]) -> Result<Bytes, GatewayError> {
    let response: ChatResponse = serde_json::from_slice(openai_json)
        .map_err(|e| GatewayError::internal(format!("cannot read the upstream answer as a chat completion: {e}")))?;
    let choice = response.choices.into_iter().next();
    let mut content = Vec::new();
    let mut finish = None;
    if let Some(choice) = choice {
        finish = choice.finish_reason;
        if let Some(text) = choice.message.content.filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": text}));
        }
        for call in choice.message.tool_calls.unwrap_or_default() {
            content.push(json!({"type": "tool_use", "id": call.id, "name": call.function.name, "input": tool_input(&call.function.arguments)}));
        }
    }
    let body = json!({
        "id": message_id(&response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_reason(finish.as_deref()),
        "stop_sequence": null,
        "usage": anthropic_usage(response.usage),
    });
    Ok(Bytes::from(body.to_string()))
}

#[derive(Debug, PartialEq)]
enum Block {
    None,
    Text,
    Tool(u32),
}

/// OpenAI chunks → Anthropic SSE events: one `message_start`, content blocks opened and closed in
/// order (text deltas and `input_json_delta` for tool input), one `message_delta` with the stop
/// reason and usage, one `message_stop`.
pub struct EventWriter {
    started: bool,
    block: Block,
    index: u32,
    finish: Option<String>,
    usage: Option<Usage>,
    model: String,
}

impl Default for EventWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl EventWriter {
    pub fn new() -> Self {
        Self { started: false, block: Block::None, index: 0, finish: None, usage: None, model: String::new() }
    }

    fn start(&mut self, out: &mut Vec<u8>, id: &str, model: &str) {
        if self.started {
            return;
        }
        self.started = true;
        self.model = model.to_string();
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {"id": message_id(id), "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        );
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if self.block != Block::None {
            event(out, "content_block_stop", &json!({"type": "content_block_stop", "index": self.index}));
            self.index += 1;
            self.block = Block::None;
        }
    }

    /// Translates one OpenAI chunk (the JSON after `data: `).
    pub fn chunk(&mut self, data: &[u8]) -> Result<Bytes, GatewayError> {
        let chunk: ChatChunk = serde_json::from_slice(data)
            .map_err(|e| GatewayError::internal(format!("cannot read an upstream chunk: {e}")))?;
        let mut out = Vec::new();
        self.start(&mut out, &chunk.id, &chunk.model);
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
                if self.block != Block::Text {
                    self.close_block(&mut out);
                    self.block = Block::Text;
                    event(
                        &mut out,
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": self.index, "content_block": {"type": "text", "text": ""}}),
                    );
                }
                event(
                    &mut out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": self.index, "delta": {"type": "text_delta", "text": text}}),
                );
            }
            for call in choice.delta.tool_calls.iter().flatten() {
                if self.block != Block::Tool(call.index) {
                    if matches!(self.block, Block::Tool(open) if open > call.index) {
                        // Anthropic blocks cannot interleave; OpenAI streams parallel calls in order.
                        return Err(GatewayError::internal("tool call deltas arrived out of order"));
                    }
                    self.close_block(&mut out);
                    self.block = Block::Tool(call.index);
                    let start = json!({"type": "content_block_start", "index": self.index,
                        "content_block": {"type": "tool_use", "id": call.id.clone().unwrap_or_default(),
                            "name": call.function.name.clone().unwrap_or_default(), "input": {}}});
                    event(&mut out, "content_block_start", &start);
                }
                if let Some(args) = call.function.arguments.as_deref().filter(|a| !a.is_empty()) {
                    let delta = json!({"type": "content_block_delta", "index": self.index,
                        "delta": {"type": "input_json_delta", "partial_json": args}});
                    event(&mut out, "content_block_delta", &delta);
                }
            }
            if let Some(reason) = &choice.finish_reason {
                self.finish = Some(reason.clone());
            }
        }
        Ok(Bytes::from(out))
    }

    /// The closing events after the upstream finished cleanly.
    pub fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        self.start(&mut out, "gateway", "unknown");
        self.close_block(&mut out);
        let usage = anthropic_usage(self.usage);
        event(
            &mut out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null}, "usage": usage}),
        );
        event(&mut out, "message_stop", &json!({"type": "message_stop"}));
        Bytes::from(out)
    }

    /// A failure after the stream started: one Anthropic `error` event.
    pub fn error(&mut self, error: &GatewayError) -> Bytes {
        let mut out = Vec::new();
        event(&mut out, "error", &error_json(error));
        Bytes::from(out)
    }
}

/// Anthropic's error type for a status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The Anthropic-shaped error body for the gateway's error.
pub fn error_json(error: &GatewayError) -> Value {
    json!({"type": "error", "error": {"type": error_type(error.status().as_u16()), "message": error.to_string()}})
}
