//! Gemini API adapter: canonical (OpenAI-shaped) request → `models/{model}:generateContent` or
//! `:streamGenerateContent?alt=sse`, and the answer back; embeddings via `:batchEmbedContents`.
//! Translation is pure functions and one stateful stream translator; `Gemini` only sends.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::sse::{SseDecoder, SseEvent};
use super::stream::{self, Framing, Translate};
use super::translate::{provider_headers, push_turn, system_text, unsupported};
use super::{CallLimits, ChatReply, Completion, StreamChunk, error_from_status, transport};
use crate::config::{DeploymentConfig, ProviderConfig};
use crate::error::GatewayError;
use crate::types::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Delta, EmbeddingsRequest, FunctionCall, FunctionCallDelta,
    MessageContent, PromptTokensDetails, ResponseMessage, Role, ToolCall, ToolCallDelta, Usage,
};

/// Google's documented placeholder for a `thoughtSignature` the client cannot give back. Gemini 3
/// rejects replayed `functionCall` parts without one, and OpenAI's format has nowhere to carry the
/// real signature (tool call ids must stay short enough for every other provider to accept).
const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

#[derive(Debug)]
pub struct Gemini {
    headers: HeaderMap,
}

impl Gemini {
    pub fn new(config: &ProviderConfig) -> Result<Self, GatewayError> {
        // The key travels in a header, never in the `?key=` query, so it cannot reach URL logs.
        let key = config.api_key.as_ref().map(|k| (HeaderName::from_static("x-goog-api-key"), k.expose().to_string()));
        Ok(Self { headers: provider_headers(config, key)? })
    }

