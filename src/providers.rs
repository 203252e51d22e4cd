//! Provider adapters. Only this module knows a vendor's wire format: each adapter translates the
//! canonical (OpenAI-shaped) request to its wire format, sends it over a pooled client, and
//! translates the answer back into OpenAI JSON bytes or a stream of OpenAI chunks.

pub mod anthropic;
pub mod anthropic_inbound;
pub mod bedrock;
pub mod eventstream;
pub mod gemini;
pub mod mock;
pub mod openai;
pub mod sigv4;
pub mod sse;
pub mod stream;
pub mod translate;
pub mod transport;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::Instant;

use crate::config::{DeploymentConfig, ModelConfig, ProviderConfig, ProviderKind, Secret, Timeouts};
use crate::error::GatewayError;
use crate::types::{ChatRequest, EmbeddingsRequest, Usage};

/// A non-streamed answer: OpenAI-format JSON ready for the client, plus what accounting needs.
#[derive(Debug)]
pub struct Completion {
    pub body: Bytes,
    pub usage: Option<Usage>,
}

/// One streamed chunk in OpenAI format (the JSON after `data: `).
#[derive(Debug)]
pub struct StreamChunk {
    pub data: Bytes,
    pub usage: Option<Usage>,
    /// A usage-only chunk (`choices: []`); forwarded only when the client asked for usage.
    pub usage_only: bool,
}

/// Ends with `None` after the upstream finished cleanly; an `Err` item ends it early.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<StreamChunk, GatewayError>> + Send>>;

pub enum ChatReply {
    Complete(Completion),
    Stream(ChunkStream),
}

/// Per-call limits, computed once when the call starts.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub first_byte_deadline: Instant,
    pub deadline: Instant,
    pub timeouts: Timeouts,
}

impl CallLimits {
    pub fn starting_now(timeouts: Timeouts) -> Self {
        let now = Instant::now();
        Self { first_byte_deadline: now + timeouts.first_byte, deadline: now + timeouts.total, timeouts }
    }
}

/// A configured provider with its adapter.
#[derive(Debug)]
pub struct Provider {
    pub config: Arc<ProviderConfig>,
    adapter: Adapter,
}

#[derive(Debug)]
enum Adapter {
    OpenAi(openai::OpenAi),
    Anthropic(anthropic::Anthropic),
    Gemini(gemini::Gemini),
    Bedrock(bedrock::Bedrock),
    Mock(mock::MockAdapter),
}

/// One deployment made ready to call: provider, upstream model, URLs and the pooled client.
#[derive(Debug)]
pub struct Target {
    pub provider: Arc<Provider>,
    pub upstream_model: Arc<str>,
    pub weight: u32,
    /// From the deployment's `price:` or the built-in table; `None` when unknown.
    pub price: Option<crate::telemetry::cost::Price>,
    chat_url: String,
    embeddings_url: String,
    /// The same URLs parsed once, so the hot path never re-parses them.
    chat_endpoint: Option<reqwest::Url>,
    embeddings_endpoint: Option<reqwest::Url>,
    client: reqwest::Client,
}

impl Provider {
    pub fn new(config: Arc<ProviderConfig>) -> Result<Self, GatewayError> {
        let adapter = match config.kind {
            ProviderKind::Openai | ProviderKind::AzureOpenai | ProviderKind::OpenaiCompatible => {
                Adapter::OpenAi(openai::OpenAi::new(&config)?)
            }
            ProviderKind::Anthropic => Adapter::Anthropic(anthropic::Anthropic::new(&config)?),
            ProviderKind::Gemini => Adapter::Gemini(gemini::Gemini::new(&config)?),
            ProviderKind::Bedrock => Adapter::Bedrock(bedrock::Bedrock::new(&config)?),
            ProviderKind::Mock => Adapter::Mock(mock::MockAdapter::new(&config)),
        };
        Ok(Self { config, adapter })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }
}

