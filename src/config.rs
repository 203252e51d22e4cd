//! Configuration: one YAML file → a validated, immutable [`Config`].
//!
//! Loading is `text → YAML value → ${ENV} interpolation → raw serde types (unknown keys rejected)
//! → validate()`. Every problem is reported as `file: key.path: problem — fix`, all of them at once.

mod raw;
pub mod router;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

pub use raw::RawPrice as Price;
pub use raw::{ErrorClass, ProviderKind, Strategy, StreamFailover};
use raw::{RawConfig, RawFallback, RawModel, RawProvider, SizeValue};

pub const DEMO_CONFIG: &str = include_str!("config/demo.yaml");
const PRESETS: &str = include_str!("config/presets.yaml");
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_MAX_BODY: usize = 10 * 1024 * 1024;

/// A string that never prints itself: provider and client keys.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The validated configuration. Immutable once built; a reload builds a new one.
#[derive(Debug)]
pub struct Config {
    /// Where it came from, for messages: a file path or `<built-in demo>`.
    pub source: String,
    pub server: ServerConfig,
    /// Client key → key name. Empty means no authentication (only allowed on loopback).
    pub client_keys: HashMap<String, Arc<str>>,
    pub providers: BTreeMap<String, Arc<ProviderConfig>>,
    pub models: BTreeMap<String, Arc<ModelConfig>>,
    pub router: Option<router::RouterConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_size: usize,
    pub shutdown_grace: Duration,
    pub sse_keepalive: Duration,
    pub log_prompts: bool,
}

#[derive(Debug)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub api_key: Option<Secret>,
    /// Resolved base URL without a trailing slash (from the file, the preset or the kind's default).
    pub base_url: String,
    pub api_version: Option<String>,
    pub headers: Vec<(String, Secret)>,
    pub region: Option<String>,
    /// Whether the upstream honours `stream_options.include_usage`.
    pub stream_usage: bool,
    /// The upstream knows `max_tokens` but not `max_completion_tokens` (renamed on the way out).
    pub max_tokens_only: bool,
    pub aws: Option<AwsConfig>,
    pub mock: MockBehaviour,
}

/// Scripted behaviour of a `mock` provider.
#[derive(Debug, Clone, Default)]
pub struct MockBehaviour {
    pub latency: Duration,
    pub chunk_interval: Duration,
    pub script: Vec<MockStep>,
    pub error_rate: f64,
    pub spike_rate: f64,
    pub spike_latency: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum MockStep {
    Ok,
    Status {
        status: u16,
        retry_after: Option<u32>,
    },
    Delay(Duration),
    Hang,
    Cut(usize),
    Stall(usize),
    /// A 400 saying the prompt exceeds the context window.
    ContextOverflow,
    /// A 400 saying the content was filtered.
    ContentFilter,
}

impl MockStep {
    fn parse(text: &str) -> Option<Self> {
        let (head, arg) = match text.split_once(':') {
            Some((h, a)) => (h.trim(), Some(a.trim())),
            None => (text.trim(), None),
        };
        Some(match (head, arg) {
            ("ok", None) => MockStep::Ok,
            ("hang", None) => MockStep::Hang,
            ("context_overflow", None) => MockStep::ContextOverflow,
            ("content_filter", None) => MockStep::ContentFilter,
            ("delay", Some(d)) => MockStep::Delay(parse_duration(d)?),
            ("cut", Some(n)) => MockStep::Cut(n.parse().ok()?),
            ("stall", Some(n)) => MockStep::Stall(n.parse().ok()?),
            (code, retry) => {
                let status: u16 = code.parse().ok().filter(|c| (400..600).contains(c))?;
                let retry_after = match retry {
                    Some(r) => Some(r.parse().ok()?),
                    None => None,
                };
                MockStep::Status { status, retry_after }
            }
        })
    }
}
#[derive(Debug)]
pub struct AwsConfig {
    pub region: String,
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

#[derive(Debug)]
pub struct ModelConfig {
    pub name: String,
    pub description: Option<String>,
    pub deployments: Vec<DeploymentConfig>,
    pub timeouts: Timeouts,
    pub reliability: Reliability,
    /// Quality per route in 0..=1 (for routes with a `quality_floor`).
    pub quality: BTreeMap<String, f64>,
}

/// How a model survives failing deployments: balancing, retries, fallbacks, budget, hedging.
#[derive(Debug, Clone)]
pub struct Reliability {
    pub strategy: Strategy,
    pub score_weights: ScoreWeights,
    pub retry: RetryPolicy,
    pub fallbacks: Vec<Fallback>,
    pub max_attempts: u32,
    pub budget: Option<Duration>,
    pub hedge: Option<Hedge>,
    pub stream_failover: StreamFailover,
    pub sticky: Option<Sticky>,
    pub health: HealthConfig,
}

#[derive(Debug, Clone, Copy)]
pub struct ScoreWeights {
    pub latency: f64,
    pub cost: f64,
    pub success: f64,
    pub custom: f64,
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per deployment, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    pub on: Vec<ErrorClass>,
}

#[derive(Debug, Clone)]
pub struct Fallback {
    pub model: String,
    pub on: Vec<ErrorClass>,
    pub on_status: Vec<u16>,
}

#[derive(Debug, Clone, Copy)]
pub enum HedgeAfter {
    /// The primary deployment's own p95 time to first byte.
    P95,
    Fixed(Duration),
}

#[derive(Debug, Clone, Copy)]
pub struct Hedge {
    pub after: HedgeAfter,
    /// Extra upstream calls allowed, as a fraction of requests (0.05 = 5 %).
    pub max_extra: f64,
}

#[derive(Debug, Clone)]
pub struct Sticky {
    pub header: String,
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    pub degrade_error_ratio: f64,
    pub slow_factor: f64,
    pub open_after: u32,
    pub cooldown: Duration,
    pub canary_share: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            degrade_error_ratio: 0.25,
            slow_factor: 2.0,
            open_after: 5,
            cooldown: Duration::from_secs(10),
            canary_share: 0.05,
        }
    }
}