    /// `{base_url}/models/{model}`; `chat` and `embeddings` append the `:method` they call.
    pub fn endpoint(config: &ProviderConfig, deployment: &DeploymentConfig) -> String {
        format!("{}/{}", config.base_url, model_path(&deployment.model))
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
        let url = if req.is_stream() {
            format!("{endpoint}:streamGenerateContent?alt=sse")
        } else {
            format!("{endpoint}:generateContent")
        };
        let request = client.post(url).headers(self.headers.clone()).body(body);
        let response = transport::send(request, config, limits, map_error).await?;
        if !req.is_stream() {
            let body = transport::read_body(response, config, limits).await?;
            let parsed = from_wire(&body, &req.model)
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
        Ok(ChatReply::Stream(stream::drive(
            config.name.clone(),
            Box::pin(response.bytes_stream()),
            Framing::Sse(SseDecoder::new()),
            Box::new(StreamTranslator::new(&config.name, &req.model)),
            limits,
        )))
    }

    pub async fn embeddings(
        &self,
        client: &reqwest::Client,
        endpoint: &str,
        config: &ProviderConfig,
        req: &EmbeddingsRequest,
        limits: CallLimits,
    ) -> Result<Completion, GatewayError> {
        let (wire, base64) = embeddings_to_wire(req, &config.name)?;
        let body =
            serde_json::to_vec(&wire).map_err(|e| GatewayError::internal(format!("cannot encode request: {e}")))?;
        let request = client.post(format!("{endpoint}:batchEmbedContents")).headers(self.headers.clone()).body(body);
        let response = transport::send(request, config, limits, map_error).await?;
        let body = transport::read_body(response, config, limits).await?;
        let answer = embeddings_from_wire(&body, &req.model, base64)
            .map_err(|message| GatewayError::UpstreamProtocol { provider: config.name.clone(), message })?;
        // Gemini reports no token counts for embeddings.
        Ok(Completion { body: answer.to_string().into(), usage: None })
    }
}

/// `gemini-2.5-flash` → `models/gemini-2.5-flash`; an already qualified name (`models/…`,
/// `tunedModels/…`) is kept.
fn model_path(model: &str) -> String {
    if model.contains('/') { model.to_string() } else { format!("models/{model}") }
}

fn invalid(message: String, param: String) -> GatewayError {
    GatewayError::InvalidRequest { message, param: Some(param) }
}

/// Request fields with no Gemini equivalent that change the answer: rejected, never dropped.
const REJECTED_FIELDS: &[&str] = &["logit_bias", "audio", "prediction", "modalities", "top_logprobs", "logprobs"];
/// Request fields that are bookkeeping for OpenAI and safe to ignore.
const IGNORED_FIELDS: &[&str] = &["store", "metadata", "service_tier", "user"];

/// Canonical request → Gemini `GenerateContentRequest` body (pure).
pub fn to_wire(req: &ChatRequest, provider: &str) -> Result<Value, GatewayError> {
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, message) in req.messages.iter().enumerate() {
        match message.role {
            Role::System | Role::Developer => {
                if let Some(text) = system_text(message, provider, i)? {
                    system.push(json!({"text": text}));
                }
            }
            Role::User => push_turn(&mut contents, "user", user_parts(message.content.as_ref(), provider, i)?),
            Role::Assistant => {
                let mut parts = Vec::new();
                if let Some(content) = &message.content {
                    let text = content.text();
                    if !text.is_empty() {
                        parts.push(json!({"text": text}));
                    }
                }
                for call in message.tool_calls.iter().flatten() {
                    let raw = call.function.arguments.trim();
                    let args: Value = if raw.is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(raw).map_err(|e| {
                            invalid(
                                format!("tool call `{}` arguments are not valid JSON: {e}", call.id),
                                format!("messages[{i}].tool_calls"),
                            )
                        })?
                    };
                    if !args.is_object() {
                        return Err(invalid(
                            format!("tool call `{}` arguments must be a JSON object for Gemini", call.id),
                            format!("messages[{i}].tool_calls"),
                        ));
                    }
                    // No `id`: the Gemini API answers one with 400 "Unknown name"; calls and
                    // responses pair up by name and order. Like Gemini's own output, only the
                    // first call of a turn carries the signature.
                    let mut part = json!({"functionCall": {"name": call.function.name, "args": args}});
                    if !parts.iter().any(|p| p.get("functionCall").is_some()) {
                        part["thoughtSignature"] = json!(SKIP_THOUGHT_SIGNATURE);
                    }
                    parts.push(part);
                }
                push_turn(&mut contents, "model", parts);
            }
            Role::Tool => {
                let id = message.tool_call_id.as_deref().ok_or_else(|| {
                    invalid("a tool message needs `tool_call_id`".into(), format!("messages[{i}].tool_call_id"))
                })?;
                // Gemini answers a call by function *name*: find it on the latest assistant turn that made it.
                let name = req.messages[..i]
                    .iter()
                    .rev()
                    .flat_map(|m| m.tool_calls.iter().flatten())
                    .find(|c| c.id == id)
                    .map(|c| c.function.name.clone())
                    .or_else(|| message.name.clone())
                    .ok_or_else(|| {
                        invalid(
                            format!("tool message answers `{id}`, which no earlier assistant tool call has"),
                            format!("messages[{i}].tool_call_id"),
                        )
                    })?;
                let text = message.content.as_ref().map(MessageContent::text).unwrap_or_default();
                // `response` must be an object; Gemini reads a plain result under `output`.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(object @ Value::Object(_)) => object,
                    _ => json!({"output": text}),
                };
                push_turn(
                    &mut contents,
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                );
            }
            Role::Function => return Err(unsupported(provider, "the deprecated `function` role (use tools)")),
        }
    }
    let mut body = Map::new();
    body.insert(
        "contents".into(),
        Value::Array(contents.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect()),
    );
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    let mut config = Map::new();
    match req.n {
        Some(n) if n > 1 => return Err(unsupported(provider, "`n` greater than 1")),
        Some(n) => {
            config.insert("candidateCount".into(), json!(n));
        }
        None => {}
    }
    if let Some(max) = req.max_completion_tokens.or(req.max_tokens) {
        config.insert("maxOutputTokens".into(), json!(max));
    }
    if let Some(t) = req.temperature {
        config.insert("temperature".into(), json!(t));
    }
    if let Some(format) = &req.response_format {
        match format.get("type").and_then(Value::as_str) {
            Some("text") | None => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = format.pointer("/json_schema/schema") {
                    config.insert("responseSchema".into(), gemini_schema(schema, schema, 0, provider)?);
                }
            }
            Some(other) => return Err(unsupported(provider, format!("response_format `{other}`"))),
        }
    }
    if let Some(tools) = &req.tools {
        let mut declarations = Vec::new();
        for tool in tools {
            let Some(function) = tool.function.as_ref().filter(|_| tool.kind == "function") else {
                return Err(unsupported(provider, format!("tools of type `{}`", tool.kind)));
            };
            let mut wire = json!({"name": function.name});
            if let Some(description) = &function.description {
                wire["description"] = json!(description);
            }
            // Gemini rejects an OBJECT schema with no properties: a function without parameters omits them.
            if let Some(parameters) = &function.parameters
                && parameters.get("properties").and_then(Value::as_object).is_some_and(|p| !p.is_empty())
            {
                wire["parameters"] = gemini_schema(parameters, parameters, 0, provider)?;
            }
            declarations.push(wire);
        }
        body.insert("tools".into(), json!([{"functionDeclarations": declarations}]));
        let choice = match req.tool_choice.as_ref() {
            None => None,
            Some(Value::String(s)) if s == "auto" => Some(json!({"mode": "AUTO"})),
            Some(Value::String(s)) if s == "required" => Some(json!({"mode": "ANY"})),
            Some(Value::String(s)) if s == "none" => Some(json!({"mode": "NONE"})),
            Some(_) => match req.forced_tool() {
                Some(name) => Some(json!({"mode": "ANY", "allowedFunctionNames": [name]})),
                None => return Err(invalid("unrecognised `tool_choice`".into(), "tool_choice".into())),
            },
        };
        if let Some(choice) = choice {
            body.insert("toolConfig".into(), json!({"functionCallingConfig": choice}));
        }
    }
    for (key, value) in &req.extra {
        let wire_key = match key.as_str() {
            "top_p" => "topP",
            "top_k" => "topK",
            "seed" => "seed",
            "presence_penalty" => "presencePenalty",
            "frequency_penalty" => "frequencyPenalty",
            _ => "",
        };
        match key.as_str() {
            // Gemini may run several calls in one turn and has no switch to forbid it.
            "parallel_tool_calls" if value.as_bool() == Some(false) => {
                return Err(unsupported(provider, "`parallel_tool_calls: false`"));
            }
            "parallel_tool_calls" => {}
            // Some models reject penalties outright, so the no-op default is not sent.
            "presence_penalty" | "frequency_penalty" if value.as_f64() == Some(0.0) => {}
            _ if !wire_key.is_empty() => {
                config.insert(wire_key.into(), value.clone());
            }
            "stop" => {
                let stops = match value {
                    Value::String(s) => vec![json!(s)],
                    Value::Array(items) => items.clone(),
                    _ => Vec::new(),
                };
                config.insert("stopSequences".into(), Value::Array(stops));
            }
            // The budgets Google's own OpenAI-compatible endpoint uses for each effort.
            "reasoning_effort" => {
                let budget = match value.as_str() {
                    Some("none") => 0,
                    Some("minimal" | "low") => 1024,
                    Some("medium") => 8192,
                    Some("high") => 24576,
                    _ => return Err(unsupported(provider, format!("reasoning_effort {value}"))),
                };
                config.insert("thinkingConfig".into(), json!({"thinkingBudget": budget}));
            }
            "logprobs" if value.as_bool() == Some(false) => {}
            k if IGNORED_FIELDS.contains(&k) => {}
            k if REJECTED_FIELDS.contains(&k) => return Err(unsupported(provider, format!("`{k}`"))),
            k => return Err(unsupported(provider, format!("the request field `{k}`"))),
        }
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(Value::Object(body))
}

