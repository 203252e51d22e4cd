//! Bad input and bad upstreams: every failure is one OpenAI-style error with the right status,
//! streams never end in truncated JSON, and the gateway keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{CLIENT_KEY, Harness, PROVIDER_KEY, error_of, sse_events};
use llm_gateway::testkit::Fault;
use serde_json::{Value, json};

fn chat(stream: bool) -> Value {
    json!({"model": "gpt", "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
}

async fn assert_still_serving(h: &Harness) {
    let response = h.post("/v1/chat/completions", chat(false)).await;
    assert_eq!(response.status(), 200, "gateway stopped serving");
}

#[tokio::test]
async fn malformed_json_is_400_naming_where_it_broke() {
    let h = Harness::start().await;
    let response = h
        .http
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .body("{\"model\": \"gpt\",\n \"messages\": [}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let (kind, message) = error_of(&body);
    assert_eq!(kind, "invalid_request_error");
    assert!(message.contains("line 2 column 15"), "{message}");

    let response =
        h.post("/v1/chat/completions", json!({"model": "gpt", "messages": [{"role": "robot", "content": "x"}]})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "messages[0].role");
    assert!(error_of(&body).1.contains("unknown variant `robot`"), "{body}");
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let h = Harness::start().await;
    let response =
        h.post("/v1/chat/completions", json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(error_of(&body).1.contains("gpt-9"));
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test]
async fn oversized_body_is_413_with_or_without_content_length() {
    let h = Harness::start().await;
    let big = json!({"model": "gpt", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let response = h.post("/v1/chat/completions", big.clone()).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "request_too_large");

    // Chunked upload, no Content-Length: the limit still holds.
    let bytes = serde_json::to_vec(&big).unwrap();
    let stream =
        futures_util::stream::iter(bytes.chunks(512).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>());
    let response = h
        .http
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(CLIENT_KEY)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(h.upstream.hits(), 0);
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn missing_or_wrong_client_key_is_401() {
    let h = Harness::start().await;
    let response = h.http.post(h.url("/v1/chat/completions")).json(&chat(false)).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    let response = h
        .http
        .post(h.url("/v1/chat/completions"))
        .bearer_auth("wrong-key-000")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(!response.text().await.unwrap().contains("wrong-key-000"));
    assert_eq!(h.http.get(h.url("/v1/models")).send().await.unwrap().status(), 401);
    assert_eq!(h.upstream.hits(), 0);
}

#[tokio::test]
async fn upstream_429_is_429_with_retry_after_forwarded() {
    let h = Harness::start().await;
    h.upstream.push_fault(Fault::rate_limited("17"));
    let response = h.post("/v1/chat/completions", chat(false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "17");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(error_of(&body).1.contains("openai"));

    // OpenAI's millisecond hint becomes whole seconds.
    h.upstream.push_fault(Fault::Status {
        status: 429,
        body: "{}".into(),
        headers: vec![("retry-after-ms".into(), "1500".into())],
    });
    let response = h.post("/v1/chat/completions", chat(true)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
}

#[tokio::test]
async fn upstream_5xx_is_502_naming_the_provider() {
    let h = Harness::start().await;
    for status in [500, 503] {
        h.upstream.push_fault(Fault::status(status));
        let response = h.post("/v1/chat/completions", chat(false)).await;
        assert_eq!(response.status(), 502);
        let body: Value = response.json().await.unwrap();
        let message = error_of(&body).1;
        assert!(message.contains("provider `openai`") && message.contains(&status.to_string()), "{message}");
    }
    let metrics = h.http.get(h.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            "gateway_upstream_errors_total{model=\"gpt\",provider=\"openai\",status=\"503\",kind=\"server_error\"}"
        ),
        "{metrics}"
    );
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn upstream_credential_rejection_is_502_without_leaking_the_key() {
    let h = Harness::start().await;
    h.upstream.push_fault(Fault::Status {
        status: 401,
        body: json!({"error": {"message": format!("Incorrect API key provided: {PROVIDER_KEY}")}}).to_string(),
        headers: vec![],
    });
    let response = h.post("/v1/chat/completions", chat(false)).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-should-retry"], "false", "retrying cannot fix the gateway's credential");
    let text = response.text().await.unwrap();
    assert!(text.contains("rejected the gateway's credential"), "{text}");
    assert!(!text.contains(PROVIDER_KEY));
}

#[tokio::test]
async fn upstream_400_passes_through_with_its_message() {
    let h = Harness::start().await;
    h.upstream.push_fault(Fault::Status {
        status: 400,
        body: json!({"error": {"message": format!("This model's maximum context length is 128000 tokens (key {PROVIDER_KEY})"),
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
        .to_string(),
        headers: vec![],
    });
    let response = h.post("/v1/chat/completions", chat(false)).await;
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(text.contains("maximum context length"), "{text}");
    assert!(!text.contains(PROVIDER_KEY), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(body["error"]["param"], "messages");
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let h = Harness::start().await;
    h.upstream.push_fault(Fault::Delay(Duration::from_secs(5)));
    let started = std::time::Instant::now();
    let response = h.post("/v1/chat/completions", chat(false)).await;
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(4));
    let body: Value = response.json().await.unwrap();
    assert!(error_of(&body).1.contains("first_byte timeout of 2000ms"), "{body}");
}

#[tokio::test]
async fn garbage_from_upstream_is_502() {
    let h = Harness::start().await;
    h.upstream.push_fault(Fault::Garbage);
    let response = h.post("/v1/chat/completions", chat(false)).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert!(error_of(&body).1.contains("could not understand"), "{body}");
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let yaml = format!(
        "providers:\n  dead: {{ kind: openai_compatible, base_url: \"http://127.0.0.1:{port}/v1\" }}\nmodels:\n  dead:\n    deployments: [ {{ provider: dead, model: m }} ]\n"
    );
    let config = llm_gateway::config::Config::parse("t.yaml", &yaml, &|_| None).unwrap();
    let gateway = llm_gateway::Gateway::new(config, None).unwrap();
    let server = llm_gateway::server::RunningServer::start(gateway, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url()))
        .json(&json!({"model": "dead", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert!(error_of(&body).1.contains("could not be reached"), "{body}");
}

/// A stream that fails after it started ends with exactly one error event, then `[DONE]`.
async fn assert_clean_error_ending(h: &Harness, fault: Fault) -> String {
    h.upstream.push_fault(fault);
    let response = h.post("/v1/chat/completions", chat(true)).await;
    assert_eq!(response.status(), 200);
    let events = sse_events(response).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let parsed: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("garbled event {e:?}: {err}")))
        .collect();
    let errors: Vec<&Value> = parsed.iter().filter(|v| v.get("error").is_some()).collect();
    assert_eq!(errors.len(), 1, "{events:?}");
    assert!(parsed.last().unwrap().get("error").is_some(), "the error must be the last event before [DONE]");
    errors[0]["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn streams_that_die_midway_end_with_one_error_event_then_done() {
    let h = Harness::start().await;
    let message = assert_clean_error_ending(&h, Fault::StreamCut { after: 3 }).await;
    assert!(message.contains("ended before [DONE]"), "{message}");
    let message = assert_clean_error_ending(&h, Fault::StreamGarbage { after: 2 }).await;
    assert!(message.contains("not valid JSON"), "{message}");
    let message = assert_clean_error_ending(&h, Fault::StreamError { after: 2 }).await;
    assert!(message.contains("The server had an error"), "{message}");
    let message = assert_clean_error_ending(&h, Fault::StreamStall { after: 2 }).await;
    assert!(message.contains("total timeout"), "{message}");
    assert_still_serving(&h).await;
}

#[tokio::test]
async fn stream_failing_before_its_first_chunk_is_a_plain_http_error() {
    let h = Harness::start().await;
    h.upstream.push_fault(Fault::StreamCut { after: 0 });
    let response = h.post("/v1/chat/completions", chat(true)).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn unknown_route_and_wrong_method_are_openai_errors() {
    let h = Harness::start().await;
    let response = h.get("/v1/nothing-here").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(error_of(&body).1.contains("/v1/nothing-here"));
    let response = h.get("/v1/chat/completions").await;
    assert_eq!(response.status(), 405);
    let _: Value = response.json().await.unwrap();
}

#[tokio::test]
async fn a_silent_upstream_stream_gets_keepalive_comments() {
    let h = Harness::start().await;
    h.upstream.push_fault(Fault::StreamStall { after: 2 });
    let text = h.post("/v1/chat/completions", chat(true)).await.text().await.unwrap();
    // The harness sets `sse_keepalive: 100ms`; the stall lasts until the 3 s total timeout.
    assert!(text.matches(": keep-alive\n\n").count() >= 10, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn failover_is_invisible_but_reported_in_x_gateway_attempts() {
    let h = Harness::start_with(
        "  pair:\n    strategy: round_robin\n    deployments: [ { provider: openai, model: gpt-4o-mini }, { provider: mock, model: mock-1 } ]\n",
    )
    .await;
    h.upstream.push_fault(Fault::status(503));
    let response =
        h.post("/v1/chat/completions", json!({"model": "pair", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-gateway-provider"], "mock");
    assert_eq!(response.headers()["x-gateway-attempts"], "openai/gpt-4o-mini=server_error:503, mock/mock-1=ok:200");
    // The next request starts at the other deployment and needs one attempt.
    let response =
        h.post("/v1/chat/completions", json!({"model": "pair", "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(response.headers()["x-gateway-attempts"], "mock/mock-1=ok:200");
}
