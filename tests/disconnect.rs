//! A client that goes away cancels the upstream request and is accounted as `client_closed` (499).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::Harness;
use llm_gateway::testkit::Fault;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Requests for `model` accounted as closed by the client (tests run in parallel and share the
/// process-wide metrics, so each test uses its own model).
async fn closed_count(h: &Harness, model: &str) -> u64 {
    let label = format!("model=\"{model}\"");
    let metrics = h.http.get(h.url("/metrics")).send().await.unwrap().text().await.unwrap();
    metrics
        .lines()
        .filter(|l| l.starts_with("gateway_requests_total{") && l.contains("status=\"499\"") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn client_leaving_a_slow_request_is_accounted_at_once() {
    let h = Harness::start().await;
    h.upstream.push_fault(Fault::Delay(Duration::from_millis(1500)));
    let before = closed_count(&h, "gpt").await;
    let client = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let result = client
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(common::CLIENT_KEY)
        .json(&json!({"model": "gpt", "messages": [{"role": "user", "content": "slow"}]}))
        .send()
        .await;
    assert!(result.is_err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(closed_count(&h, "gpt").await, before + 1);
}

#[tokio::test]
async fn client_leaving_a_stream_stops_it() {
    let h = Harness::start().await;
    h.upstream.push_fault(Fault::StreamStall { after: 3 });
    let before = closed_count(&h, "no-stream-usage").await;
    // A raw socket, so closing it is unambiguous (no client-side connection pool).
    let mut socket = tokio::net::TcpStream::connect(h.server.addr).await.unwrap();
    let body =
        json!({"model": "no-stream-usage", "stream": true, "messages": [{"role": "user", "content": "x"}]}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        common::CLIENT_KEY,
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = socket.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    drop(socket);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(closed_count(&h, "no-stream-usage").await, before + 1);
}