fn user_parts(content: Option<&MessageContent>, provider: &str, index: usize) -> Result<Vec<Value>, GatewayError> {
    let parts = match content {
        None => return Ok(Vec::new()),
        // Gemini rejects empty text parts ("empty text parameter"), so they are left out.
        Some(MessageContent::Text(text)) if text.is_empty() => return Ok(Vec::new()),
        Some(MessageContent::Text(text)) => return Ok(vec![json!({"text": text})]),
        Some(MessageContent::Parts(parts)) => parts,
    };
    let reject = |what: String| unsupported(provider, format!("{what} (messages[{index}])"));
    parts
        .iter()
        .filter(|part| part.kind != "text" || part.text.as_deref().is_some_and(|t| !t.is_empty()))
        .map(|part| match part.kind.as_str() {
            "text" => Ok(json!({"text": part.text.clone().unwrap_or_default()})),
            "image_url" => {
                let url = part.image_url.as_ref().and_then(|u| u.get("url").or(Some(u))).and_then(Value::as_str);
                media_part(url.unwrap_or_default()).ok_or_else(|| reject("this kind of image URL".into()))
            }
            "input_audio" => {
                let audio = part.extra.get("input_audio");
                let data = audio.and_then(|a| a.get("data")).and_then(Value::as_str).unwrap_or_default();
                let format = audio.and_then(|a| a.get("format")).and_then(Value::as_str).unwrap_or("wav");
                Ok(json!({"inlineData": {"mimeType": format!("audio/{format}"), "data": data}}))
            }
            "file" => {
                let data = part.extra.get("file").and_then(|f| f.get("file_data")).and_then(Value::as_str);
                data.filter(|d| d.starts_with("data:"))
                    .and_then(media_part)
                    .ok_or_else(|| reject("files other than inline `file_data` data: URLs".into()))
            }
            other => Err(reject(format!("content parts of type `{other}`"))),
        })
        .collect()
}

