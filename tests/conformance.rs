//! One conformance suite that every adapter runs, HTTP in and HTTP out: the gateway is configured
//! with the provider, the upstream replays the provider's real wire format (recorded JSON, SSE or
//! AWS event-stream bytes from `tests/fixtures/<provider>/`, split into tiny writes), and the
//! client must see the same OpenAI answer whichever provider served it.
//!
//! Every fixture encodes the same canonical answers:
//! - `text`: "Hello! How can I help you today?", stop, usage 12 + 9
//! - `tools`: get_weather({"city":"Paris"}) (Anthropic/OpenAI also say "I'll check the weather."), tool_calls, usage 50 + 20
//! - `parallel_tools`: get_weather Paris then London, tool_calls
//! - `json_mode`: `{"answer": 42}`; `length`: "The history of Rome begins", length
//! - `cached_usage`: prompt 2112 of which 2000 cached, completion 9
//! - `error_<status>`: the provider's error body for that status
//!
//! A case a provider cannot do is declared in its `unsupported` list, never skipped silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use llm_gateway::Gateway;
use llm_gateway::config::Config;
use llm_gateway::server::RunningServer;
use llm_gateway::testkit::{Recorded, Replay, ReplayUpstream};
use serde_json::{Value, json};

struct Provider {
    name: &'static str,
    /// The `providers:` entry for a replay upstream at the given base URL.
    yaml: fn(&str) -> String,
    upstream_model: &'static str,
    /// Extension of the streamed fixtures and how to turn them into wire bytes.
    stream_ext: &'static str,
    stream_content_type: &'static str,
    encode_stream: fn(&[u8]) -> Vec<u8>,
    /// Checks path, query and auth of what the upstream received.
    check_request: fn(&Recorded, bool),
    unsupported: &'static [&'static str],
}

fn identity(bytes: &[u8]) -> Vec<u8> {
    bytes.to_vec()
}

fn check_openai(seen: &Recorded, stream: bool) {
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.headers["authorization"], "Bearer sk-conformance");
    assert_eq!(seen.body["model"], "gpt-4o-mini");
    assert_eq!(seen.body["stream"].as_bool().unwrap_or(false), stream);
}

fn check_anthropic(seen: &Recorded, stream: bool) {
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "sk-ant-conformance");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.body["model"], "claude-sonnet-4-5");
    assert!(seen.body["max_tokens"].as_u64().unwrap() > 0);
    assert_eq!(seen.body["stream"].as_bool().unwrap_or(false), stream);
}

fn check_bedrock(seen: &Recorded, stream: bool) {
    let operation = if stream { "converse-stream" } else { "converse" };
    assert_eq!(seen.path, format!("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/{operation}"));
    let auth = seen.headers["authorization"].to_str().unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDCONFORMANCE/"), "{auth}");
    assert!(auth.contains("/us-east-1/bedrock/aws4_request, SignedHeaders="), "{auth}");
    assert!(!auth.contains("conformance-secret"), "{auth}");
    assert!(seen.headers.get("x-amz-date").is_some());
    assert!(seen.body.get("model").is_none() && seen.body.get("stream").is_none(), "{}", seen.body);
}

/// `[{"event": <:event-type or exception:<type>>, "payload": {...}}]` → AWS event-stream frames.
fn encode_bedrock_events(json: &[u8]) -> Vec<u8> {
    use llm_gateway::providers::eventstream::{encode, encode_event};
    let events: Vec<Value> = serde_json::from_slice(json).unwrap();
    let mut bytes = Vec::new();
    for event in &events {
        let name = event["event"].as_str().unwrap();
        let payload = event["payload"].to_string();
        bytes.extend(match name.strip_prefix("exception:") {
            Some(kind) => encode(
                &[(":message-type", "exception"), (":exception-type", kind), (":content-type", "application/json")],
                payload.as_bytes(),
            ),
            None => encode_event(name, payload.as_bytes()),
        });
    }
    bytes
}

