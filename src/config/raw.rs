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
    /// Semantic routing for requests that ask for model `auto`.
    pub router: Option<super::router::RawRouter>,
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
#[serde(untagged, expecting = "expected a byte count or a size such as \"10MiB\"")]
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
    /// `mock` providers only: scripted faults and latency, for demos, tests and chaos benchmarks.
    pub mock: Option<RawMockBehaviour>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMockBehaviour {
    /// Time to the first byte of every answer.
    pub latency: Option<String>,
    /// Pause between streamed chunks.
    pub chunk_interval: Option<String>,
    /// Steps consumed one per request, in order: `ok`, a status such as `500` or `429:3` (with
    /// Retry-After), `delay:2s`, `hang`, `cut:<chunks>` (stream dies), `stall:<chunks>` (stream stops),
    /// `context_overflow`, `content_filter`.
    #[serde(default)]
    pub script: Vec<String>,
    /// After the script: share of requests that fail with a 500.
    pub error_rate: Option<f64>,
    /// After the script: share of requests that take `spike_latency` extra.
    pub spike_rate: Option<f64>,
    pub spike_latency: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub deployments: Vec<RawDeployment>,
    pub description: Option<String>,
    /// Shorthand for `timeouts.total`.
    pub timeout: Option<String>,
    pub timeouts: Option<RawTimeouts>,
    /// How a deployment is picked. Default `weighted`.
    pub strategy: Option<Strategy>,
    /// Weights of the `weighted_score` strategy. Default latency 40, cost 30, success 20, custom 10.
    pub score_weights: Option<RawScoreWeights>,
    /// Retries on the same deployment.
    pub retry: Option<RawRetry>,
    /// Other models to try, in order, when this one fails: a name (on any retryable failure) or
    /// `{ model, on: [classes], on_status: [codes] }`.
    #[serde(default)]
    pub fallbacks: Vec<RawFallback>,
    /// Upper bound on upstream attempts for one request, all deployments and fallbacks included. Default 4.
    pub max_attempts: Option<u32>,
    /// Latency budget for the whole request: no attempt starts that cannot finish in it.
    pub budget: Option<String>,
    /// Hedged requests: a second attempt when the first has no first byte in time.
    pub hedge: Option<RawHedge>,
    /// What a stream does when its deployment fails after the first chunk. Default `error`.
    pub stream_failover: Option<StreamFailover>,
    /// Keep a session (by header) on one deployment unless it fails.
    pub sticky: Option<RawSticky>,
    /// Circuit-breaker thresholds.
    pub health: Option<RawHealth>,
    /// Quality per route in 0..=1, for routes with a `quality_floor`.
    #[serde(default)]
    pub quality: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Weighted,
    RoundRobin,
    LeastInflight,
    LeastLatency,
    LowestCost,
    WeightedScore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    RateLimited,
    ServerError,
    Timeout,
    ContextWindowExceeded,
    ContentFiltered,
    Auth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamFailover {
    Error,
    Continue,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScoreWeights {
    #[serde(default)]
    pub latency: f64,
    #[serde(default)]
    pub cost: f64,
    #[serde(default)]
    pub success: f64,
    #[serde(default)]
    pub custom: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Attempts per deployment, the first included. Default 1 (no retries).
    pub attempts: Option<u32>,
    /// Backoff base and cap (full jitter). Defaults 200ms and 5s.
    pub base: Option<String>,
    pub max: Option<String>,
    /// Error classes worth a retry. Default rate_limited, server_error, timeout.
    pub on: Option<Vec<ErrorClass>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "expected a model name or { model: <name>, on: [...], on_status: [...] }")]
pub enum RawFallback {
    Model(String),
    Rule(RawFallbackRule),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallbackRule {
    pub model: String,
    #[serde(default)]
    pub on: Vec<ErrorClass>,
    #[serde(default)]
    pub on_status: Vec<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHedge {
    /// `p95` (the deployment's own) or a duration such as `300ms`. Default `p95`.
    pub after: Option<String>,
    /// Extra upstream calls allowed, as a percentage of requests. Default 5.
    pub max_extra_percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSticky {
    /// Default `x-session-id`.
    pub header: Option<String>,
    /// Default `30m`.
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Error ratio over the recent window that marks a deployment degraded. Default 0.25.
    pub degrade_error_ratio: Option<f64>,
    /// p95 above this multiple of its own baseline for 5 requests in a row marks it degraded. Default 2.
    pub slow_factor: Option<f64>,
    /// Consecutive hard failures that open the circuit. Default 5.
    pub open_after: Option<u32>,
    /// How long an open circuit waits before canary probes. Default `10s`.
    pub cooldown: Option<String>,
    /// Share of requests sent as probes to an open deployment after the cooldown. Default 0.05.
    pub canary_share: Option<f64>,
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
    /// Percent of the model's traffic for this (canary) deployment; the others share the rest.
    pub canary: Option<f64>,
    /// Custom score in 0..=1 for the `weighted_score` strategy (e.g. measured quality). Default 0.5.
    pub score: Option<f64>,
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