impl Default for Reliability {
    fn default() -> Self {
        Self {
            strategy: Strategy::Weighted,
            score_weights: ScoreWeights { latency: 40.0, cost: 30.0, success: 20.0, custom: 10.0 },
            // No same-deployment retries unless configured: clients' SDKs already retry, and
            // multiplying retries at every layer turns an outage into a storm.
            retry: RetryPolicy {
                attempts: 1,
                base: Duration::from_millis(200),
                max: Duration::from_secs(5),
                on: vec![ErrorClass::RateLimited, ErrorClass::ServerError, ErrorClass::Timeout],
            },
            fallbacks: Vec::new(),
            max_attempts: 4,
            budget: None,
            hedge: None,
            stream_failover: StreamFailover::Error,
            sticky: None,
            health: HealthConfig::default(),
        }
    }
}

/// The classes a plain `fallbacks: [name]` entry falls back on.
pub const DEFAULT_FALLBACK_CLASSES: &[ErrorClass] = &[
    ErrorClass::RateLimited,
    ErrorClass::ServerError,
    ErrorClass::Timeout,
    ErrorClass::Auth,
    ErrorClass::ContextWindowExceeded,
];

#[derive(Debug)]
pub struct DeploymentConfig {
    pub provider: String,
    pub model: String,
    pub azure_deployment: Option<String>,
    pub weight: u32,
    pub price: Option<Price>,
    /// Percent of the model's traffic reserved for this canary deployment.
    pub canary: Option<f64>,
    /// Custom score in 0..=1 for `weighted_score`.
    pub score: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(10), first_byte: Duration::from_secs(60), total: Duration::from_secs(600) }
    }
}