fn check_gemini(seen: &Recorded, stream: bool) {
    let method = if stream { "streamGenerateContent" } else { "generateContent" };
    assert_eq!(seen.path, format!("/v1beta/models/gemini-2.5-flash:{method}"));
    assert_eq!(seen.query.as_deref(), stream.then_some("alt=sse"), "the key never rides in the query");
    assert_eq!(seen.headers["x-goog-api-key"], "gm-conformance");
    assert!(seen.headers.get("authorization").is_none());
    assert!(seen.body["contents"].is_array() && seen.body.get("model").is_none(), "{}", seen.body);
}

const PROVIDERS: &[Provider] = &[
    Provider {
        name: "openai",
        yaml: |base| format!("{{ kind: openai, api_key: sk-conformance, base_url: \"{base}/v1\" }}"),
        upstream_model: "gpt-4o-mini",
        stream_ext: "sse",
        stream_content_type: "text/event-stream",
        encode_stream: identity,
        check_request: check_openai,
        unsupported: &[],
    },
    Provider {
        name: "anthropic",
        yaml: |base| format!("{{ kind: anthropic, api_key: sk-ant-conformance, base_url: \"{base}/v1\" }}"),
        upstream_model: "claude-sonnet-4-5",
        stream_ext: "sse",
        stream_content_type: "text/event-stream",
        encode_stream: identity,
        check_request: check_anthropic,
        unsupported: &["embeddings"],
    },
    Provider {
        name: "gemini",
        yaml: |base| format!("{{ kind: gemini, api_key: gm-conformance, base_url: \"{base}/v1beta\" }}"),
        upstream_model: "gemini-2.5-flash",
        stream_ext: "sse",
        stream_content_type: "text/event-stream",
        encode_stream: identity,
        check_request: check_gemini,
        unsupported: &[],
    },
    Provider {
        name: "bedrock",
        yaml: |base| {
            format!(
                "{{ kind: bedrock, base_url: \"{base}\", aws_region: us-east-1, aws_access_key_id: AKIDCONFORMANCE, aws_secret_access_key: conformance-secret }}"
            )
        },
        upstream_model: "anthropic.claude-3-5-sonnet-20240620-v1:0",
        stream_ext: "events.json",
        stream_content_type: "application/vnd.amazon.eventstream",
        encode_stream: encode_bedrock_events,
        check_request: check_bedrock,
        unsupported: &["embeddings"],
    },
];

fn fixture(provider: &Provider, name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{}/{name}", env!("CARGO_MANIFEST_DIR"), provider.name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Rig {
    upstream: ReplayUpstream,
    server: RunningServer,
    http: reqwest::Client,
}

impl Rig {
    async fn start(provider: &Provider) -> Self {
        let upstream = ReplayUpstream::start().await.unwrap();
        let yaml = format!(
            "providers:\n  p: {}\nmodels:\n  m:\n    deployments: [ {{ provider: p, model: \"{}\" }} ]\n    timeouts: {{ first_byte: 500ms, total: 3s }}\n",
            (provider.yaml)(&upstream.url()),
            provider.upstream_model
        );
        let config = Config::parse("conformance.yaml", &yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::new(config, None).unwrap();
        let server = RunningServer::start(gateway, "127.0.0.1:0".parse().unwrap()).await.unwrap();
        Self { upstream, server, http: reqwest::Client::new() }
    }

    async fn chat(&self, body: Value) -> reqwest::Response {
        self.http.post(format!("{}/v1/chat/completions", self.server.url())).json(&body).send().await.unwrap()
    }
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

fn request(case: &str, stream: bool) -> Value {
    let mut body = json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "What now?"}
        ],
        "max_tokens": 64
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    match case {
        "tools" | "parallel_tools" => {
            body["tools"] = json!([weather_tool()]);
            body["tool_choice"] = json!("auto");
        }
        "json_mode" => body["response_format"] = json!({"type": "json_object"}),
        _ => {}
    }
    body
}

/// What a client reassembles from a stream, with the stream invariants checked on the way.
#[derive(Debug, Default)]
struct Assembled {
    text: String,
    tool_calls: Vec<(String, String, String)>,
    finish: Option<String>,
    usage: Option<Value>,
}