/// A base64 `data:` URL → `inlineData`; an http(s) or gs:// link → `fileData` (Gemini fetches it).
fn media_part(url: &str) -> Option<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',')?;
        let mime = meta.strip_suffix(";base64")?;
        return Some(json!({"inlineData": {"mimeType": mime, "data": data}}));
    }
    if !["https://", "http://", "gs://"].iter().any(|scheme| url.starts_with(scheme)) {
        return None;
    }
    let path = url.split(['?', '#']).next().unwrap_or_default().to_ascii_lowercase();
    let extension = path.rsplit_once('.').map(|(_, e)| e).unwrap_or_default();
    let mime = match extension {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => return Some(json!({"fileData": {"fileUri": url}})),
    };
    Some(json!({"fileData": {"fileUri": url, "mimeType": mime}}))
}

/// Keys of Gemini's `Schema`, a subset of OpenAPI 3.0. Gemini answers any other key with a 400
/// ("Invalid JSON payload received. Unknown name"), so JSON Schema keywords it lacks
/// (`additionalProperties`, `$schema`, `$id`, `examples`, `strict`, …) are dropped.
const SCHEMA_KEYS: &str = "title description nullable maxItems minItems required minProperties maxProperties \
    minLength maxLength pattern example propertyOrdering default minimum maximum";
/// The only `format`s the Gemini API accepts; others (`uri`, `email`, `uuid`, …) fail the request.
const SCHEMA_FORMATS: &[&str] = &["enum", "date-time", "int32", "int64", "float", "double"];

