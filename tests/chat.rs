//! Chat completions, embeddings and models through the gateway against a mock OpenAI upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{CLIENT_KEY, Harness, PROVIDER_KEY, sse_events};
use serde_json::{Value, json};

#[tokio::test]
async fn proxies_a_chat_completion_and_says_what_happened() {
    let h = Harness::start().await;
    let response = h
        .post(
            "/v1/chat/completions",
            json!({
                "model": "gpt",
                "messages": [{"role": "user", "content": "hello"}],
                "temperature": 0.2,
                "seed": 42,
                "logit_bias": {"50256": -100},
                "metadata": {"custom": ["kept", 1]}
            }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["x-gateway-model"], "gpt");
    assert_eq!(headers["x-gateway-provider"], "openai");
    assert_eq!(headers["x-gateway-upstream-model"], "gpt-4o-mini");
    assert!(!headers["x-request-id"].is_empty());
    let upstream_ms: f64 = headers["x-gateway-upstream-ms"].to_str().unwrap().parse().unwrap();
    let overhead_ms: f64 = headers["x-gateway-overhead-ms"].to_str().unwrap().parse().unwrap();
    assert!(upstream_ms > 0.0 && overhead_ms >= 0.0);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Mock reply from gpt-4o-mini: you said \"hello\".");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"],
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );

    let seen = h.upstream.last_request().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.body["model"], "gpt-4o-mini");
    // Fields the gateway does not model reach the upstream verbatim.
    assert_eq!(seen.body["seed"], 42);
    assert_eq!(seen.body["logit_bias"], json!({"50256": -100}));
    assert_eq!(seen.body["metadata"], json!({"custom": ["kept", 1]}));
    // The provider key goes upstream; the client's key never does.
    assert_eq!(seen.headers["authorization"], format!("Bearer {PROVIDER_KEY}"));
    assert!(!format!("{:?}", seen.headers).contains(CLIENT_KEY));
}

#[tokio::test]
async fn keeps_a_client_supplied_request_id() {
    let h = Harness::start().await;
    let response = h
        .http
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .header("x-request-id", "trace-abc-123")
        .json(&json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc-123");
}

#[tokio::test]
async fn streams_with_include_usage_ending_in_a_usage_chunk() {
    let h = Harness::start().await;
    let response = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "stream please"}]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["x-gateway-provider"], "openai");
    let events = sse_events(response).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Mock reply from gpt-4o-mini: you said \"stream please\".");
    assert_eq!(chunks.iter().filter(|c| c["choices"][0]["delta"]["role"] == "assistant").count(), 1);
}

#[tokio::test]
async fn asks_upstream_for_usage_but_hides_it_from_clients_that_did_not() {
    let h = Harness::start().await;
    let response = h
        .post(
            "/v1/chat/completions",
            json!({"model": "gpt", "stream": true, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    let events = sse_events(response).await;
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert_ne!(chunk["choices"], json!([]), "usage chunk leaked: {event}");
    }
    let seen = h.upstream.last_request().unwrap();
    assert_eq!(seen.body["stream_options"]["include_usage"], true);

    // A preset whose server ignores include_usage is not sent the option, and a preset that only
    // knows `max_tokens` gets `max_completion_tokens` renamed (both quirks are data in presets.yaml).
    let response = h
        .post(
            "/v1/chat/completions",
            json!({"model": "no-stream-usage", "stream": true, "max_completion_tokens": 77,
                   "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(sse_events(response).await.last().unwrap(), "[DONE]");
    let seen = h.upstream.last_request().unwrap();
    assert!(seen.body.get("stream_options").is_none());
    assert_eq!(seen.body["max_tokens"], 77);
    assert!(seen.body.get("max_completion_tokens").is_none());
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
}

#[tokio::test]
async fn tool_call_round_trip_streamed_and_not() {
    let h = Harness::start().await;
    let ask = json!({"model": "gpt", "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [weather_tool()], "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {"type": "text"}, "parallel_tool_calls": false});
    let body: Value = h.post("/v1/chat/completions", ask.clone()).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let seen = h.upstream.last_request().unwrap();
    assert_eq!(seen.body["tools"], json!([weather_tool()]));
    assert_eq!(seen.body["tool_choice"], ask["tool_choice"]);
    assert_eq!(seen.body["response_format"], json!({"type": "text"}));
    assert_eq!(seen.body["parallel_tool_calls"], false);

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let events = sse_events(h.post("/v1/chat/completions", streamed).await).await;
    let arguments: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str().map(str::to_string))
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"city": "mock-city"}));

    // Send the tool result back; the assistant tool_calls message and the tool message pass through.
    let follow_up = json!({"model": "gpt", "tools": [weather_tool()], "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"}]});
    let body: Value = h.post("/v1/chat/completions", follow_up.clone()).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "The tool returned: 18C and sunny");
    assert_eq!(h.upstream.last_request().unwrap().body["messages"], follow_up["messages"]);
}

