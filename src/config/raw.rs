//! The YAML file as written: serde types with `deny_unknown_fields`. Validation into
//! [`super::Config`] happens in `super::validate`.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: Option<String>,
    /// Largest accepted request body, e.g. `10MiB` (the default) or a byte count.
    pub max_body_size: Option<SizeValue>,
    /// How long a shutdown waits for in-flight requests and streams. Default `30s`.
    pub shutdown_grace: Option<String>,
    /// Idle time after which a stream gets an SSE comment, keeping proxies from timing it out and
    /// noticing clients that left. Default `15s`.
    pub sse_keepalive: Option<String>,
    /// Include prompt text in the request log. Default false.
    #[serde(default)]
    pub log_prompts: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub keys: Vec<RawClientKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientKey {
    pub name: String,
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    AzureOpenai,
    OpenaiCompatible,
    Anthropic,
    Gemini,
    Bedrock,
    Mock,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: ProviderKind,
    pub api_key: Option<String>,
    pub base_url: Option<String>,
    /// OpenAI-compatible vendor preset (`ollama`, `vllm`, `groq`, …); see `presets.yaml`.
    pub preset: Option<String>,
    /// Azure OpenAI `api-version` query parameter, or Anthropic's `anthropic-version` header.
    pub api_version: Option<String>,
    /// Bedrock: the AWS region, e.g. `us-east-1`.
    pub aws_region: Option<String>,
    /// Bedrock credentials; default to AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    pub aws_session_token: Option<String>,
    /// Extra headers sent with every upstream request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Data residency label, e.g. `us`, `eu`, `on_prem`.
    pub region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub deployments: Vec<RawDeployment>,
    pub description: Option<String>,
    /// Shorthand for `timeouts.total`.
    pub timeout: Option<String>,
    pub timeouts: Option<RawTimeouts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub provider: String,
    pub model: String,
    /// Azure deployment name; defaults to `model`.
    pub deployment: Option<String>,
    pub weight: Option<u32>,
    /// Overrides the built-in price table for this deployment.
    pub price: Option<RawPrice>,
}

/// USD per million tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pub cached_input_per_mtok: Option<f64>,
    pub cache_write_per_mtok: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub first_byte: Option<String>,
    pub total: Option<String>,
}
