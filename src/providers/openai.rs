//! OpenAI wire format: `openai`, `azure_openai` and every `openai_compatible` server (Ollama, vLLM,
//! Groq, …). Since the canonical types are OpenAI-shaped, translation is a pass-through: request
//! fields the gateway does not model are forwarded verbatim, and upstream bytes reach the client
//! unchanged after being checked to be well-formed.

use std::collections::VecDeque;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, header};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::sse::{SseDecoder, SseEvent};
use super::stream::{self, Framing, Translate};
use super::translate::provider_headers;
use super::{CallLimits, ChatReply, Completion, StreamChunk, error_from_status, transport};
use crate::config::{DeploymentConfig, ProviderConfig, ProviderKind};
use crate::error::GatewayError;
use crate::types::{ChatRequest, EmbeddingsRequest, StreamOptions, Usage};

#[derive(Debug)]
pub struct OpenAi {
    headers: HeaderMap,
}

impl OpenAi {
    pub fn new(config: &ProviderConfig) -> Result<Self, GatewayError> {
        let key = config.api_key.as_ref().map(|key| match config.kind {
            ProviderKind::AzureOpenai => (HeaderName::from_static("api-key"), key.expose().to_string()),
            _ => (header::AUTHORIZATION, format!("Bearer {}", key.expose())),
        });
        Ok(Self { headers: provider_headers(config, key)? })
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
        url: reqwest::Url,
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
        if config.max_tokens_only
            && let Some(limit) = req.max_completion_tokens.take()
        {
            req.max_tokens = Some(req.max_tokens.map_or(limit, |m| m.min(limit)));
        }
        let body =
            serde_json::to_vec(req).map_err(|e| GatewayError::internal(format!("cannot encode request: {e}")))?;
        let response = self.send(client, url, config, body, limits).await?;
        if !stream {
            let body = transport::read_body(response, config, limits).await?;
            return Ok(ChatReply::Complete(completion(config, body)?));
        }
        if !transport::is_event_stream(&response, "text/event-stream") {
            let body = transport::read_body(response, config, limits).await?;
            return Err(GatewayError::UpstreamProtocol {
                provider: config.name.clone(),
                message: format!("expected an event stream, got {} bytes of something else", body.len()),
            });
        }
        let translator = Box::new(PassThrough { provider: config.name.clone() });
        let framing = Framing::Sse(SseDecoder::new());
        Ok(ChatReply::Stream(stream::drive(
            config.name.clone(),
            Box::pin(response.bytes_stream()),
            framing,
            translator,
            limits,
        )))
    }

    pub async fn embeddings(
        &self,
        client: &reqwest::Client,
        url: reqwest::Url,
        config: &ProviderConfig,
        req: &EmbeddingsRequest,
        limits: CallLimits,
    ) -> Result<Completion, GatewayError> {
        let body =
            serde_json::to_vec(req).map_err(|e| GatewayError::internal(format!("cannot encode request: {e}")))?;
        let response = self.send(client, url, config, body, limits).await?;
        let body = transport::read_body(response, config, limits).await?;
        completion(config, body)
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        url: reqwest::Url,
        config: &ProviderConfig,
        body: Vec<u8>,
        limits: CallLimits,
    ) -> Result<reqwest::Response, GatewayError> {
        let request = client.post(url).headers(self.headers.clone()).body(body);
        transport::send(request, config, limits, error_from_status).await
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

/// OpenAI chunks pass through unchanged after a well-formedness check.
struct PassThrough {
    provider: String,
}

impl Translate for PassThrough {
    fn event(&mut self, event: &SseEvent, out: &mut VecDeque<StreamChunk>) -> Result<bool, GatewayError> {
        match translate_event(&self.provider, event)? {
            Some(chunk) => {
                out.push_back(chunk);
                Ok(false)
            }
            None => Ok(true),
        }
    }

    fn end_of_input(&mut self, _out: &mut VecDeque<StreamChunk>) -> Result<(), GatewayError> {
        Err(GatewayError::UpstreamProtocol {
            provider: self.provider.clone(),
            message: "the stream ended before [DONE]".into(),
        })
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

    proptest::proptest! {
        /// Arbitrary bytes through the SSE decoder and the pass-through translator: errors are
        /// fine, panics are not.
        #[test]
        fn arbitrary_stream_bytes_never_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            cut in 0usize..2000,
        ) {
            let mut decoder = SseDecoder::new();
            let mut translator = PassThrough { provider: "p".into() };
            let mut out = VecDeque::new();
            let cut = cut.min(bytes.len());
            for part in [&bytes[..cut], &bytes[cut..]] {
                decoder.push(part);
                while let Some(event) = decoder.next_event() {
                    if translator.event(&event, &mut out).is_err() {
                        return Ok(());
                    }
                }
            }
            if let Some(event) = decoder.finish() {
                let _ = translator.event(&event, &mut out);
            }
        }
    }
}