/// JSON Schema → Gemini `Schema` (pure). Local `$ref`s are inlined from `root`, `type: [T, "null"]`
/// becomes `nullable`, `oneOf` becomes `anyOf`, `const` a one-value enum; non-string enums (Gemini
/// enums are strings) and unsupported formats are dropped.
fn gemini_schema(schema: &Value, root: &Value, depth: usize, provider: &str) -> Result<Value, GatewayError> {
    if depth > 32 {
        return Err(unsupported(provider, "tool schemas nested deeper than 32 levels or with recursive `$ref`s"));
    }
    let Value::Object(map) = schema else { return Ok(json!({})) };
    let nested = |key: &str| -> Option<&Value> {
        match map.get(key) {
            Some(Value::Array(all)) if key == "allOf" && all.len() == 1 => all.first(),
            Some(reference) if key == "$ref" => reference.as_str()?.strip_prefix('#').and_then(|p| root.pointer(p)),
            _ => None,
        }
    };
    for key in ["$ref", "allOf"] {
        if map.contains_key(key) {
            // Inline the one referenced schema; sibling keys (a description, say) win over it.
            let Some(Value::Object(target)) = nested(key) else {
                return Err(unsupported(provider, format!("`{key}` in this tool or response schema")));
            };
            let mut merged = target.clone();
            merged.extend(map.iter().filter(|(k, _)| *k != key).map(|(k, v)| (k.clone(), v.clone())));
            return gemini_schema(&Value::Object(merged), root, depth + 1, provider);
        }
    }
    let mut out = Map::new();
    let mut inlined = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "type" => match value {
                Value::Array(types) => {
                    let real: Vec<&Value> = types.iter().filter(|t| t.as_str() != Some("null")).collect();
                    let [one] = real.as_slice() else {
                        return Err(unsupported(provider, format!("a schema `type` list of {value}")));
                    };
                    out.insert("type".into(), (*one).clone());
                    if real.len() < types.len() {
                        out.insert("nullable".into(), json!(true));
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            "properties" => {
                let mut properties = Map::new();
                for (name, sub) in value.as_object().into_iter().flatten() {
                    properties.insert(name.clone(), gemini_schema(sub, root, depth + 1, provider)?);
                }
                out.insert(key.clone(), Value::Object(properties));
            }
            "items" => {
                out.insert(key.clone(), gemini_schema(value, root, depth + 1, provider)?);
            }
            "anyOf" | "oneOf" => {
                // `anyOf: [X, {type: null}]` (an Optional field) becomes X with `nullable`.
                let all = value.as_array().map(Vec::as_slice).unwrap_or_default();
                let options: Vec<&Value> = all.iter().filter(|o| **o != json!({"type": "null"})).collect();
                if options.len() < all.len() {
                    out.insert("nullable".into(), json!(true));
                }
                let options: Result<Vec<Value>, _> =
                    options.into_iter().map(|o| gemini_schema(o, root, depth + 1, provider)).collect();
                let options = options?;
                if let [Value::Object(only)] = options.as_slice() {
                    inlined = only.clone();
                } else {
                    out.insert("anyOf".into(), Value::Array(options));
                }
            }
            "enum" if value.as_array().is_some_and(|v| v.iter().all(Value::is_string)) => {
                out.insert(key.clone(), value.clone());
            }
            "const" if value.is_string() => {
                out.insert("enum".into(), json!([value]));
            }
            "format" if value.as_str().is_some_and(|f| SCHEMA_FORMATS.contains(&f)) => {
                out.insert(key.clone(), value.clone());
            }
            k if SCHEMA_KEYS.split_whitespace().any(|known| known == k) => {
                out.insert(key.clone(), value.clone());
            }
            _ => {}
        }
    }
    for (key, value) in inlined {
        out.entry(key).or_insert(value);
    }
    Ok(Value::Object(out))
}

/// Gemini's HTTP error mapping: the shared one, plus what Gemini encodes differently.
fn map_error(config: &ProviderConfig, status: u16, retry_after: Option<String>, body: &[u8]) -> GatewayError {
    let error = serde_json::from_slice::<WireErrorBody>(body).map(|b| b.error).unwrap_or_default();
    let reason = |wanted: &str| error.details.iter().any(|d| d.get("reason").and_then(Value::as_str) == Some(wanted));
    // A bad key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID: an auth failure, not a bad request.
    if reason("API_KEY_INVALID") {
        return GatewayError::UpstreamAuth { provider: config.name.clone(), status };
    }
    // Gemini sends no Retry-After header: the delay is in the body's google.rpc.RetryInfo ("37s").
    let retry_after = retry_after.or_else(|| {
        let delay = error.details.iter().find_map(|d| d.get("retryDelay")?.as_str()?.strip_suffix('s'))?;
        Some((delay.parse::<f64>().ok()?.ceil() as u64).max(1).to_string())
    });
    let mut mapped = error_from_status(config, status, retry_after, body);
    if let GatewayError::UpstreamRejected { code, .. } = &mut mapped
        && code.is_none()
        && !error.status.is_empty()
    {
        *code = Some(error.status);
    }
    mapped
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireErrorBody {
    error: WireError,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireError {
    code: u16,
    message: String,
    status: String,
    details: Vec<Value>,
}

/// An error object inside a stream, mapped like the HTTP status it carries.
fn stream_error(provider: &str, error: WireError) -> GatewayError {
    let provider = provider.to_string();
    let WireError { code, message, status, .. } = error;
    match (code, status.as_str()) {
        (429, _) | (_, "RESOURCE_EXHAUSTED") => {
            GatewayError::UpstreamRateLimited { provider, retry_after: None, message }
        }
        (401 | 403, _) | (_, "UNAUTHENTICATED" | "PERMISSION_DENIED") => {
            GatewayError::UpstreamAuth { provider, status: if code == 403 { 403 } else { 401 } }
        }
        (400, _) | (_, "INVALID_ARGUMENT" | "FAILED_PRECONDITION") => {
            let code = (!status.is_empty()).then_some(status);
            GatewayError::UpstreamRejected { provider, status: 400, message, code, param: None }
        }
        _ => GatewayError::UpstreamServerError { provider, status: if code >= 500 { code } else { 500 }, message },
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireResponse {
    candidates: Vec<WireCandidate>,
    prompt_feedback: Option<PromptFeedback>,
    usage_metadata: Option<WireUsage>,
    model_version: Option<String>,
    response_id: Option<String>,
    error: Option<WireError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireCandidate {
    content: Option<WireContent>,
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireContent {
    parts: Vec<WirePart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WirePart {
    text: Option<String>,
    /// A thought summary: reasoning, not answer text.
    thought: bool,
    function_call: Option<WireFunctionCall>,
}

#[derive(Debug, Deserialize)]
struct WireFunctionCall {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PromptFeedback {
    block_reason: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WireUsage {
    prompt_token_count: u64,
    candidates_token_count: u64,
    cached_content_token_count: Option<u64>,
    thoughts_token_count: u64,
    tool_use_prompt_token_count: u64,
}

impl WireUsage {
    /// `promptTokenCount` already includes the cached tokens; thinking is billed as output.
    fn canonical(self) -> Usage {
        let mut usage = Usage::new(
            self.prompt_token_count.saturating_add(self.tool_use_prompt_token_count),
            self.candidates_token_count.saturating_add(self.thoughts_token_count),
        );
        if let Some(cached) = self.cached_content_token_count {
            usage.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: cached });
        }
        usage
    }
}

/// Gemini `finishReason` → OpenAI `finish_reason`. Gemini says STOP after function calls too.
pub fn finish_reason(reason: &str, has_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => "content_filter",
        _ if has_calls => "tool_calls",
        _ => "stop",
    }
}

/// Gemini gives function calls no id unless it has one of its own: `call_<n>` is deterministic
/// and distinct within an answer, so a streamed and a non-streamed answer agree.
fn call_id(call: &WireFunctionCall, index: usize) -> String {
    call.id.clone().filter(|id| !id.is_empty()).unwrap_or_else(|| format!("call_{index}"))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn new_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::now_v7().simple())
}

/// Gemini `GenerateContentResponse` body → canonical chat completion (pure). `model` stands in
/// when the body names no `modelVersion`.
pub fn from_wire(body: &[u8], model: &str) -> Result<ChatResponse, String> {
    let wire: WireResponse =
        serde_json::from_slice(body).map_err(|e| format!("response is not a Gemini GenerateContentResponse ({e})"))?;
    if let Some(error) = wire.error {
        return Err(format!("Gemini answered with an error: {}", error.message));
    }
    let blocked = wire.prompt_feedback.and_then(|f| f.block_reason).is_some();
    let candidate = match wire.candidates.into_iter().next() {
        Some(candidate) => candidate,
        None if blocked => WireCandidate { content: None, finish_reason: Some("SAFETY".into()) },
        None => return Err("response has no candidates".into()),
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
        if let Some(t) = part.text.filter(|_| !part.thought) {
            text.push_str(&t);
        }
        if let Some(call) = part.function_call {
            calls.push(ToolCall {
                id: call_id(&call, calls.len()),
                kind: "function".into(),
                function: FunctionCall {
                    name: call.name,
                    arguments: call.args.unwrap_or_else(|| json!({})).to_string(),
                },
            });
        }
    }
    let finish = finish_reason(candidate.finish_reason.as_deref().unwrap_or("STOP"), !calls.is_empty());
    let message = ResponseMessage {
        role: Role::Assistant,
        content: (!text.is_empty() || calls.is_empty()).then_some(text),
        tool_calls: (!calls.is_empty()).then_some(calls),
    };
    Ok(ChatResponse {
        id: wire.response_id.unwrap_or_else(new_id),
        object: "chat.completion".into(),
        created: now(),
        model: wire.model_version.unwrap_or_else(|| model.to_string()),
        choices: vec![Choice { index: 0, message, finish_reason: Some(finish.into()) }],
        usage: Some(wire.usage_metadata.unwrap_or_default().canonical()),
        extra: Default::default(),
    })
}

/// Gemini stream chunks → OpenAI chunks. Each `data:` event is a whole `GenerateContentResponse`
/// carrying new parts. Gemini sends no end marker, so the finish chunk and the usage chunk
/// (`choices: []`, from the last `usageMetadata`) go out when the connection ends — and only if a
/// `finishReason` was seen; otherwise the stream was cut.
pub struct StreamTranslator {
    provider: String,
    id: String,
    model: String,
    created: u64,
    started: bool,
    calls: usize,
    finish: Option<String>,
    usage: WireUsage,
}

impl StreamTranslator {
    pub fn new(provider: &str, model: &str) -> Self {
        Self {
            provider: provider.to_string(),
            id: String::new(),
            model: model.to_string(),
            created: now(),
            started: false,
            calls: 0,
            finish: None,
            usage: WireUsage::default(),
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk::delta(&self.id, self.created, &self.model, delta, finish)
    }
}

impl Translate for StreamTranslator {
    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<StreamChunk>) -> Result<bool, GatewayError> {
        let wire: WireResponse = serde_json::from_slice(&event.data).map_err(|e| GatewayError::UpstreamProtocol {
            provider: self.provider.clone(),
            message: format!("stream event is not a Gemini response ({e})"),
        })?;
        if let Some(error) = wire.error {
            return Err(stream_error(&self.provider, error));
        }
        if !self.started {
            self.started = true;
            self.id = wire.response_id.unwrap_or_else(new_id);
            if let Some(model) = wire.model_version {
                self.model = model;
            }
            let role = Delta { role: Some(Role::Assistant), content: Some(String::new()), tool_calls: None };
            out.push_back(stream::chunk(&self.chunk(role, None)));
        }
        if let Some(usage) = wire.usage_metadata {
            self.usage = usage;
        }
        if wire.prompt_feedback.and_then(|f| f.block_reason).is_some() {
            self.finish = Some("SAFETY".into());
        }
        let Some(candidate) = wire.candidates.into_iter().next() else { return Ok(false) };
        for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(text) = part.text.filter(|t| !part.thought && !t.is_empty()) {
                out.push_back(stream::chunk(&self.chunk(Delta { content: Some(text), ..Delta::default() }, None)));
            }
            if let Some(call) = part.function_call {
                // A Gemini function call arrives whole: one delta carries id, name and all arguments.
                let delta = ToolCallDelta {
                    index: self.calls as u32,
                    id: Some(call_id(&call, self.calls)),
                    kind: Some("function".into()),
                    function: FunctionCallDelta {
                        name: Some(call.name),
                        arguments: Some(call.args.unwrap_or_else(|| json!({})).to_string()),
                    },
                };
                self.calls += 1;
                let delta = Delta { tool_calls: Some(vec![delta]), ..Delta::default() };
                out.push_back(stream::chunk(&self.chunk(delta, None)));
            }
        }
        if let Some(reason) = candidate.finish_reason.filter(|r| r != "FINISH_REASON_UNSPECIFIED") {
            self.finish = Some(reason);
        }
        Ok(false)
    }

    fn end_of_input(&mut self, out: &mut VecDeque<StreamChunk>) -> Result<(), GatewayError> {
        let Some(reason) = self.finish.as_deref() else {
            return Err(GatewayError::UpstreamProtocol {
                provider: self.provider.clone(),
                message: "the stream ended before a finishReason (truncated)".into(),
            });
        };
        let finish = finish_reason(reason, self.calls > 0);
        out.push_back(stream::chunk(&self.chunk(Delta::default(), Some(finish))));
        let mut last = self.chunk(Delta::default(), None);
        last.choices.clear();
        last.usage = Some(self.usage.canonical());
        out.push_back(stream::chunk(&last));
        Ok(())
    }
}

/// Canonical embeddings request → `batchEmbedContents` body, and whether the client wants base64.
pub fn embeddings_to_wire(req: &EmbeddingsRequest, provider: &str) -> Result<(Value, bool), GatewayError> {
    let inputs: Vec<&str> = match &req.input {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().ok_or_else(|| unsupported(provider, "token-array embedding inputs (send text)")))
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("`input` must be a string or a non-empty array of strings".into(), "input".into())),
    };
    let mut dimensions = None;
    let mut base64 = false;
    for (key, value) in &req.extra {
        match (key.as_str(), value.as_str()) {
            ("dimensions", _) => dimensions = Some(value.clone()),
            ("encoding_format", Some("float")) | ("user", _) => {}
            ("encoding_format", Some("base64")) => base64 = true,
            (k, _) => return Err(unsupported(provider, format!("the embeddings field `{k}` = {value}"))),
        }
    }
    let model = model_path(&req.model);
    let requests: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let mut request = json!({"model": model, "content": {"parts": [{"text": text}]}});
            if let Some(d) = &dimensions {
                request["outputDimensionality"] = d.clone();
            }
            request
        })
        .collect();
    Ok((json!({"requests": requests}), base64))
}

#[derive(Deserialize)]
struct WireEmbeddings {
    #[serde(default)]
    embeddings: Vec<WireEmbedding>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    values: Vec<f64>,
}

/// `batchEmbedContents` answer → OpenAI embeddings list (pure).
pub fn embeddings_from_wire(body: &[u8], model: &str, base64: bool) -> Result<Value, String> {
    let wire: WireEmbeddings = serde_json::from_slice(body)
        .map_err(|e| format!("response is not a Gemini batchEmbedContents answer ({e})"))?;
    let data: Vec<Value> = wire
        .embeddings
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = e.values.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
                json!(base64_encode(&bytes))
            } else {
                json!(e.values)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 0, "total_tokens": 0}}))
}

/// Standard base64 with padding (OpenAI's `encoding_format: base64` of little-endian f32s).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests;
