//! Amazon Bedrock adapter over the model-agnostic Converse API: canonical (OpenAI-shaped) request →
//! `POST {base}/model/{modelId}/converse` (or `/converse-stream`), SigV4-signed at send time, and
//! the answer back, including ConverseStream's binary event stream (`messageStart`,
//! `contentBlockStart`/`Delta`/`Stop`, `messageStop`, `metadata`, and `exception:*` messages).
//! Translation is pure functions and one stateful stream translator; `Bedrock` only signs and sends.

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::sse::SseEvent;
use super::stream::{self, Framing, Translate};
use super::translate::{push_turn, system_text, unsupported};
use super::{CallLimits, ChatReply, Completion, StreamChunk, error_from_status, eventstream, sigv4, transport};
use crate::config::{DeploymentConfig, ProviderConfig, Secret};
use crate::error::GatewayError;
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Delta, EmbeddingsRequest, FunctionCall, FunctionCallDelta,
    MessageContent, ResponseMessage, Role, ToolCall, ToolCallDelta, Usage,
};

pub const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
/// Added to the system prompt for `response_format: json_object` (Converse has no JSON mode).
pub const JSON_INSTRUCTION: &str = "Respond with a single valid JSON object and nothing else.";

/// Holds the signing credentials; their Debug output is `Secret(***)`.
#[derive(Debug)]
pub struct Bedrock {
    region: String,
    access_key_id: Secret,
    secret_access_key: Secret,
    session_token: Option<Secret>,
    /// Configured extra headers (sent unsigned, as AWS allows).
    headers: HeaderMap,
}

impl Bedrock {
    pub fn new(config: &ProviderConfig) -> Result<Self, GatewayError> {
        let aws = config.aws.as_ref().ok_or_else(|| {
            GatewayError::internal(format!(
                "provider {}: Bedrock needs aws_region, aws_access_key_id and aws_secret_access_key",
                config.name
            ))
        })?;
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            if let (Ok(name), Ok(mut value)) =
                (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value.expose()))
            {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        Ok(Self {
            region: aws.region.clone(),
            access_key_id: aws.access_key_id.clone(),
            secret_access_key: aws.secret_access_key.clone(),
            session_token: aws.session_token.clone(),
            headers,
        })
    }

    /// `{base}/model/{modelId}` with the id percent-encoded as one path segment (ids contain `:`,
    /// ARNs also `/`); `chat` appends `/converse` or `/converse-stream`.
    pub fn endpoint(config: &ProviderConfig, deployment: &DeploymentConfig) -> String {
        format!("{}/model/{}", config.base_url, sigv4::uri_encode(&deployment.model))
    }

