//! The Anthropic-compatible `/v1/messages` endpoint, served by OpenAI-format and Anthropic-format
//! upstreams: request translation, the exact Anthropic SSE event grammar, errors in Anthropic's shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{CLIENT_KEY, Harness};
use llm_gateway::testkit::Fault;
use serde_json::{Value, json};

async fn post_messages(h: &Harness, body: Value) -> reqwest::Response {
    h.http.post(h.url("/v1/messages")).header("x-api-key", CLIENT_KEY).json(&body).send().await.unwrap()
}

fn weather_tool() -> Value {
    json!({"name": "get_weather", "description": "Weather", "input_schema": {"type": "object",
        "properties": {"city": {"type": "string"}}, "required": ["city"]}})
}

/// Parses an Anthropic SSE body into (event name, data) pairs and checks the event grammar:
/// message_start first and once, blocks opened and closed in order with matching indexes,
/// message_delta then message_stop last.
fn events(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for raw in text.split("\n\n").filter(|e| !e.is_empty() && !e.starts_with(':')) {
        let mut name = None;
        let mut data = None;
        for line in raw.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str::<Value>(v).unwrap_or_else(|e| panic!("garbled {v}: {e}")));
            }
        }
        let (name, data) = (name.unwrap(), data.unwrap());
        assert_eq!(data["type"], name.as_str(), "event name and data type agree");
        out.push((name, data));
    }
    out
}

fn check_grammar(events: &[(String, Value)]) {
    assert_eq!(events.first().unwrap().0, "message_start");
    assert_eq!(events.iter().filter(|(n, _)| n == "message_start").count(), 1);
    let tail: Vec<&str> = events.iter().rev().take(2).map(|(n, _)| n.as_str()).collect();
    assert_eq!(tail, ["message_stop", "message_delta"]);
    let mut open: Option<u64> = None;
    let mut next_index = 0;
    for (name, data) in events {
        match name.as_str() {
            "content_block_start" => {
                assert!(open.is_none(), "blocks never overlap");
                assert_eq!(data["index"], next_index);
                open = Some(next_index);
            }
            "content_block_delta" => assert_eq!(Some(data["index"].as_u64().unwrap()), open),
            "content_block_stop" => {
                assert_eq!(Some(data["index"].as_u64().unwrap()), open);
                open = None;
                next_index += 1;
            }
            _ => {}
        }
    }
    assert!(open.is_none());
}

#[tokio::test]
async fn openai_backend_serves_an_anthropic_message() {
    let h = Harness::start().await;
    let response = post_messages(
        &h,
        json!({"model": "gpt", "max_tokens": 256, "system": "be brief", "stop_sequences": ["END"],
               "metadata": {"user_id": "u-42"},
               "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-gateway-provider"], "openai");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["content"][0], json!({"type": "text", "text": "Mock reply from gpt-4o-mini: you said \"hello\"."}));
    assert_eq!(body["stop_reason"], "end_turn");
    assert!(body["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));

    let seen = h.upstream.last_request().unwrap();
    assert_eq!(seen.body["messages"][0], json!({"role": "system", "content": "be brief"}));
    assert_eq!(seen.body["messages"][1]["content"], "hello");
    assert_eq!(seen.body["max_tokens"], 256);
    assert_eq!(seen.body["stop"], json!(["END"]));
    assert_eq!(seen.body["user"], "u-42");
}

#[tokio::test]
async fn streamed_tool_use_follows_the_anthropic_event_grammar() {
    let h = Harness::start().await;
    let response = post_messages(
        &h,
        json!({"model": "gpt", "max_tokens": 100, "stream": true, "tools": [weather_tool()],
               "tool_choice": {"type": "tool", "name": "get_weather"},
               "messages": [{"role": "user", "content": "weather in Paris?"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let events = events(&response.text().await.unwrap());
    check_grammar(&events);
    let start = events.iter().find(|(n, _)| n == "content_block_start").unwrap();
    assert_eq!(start.1["content_block"]["type"], "tool_use");
    assert_eq!(start.1["content_block"]["name"], "get_weather");
    let json: String =
        events.iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str().map(str::to_string)).collect();
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), json!({"city": "mock-city"}));
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let seen = h.upstream.last_request().unwrap();
    assert_eq!(seen.body["tool_choice"], json!({"type": "function", "function": {"name": "get_weather"}}));
    assert_eq!(seen.body["tools"][0]["function"]["parameters"], weather_tool()["input_schema"]);
    assert_eq!(seen.body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn tool_results_round_trip_to_openai_tool_messages() {
    let h = Harness::start().await;
    let response = post_messages(
        &h,
        json!({"model": "gpt", "max_tokens": 100, "tools": [weather_tool()], "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "text", "text": "thanks"}]}
        ]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let seen = h.upstream.last_request().unwrap();
    let messages = seen.body["messages"].as_array().unwrap();
    assert_eq!(
        messages[1]["tool_calls"][0]["function"],
        json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    assert_eq!(messages[2], json!({"role": "tool", "content": "18C", "tool_call_id": "toolu_1"}));
    assert_eq!(messages[3], json!({"role": "user", "content": "thanks"}));
}

#[tokio::test]
async fn errors_come_back_in_anthropic_shape() {
    let h = Harness::start().await;
    let response =
        post_messages(&h, json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
            .await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "not_found_error");

    let response = h
        .http
        .post(h.url("/v1/messages"))
        .json(&json!({"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["type"], "authentication_error");

    let response = post_messages(&h, json!({"model": "gpt", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(response.status(), 400, "max_tokens is required by the Messages API");

    h.upstream.push_fault(Fault::rate_limited("9"));
    let response =
        post_messages(&h, json!({"model": "gpt", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}))
            .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "9");
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn a_stream_that_dies_ends_with_one_error_event() {
    let h = Harness::start().await;
    h.upstream.push_fault(Fault::StreamCut { after: 3 });
    let response = post_messages(
        &h,
        json!({"model": "gpt", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": "hello there"}]}),
    )
    .await;
    let events = events(&response.text().await.unwrap());
    assert_eq!(events.first().unwrap().0, "message_start");
    assert_eq!(events.last().unwrap().0, "error");
    assert_eq!(events.iter().filter(|(n, _)| n == "error" || n == "message_stop").count(), 1);
    assert_eq!(events.last().unwrap().1["error"]["type"], "api_error");
}