#[tokio::test]
async fn azure_uses_deployment_url_api_version_and_api_key_header() {
    let h = Harness::start().await;
    let response = h
        .post("/v1/chat/completions", json!({"model": "azure-gpt", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(response.status(), 200);
    let seen = h.upstream.last_request().unwrap();
    assert_eq!(seen.path, "/openai/deployments/prod-gpt4o/chat/completions");
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(seen.headers["api-key"], "azure-secret-key");
    assert!(seen.headers.get("authorization").is_none());
}

#[tokio::test]
async fn embeddings_and_models() {
    let h = Harness::start().await;
    let response = h.post("/v1/embeddings", json!({"model": "embed", "input": ["a", "b"], "dimensions": 8})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-gateway-upstream-model"], "text-embedding-3-small");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);
    let seen = h.upstream.last_request().unwrap();
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(seen.body["dimensions"], 8);

    let list: Value = h.get("/v1/models").await.json().await.unwrap();
    let ids: Vec<&str> = list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["azure-gpt", "embed", "gpt", "no-stream-usage", "offline"]);
    let one: Value = h.get("/v1/models/gpt").await.json().await.unwrap();
    assert_eq!(one["id"], "gpt");
    assert_eq!(h.get("/v1/models/unknown-model").await.status(), 404);
}

#[tokio::test]
async fn builtin_mock_provider_answers_offline() {
    let h = Harness::start().await;
    let body: Value = h
        .post("/v1/chat/completions", json!({"model": "offline", "messages": [{"role": "user", "content": "ping"}]}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Mock reply from mock-1: you said \"ping\".");
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let h = Harness::start().await;
    assert_eq!(h.http.get(h.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(h.http.get(h.url("/readyz")).send().await.unwrap().status(), 200);
    h.post("/v1/chat/completions", json!({"model": "gpt", "messages": [{"role": "user", "content": "count me"}]}))
        .await;
    let metrics = h.http.get(h.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for needle in [
        "gateway_requests_total{endpoint=\"chat_completions\",model=\"gpt\",provider=\"openai\",status=\"200\"}",
        "gateway_request_duration_seconds_bucket{endpoint=\"chat_completions\",model=\"gpt\",provider=\"openai\",le=",
        "gateway_tokens_total{model=\"gpt\",provider=\"openai\",type=\"prompt\"}",
        "gateway_overhead_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
}

#[tokio::test]
async fn every_response_says_what_it_cost() {
    let h = Harness::start_with(
        "  priced:\n    deployments: [ { provider: openai, model: my-finetune, price: { input_per_mtok: 1000, output_per_mtok: 2000 } } ]\n",
    )
    .await;
    // Built-in table: gpt-4o-mini is $0.15 in / $0.60 out per million tokens.
    let response = h
        .post("/v1/chat/completions", json!({"model": "gpt", "messages": [{"role": "user", "content": "price me"}]}))
        .await;
    let cost: f64 = response.headers()["x-gateway-cost-usd"].to_str().unwrap().parse().unwrap();
    let body: Value = response.json().await.unwrap();
    let (p, c) =
        (body["usage"]["prompt_tokens"].as_f64().unwrap(), body["usage"]["completion_tokens"].as_f64().unwrap());
    assert!((cost - (p * 0.15 + c * 0.60) / 1e6).abs() < 1e-8, "{cost}");

    // A deployment's own price overrides the table.
    let response = h
        .post("/v1/chat/completions", json!({"model": "priced", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    let cost: f64 = response.headers()["x-gateway-cost-usd"].to_str().unwrap().parse().unwrap();
    let body: Value = response.json().await.unwrap();
    let (p, c) =
        (body["usage"]["prompt_tokens"].as_f64().unwrap(), body["usage"]["completion_tokens"].as_f64().unwrap());
    assert!((cost - (p * 1000.0 + c * 2000.0) / 1e6).abs() < 1e-8, "{cost}");

    // An unknown model has no price, so no header rather than a wrong one.
    let response = h
        .post("/v1/chat/completions", json!({"model": "offline", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert!(response.headers().get("x-gateway-cost-usd").is_none());

    let metrics = h.http.get(h.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gateway_cost_usd_total{model=\"priced\",provider=\"openai\"}"), "{metrics}");
}