    /// Content, payload-hash and SigV4 headers for one send (signed now: the date is part of it).
    fn signed_headers(&self, url: &reqwest::Url, body: &[u8]) -> Result<HeaderMap, GatewayError> {
        let hash = sigv4::payload_hash(body);
        let signed = [("content-type", "application/json"), ("x-amz-content-sha256", hash.as_str())];
        let request = sigv4::Request { method: "POST", url, headers: &signed, payload: body };
        let credentials = sigv4::Credentials {
            access_key_id: self.access_key_id.expose(),
            secret_access_key: self.secret_access_key.expose(),
            session_token: self.session_token.as_ref().map(Secret::expose),
        };
        let amz_date = sigv4::amz_date(SystemTime::now());
        let scope = sigv4::Scope { region: &self.region, service: "bedrock", amz_date: &amz_date };
        let mut headers = self.headers.clone();
        let added = sigv4::sign(&request, &credentials, scope);
        for (name, value) in signed.iter().map(|(n, v)| (*n, v.to_string())).chain(added) {
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| GatewayError::internal(format!("the AWS `{name}` header is not a valid header value")))?;
            value.set_sensitive(matches!(name, "authorization" | "x-amz-security-token"));
            headers.insert(HeaderName::from_static(name), value);
        }
        Ok(headers)
    }

    pub async fn chat(
        &self,
        client: &reqwest::Client,
        endpoint: &str,
        config: &ProviderConfig,
        req: &ChatRequest,
        limits: CallLimits,
    ) -> Result<ChatReply, GatewayError> {
        let wire = to_wire(req, &config.name)?;
        let body =
            serde_json::to_vec(&wire).map_err(|e| GatewayError::internal(format!("cannot encode request: {e}")))?;
        let operation = if req.is_stream() { "converse-stream" } else { "converse" };
        let url = reqwest::Url::parse(&format!("{endpoint}/{operation}"))
            .map_err(|e| GatewayError::internal(format!("provider {}: bad Bedrock URL: {e}", config.name)))?;
        let headers = self.signed_headers(&url, &body)?;
        let request = client.post(url).headers(headers).body(body);
        let response = transport::send(request, config, limits, error_from_status).await?;
        let id = match response.headers().get("x-amzn-requestid").and_then(|v| v.to_str().ok()) {
            Some(request_id) => format!("chatcmpl-{request_id}"),
            None => format!("chatcmpl-{}", uuid::Uuid::now_v7().simple()),
        };
        if !req.is_stream() {
            let body = transport::read_body(response, config, limits).await?;
            let parsed = from_wire(&body, &id, &req.model)
                .map_err(|message| GatewayError::UpstreamProtocol { provider: config.name.clone(), message })?;
            let usage = parsed.usage;
            let body = serde_json::to_vec(&parsed).map_err(|e| GatewayError::internal(e.to_string()))?;
            return Ok(ChatReply::Complete(Completion { body: body.into(), usage }));
        }
        if !transport::is_event_stream(&response, EVENT_STREAM) {
            return Err(GatewayError::UpstreamProtocol {
                provider: config.name.clone(),
                message: format!("expected an {EVENT_STREAM} stream"),
            });
        }
        let translator = Box::new(StreamTranslator::new(&config.name, &id, &req.model));
        Ok(ChatReply::Stream(stream::drive(
            config.name.clone(),
            Box::pin(response.bytes_stream()),
            Framing::AwsEventStream(eventstream::Decoder::new()),
            translator,
            limits,
        )))
    }

    pub async fn embeddings(
        &self,
        _client: &reqwest::Client,
        _endpoint: &str,
        config: &ProviderConfig,
        _req: &EmbeddingsRequest,
        _limits: CallLimits,
    ) -> Result<Completion, GatewayError> {
        Err(unsupported(
            &config.name,
            "embeddings yet (Bedrock embedding models each take their own InvokeModel body, e.g. Titan or Cohere)",
        ))
    }
}

fn invalid(message: impl Into<String>, param: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest { message: message.into(), param: Some(param.into()) }
}

/// Request fields with no Converse equivalent that change the answer: rejected, never dropped.
const REJECTED_FIELDS: &[&str] = &["logit_bias", "audio", "prediction", "seed", "reasoning_effort", "modalities"];
/// Request fields that are bookkeeping for OpenAI and safe to ignore.
const IGNORED_FIELDS: &[&str] = &["store", "metadata", "service_tier", "user"];

