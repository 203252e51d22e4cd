//! Shared harness: a mock OpenAI upstream and the real gateway server on port 0.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod python;

use std::net::SocketAddr;

use llm_gateway::Gateway;
use llm_gateway::config::Config;
use llm_gateway::server::RunningServer;
use llm_gateway::testkit::MockUpstream;

pub const CLIENT_KEY: &str = "client-key-123";
pub const PROVIDER_KEY: &str = "sk-upstream-secret-999";

pub struct Harness {
    pub upstream: MockUpstream,
    pub server: RunningServer,
    pub http: reqwest::Client,
}

/// A config with one OpenAI provider pointing at `upstream` and a few models. `extra` is
/// appended under `models:` (indented by 2).
pub fn config_yaml(upstream: &MockUpstream, extra_models: &str) -> String {
    format!(
        r#"
server: {{ listen: "127.0.0.1:0", max_body_size: 4KiB, sse_keepalive: 100ms }}
auth:
  keys: [ {{ name: test-app, key: "{CLIENT_KEY}" }} ]
providers:
  openai: {{ kind: openai, api_key: "{PROVIDER_KEY}", base_url: "{base}" }}
  azure: {{ kind: azure_openai, api_key: "azure-secret-key", base_url: "{azure}", api_version: "2024-10-21" }}
  groq: {{ kind: openai_compatible, preset: mistral, base_url: "{base}", api_key: "gsk-test" }}
  mock: {{ kind: mock }}
models:
  gpt:
    deployments: [ {{ provider: openai, model: gpt-4o-mini }} ]
    timeouts: {{ first_byte: 2s, total: 3s }}
  azure-gpt:
    deployments: [ {{ provider: azure, model: gpt-4o, deployment: prod-gpt4o }} ]
  no-stream-usage:
    deployments: [ {{ provider: groq, model: mistral-small }} ]
  embed:
    deployments: [ {{ provider: openai, model: text-embedding-3-small }} ]
  offline:
    deployments: [ {{ provider: mock, model: mock-1 }} ]
{extra_models}"#,
        base = upstream.base_url(),
        azure = upstream.azure_url(),
    )
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    pub async fn start_with(extra_models: &str) -> Self {
        let upstream = MockUpstream::start().await.unwrap();
        let yaml = config_yaml(&upstream, extra_models);
        let config = Config::parse("test.yaml", &yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::new(config, None).unwrap();
        let server = RunningServer::start(gateway, SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        Self { upstream, server, http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.url(), path)
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(CLIENT_KEY).json(&body).send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(CLIENT_KEY).send().await.unwrap()
    }
}

/// Reads an SSE body into its `data:` payloads.
pub async fn sse_events(response: reqwest::Response) -> Vec<String> {
    let text = response.text().await.unwrap();
    assert!(text.ends_with("\n\n"), "stream must end on an event boundary: {text:?}");
    text.split("\n\n")
        .filter(|e| !e.is_empty() && !e.starts_with(':'))
        .map(|e| e.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data event: {e:?}")).to_string())
        .collect()
}

pub fn error_of(body: &serde_json::Value) -> (&str, &str) {
    (body["error"]["type"].as_str().unwrap_or(""), body["error"]["message"].as_str().unwrap_or(""))
}
