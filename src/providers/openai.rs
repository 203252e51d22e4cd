//! OpenAI wire format: `openai`, `azure_openai` and every `openai_compatible` server (Ollama, vLLM,
//! Groq, …). Since the canonical types are OpenAI-shaped, translation is a pass-through: request
//! fields the gateway does not model are forwarded verbatim, and upstream bytes reach the client
//! unchanged after being checked to be well-formed.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::time::timeout_at;

use super::sse::{MAX_EVENT_BYTES, SseDecoder, SseEvent};
use super::{CallLimits, ChatReply, Completion, StreamChunk, error_from_status, retry_after};
use crate::config::{DeploymentConfig, ProviderConfig, ProviderKind};
use crate::error::GatewayError;
use crate::types::{ChatRequest, EmbeddingsRequest, StreamOptions, Usage};

/// Largest upstream error body read to extract its message.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Largest non-streamed upstream answer accepted.
const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug)]
pub struct OpenAi {
    headers: HeaderMap,
}

impl OpenAi {
    pub fn new(config: &ProviderConfig) -> Result<Self, GatewayError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| GatewayError::internal(format!("provider {}: bad header name", config.name)))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| GatewayError::internal(format!("provider {}: bad header value", config.name)))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(key) = &config.api_key {
            let (name, text) = match config.kind {
                ProviderKind::AzureOpenai => (HeaderName::from_static("api-key"), key.expose().to_string()),
                _ => (header::AUTHORIZATION, format!("Bearer {}", key.expose())),
            };
            let mut value = HeaderValue::from_str(&text).map_err(|_| {
                GatewayError::internal(format!(
                    "provider {}: the API key contains characters not allowed in a header",
                    config.name
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(Self { headers })
    }

    pub fn urls(&self, config: &ProviderConfig, deployment: &DeploymentConfig) -> (String, String) {
        let base = &config.base_url;
        match config.kind {
            ProviderKind::AzureOpenai => {
                let name = deployment.azure_deployment.as_deref().unwrap_or(&deployment.model);
                let version = config.api_version.as_deref().unwrap_or_default();
                (
                    format!("{base}/openai/deployments/{name}/chat/completions?api-version={version}"),
                    format!("{base}/openai/deployments/{name}/embeddings?api-version={version}"),
                )
            }
            _ => (format!("{base}/chat/completions"), format!("{base}/embeddings")),
        }
    }

    pub async fn chat(
        &self,
        client: &reqwest::Client,
        url: &str,
        config: &ProviderConfig,
        req: &mut ChatRequest,
        limits: CallLimits,
    ) -> Result<ChatReply, GatewayError> {
        let stream = req.is_stream();
        if stream && config.stream_usage {
            // Always ask for usage so tokens and cost are known; the pipeline drops the usage
            // chunk again when the client did not ask for it.
            req.stream_options.get_or_insert_with(StreamOptions::default).include_usage = Some(true);
        }
        let body =
            serde_json::to_vec(req).map_err(|e| GatewayError::internal(format!("cannot encode request: {e}")))?;
        let response = self.send(client, url, config, body, limits).await?;
        if !stream {
            let body = read_body(response, config, limits).await?;
            return Ok(ChatReply::Complete(completion(config, body)?));
        }
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            let body = read_body(response, config, limits).await?;
            return Err(GatewayError::UpstreamProtocol {
                provider: config.name.clone(),
                message: format!("expected an event stream, got {} bytes of something else", body.len()),
            });
        }
        Ok(ChatReply::Stream(chunk_stream(config.name.clone(), Box::pin(response.bytes_stream()), limits)))
    }

    pub async fn embeddings(
        &self,
        client: &reqwest::Client,
        url: &str,
        config: &ProviderConfig,
        req: &EmbeddingsRequest,
        limits: CallLimits,
    ) -> Result<Completion, GatewayError> {
        let body =
            serde_json::to_vec(req).map_err(|e| GatewayError::internal(format!("cannot encode request: {e}")))?;
        let response = self.send(client, url, config, body, limits).await?;
        let body = read_body(response, config, limits).await?;
        completion(config, body)
    }

    /// Sends the request and waits for a success status within the first-byte deadline.
    async fn send(
        &self,
        client: &reqwest::Client,
        url: &str,
        config: &ProviderConfig,
        body: Vec<u8>,
        limits: CallLimits,
    ) -> Result<reqwest::Response, GatewayError> {
        let request = client.post(url).headers(self.headers.clone()).body(body).send();
        let response = match timeout_at(limits.first_byte_deadline, request).await {
            Err(_) => {
                return Err(GatewayError::UpstreamTimeout {
                    provider: config.name.clone(),
                    phase: "first_byte",
                    limit: limits.timeouts.first_byte,
                });
            }
            Ok(Err(e)) => return Err(transport_error(config, &e, limits)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry = retry_after(response.headers());
        let body = read_limited(response, MAX_ERROR_BODY, limits).await.unwrap_or_default();
        Err(error_from_status(config, status.as_u16(), retry, &body))
    }
}

fn transport_error(config: &ProviderConfig, error: &reqwest::Error, limits: CallLimits) -> GatewayError {
    if error.is_timeout() {
        return GatewayError::UpstreamTimeout {
            provider: config.name.clone(),
            phase: "connect",
            limit: limits.timeouts.connect,
        };
    }
    // reqwest's Display names the URL but never headers, so no credential can leak here.
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    GatewayError::UpstreamUnreachable { provider: config.name.clone(), message }
}

async fn read_limited(response: reqwest::Response, limit: usize, limits: CallLimits) -> Option<Vec<u8>> {
    let mut body = response.bytes_stream();
    let mut out = Vec::new();
    loop {
        match timeout_at(limits.deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => {
                let room = limit.saturating_sub(out.len());
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if out.len() >= limit {
                    return Some(out);
                }
            }
            Ok(None) => return Some(out),
            Ok(Some(Err(_))) | Err(_) => return None,
        }
    }
}

async fn read_body(
    response: reqwest::Response,
    config: &ProviderConfig,
    limits: CallLimits,
) -> Result<Bytes, GatewayError> {
    if response.content_length().is_some_and(|n| n > MAX_RESPONSE_BODY as u64) {
        return Err(GatewayError::UpstreamProtocol {
            provider: config.name.clone(),
            message: format!("response body is larger than {MAX_RESPONSE_BODY} bytes"),
        });
    }
    match timeout_at(limits.deadline, response.bytes()).await {
        Err(_) => Err(GatewayError::UpstreamTimeout {
            provider: config.name.clone(),
            phase: "total",
            limit: limits.timeouts.total,
        }),
        Ok(Err(e)) => Err(GatewayError::UpstreamUnreachable {
            provider: config.name.clone(),
            message: format!("connection failed while reading the response: {e}"),
        }),
        Ok(Ok(body)) => Ok(body),
    }
}

#[derive(Deserialize)]
struct CompletionProbe {
    #[serde(default)]
    usage: Option<Usage>,
}

/// Checks that a success body is a JSON object and pulls out its usage.
fn completion(config: &ProviderConfig, body: Bytes) -> Result<Completion, GatewayError> {
    match serde_json::from_slice::<CompletionProbe>(&body) {
        Ok(probe) => Ok(Completion { body, usage: probe.usage }),
        Err(e) => Err(GatewayError::UpstreamProtocol {
            provider: config.name.clone(),
            message: format!("response is not the expected JSON ({e})"),
        }),
    }
}

#[derive(Deserialize)]
struct ChunkProbe {
    #[serde(default)]
    choices: Option<Vec<IgnoredAny>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Translates one upstream SSE event: `Ok(None)` is the `[DONE]` terminator.
pub fn translate_event(provider: &str, event: &SseEvent) -> Result<Option<StreamChunk>, GatewayError> {
    if event.data.as_ref() == b"[DONE]" {
        return Ok(None);
    }
    let probe: ChunkProbe = serde_json::from_slice(&event.data).map_err(|e| GatewayError::UpstreamProtocol {
        provider: provider.to_string(),
        message: format!("stream event is not valid JSON ({e})"),
    })?;
    if let Some(error) = probe.error {
        let body = serde_json::json!({ "error": error }).to_string();
        return Err(GatewayError::UpstreamServerError {
            provider: provider.to_string(),
            status: 200,
            message: super::upstream_message(body.as_bytes()),
        });
    }
    let usage_only = probe.usage.is_some() && probe.choices.as_ref().is_some_and(Vec::is_empty);
    Ok(Some(StreamChunk { data: event.data.clone(), usage: probe.usage, usage_only }))
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct StreamState {
    provider: String,
    body: ByteStream,
    decoder: SseDecoder,
    limits: CallLimits,
    finished: bool,
}

fn chunk_stream(provider: String, body: ByteStream, limits: CallLimits) -> super::ChunkStream {
    let state = StreamState { provider, body, decoder: SseDecoder::new(), limits, finished: false };
    Box::pin(futures_util::stream::unfold(state, |mut st| async move {
        if st.finished {
            return None;
        }
        let item = next_chunk(&mut st).await;
        match item {
            None => None,
            Some(Err(e)) => {
                st.finished = true;
                Some((Err(e), st))
            }
            Some(Ok(chunk)) => Some((Ok(chunk), st)),
        }
    }))
}

async fn next_chunk(st: &mut StreamState) -> Option<Result<StreamChunk, GatewayError>> {
    loop {
        if let Some(event) = st.decoder.next_event() {
            return translate_event(&st.provider, &event).transpose();
        }
        if st.decoder.buffered() > MAX_EVENT_BYTES {
            return Some(Err(GatewayError::UpstreamProtocol {
                provider: st.provider.clone(),
                message: format!("a stream event exceeded {MAX_EVENT_BYTES} bytes"),
            }));
        }
        match timeout_at(st.limits.deadline, st.body.next()).await {
            Err(_) => {
                return Some(Err(GatewayError::UpstreamTimeout {
                    provider: st.provider.clone(),
                    phase: "total",
                    limit: st.limits.timeouts.total,
                }));
            }
            Ok(Some(Ok(bytes))) => st.decoder.push(&bytes),
            Ok(Some(Err(e))) => {
                return Some(Err(GatewayError::UpstreamUnreachable {
                    provider: st.provider.clone(),
                    message: format!("connection lost mid-stream: {e}"),
                }));
            }
            Ok(None) => {
                if let Some(event) = st.decoder.finish() {
                    match translate_event(&st.provider, &event) {
                        Ok(None) => return None,
                        other => return other.transpose(),
                    }
                }
                return Some(Err(GatewayError::UpstreamProtocol {
                    provider: st.provider.clone(),
                    message: "the stream ended before [DONE]".into(),
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translate_event_classifies_chunks() {
        let event = |data: &str| SseEvent { event: None, data: Bytes::from(data.to_string()) };
        assert!(translate_event("p", &event("[DONE]")).unwrap().is_none());
        let usage = translate_event(
            "p",
            &event(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#),
        )
        .unwrap()
        .unwrap();
        assert!(usage.usage_only);
        assert_eq!(usage.usage.unwrap().total_tokens, 7);
        let normal =
            translate_event("p", &event(r#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#)).unwrap().unwrap();
        assert!(!normal.usage_only);
        assert!(matches!(
            translate_event("p", &event(r#"{"choices":[{"delta""#)),
            Err(GatewayError::UpstreamProtocol { .. })
        ));
        assert!(matches!(
            translate_event("p", &event(r#"{"error":{"message":"overloaded"}}"#)),
            Err(GatewayError::UpstreamServerError { .. })
        ));
    }
}