/// Canonical request → Converse / ConverseStream request body (pure; the model is in the URL).
///
/// - System and developer messages become `system: [{text}]`; tool messages become user-turn
///   `toolResult` blocks, and consecutive turns of one role merge (Converse wants alternation).
/// - `toolResult.status` is not sent: Converse documents it for Anthropic Claude models only.
/// - `tool_choice: "none"` has no Converse equivalent. Without tool history the tool definitions
///   are left out, which forbids calls exactly; with tool history Bedrock requires `toolConfig`
///   and could then call a tool, so the request is rejected as unsupported.
/// - `response_format: json_object` is emulated with a system instruction, like Anthropic.
pub fn to_wire(req: &ChatRequest, provider: &str) -> Result<Value, GatewayError> {
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut tool_history = false;
    for (i, message) in req.messages.iter().enumerate() {
        match message.role {
            Role::System | Role::Developer => {
                if let Some(text) = system_text(message, provider, i)? {
                    system.push(json!({"text": text}));
                }
            }
            Role::User => push_turn(&mut messages, "user", user_blocks(message.content.as_ref(), provider, i)?),
            Role::Assistant => {
                let mut blocks = Vec::new();
                let text = message.content.as_ref().map(MessageContent::text).unwrap_or_default();
                if !text.is_empty() {
                    blocks.push(json!({"text": text}));
                }
                for call in message.tool_calls.iter().flatten() {
                    let input: Value = serde_json::from_str(&call.function.arguments).map_err(|e| {
                        invalid(
                            format!("tool call `{}` arguments are not valid JSON: {e}", call.id),
                            format!("messages[{i}].tool_calls"),
                        )
                    })?;
                    tool_history = true;
                    blocks.push(json!({"toolUse": {"toolUseId": call.id, "name": call.function.name, "input": input}}));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            Role::Tool => {
                let id = message.tool_call_id.as_deref().ok_or_else(|| {
                    invalid("a tool message needs `tool_call_id`", format!("messages[{i}].tool_call_id"))
                })?;
                tool_history = true;
                let text = message.content.as_ref().map(MessageContent::text).unwrap_or_default();
                push_turn(
                    &mut messages,
                    "user",
                    vec![json!({"toolResult": {"toolUseId": id, "content": [{"text": text}]}})],
                );
            }
            Role::Function => return Err(unsupported(provider, "the deprecated `function` role (use tools)")),
        }
    }
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported(provider, "`n` greater than 1"));
    }
    if let Some(format) = &req.response_format {
        match format.get("type").and_then(Value::as_str) {
            Some("text") | None => {}
            Some("json_object") => system.push(json!({"text": JSON_INSTRUCTION})),
            Some(other) => return Err(unsupported(provider, format!("response_format `{other}`"))),
        }
    }
    let mut body = Map::new();
    body.insert(
        "messages".into(),
        Value::Array(messages.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect()),
    );
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(max) = req.max_completion_tokens.or(req.max_tokens) {
        inference.insert("maxTokens".into(), json!(max));
    }
    if let Some(t) = req.temperature {
        inference.insert("temperature".into(), unit_interval(provider, "temperature", &json!(t))?);
    }
    for (key, value) in &req.extra {
        match key.as_str() {
            "parallel_tool_calls" if value.as_bool() == Some(false) && req.tools.is_some() => {
                return Err(unsupported(provider, "`parallel_tool_calls: false` (Converse cannot limit tool calls)"));
            }
            "parallel_tool_calls" => {}
            "top_p" => {
                inference.insert("topP".into(), unit_interval(provider, "top_p", value)?);
            }
            "stop" => {
                let stops = match value {
                    Value::String(s) => vec![json!(s)],
                    Value::Array(items) if items.iter().all(Value::is_string) => items.clone(),
                    Value::Null => Vec::new(),
                    _ => return Err(invalid("`stop` must be a string or an array of strings", "stop")),
                };
                if !stops.is_empty() {
                    inference.insert("stopSequences".into(), Value::Array(stops));
                }
            }
            "top_k" => return Err(unsupported(provider, "`top_k` (a model-specific field on Bedrock)")),
            "presence_penalty" | "frequency_penalty" if value.as_f64() == Some(0.0) => {}
            "logprobs" if value.as_bool() == Some(false) => {}
            k if IGNORED_FIELDS.contains(&k) => {}
            k if REJECTED_FIELDS.contains(&k) => return Err(unsupported(provider, format!("`{k}`"))),
            k => return Err(unsupported(provider, format!("the request field `{k}`"))),
        }
    }
    if !inference.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(config) = tool_config(req, provider, tool_history)? {
        body.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(body))
}

/// `temperature` and `top_p`: Converse accepts 0 to 1 for every model.
fn unit_interval(provider: &str, name: &str, value: &Value) -> Result<Value, GatewayError> {
    match value.as_f64() {
        Some(v) if (0.0..=1.0).contains(&v) => Ok(json!(v)),
        Some(v) => Err(unsupported(provider, format!("{name} {v} (Bedrock accepts 0 to 1)"))),
        None => Err(invalid(format!("`{name}` must be a number"), name)),
    }
}

fn tool_config(req: &ChatRequest, provider: &str, tool_history: bool) -> Result<Option<Value>, GatewayError> {
    let tools = req.tools.as_deref().unwrap_or_default();
    let choice = match req.tool_choice.as_ref() {
        None => None,
        Some(Value::String(s)) if s == "auto" => Some(json!({"auto": {}})),
        Some(Value::String(s)) if s == "required" => Some(json!({"any": {}})),
        Some(Value::String(s)) if s == "none" => {
            if tool_history && !tools.is_empty() {
                return Err(unsupported(
                    provider,
                    "`tool_choice: \"none\"` once the conversation has tool calls (Converse then needs the \
                     tool definitions and cannot forbid calling them)",
                ));
            }
            return Ok(None);
        }
        Some(_) => match req.forced_tool() {
            Some(name) => Some(json!({"tool": {"name": name}})),
            None => return Err(invalid("unrecognised `tool_choice`", "tool_choice")),
        },
    };
    if tools.is_empty() {
        return match choice {
            Some(c) if c.get("auto").is_none() => Err(invalid("`tool_choice` needs `tools`", "tool_choice")),
            _ => Ok(None),
        };
    }
    let mut specs = Vec::new();
    for tool in tools {
        let Some(function) = tool.function.as_ref().filter(|_| tool.kind == "function") else {
            return Err(unsupported(provider, format!("tools of type `{}`", tool.kind)));
        };
        let schema = function.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        let mut spec = json!({"name": function.name, "inputSchema": {"json": schema}});
        if let Some(description) = function.description.as_ref().filter(|d| !d.is_empty()) {
            spec["description"] = json!(description);
        }
        specs.push(json!({"toolSpec": spec}));
    }
    let mut config = json!({"tools": specs});
    if let Some(choice) = choice {
        config["toolChoice"] = choice;
    }
    Ok(Some(config))
}