fn assemble(provider: &str, text: &str) -> Assembled {
    assert!(text.ends_with("data: [DONE]\n\n"), "{provider}: stream must end with [DONE]: {text:?}");
    let mut out = Assembled::default();
    let mut roles = 0;
    let mut finishes = 0;
    let mut after_usage = false;
    for event in text.split("\n\n").filter(|e| !e.is_empty() && !e.starts_with(':')) {
        let data = event.strip_prefix("data: ").unwrap_or_else(|| panic!("{provider}: bad event {event:?}"));
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value =
            serde_json::from_str(data).unwrap_or_else(|e| panic!("{provider}: garbled chunk {data}: {e}"));
        assert!(chunk.get("error").is_none(), "{provider}: stream failed: {data}");
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert!(!after_usage, "{provider}: nothing may follow the usage chunk");
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            assert_eq!(chunk["choices"], json!([]), "{provider}: usage rides on a chunk with choices: []");
            out.usage = Some(usage.clone());
            after_usage = true;
        }
        for choice in chunk["choices"].as_array().unwrap() {
            assert_eq!(choice["index"], 0);
            let delta = &choice["delta"];
            if delta.get("role").is_some_and(|r| !r.is_null()) {
                roles += 1;
            }
            if let Some(t) = delta["content"].as_str() {
                out.text.push_str(t);
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                let index = call["index"].as_u64().unwrap() as usize;
                if let Some(id) = call["id"].as_str() {
                    assert_eq!(index, out.tool_calls.len(), "{provider}: tool calls start in index order");
                    out.tool_calls.push((
                        id.to_string(),
                        call["function"]["name"].as_str().unwrap().to_string(),
                        String::new(),
                    ));
                }
                if let Some(args) = call["function"]["arguments"].as_str() {
                    out.tool_calls[index].2.push_str(args);
                }
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finishes += 1;
                out.finish = Some(f.to_string());
            }
        }
    }
    assert_eq!(roles, 1, "{provider}: exactly one role chunk");
    assert_eq!(finishes, 1, "{provider}: exactly one finish");
    out
}

fn supported(provider: &Provider, case: &str) -> bool {
    !provider.unsupported.contains(&case)
}

async fn run_json(provider: &Provider, case: &str) -> (Value, Recorded) {
    let rig = Rig::start(provider).await;
    rig.upstream.push(Replay::new(200, "application/json", fixture(provider, &format!("{case}.json"))));
    let response = rig.chat(request(case, false)).await;
    assert_eq!(response.status(), 200, "{}: {case}: {}", provider.name, response.text().await.unwrap());
    assert_eq!(response.headers()["x-gateway-upstream-model"], provider.upstream_model);
    let body: Value = response.json().await.unwrap();
    let seen = rig.upstream.last_request().unwrap();
    (provider.check_request)(&seen, false);
    assert_eq!(body["object"], "chat.completion", "{}: {body}", provider.name);
    (body, seen)
}

async fn run_stream(provider: &Provider, case: &str, split: usize) -> (Assembled, Recorded) {
    let rig = Rig::start(provider).await;
    let bytes = (provider.encode_stream)(&fixture(provider, &format!("{case}.{}", provider.stream_ext)));
    let mut replay = Replay::new(200, provider.stream_content_type, bytes);
    replay.split = split;
    rig.upstream.push(replay);
    let response = rig.chat(request(case, true)).await;
    assert_eq!(response.status(), 200, "{}: {case}", provider.name);
    let text = response.text().await.unwrap();
    let seen = rig.upstream.last_request().unwrap();
    (provider.check_request)(&seen, true);
    (assemble(provider.name, &text), seen)
}

const TEXT: &str = "Hello! How can I help you today?";

#[tokio::test]
async fn text_non_streamed() {
    for p in PROVIDERS.iter().filter(|p| supported(p, "text")) {
        let (body, _) = run_json(p, "text").await;
        let choice = &body["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant", "{}", p.name);
        assert_eq!(choice["message"]["content"], TEXT, "{}", p.name);
        assert_eq!(choice["finish_reason"], "stop", "{}", p.name);
        assert_eq!(body["usage"]["prompt_tokens"], 12, "{}", p.name);
        assert_eq!(body["usage"]["completion_tokens"], 9, "{}", p.name);
        assert_eq!(body["usage"]["total_tokens"], 21, "{}", p.name);
    }
}