impl Target {
    pub fn new(
        provider: Arc<Provider>,
        deployment: &DeploymentConfig,
        model: &ModelConfig,
        clients: &ClientCache,
    ) -> Result<Self, GatewayError> {
        let (chat_url, embeddings_url) = match &provider.adapter {
            Adapter::OpenAi(adapter) => adapter.urls(&provider.config, deployment),
            Adapter::Anthropic(_) => (anthropic::Anthropic::url(&provider.config), String::new()),
            Adapter::Gemini(_) => {
                let endpoint = gemini::Gemini::endpoint(&provider.config, deployment);
                (endpoint.clone(), endpoint)
            }
            Adapter::Bedrock(_) => {
                let endpoint = bedrock::Bedrock::endpoint(&provider.config, deployment);
                (endpoint.clone(), endpoint)
            }
            Adapter::Mock(_) => (String::new(), String::new()),
        };
        Ok(Self {
            upstream_model: Arc::from(deployment.model.as_str()),
            weight: deployment.weight,
            price: deployment
                .price
                .as_ref()
                .map(crate::telemetry::cost::Price::from)
                .or_else(|| crate::telemetry::cost::builtin_price(&deployment.model)),
            chat_endpoint: parse_endpoint(&provider, &chat_url)?,
            embeddings_endpoint: parse_endpoint(&provider, &embeddings_url)?,
            chat_url,
            embeddings_url,
            client: clients.client(model.timeouts.connect)?,
            provider,
        })
    }

    pub fn provider_name(&self) -> &str {
        self.provider.name()
    }

    /// Sends a chat request. `req.model` is replaced by the upstream model name.
    pub async fn chat(&self, req: &mut ChatRequest, limits: CallLimits) -> Result<ChatReply, GatewayError> {
        req.model.clear();
        req.model.push_str(&self.upstream_model);
        match &self.provider.adapter {
            Adapter::OpenAi(adapter) => {
                let url = self.chat_endpoint.clone().ok_or_else(|| GatewayError::internal("no chat endpoint"))?;
                adapter.chat(&self.client, url, &self.provider.config, req, limits).await
            }
            Adapter::Anthropic(adapter) => {
                adapter.chat(&self.client, &self.chat_url, &self.provider.config, req, limits).await
            }
            Adapter::Gemini(adapter) => {
                adapter.chat(&self.client, &self.chat_url, &self.provider.config, req, limits).await
            }
            Adapter::Bedrock(adapter) => {
                adapter.chat(&self.client, &self.chat_url, &self.provider.config, req, limits).await
            }
            Adapter::Mock(adapter) => adapter.chat(&self.provider.config, req, &self.upstream_model, limits).await,
        }
    }

    pub async fn embeddings(
        &self,
        req: &mut EmbeddingsRequest,
        limits: CallLimits,
    ) -> Result<Completion, GatewayError> {
        req.model.clear();
        req.model.push_str(&self.upstream_model);
        match &self.provider.adapter {
            Adapter::OpenAi(adapter) => {
                let url =
                    self.embeddings_endpoint.clone().ok_or_else(|| GatewayError::internal("no embeddings endpoint"))?;
                adapter.embeddings(&self.client, url, &self.provider.config, req, limits).await
            }
            Adapter::Gemini(adapter) => {
                adapter.embeddings(&self.client, &self.embeddings_url, &self.provider.config, req, limits).await
            }
            Adapter::Bedrock(adapter) => {
                adapter.embeddings(&self.client, &self.embeddings_url, &self.provider.config, req, limits).await
            }
            Adapter::Anthropic(_) => Err(GatewayError::Unsupported {
                provider: self.provider.name().to_string(),
                feature: "embeddings (Anthropic has no embeddings API)".into(),
            }),
            Adapter::Mock(_) => {
                let body = mock::embeddings(req, &self.upstream_model);
                let usage = body.get("usage").and_then(|u| serde_json::from_value(u.clone()).ok());
                Ok(Completion { body: Bytes::from(body.to_string()), usage })
            }
        }
    }
}