fn user_blocks(content: Option<&MessageContent>, provider: &str, index: usize) -> Result<Vec<Value>, GatewayError> {
    match content {
        None => Ok(Vec::new()),
        Some(MessageContent::Text(text)) if text.is_empty() => Ok(Vec::new()),
        Some(MessageContent::Text(text)) => Ok(vec![json!({"text": text})]),
        Some(MessageContent::Parts(parts)) => {
            let mut blocks = Vec::new();
            for part in parts {
                match part.kind.as_str() {
                    "text" => {
                        let text = part.text.clone().unwrap_or_default();
                        if !text.is_empty() {
                            blocks.push(json!({"text": text}));
                        }
                    }
                    "image_url" => {
                        let url = part
                            .image_url
                            .as_ref()
                            .and_then(|u| u.get("url").or(Some(u)))
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        blocks.push(image_block(url, provider, index)?);
                    }
                    other => {
                        return Err(unsupported(
                            provider,
                            format!("content parts of type `{other}` (messages[{index}])"),
                        ));
                    }
                }
            }
            Ok(blocks)
        }
    }
}

/// A base64 `data:` URL as a Converse image block (blobs travel base64 in JSON). Converse cannot
/// fetch links, so an http(s) image URL is rejected rather than dropped.
fn image_block(url: &str, provider: &str, index: usize) -> Result<Value, GatewayError> {
    let Some((media_type, data)) = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(','))
        .and_then(|(meta, data)| Some((meta.strip_suffix(";base64")?, data)))
    else {
        return Err(unsupported(
            provider,
            format!("image URLs (messages[{index}]): Bedrock takes images inline, send a base64 `data:` URL"),
        ));
    };
    let format = match media_type.to_ascii_lowercase().as_str() {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => return Err(unsupported(provider, format!("images of type `{other}` (messages[{index}])"))),
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    output: WireOutput,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct WireOutput {
    #[serde(default)]
    message: Option<WireMessage>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Vec<WireBlock>,
}

/// A content block is an object with one member; members other than these (reasoning, images,
/// guard content, …) carry nothing an OpenAI message can hold and are skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireBlock {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<WireToolUse>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireToolUse {
    tool_use_id: String,
    name: String,
    #[serde(default)]
    input: Value,
}

/// Converse token usage. As with Anthropic's API, `inputTokens` counts only the uncached part of
/// the prompt: with prompt caching, `cacheReadInputTokens` and `cacheWriteInputTokens` are reported
/// beside it (and counted in `totalTokens`), so the OpenAI `prompt_tokens` is the sum of the three,
/// `cached_tokens` the reads and `cache_creation_input_tokens` the writes.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_write_input_tokens: Option<u64>,
}

impl WireUsage {
    fn canonical(self) -> Usage {
        Usage::with_cache(
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_write_input_tokens,
        )
    }
}

pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ => "stop", // end_turn, stop_sequence
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Converse response body → canonical chat completion (pure). Converse names neither the
/// response nor the model, so the caller passes the id (from `x-amzn-requestid`) and the model.
pub fn from_wire(body: &[u8], id: &str, model: &str) -> Result<ChatResponse, String> {
    let wire: WireResponse =
        serde_json::from_slice(body).map_err(|e| format!("response is not a Bedrock Converse response ({e})"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in wire.output.message.map(|m| m.content).unwrap_or_default() {
        if let Some(t) = block.text {
            text.push_str(&t);
        }
        if let Some(tool) = block.tool_use {
            let arguments = if tool.input.is_null() { "{}".to_string() } else { tool.input.to_string() };
            calls.push(ToolCall {
                id: tool.tool_use_id,
                kind: "function".into(),
                function: FunctionCall { name: tool.name, arguments },
            });
        }
    }
    let message = ResponseMessage {
        role: Role::Assistant,
        content: (!text.is_empty() || calls.is_empty()).then_some(text),
        tool_calls: (!calls.is_empty()).then_some(calls),
    };
    Ok(ChatResponse {
        id: id.to_string(),
        object: "chat.completion".into(),
        created: now(),
        model: model.to_string(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(finish_reason(wire.stop_reason.as_deref().unwrap_or("end_turn")).into()),
        }],
        usage: wire.usage.map(WireUsage::canonical),
        extra: Default::default(),
    })
}

/// The payload of `contentBlockStart` (with `start`), `contentBlockDelta` (with `delta`) and
/// `contentBlockStop`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockEvent {
    content_block_index: u32,
    #[serde(default)]
    start: Option<BlockStartBody>,
    #[serde(default)]
    delta: Option<BlockDeltaBody>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockStartBody {
    #[serde(default)]
    tool_use: Option<ToolUseStart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ToolUseStart {
    tool_use_id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockDeltaBody {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    tool_use: Option<ToolUseDelta>,
}

#[derive(Debug, Deserialize)]
struct ToolUseDelta {
    input: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageStop {
    stop_reason: String,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct ExceptionBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "originalMessage")]
    original_message: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct ToolBlock {
    index: u32,
    has_input: bool,
}

/// ConverseStream events → OpenAI chunks: exactly one role chunk (`messageStart`), deltas, one
/// finish chunk (`messageStop`), then a usage chunk (`choices: []`) from `metadata`, which ends
/// the stream. Bedrock always sends `metadata` after `messageStop`; if the connection closes
/// between the two the answer is complete but its usage unknown, so the stream ends cleanly
/// without a usage chunk rather than inventing zeros. Ending before `messageStop` is an error.
pub struct StreamTranslator {
    provider: String,
    id: String,
    model: String,
    created: u64,
    started: bool,
    /// Converse content-block index → OpenAI tool-call index.
    tools: HashMap<u32, ToolBlock>,
    finish: Option<&'static str>,
    /// `metadata` usage that arrived before `messageStop` (not expected, but harmless).
    usage: Option<Usage>,
}

impl StreamTranslator {
    pub fn new(provider: &str, id: &str, model: &str) -> Self {
        Self {
            provider: provider.to_string(),
            id: id.to_string(),
            model: model.to_string(),
            created: now(),
            started: false,
            tools: HashMap::new(),
            finish: None,
            usage: None,
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<&str>) -> StreamChunk {
        stream::chunk(&ChatChunk::delta(&self.id, self.created, &self.model, delta, finish))
    }

    fn tool_chunk(&self, delta: ToolCallDelta) -> StreamChunk {
        self.chunk(Delta { tool_calls: Some(vec![delta]), ..Delta::default() }, None)
    }

    fn usage_chunk(&self, usage: Usage) -> StreamChunk {
        stream::chunk(&ChatChunk::usage(&self.id, self.created, &self.model, usage))
    }

    fn protocol(&self, message: String) -> GatewayError {
        GatewayError::UpstreamProtocol { provider: self.provider.clone(), message }
    }

    fn parse<'a, T: Deserialize<'a>>(&self, name: &str, data: &'a [u8]) -> Result<T, GatewayError> {
        serde_json::from_slice(data).map_err(|e| self.protocol(format!("malformed `{name}` event ({e})")))
    }
}

impl Translate for StreamTranslator {
    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<StreamChunk>) -> Result<bool, GatewayError> {
        let name = event.event.as_deref().unwrap_or_default();
        if let Some(kind) = name.strip_prefix("exception:") {
            let body: Option<ExceptionBody> = serde_json::from_slice(&event.data).ok();
            let message = body
                .and_then(|b| b.original_message.or(b.message))
                .unwrap_or_else(|| String::from_utf8_lossy(&event.data).chars().take(500).collect());
            return Err(stream_error(&self.provider, kind, message));
        }
        if let Some(code) = name.strip_prefix("error:") {
            let body: Option<ExceptionBody> = serde_json::from_slice(&event.data).ok();
            let detail = body.and_then(|b| b.message).unwrap_or_default();
            return Err(GatewayError::UpstreamServerError {
                provider: self.provider.clone(),
                status: 500,
                message: format!("event stream error {code}: {detail}"),
            });
        }
        let known =
            ["contentBlockStart", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata"].contains(&name);
        if known && !self.started {
            return Err(self.protocol(format!("stream sent `{name}` before messageStart")));
        }
        match name {
            // A repeated messageStart falls through to `_` and adds no second role chunk.
            "messageStart" if !self.started => {
                self.started = true;
                let role = Delta { role: Some(Role::Assistant), content: Some(String::new()), tool_calls: None };
                out.push_back(self.chunk(role, None));
            }
            "contentBlockStart" => {
                let start: BlockEvent = self.parse(name, &event.data)?;
                if let Some(tool) = start.start.and_then(|s| s.tool_use) {
                    if self.tools.contains_key(&start.content_block_index) {
                        return Err(self.protocol(format!("block {} started twice", start.content_block_index)));
                    }
                    let index = self.tools.len() as u32;
                    self.tools.insert(start.content_block_index, ToolBlock { index, has_input: false });
                    out.push_back(self.tool_chunk(ToolCallDelta {
                        index,
                        id: Some(tool.tool_use_id),
                        kind: Some("function".into()),
                        function: FunctionCallDelta { name: Some(tool.name), arguments: Some(String::new()) },
                    }));
                }
            }
            "contentBlockDelta" => {
                let event: BlockEvent = self.parse(name, &event.data)?;
                let block = event.content_block_index;
                let delta = event.delta.unwrap_or(BlockDeltaBody { text: None, tool_use: None });
                if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                    out.push_back(self.chunk(Delta { content: Some(text), ..Delta::default() }, None));
                }
                if let Some(input) = delta.tool_use {
                    let Some(tool) = self.tools.get_mut(&block) else {
                        return Err(self.protocol(format!("tool input for block {block}, which is not a tool block")));
                    };
                    tool.has_input |= !input.input.is_empty();
                    let index = tool.index;
                    out.push_back(self.tool_chunk(ToolCallDelta {
                        index,
                        id: None,
                        kind: None,
                        function: FunctionCallDelta { name: None, arguments: Some(input.input) },
                    }));
                }
            }
            "contentBlockStop" => {
                let stop: BlockEvent = self.parse(name, &event.data)?;
                // A tool called with no input streams none: give clients valid (empty) JSON.
                if let Some(tool) = self.tools.get_mut(&stop.content_block_index).filter(|t| !t.has_input) {
                    tool.has_input = true;
                    let index = tool.index;
                    out.push_back(self.tool_chunk(ToolCallDelta {
                        index,
                        id: None,
                        kind: None,
                        function: FunctionCallDelta { name: None, arguments: Some("{}".into()) },
                    }));
                }
            }
            "messageStop" => {
                let stop: MessageStop = self.parse(name, &event.data)?;
                if self.finish.is_none() {
                    let finish = finish_reason(&stop.stop_reason);
                    self.finish = Some(finish);
                    out.push_back(self.chunk(Delta::default(), Some(finish)));
                }
                if let Some(usage) = self.usage.take() {
                    out.push_back(self.usage_chunk(usage));
                    return Ok(true);
                }
            }
            "metadata" => {
                let metadata: Metadata = self.parse(name, &event.data)?;
                let usage = metadata.usage.map(WireUsage::canonical);
                if self.finish.is_none() {
                    self.usage = usage;
                    return Ok(false);
                }
                if let Some(usage) = usage {
                    out.push_back(self.usage_chunk(usage));
                }
                return Ok(true);
            }
            _ => {} // unknown event types are skipped (AWS may add new ones)
        }
        Ok(false)
    }

    fn end_of_input(&mut self, _out: &mut VecDeque<StreamChunk>) -> Result<(), GatewayError> {
        if self.finish.is_some() {
            return Ok(());
        }
        Err(self.protocol("the stream ended before messageStop".into()))
    }
}

/// An exception message inside a stream, by its `:exception-type`.
fn stream_error(provider: &str, kind: &str, message: String) -> GatewayError {
    let provider = provider.to_string();
    match kind {
        "throttlingException" => GatewayError::UpstreamRateLimited { provider, retry_after: None, message },
        "validationException" => {
            GatewayError::UpstreamRejected { provider, status: 400, message, code: None, param: None }
        }
        "accessDeniedException" => GatewayError::UpstreamAuth { provider, status: 403 },
        "serviceUnavailableException" => GatewayError::UpstreamServerError { provider, status: 503, message },
        "modelTimeoutException" => GatewayError::UpstreamServerError { provider, status: 408, message },
        // modelStreamErrorException, internalServerException and anything new.
        _ => GatewayError::UpstreamServerError { provider, status: 500, message: format!("{kind}: {message}") },
    }
}

#[cfg(test)]
mod tests;