#[tokio::test]
async fn text_streamed_at_awkward_split_points() {
    for p in PROVIDERS.iter().filter(|p| supported(p, "text_stream")) {
        for split in [1, 7, 0] {
            let (out, _) = run_stream(p, "text", split).await;
            assert_eq!(out.text, TEXT, "{} split {split}", p.name);
            assert_eq!(out.finish.as_deref(), Some("stop"), "{}", p.name);
            let usage = out.usage.unwrap_or_else(|| panic!("{}: no usage chunk", p.name));
            assert_eq!(
                (usage["prompt_tokens"].as_u64(), usage["completion_tokens"].as_u64()),
                (Some(12), Some(9)),
                "{}",
                p.name
            );
        }
    }
}

#[tokio::test]
async fn system_and_multi_turn_reach_the_provider() {
    for p in PROVIDERS.iter().filter(|p| supported(p, "text")) {
        let (_, seen) = run_json(p, "text").await;
        let wire = seen.body.to_string();
        for needle in ["You are terse.", "Hi", "Hello.", "What now?"] {
            assert!(wire.contains(needle), "{}: {needle} missing from {wire}", p.name);
        }
    }
}

fn assert_paris(p: &Provider, calls: &[(String, String, String)]) {
    assert_eq!(calls.len(), 1, "{}: {calls:?}", p.name);
    assert_eq!(calls[0].1, "get_weather");
    assert!(!calls[0].0.is_empty(), "{}: tool call ids are required", p.name);
    let args: Value =
        serde_json::from_str(&calls[0].2).unwrap_or_else(|e| panic!("{}: args {:?}: {e}", p.name, calls[0].2));
    assert_eq!(args, json!({"city": "Paris"}), "{}", p.name);
}

