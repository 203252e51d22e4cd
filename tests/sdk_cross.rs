//! The official SDKs across wire formats: the `anthropic` SDK against `/v1/messages` served by an
//! OpenAI-format model, and the `openai` SDK against Anthropic- and Gemini-served models whose
//! upstreams replay recorded wire fixtures. The checks live in `tests/sdk/test_cross_sdk.py`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{CLIENT_KEY, python};
use llm_gateway::Gateway;
use llm_gateway::config::Config;
use llm_gateway::server::RunningServer;
use llm_gateway::testkit::{MockUpstream, Replay, ReplayUpstream};

const SCRIPT: &str = "tests/sdk/test_cross_sdk.py";

fn fixture(provider: &str, name: &str) -> Vec<u8> {
    std::fs::read(python::repo().join("tests/fixtures").join(provider).join(name)).unwrap()
}

/// Queues, in the script's order, a non-streamed text answer, a streamed one and a streamed tool call.
fn queue_answers(upstream: &ReplayUpstream, provider: &str) {
    upstream.push(Replay::new(200, "application/json", fixture(provider, "text.json")));
    upstream.push(Replay::new(200, "text/event-stream", fixture(provider, "text.sse")));
    upstream.push(Replay::new(200, "text/event-stream", fixture(provider, "tools.sse")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_work_across_wire_formats() {
    let Some(python) = python::python_or_skip("sdk_cross", &["openai", "anthropic"]) else { return };
    let openai_upstream = MockUpstream::start().await.unwrap();
    let anthropic_upstream = ReplayUpstream::start().await.unwrap();
    let gemini_upstream = ReplayUpstream::start().await.unwrap();
    let yaml = format!(
        r#"
auth:
  keys: [ {{ name: sdk, key: "{CLIENT_KEY}" }} ]
providers:
  openai: {{ kind: openai, api_key: sk-x, base_url: "{}" }}
  anthropic: {{ kind: anthropic, api_key: sk-ant-x, base_url: "{}/v1" }}
  gemini: {{ kind: gemini, api_key: gm-x, base_url: "{}/v1beta" }}
models:
  gpt:
    deployments: [ {{ provider: openai, model: gpt-4o-mini }} ]
  claude:
    deployments: [ {{ provider: anthropic, model: claude-sonnet-4-5 }} ]
  gemini-flash:
    deployments: [ {{ provider: gemini, model: gemini-2.5-flash }} ]
"#,
        openai_upstream.base_url(),
        anthropic_upstream.url(),
        gemini_upstream.url()
    );
    let config = Config::parse("sdk.yaml", &yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let server =
        RunningServer::start(Gateway::new(config, None).unwrap(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    queue_answers(&anthropic_upstream, "anthropic");
    queue_answers(&gemini_upstream, "gemini");

    let envs = vec![
        ("LLM_GATEWAY_URL", server.url()),
        ("LLM_GATEWAY_API_KEY", CLIENT_KEY.to_string()),
        ("LLM_GATEWAY_GEMINI_MODEL", "gemini-flash".to_string()),
    ];
    let output = tokio::task::spawn_blocking(move || python::run_script(&python, SCRIPT, &envs)).await.unwrap();
    println!("{output}");

    // Part A reached the OpenAI-format upstream only through translated requests.
    let requests = openai_upstream.requests();
    assert_eq!(requests.len(), 4, "create, stream, tool stream, tool result; errors never reach it");
    assert!(requests.iter().all(|r| r.path == "/v1/chat/completions" && r.body["model"] == "gpt-4o-mini"));
    let follow_up = &requests[3].body["messages"];
    assert_eq!(follow_up[2]["role"], "tool");
    assert_eq!(follow_up[2]["content"], "18C");
    // Part B: every queued Anthropic answer was asked for, with Anthropic's headers.
    let requests = anthropic_upstream.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.headers["x-api-key"], "sk-ant-x");
        assert_eq!(r.body["system"], "be brief");
    }
    assert_eq!(requests[2].body["tools"][0]["name"], "get_weather");
    // Part B against Gemini: generateContent, then streamGenerateContent twice.
    let requests = gemini_upstream.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(requests[1].path, "/v1beta/models/gemini-2.5-flash:streamGenerateContent");
    assert_eq!(requests[2].query.as_deref(), Some("alt=sse"));
    assert_eq!(requests[0].headers["x-goog-api-key"], "gm-x");
    assert!(requests[2].body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather");
}