/// All the problems found in one file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub file: String,
    pub path: String,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.path.is_empty() {
                write!(f, "{}: {} — {}", p.file, p.problem, p.fix)?;
            } else {
                write!(f, "{}: {}: {} — {}", p.file, p.path, p.problem, p.fix)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

pub(crate) struct Problems {
    file: String,
    list: Vec<Problem>,
}

impl Problems {
    pub(crate) fn push(&mut self, path: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) {
        self.list.push(Problem {
            file: self.file.clone(),
            path: path.into(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    fn into_result<T>(self, value: T) -> Result<T, ConfigError> {
        if self.list.is_empty() { Ok(value) } else { Err(ConfigError { problems: self.list }) }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![Problem {
                file: file.clone(),
                path: String::new(),
                problem: format!("cannot read the file: {e}"),
                fix: "check the path and its permissions".into(),
            }],
        })?;
        Self::parse(&file, &text, &|name| std::env::var(name).ok())
    }

    /// The built-in offline demo config.
    pub fn demo() -> Result<Self, ConfigError> {
        Self::parse("<built-in demo>", DEMO_CONFIG, &|name| std::env::var(name).ok())
    }

    /// Parses and validates config text; `env` resolves `${VAR}` references.
    pub fn parse(file: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut problems = Problems { file: file.to_string(), list: Vec::new() };
        let mut value: Value = match serde_saphyr::from_str(text) {
            Ok(Value::Null) => Value::Object(Default::default()),
            Ok(value) => value,
            Err(e) => {
                problems.push("", format!("not valid YAML: {e}"), "fix the YAML syntax at the position shown");
                return Err(ConfigError { problems: problems.list });
            }
        };
        interpolate(&mut value, &mut String::new(), env, &mut problems);
        if !problems.list.is_empty() {
            return Err(ConfigError { problems: problems.list });
        }
        let raw: RawConfig = match serde_path_to_error::deserialize(value) {
            Ok(raw) => raw,
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                let fix = if inner.starts_with("unknown field") {
                    "remove the key or correct its spelling"
                } else if inner.starts_with("unknown variant") {
                    "use one of the listed values"
                } else if inner.starts_with("missing field") {
                    "add the key"
                } else {
                    "correct the value's type"
                };
                let path = if path == "." { String::new() } else { path };
                problems.push(path, inner, fix);
                return Err(ConfigError { problems: problems.list });
            }
        };
        validate(file, raw, env, problems)
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in every string value; `$$` is a literal `$`.
fn interpolate(value: &mut Value, path: &mut String, env: &dyn Fn(&str) -> Option<String>, problems: &mut Problems) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err((var, problem)) => {
                problems.push(path.clone(), problem, format!("export {var} or write ${{{var}:-default}}"))
            }
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                interpolate(item, path, env, problems);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                interpolate(item, path, env, problems);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

fn expand(input: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, (String, String)> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(("VAR".into(), format!("unclosed `${{` in {input:?}")));
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(("VAR".into(), format!("`${{{expr}}}` is not a valid variable reference")));
            }
            match (env(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err((name.to_string(), format!("environment variable {name} is not set")));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Preset {
    base_url: String,
    api_key_env: Option<String>,
    stream_usage: bool,
    #[serde(default)]
    max_tokens_only: bool,
}

fn presets() -> BTreeMap<String, Preset> {
    // The preset table is compiled in and covered by tests; a parse failure would be a build bug.
    serde_saphyr::from_str(PRESETS).unwrap_or_default()
}

pub fn preset_names() -> Vec<String> {
    presets().into_keys().collect()
}

fn validate(
    file: &str,
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    mut problems: Problems,
) -> Result<Config, ConfigError> {
    let listen_text = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        problems.push(
            "server.listen",
            format!("{listen_text:?} is not an address"),
            "write host:port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080",
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let max_body_size = match &raw.server.max_body_size {
        None => DEFAULT_MAX_BODY,
        Some(SizeValue::Bytes(n)) => *n as usize,
        Some(SizeValue::Text(text)) => parse_size(text).unwrap_or_else(|| {
            problems.push(
                "server.max_body_size",
                format!("{text:?} is not a size"),
                "write e.g. 10MiB, 512KB or a byte count",
            );
            DEFAULT_MAX_BODY
        }),
    };
    let shutdown_grace = duration_field(&mut problems, "server.shutdown_grace", raw.server.shutdown_grace.as_deref())
        .unwrap_or(Duration::from_secs(30));

    let sse_keepalive = duration_field(&mut problems, "server.sse_keepalive", raw.server.sse_keepalive.as_deref())
        .unwrap_or(Duration::from_secs(15));

    let mut client_keys = HashMap::new();
    for (i, key) in raw.auth.keys.iter().enumerate() {
        if key.key.len() < 8 {
            problems.push(
                format!("auth.keys[{i}].key"),
                "client key is shorter than 8 characters",
                "use a long random key",
            );
        }
        if client_keys.insert(key.key.clone(), Arc::<str>::from(key.name.as_str())).is_some() {
            problems.push(
                format!("auth.keys[{i}].key"),
                "the same key is listed twice",
                "give each client its own key",
            );
        }
    }

    let presets = presets();
    let mut providers = BTreeMap::new();
    for (name, provider) in raw.providers {
        if let Some(p) = provider_config(&name, provider, &presets, env, &mut problems) {
            providers.insert(name, Arc::new(p));
        }
    }

    let mut models = BTreeMap::new();
    for (name, model) in raw.models {
        if let Some(m) = model_config(&name, model, &providers, &mut problems) {
            models.insert(name, Arc::new(m));
        }
    }

    for (name, model) in &models {
        for (i, fallback) in model.reliability.fallbacks.iter().enumerate() {
            if !models.contains_key(&fallback.model) {
                let known = models.keys().cloned().collect::<Vec<_>>().join(", ");
                problems.push(
                    format!("models.{name}.fallbacks[{i}]"),
                    format!("unknown model {:?}", fallback.model),
                    format!("use one of: {known}"),
                );
            }
        }
    }

    // Validated after the models, whose names routes refer to.
    let mut problems_for_router = Problems { file: problems.file.clone(), list: Vec::new() };
    let router_config = raw.router.and_then(|r| router::validate(r, &models, &mut problems_for_router));
    problems.list.extend(problems_for_router.list);
    problems.into_result(Config {
        source: file.to_string(),
        server: ServerConfig {
            listen,
            max_body_size,
            shutdown_grace,
            sse_keepalive,
            log_prompts: raw.server.log_prompts,
        },
        client_keys,
        providers,
        router: router_config,
        models,
    })
}

fn provider_config(
    name: &str,
    raw: RawProvider,
    presets: &BTreeMap<String, Preset>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<ProviderConfig> {
    let at = |key: &str| format!("providers.{name}.{key}");
    let preset = match &raw.preset {
        Some(p) if raw.kind != ProviderKind::OpenaiCompatible => {
            problems.push(
                at("preset"),
                format!("presets apply only to kind openai_compatible, not {:?}", raw.kind),
                "remove `preset` or change `kind`",
            );
            let _ = p;
            None
        }
        Some(p) => match presets.get(p) {
            Some(preset) => Some(preset),
            None => {
                let known = presets.keys().cloned().collect::<Vec<_>>().join(", ");
                problems.push(at("preset"), format!("unknown preset {p:?}"), format!("use one of: {known}"));
                return None;
            }
        },
        None => None,
    };
    let aws = match raw.kind {
        ProviderKind::Bedrock => aws_config(name, &raw, env, problems),
        _ => {
            for (key, value) in [
                ("aws_region", &raw.aws_region),
                ("aws_access_key_id", &raw.aws_access_key_id),
                ("aws_secret_access_key", &raw.aws_secret_access_key),
                ("aws_session_token", &raw.aws_session_token),
            ] {
                if value.is_some() {
                    problems.push(at(key), "AWS settings apply only to kind bedrock", "remove it");
                }
            }
            None
        }
    };
    let base_url = match (raw.kind, raw.base_url.as_deref(), preset) {
        (_, Some(url), _) => url.trim_end_matches('/').to_string(),
        (ProviderKind::Openai, None, _) => "https://api.openai.com/v1".to_string(),
        (ProviderKind::Anthropic, None, _) => "https://api.anthropic.com/v1".to_string(),
        (ProviderKind::Gemini, None, _) => "https://generativelanguage.googleapis.com/v1beta".to_string(),
        (ProviderKind::Bedrock, None, _) => {
            format!("https://bedrock-runtime.{}.amazonaws.com", aws.as_ref().map_or("us-east-1", |a| a.region.as_str()))
        }
        (ProviderKind::OpenaiCompatible, None, Some(preset)) => preset.base_url.clone(),
        (ProviderKind::Mock, None, _) => String::new(),
        (ProviderKind::AzureOpenai, None, _) => {
            problems.push(
                at("base_url"),
                "Azure OpenAI needs the resource endpoint",
                "set base_url: https://<resource>.openai.azure.com",
            );
            return None;
        }
        (ProviderKind::OpenaiCompatible, None, None) => {
            problems.push(
                at("base_url"),
                "an openai_compatible provider needs a base_url or a preset",
                "set base_url (e.g. http://127.0.0.1:11434/v1) or preset: ollama",
            );
            return None;
        }
    };
    if raw.kind != ProviderKind::Mock && !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        problems.push(
            at("base_url"),
            format!("{base_url:?} is not an http(s) URL"),
            "write the full URL, e.g. https://api.openai.com/v1",
        );
    }
    let api_key = raw
        .api_key
        .filter(|k| !k.is_empty())
        .or_else(|| preset.and_then(|p| p.api_key_env.as_deref()).and_then(env))
        .map(Secret::new);
    if let (None, Some(var)) = (&api_key, preset.and_then(|p| p.api_key_env.as_deref())) {
        problems.push(
            at("api_key"),
            format!("this provider needs an API key and {var} is not set"),
            format!("export {var} or set api_key"),
        );
    }
    if api_key.is_none()
        && matches!(
            raw.kind,
            ProviderKind::Openai | ProviderKind::AzureOpenai | ProviderKind::Anthropic | ProviderKind::Gemini
        )
    {
        problems.push(
            at("api_key"),
            "this provider needs an API key",
            "set api_key: \"${OPENAI_API_KEY}\" (or the variable your key is in)",
        );
    }
    let api_version = match raw.kind {
        ProviderKind::AzureOpenai => Some(raw.api_version.unwrap_or_else(|| "2024-10-21".to_string())),
        ProviderKind::Anthropic => Some(raw.api_version.unwrap_or_else(|| "2023-06-01".to_string())),
        _ => {
            if raw.api_version.is_some() {
                problems.push(at("api_version"), "api_version applies only to azure_openai and anthropic", "remove it");
            }
            None
        }
    };
    let mut headers = Vec::new();
    for (header, value) in raw.headers {
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() || http::HeaderValue::from_str(&value).is_err() {
            problems.push(
                at(&format!("headers.{header}")),
                "not a valid HTTP header",
                "use a token name and a printable ASCII value",
            );
        } else {
            headers.push((header.to_ascii_lowercase(), Secret::new(value)));
        }
    }
    Some(ProviderConfig {
        name: name.to_string(),
        kind: raw.kind,
        api_key,
        base_url,
        api_version,
        headers,
        region: raw.region,
        stream_usage: preset.map(|p| p.stream_usage).unwrap_or(true),
        max_tokens_only: preset.is_some_and(|p| p.max_tokens_only),
        aws,
        mock: mock_behaviour(name, raw.kind, raw.mock, problems),
    })
}

fn mock_behaviour(
    name: &str,
    kind: ProviderKind,
    raw: Option<raw::RawMockBehaviour>,
    problems: &mut Problems,
) -> MockBehaviour {
    let Some(raw) = raw else { return MockBehaviour::default() };
    let at = |key: &str| format!("providers.{name}.mock.{key}");
    if kind != ProviderKind::Mock {
        problems.push(format!("providers.{name}.mock"), "mock behaviour applies only to kind mock", "remove it");
    }
    let mut out = MockBehaviour::default();
    if let Some(d) = raw.latency.as_deref() {
        out.latency = parse_duration(d).unwrap_or_else(|| {
            problems.push(at("latency"), format!("{d:?} is not a duration"), "write e.g. 20ms");
            Duration::ZERO
        });
    }
    if let Some(d) = raw.chunk_interval.as_deref() {
        out.chunk_interval = parse_duration(d).unwrap_or_else(|| {
            problems.push(at("chunk_interval"), format!("{d:?} is not a duration"), "write e.g. 5ms");
            Duration::ZERO
        });
    }
    if let Some(d) = raw.spike_latency.as_deref() {
        out.spike_latency = parse_duration(d).unwrap_or_else(|| {
            problems.push(at("spike_latency"), format!("{d:?} is not a duration"), "write e.g. 2s");
            Duration::ZERO
        });
    }
    for (key, value, slot) in
        [("error_rate", raw.error_rate, &mut out.error_rate), ("spike_rate", raw.spike_rate, &mut out.spike_rate)]
    {
        if let Some(v) = value {
            if !(0.0..=1.0).contains(&v) {
                problems.push(at(key), format!("{v} is outside 0..=1"), "use a fraction such as 0.1");
            }
            *slot = v;
        }
    }
    for (i, step) in raw.script.iter().enumerate() {
        match MockStep::parse(step) {
            Some(step) => out.script.push(step),
            None => problems.push(
                at(&format!("script[{i}]")),
                format!("{step:?} is not a mock step"),
                "use ok, a status like 500 or 429:3, delay:2s, hang, cut:3, stall:3, context_overflow or content_filter",
            ),
        }
    }
    out
}

fn aws_config(
    name: &str,
    raw: &RawProvider,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<AwsConfig> {
    let at = |key: &str| format!("providers.{name}.{key}");
    let from = |value: &Option<String>, var: &str| value.clone().filter(|v| !v.is_empty()).or_else(|| env(var));
    let region = from(&raw.aws_region, "AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION"));
    let access = from(&raw.aws_access_key_id, "AWS_ACCESS_KEY_ID");
    let secret = from(&raw.aws_secret_access_key, "AWS_SECRET_ACCESS_KEY");
    let token = from(&raw.aws_session_token, "AWS_SESSION_TOKEN");
    if region.is_none() {
        problems.push(
            at("aws_region"),
            "Bedrock needs an AWS region",
            "set aws_region: us-east-1 (or export AWS_REGION)",
        );
    }
    if access.is_none() || secret.is_none() {
        problems.push(
            at("aws_access_key_id"),
            "Bedrock needs AWS credentials",
            "set aws_access_key_id and aws_secret_access_key (or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
        );
    }
    Some(AwsConfig {
        region: region?,
        access_key_id: Secret::new(access?),
        secret_access_key: Secret::new(secret?),
        session_token: token.map(Secret::new),
    })
}

fn model_config(
    name: &str,
    raw: RawModel,
    providers: &BTreeMap<String, Arc<ProviderConfig>>,
    problems: &mut Problems,
) -> Option<ModelConfig> {
    let at = |key: &str| format!("models.{name}.{key}");
    let reliability = reliability(name, &raw, problems);
    if raw.deployments.is_empty() {
        problems.push(
            at("deployments"),
            "a model needs at least one deployment",
            "add - { provider: <name>, model: <upstream model> }",
        );
    }
    let mut deployments = Vec::new();
    for (i, d) in raw.deployments.into_iter().enumerate() {
        match providers.get(&d.provider) {
            Some(p) => {
                if d.deployment.is_some() && p.kind != ProviderKind::AzureOpenai {
                    problems.push(
                        at(&format!("deployments[{i}].deployment")),
                        "`deployment` applies only to azure_openai providers",
                        "remove it",
                    );
                }
            }
            None => {
                let known = providers.keys().cloned().collect::<Vec<_>>().join(", ");
                problems.push(
                    at(&format!("deployments[{i}].provider")),
                    format!("unknown provider {:?}", d.provider),
                    if known.is_empty() {
                        "define it under `providers:`".to_string()
                    } else {
                        format!("use one of: {known}")
                    },
                );
            }
        }
        if d.weight == Some(0) {
            problems.push(
                at(&format!("deployments[{i}].weight")),
                "weight 0 would never be chosen",
                "remove the deployment or give it a positive weight",
            );
        }
        deployments.push(crate::config::DeploymentConfig {
            provider: d.provider,
            model: d.model,
            azure_deployment: d.deployment,
            weight: d.weight.unwrap_or(1),
            price: d.price,
            canary: d.canary,
            score: d.score.unwrap_or(0.5),
        });
        if let Some(c) = d.canary
            && !(c > 0.0 && c < 100.0)
        {
            problems.push(
                at(&format!("deployments[{i}].canary")),
                format!("{c} is not a percentage between 0 and 100"),
                "write e.g. canary: 5",
            );
        }
        if let Some(score) = d.score
            && !(0.0..=1.0).contains(&score)
        {
            problems.push(
                at(&format!("deployments[{i}].score")),
                format!("{score} is outside 0..=1"),
                "use a score between 0 and 1",
            );
        }
    }
    let mut timeouts = Timeouts::default();
    let block = raw.timeouts.unwrap_or_default();
    if let Some(d) = duration_field(problems, &at("timeouts.connect"), block.connect.as_deref()) {
        timeouts.connect = d;
    }
    if let Some(d) = duration_field(problems, &at("timeouts.first_byte"), block.first_byte.as_deref()) {
        timeouts.first_byte = d;
    }
    let total = match (raw.timeout.as_deref(), block.total.as_deref()) {
        (Some(_), Some(_)) => {
            problems.push(at("timeout"), "both `timeout` and `timeouts.total` are set", "keep one of them");
            None
        }
        (Some(t), None) => duration_field(problems, &at("timeout"), Some(t)),
        (None, t) => duration_field(problems, &at("timeouts.total"), t),
    };
    if let Some(d) = total {
        timeouts.total = d;
        if timeouts.first_byte > d {
            timeouts.first_byte = d;
        }
    }
    let canary_total: f64 = deployments.iter().filter_map(|d| d.canary).sum();
    if canary_total > 0.0 && (canary_total >= 100.0 || deployments.iter().all(|d| d.canary.is_some())) {
        problems.push(
            at("deployments"),
            "canary deployments need a non-canary deployment and less than 100 % in total",
            "mark only the new deployment(s) as canary",
        );
    }
    Some(ModelConfig {
        name: name.to_string(),
        description: raw.description,
        deployments,
        timeouts,
        reliability,
        quality: raw.quality,
    })
}

fn reliability(name: &str, raw: &RawModel, problems: &mut Problems) -> Reliability {
    let at = |key: &str| format!("models.{name}.{key}");
    let mut r = Reliability::default();
    if let Some(strategy) = raw.strategy {
        r.strategy = strategy;
    }
    if let Some(w) = &raw.score_weights {
        if w.latency < 0.0
            || w.cost < 0.0
            || w.success < 0.0
            || w.custom < 0.0
            || w.latency + w.cost + w.success + w.custom <= 0.0
        {
            problems.push(
                at("score_weights"),
                "weights must be non-negative and not all zero",
                "e.g. { latency: 40, cost: 30, success: 20, custom: 10 }",
            );
        }
        r.score_weights = ScoreWeights { latency: w.latency, cost: w.cost, success: w.success, custom: w.custom };
    }
    if let Some(retry) = &raw.retry {
        if let Some(attempts) = retry.attempts {
            if attempts == 0 {
                problems.push(
                    at("retry.attempts"),
                    "attempts counts the first try, so it must be at least 1",
                    "use 1 for no retries",
                );
            }
            r.retry.attempts = attempts.max(1);
        }
        if let Some(d) = duration_field(problems, &at("retry.base"), retry.base.as_deref()) {
            r.retry.base = d;
        }
        if let Some(d) = duration_field(problems, &at("retry.max"), retry.max.as_deref()) {
            r.retry.max = d;
        }
        if let Some(on) = &retry.on {
            r.retry.on = on.clone();
        }
    }
    for (i, fallback) in raw.fallbacks.iter().enumerate() {
        let rule = match fallback {
            RawFallback::Model(model) => {
                Fallback { model: model.clone(), on: DEFAULT_FALLBACK_CLASSES.to_vec(), on_status: Vec::new() }
            }
            RawFallback::Rule(rule) => {
                if rule.on.is_empty() && rule.on_status.is_empty() {
                    problems.push(
                        at(&format!("fallbacks[{i}]")),
                        "a fallback rule needs `on` classes or `on_status` codes",
                        "add e.g. on: [rate_limited, timeout]",
                    );
                }
                Fallback { model: rule.model.clone(), on: rule.on.clone(), on_status: rule.on_status.clone() }
            }
        };
        if rule.model == name {
            problems.push(at(&format!("fallbacks[{i}]")), "a model cannot fall back to itself", "name another model");
        }
        r.fallbacks.push(rule);
    }
    if let Some(n) = raw.max_attempts {
        if n == 0 {
            problems.push(
                at("max_attempts"),
                "max_attempts must be at least 1",
                "use 1 to disable retries and fallbacks",
            );
        }
        r.max_attempts = n.max(1);
    }
    r.budget = duration_field(problems, &at("budget"), raw.budget.as_deref());
    if let Some(hedge) = &raw.hedge {
        let after = match hedge.after.as_deref() {
            None | Some("p95") => HedgeAfter::P95,
            Some(text) => {
                HedgeAfter::Fixed(duration_field(problems, &at("hedge.after"), Some(text)).unwrap_or_default())
            }
        };
        let percent = hedge.max_extra_percent.unwrap_or(5.0);
        if !(0.0..=100.0).contains(&percent) {
            problems.push(at("hedge.max_extra_percent"), format!("{percent} is not a percentage"), "write e.g. 5");
        }
        r.hedge = Some(Hedge { after, max_extra: percent / 100.0 });
    }
    if let Some(mode) = raw.stream_failover {
        r.stream_failover = mode;
    }
    if let Some(sticky) = &raw.sticky {
        let header = sticky.header.clone().unwrap_or_else(|| "x-session-id".into()).to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            problems.push(at("sticky.header"), format!("{header:?} is not a header name"), "use e.g. x-session-id");
        }
        let ttl =
            duration_field(problems, &at("sticky.ttl"), sticky.ttl.as_deref()).unwrap_or(Duration::from_secs(1800));
        r.sticky = Some(Sticky { header, ttl });
    }
    if let Some(h) = &raw.health {
        let ratio = |value: Option<f64>, key: &str, default: f64, problems: &mut Problems| match value {
            Some(v) if !(0.0..=1.0).contains(&v) => {
                problems.push(
                    at(&format!("health.{key}")),
                    format!("{v} is outside 0..=1"),
                    "use a fraction such as 0.25",
                );
                default
            }
            Some(v) => v,
            None => default,
        };
        r.health.degrade_error_ratio =
            ratio(h.degrade_error_ratio, "degrade_error_ratio", r.health.degrade_error_ratio, problems);
        r.health.canary_share = ratio(h.canary_share, "canary_share", r.health.canary_share, problems);
        if let Some(f) = h.slow_factor {
            if f <= 1.0 {
                problems.push(at("health.slow_factor"), "slow_factor must be above 1", "e.g. 2 (twice the usual p95)");
            }
            r.health.slow_factor = f;
        }
        if let Some(n) = h.open_after {
            r.health.open_after = n.max(1);
        }
        if let Some(d) = duration_field(problems, &at("health.cooldown"), h.cooldown.as_deref()) {
            r.health.cooldown = d;
        }
    }
    r
}

pub(crate) fn duration_field(problems: &mut Problems, path: &str, text: Option<&str>) -> Option<Duration> {
    let text = text?;
    match parse_duration(text) {
        Some(d) if !d.is_zero() => Some(d),
        _ => {
            problems.push(path, format!("{text:?} is not a positive duration"), "write e.g. 500ms, 20s, 5m or 1h");
            None
        }
    }
}

/// `500ms`, `20s`, `1.5s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// `10MiB`, `512KB`, `1GiB`, `2048`.
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1024 * 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse("test.yaml", text, &|name| match name {
            "OPENAI_API_KEY" => Some("sk-test".into()),
            _ => None,
        })
    }

    #[test]
    fn demo_config_and_presets_are_valid() {
        let config = Config::demo().unwrap();
        assert!(config.models.contains_key("demo-fast"));
        assert!(preset_names().contains(&"ollama".to_string()));
        assert_eq!(preset_names().len(), 9);
    }

    #[test]
    fn interpolates_env_and_defaults() {
        let config = parse(
            "providers:\n  openai: { kind: openai, api_key: \"${OPENAI_API_KEY}\", base_url: \"${BASE:-http://127.0.0.1:9/v1}\" }\n",
        )
        .unwrap();
        let p = &config.providers["openai"];
        assert_eq!(p.api_key.as_ref().unwrap().expose(), "sk-test");
        assert_eq!(p.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(format!("{:?}", p.api_key), "Some(Secret(***))");
    }

    #[test]
    fn missing_env_names_file_key_and_fix() {
        let err = parse("providers:\n  openai: { kind: openai, api_key: \"${NOPE_KEY}\" }\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.yaml: providers.openai.api_key: environment variable NOPE_KEY is not set — export NOPE_KEY or write ${NOPE_KEY:-default}"
        );
    }

    #[test]
    fn unknown_key_is_an_error_with_its_path() {
        let err = parse("models:\n  fast:\n    deployments: [ { provider: x, modle: y } ]\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("test.yaml: models.fast.deployments[0]"), "{text}");
        assert!(text.contains("unknown field `modle`"), "{text}");
        assert!(text.contains("remove the key or correct its spelling"), "{text}");
    }

    #[test]
    fn reports_every_semantic_problem() {
        let err = parse(
            "server: { listen: nowhere, max_body_size: 10 parsecs }\nproviders:\n  local: { kind: openai_compatible }\nmodels:\n  fast: { deployments: [ { provider: ghost, model: m } ], timeout: soon }\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "test.yaml: server.listen:",
            "test.yaml: server.max_body_size:",
            "test.yaml: providers.local.base_url: an openai_compatible provider needs a base_url or a preset",
            "test.yaml: models.fast.deployments[0].provider: unknown provider \"ghost\"",
            "test.yaml: models.fast.timeout: \"soon\" is not a positive duration",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn router_embedding_settings_are_validated() {
        let base = "providers:\n  m: { kind: mock }\nmodels:\n  a: { deployments: [ { provider: m, model: a } ] }\nrouter:\n  default: r\n  routes: [ { name: r, model: a, description: d } ]\n";
        let config = parse(base).unwrap();
        let embedding = &config.router.as_ref().unwrap().embedding;
        assert_eq!(embedding.model, "multilingual-e5-small");
        assert_eq!(embedding.model_dir, std::path::PathBuf::from("models/multilingual-e5-small"));
        assert_eq!(embedding.scoring, router::Scoring::Linear);
        assert_eq!((embedding.min_score, embedding.margin, embedding.max_tokens), (0.5, 0.1, 48));
        assert_eq!(embedding.lexical_weight, 1.0, "linear scoring blends in the n-gram classifier");
        let with = |line: &str| parse(&format!("{base}  embedding: {{ {line} }}\n"));
        let legacy = with("scoring: nearest, min_similarity: 0.3").unwrap();
        assert_eq!(legacy.router.as_ref().unwrap().embedding.min_score, 0.3);
        assert_eq!(legacy.router.unwrap().embedding.lexical_weight, 0.0, "nothing to blend with similarities");
        assert_eq!(with("lexical_weight: 0").unwrap().router.unwrap().embedding.lexical_weight, 0.0);
        assert_eq!(embedding.layers, None, "all layers unless asked");
        assert_eq!(with("layers: 10").unwrap().router.unwrap().embedding.layers, Some(10));
        for (line, expected) in [
            (
                "scoring: knn",
                "test.yaml: router.embedding.scoring: unknown scoring \"knn\" — use linear, centroid or nearest",
            ),
            (
                "model: bert-large",
                "router.embedding.model: \"bert-large\" is neither a local embedding model nor a model in `models:`",
            ),
            ("max_tokens: 4", "router.embedding.max_tokens: 4 is outside 8..=512"),
            ("lexical_weight: -1", "router.embedding.lexical_weight: -1 is outside 0..=4"),
            ("layers: 0", "router.embedding.layers: 0 is outside 1..=12 (the builtin model's layers) — use e.g. 10"),
            ("layers: 13", "router.embedding.layers: 13 is outside 1..=12"),
            (
                "model: all-MiniLM-L6-v2, layers: 4",
                "router.embedding.layers: only the builtin multilingual-e5-small can run fewer layers",
            ),
            (
                "scoring: centroid, lexical_weight: 1",
                "router.embedding.lexical_weight: the n-gram classifier is blended with `scoring: linear` only",
            ),
        ] {
            let text = with(line).unwrap_err().to_string();
            assert!(text.contains(expected), "{line}: {text}");
        }
    }

    #[test]
    fn a_mistyped_weighted_rule_says_what_shape_is_expected() {
        let base = "providers:\n  m: { kind: mock }\nmodels:\n  a: { deployments: [ { provider: m, model: a } ] }\nrouter:\n  default: r\n";
        for (route, expected) in [
            (
                "regexes: [ { pattern: x, weigth: 2 } ]",
                "router.routes[0].regexes[0]: expected a regex string or { pattern: \"…\", weight: <number> }",
            ),
            (
                "keywords: [ { txt: x, weight: 2 } ]",
                "router.routes[0].keywords[0]: expected a keyword string or { text: \"…\", weight: <number> }",
            ),
        ] {
            let yaml = format!("{base}  routes: [ {{ name: r, model: a, description: d, {route} }} ]\n");
            let text = parse(&yaml).unwrap_err().to_string();
            assert!(text.contains(expected), "{route}: {text}");
            assert!(!text.contains("untagged"), "{text}");
        }
    }

    #[test]
    fn preset_fills_base_url() {
        let config = parse("providers:\n  local: { kind: openai_compatible, preset: ollama }\n").unwrap();
        assert_eq!(config.providers["local"].base_url, "http://127.0.0.1:11434/v1");
        let err = parse("providers:\n  local: { kind: openai_compatible, preset: olama }\n").unwrap_err();
        assert!(err.to_string().contains("unknown preset \"olama\""));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("400ms"), Some(Duration::from_millis(400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("20"), None);
        assert_eq!(parse_size("10MiB"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("2048"), Some(2048));
        assert_eq!(parse_size("3 parsecs"), None);
    }

    #[test]
    fn reliability_settings_parse_and_validate() {
        let config = parse(
            "providers:\n  p: { kind: mock }\nmodels:\n  small: { deployments: [ { provider: p, model: a } ] }\n  main:\n    deployments: [ { provider: p, model: a, weight: 3 }, { provider: p, model: b, canary: 5, score: 0.9 } ]\n    strategy: least_latency\n    retry: { attempts: 3, base: 100ms, max: 2s, on: [rate_limited] }\n    fallbacks: [ small, { model: small, on: [context_window_exceeded], on_status: [418] } ]\n    budget: 20s\n    hedge: { after: 300ms, max_extra_percent: 5 }\n    stream_failover: continue\n    sticky: { header: X-Agent-Session }\n    health: { open_after: 3, cooldown: 2s, canary_share: 0.1 }\n",
        )
        .unwrap();
        let r = &config.models["main"].reliability;
        assert_eq!(r.strategy, Strategy::LeastLatency);
        assert_eq!(r.retry.attempts, 3);
        assert_eq!(r.retry.on, vec![ErrorClass::RateLimited]);
        assert_eq!(r.fallbacks.len(), 2);
        assert_eq!(r.fallbacks[0].on, DEFAULT_FALLBACK_CLASSES.to_vec());
        assert_eq!(r.fallbacks[1].on_status, vec![418]);
        assert_eq!(r.budget, Some(Duration::from_secs(20)));
        assert!(
            matches!(r.hedge, Some(Hedge { after: HedgeAfter::Fixed(d), max_extra }) if d == Duration::from_millis(300) && (max_extra - 0.05).abs() < 1e-9)
        );
        assert_eq!(r.stream_failover, StreamFailover::Continue);
        assert_eq!(r.sticky.as_ref().unwrap().header, "x-agent-session");
        assert_eq!(r.health.open_after, 3);
        assert_eq!(config.models["main"].deployments[1].canary, Some(5.0));

        let err = parse(
            "providers:\n  p: { kind: mock }\nmodels:\n  m:\n    deployments: [ { provider: p, model: a, canary: 150 } ]\n    fallbacks: [ m, ghost ]\n    retry: { attempts: 0 }\n",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "models.m.deployments[0].canary: 150 is not a percentage",
            "models.m.fallbacks[0]: a model cannot fall back to itself",
            "models.m.fallbacks[1]: unknown model \"ghost\"",
            "models.m.retry.attempts: attempts counts the first try",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }
}