fn calls_of(body: &Value) -> Vec<(String, String, String)> {
    body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            assert_eq!(c["type"], "function");
            (
                c["id"].as_str().unwrap().to_string(),
                c["function"]["name"].as_str().unwrap().to_string(),
                c["function"]["arguments"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn tools_non_streamed() {
    for p in PROVIDERS.iter().filter(|p| supported(p, "tools")) {
        let (body, seen) = run_json(p, "tools").await;
        assert!(seen.body.to_string().contains("get_weather"), "{}: tool definition not sent", p.name);
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{}", p.name);
        assert_paris(p, &calls_of(&body));
        assert_eq!(body["usage"]["prompt_tokens"], 50, "{}", p.name);
        assert_eq!(body["usage"]["completion_tokens"], 20, "{}", p.name);
    }
}

#[tokio::test]
async fn tools_streamed() {
    for p in PROVIDERS.iter().filter(|p| supported(p, "tools_stream")) {
        for split in [1, 7] {
            let (out, _) = run_stream(p, "tools", split).await;
            assert_eq!(out.finish.as_deref(), Some("tool_calls"), "{}", p.name);
            assert_paris(p, &out.tool_calls);
        }
    }
}

fn assert_paris_and_london(p: &Provider, calls: &[(String, String, String)]) {
    assert_eq!(calls.len(), 2, "{}: {calls:?}", p.name);
    assert_ne!(calls[0].0, calls[1].0, "{}: tool call ids must differ", p.name);
    let cities: Vec<Value> =
        calls.iter().map(|c| serde_json::from_str::<Value>(&c.2).unwrap()["city"].clone()).collect();
    assert_eq!(cities, [json!("Paris"), json!("London")], "{}", p.name);
}

#[tokio::test]
async fn parallel_tool_calls() {
    for p in PROVIDERS.iter().filter(|p| supported(p, "parallel_tools")) {
        let (body, _) = run_json(p, "parallel_tools").await;
        assert_paris_and_london(p, &calls_of(&body));
        let (out, _) = run_stream(p, "parallel_tools", 3).await;
        assert_eq!(out.finish.as_deref(), Some("tool_calls"), "{}", p.name);
        assert_paris_and_london(p, &out.tool_calls);
    }
}

#[tokio::test]
async fn json_mode() {
    for p in PROVIDERS.iter().filter(|p| supported(p, "json_mode")) {
        let (body, seen) = run_json(p, "json_mode").await;
        let content: Value = serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
        assert_eq!(content, json!({"answer": 42}), "{}", p.name);
        assert!(
            seen.body.to_string().to_lowercase().contains("json"),
            "{}: JSON mode not requested: {}",
            p.name,
            seen.body
        );
    }
}

#[tokio::test]
async fn length_stop() {
    for p in PROVIDERS.iter().filter(|p| supported(p, "length")) {
        let (body, _) = run_json(p, "length").await;
        assert_eq!(body["choices"][0]["finish_reason"], "length", "{}", p.name);
        assert_eq!(body["choices"][0]["message"]["content"], "The history of Rome begins");
    }
}

#[tokio::test]
async fn cached_prompt_tokens_are_reported() {
    for p in PROVIDERS.iter().filter(|p| supported(p, "cached_usage")) {
        let (body, _) = run_json(p, "cached_usage").await;
        let usage = &body["usage"];
        assert_eq!(usage["prompt_tokens"], 2112, "{}: {usage}", p.name);
        assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 2000, "{}: {usage}", p.name);
        assert_eq!(usage["completion_tokens"], 9, "{}", p.name);
    }
}

#[tokio::test]
async fn upstream_errors_map_to_openai_errors() {
    for p in PROVIDERS.iter().filter(|p| supported(p, "errors")) {
        for (status, expected) in [(400, 400), (401, 502), (429, 429), (500, 502), (503, 502), (529, 502)] {
            let rig = Rig::start(p).await;
            let mut replay = Replay::new(status, "application/json", fixture(p, &format!("error_{status}.json")));
            if status == 429 {
                replay = replay.header("retry-after", "3");
            }
            rig.upstream.push(replay);
            for stream in [false, true] {
                if stream {
                    let mut again =
                        Replay::new(status, "application/json", fixture(p, &format!("error_{status}.json")));
                    if status == 429 {
                        again = again.header("retry-after", "3");
                    }
                    rig.upstream.push(again);
                }
                let response = rig.chat(request("text", stream)).await;
                assert_eq!(response.status(), expected, "{}: upstream {status} (stream {stream})", p.name);
                if status == 429 {
                    assert_eq!(response.headers()["retry-after"], "3", "{}", p.name);
                }
                let body: Value = response.json().await.unwrap();
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains("provider `p`"), "{}: {message}", p.name);
                if status != 401 {
                    assert!(
                        message.contains(&status.to_string()) || status == 429 || status == 400,
                        "{}: {message}",
                        p.name
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn slow_provider_times_out() {
    for p in PROVIDERS.iter().filter(|p| supported(p, "timeout")) {
        let rig = Rig::start(p).await;
        rig.upstream
            .push(Replay::new(200, "application/json", fixture(p, "text.json")).delayed(Duration::from_secs(2)));
        let response = rig.chat(request("text", false)).await;
        assert_eq!(response.status(), 504, "{}", p.name);
    }
}

#[tokio::test]
async fn every_provider_declares_what_it_lacks() {
    let known = [
        "text",
        "text_stream",
        "tools",
        "tools_stream",
        "parallel_tools",
        "json_mode",
        "length",
        "cached_usage",
        "errors",
        "timeout",
        "embeddings",
        "images",
    ];
    for p in PROVIDERS {
        for case in p.unsupported {
            assert!(known.contains(case), "{}: unknown case {case}", p.name);
        }
    }
}

#[tokio::test]
async fn images_reach_the_provider_in_its_format() {
    const PNG: &str =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    for p in PROVIDERS.iter().filter(|p| supported(p, "images")) {
        let rig = Rig::start(p).await;
        rig.upstream.push(Replay::new(200, "application/json", fixture(p, "text.json")));
        let mut body = request("text", false);
        body["messages"][3]["content"] = json!([
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}
        ]);
        let response = rig.chat(body).await;
        assert_eq!(response.status(), 200, "{}: {}", p.name, response.text().await.unwrap());
        let wire = rig.upstream.last_request().unwrap().body.to_string();
        assert!(wire.contains(PNG), "{}: image bytes missing from {wire}", p.name);
        assert!(wire.contains("png"), "{}: image type missing from {wire}", p.name);
        assert!(wire.contains("What is in this picture?"), "{}", p.name);
    }
}