fn parse_endpoint(provider: &Provider, url: &str) -> Result<Option<reqwest::Url>, GatewayError> {
    if url.is_empty() {
        return Ok(None);
    }
    reqwest::Url::parse(url)
        .map(Some)
        .map_err(|e| GatewayError::internal(format!("provider {}: {url:?} is not a valid URL: {e}", provider.name())))
}

/// Pooled HTTP clients shared across config reloads, one per connect timeout, so a reload keeps
/// warm upstream connections.
#[derive(Default)]
pub struct ClientCache {
    clients: Mutex<HashMap<Duration, reqwest::Client>>,
}

impl ClientCache {
    pub fn client(&self, connect_timeout: Duration) -> Result<reqwest::Client, GatewayError> {
        let mut clients = self.clients.lock().map_err(|_| GatewayError::internal("client cache poisoned"))?;
        if let Some(client) = clients.get(&connect_timeout) {
            return Ok(client.clone());
        }
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GatewayError::internal(format!("cannot build the HTTP client: {e}")))?;
        clients.insert(connect_timeout, client.clone());
        Ok(client)
    }
}

/// Maps a non-success upstream status to the gateway's error, with the provider's own message
/// (never the provider's credential).
pub fn error_from_status(
    provider: &ProviderConfig,
    status: u16,
    retry_after: Option<String>,
    body: &[u8],
) -> GatewayError {
    let name = provider.name.clone();
    let details = UpstreamErrorBody::parse(body, provider);
    match status {
        429 => GatewayError::UpstreamRateLimited { provider: name, retry_after, message: details.message },
        401 | 403 => {
            // The client only learns that the gateway's credential was refused; the operator gets
            // the provider's reason in the log (scrubbed of every configured secret).
            tracing::warn!(provider = %name, status, reason = %details.message, "provider rejected the gateway's credential");
            GatewayError::UpstreamAuth { provider: name, status }
        }
        400 | 413 | 422 => GatewayError::UpstreamRejected {
            provider: name,
            status,
            message: details.message,
            code: details.code,
            param: details.param,
        },
        _ => GatewayError::UpstreamServerError { provider: name, status, message: details.message },
    }
}

/// The useful parts of an upstream error body, with the provider's credential scrubbed.
pub struct UpstreamErrorBody {
    pub message: String,
    pub code: Option<String>,
    pub param: Option<String>,
}

impl UpstreamErrorBody {
    pub fn parse(body: &[u8], provider: &ProviderConfig) -> Self {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().map(|v| v.get("error").filter(|e| e.is_object()).unwrap_or(v));
        let field = |name: &str| error.and_then(|e| e.get(name)).and_then(|v| v.as_str()).map(str::to_string);
        let mut message = upstream_message(body);
        let aws = provider.aws.as_ref();
        let secrets = provider
            .api_key
            .iter()
            .chain(aws.map(|a| &a.secret_access_key))
            .chain(aws.and_then(|a| a.session_token.as_ref()))
            .chain(provider.headers.iter().map(|(_, v)| v));
        for secret in secrets.map(Secret::expose).filter(|s| s.len() >= 4) {
            message = message.replace(secret, "***");
        }
        Self { message, code: field("code"), param: field("param") }
    }
}

/// The human part of an upstream error body: `error.message`, `message`, or the text itself.
fn upstream_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .and_then(|m| m.as_str())
            .map(str::to_string)
    });
    let text = from_json.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let mut text: String = text.chars().take(500).collect();
    if text.is_empty() {
        text.push_str("(empty body)");
    }
    text
}

/// `Retry-After` (seconds or HTTP date, forwarded as-is) or OpenAI's `retry-after-ms`.
pub fn retry_after(headers: &http::HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let ms: f64 = headers.get("retry-after-ms")?.to_str().ok()?.trim().parse().ok()?;
    Some(((ms / 1000.0).ceil() as u64).max(1).to_string())
}
