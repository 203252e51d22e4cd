//! The reliability engine on paused time: scripted `mock` deployments (no sockets, no real
//! sleeps) drive retries, Retry-After, every fallback class, the latency budget, circuit states,
//! canary recovery, hedging and invisible stream failover through the real pipeline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use llm_gateway::balance::State;
use llm_gateway::config::Config;
use llm_gateway::engine::pipeline::{self, Output};
use llm_gateway::engine::{Shared, Snapshot};
use llm_gateway::error::GatewayError;
use llm_gateway::telemetry::RequestRecord;
use serde_json::{Value, json};
use tokio::time::Instant;

fn snapshot(yaml: &str) -> Arc<Snapshot> {
    let config = Config::parse("reliability.yaml", yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Snapshot::build(config, &Shared::default()).unwrap())
}

struct Outcome {
    result: Result<Value, GatewayError>,
    record: RequestRecord,
    elapsed: Duration,
}

impl Outcome {
    fn attempts(&self) -> &str {
        self.record.attempts.as_deref().unwrap_or("")
    }
    fn served_by(&self) -> String {
        format!(
            "{}/{}",
            self.record.provider.as_deref().unwrap_or("-"),
            self.record.upstream_model.as_deref().unwrap_or("-")
        )
    }
}

async fn ask_with(snap: &Arc<Snapshot>, model: &str, headers: &HeaderMap, stream: bool) -> Outcome {
    let body = json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut record = RequestRecord::new("t".into(), "chat_completions");
    let started = Instant::now();
    let result = pipeline::chat_completions(snap, &mut record, headers, body.as_bytes()).await;
    let result = match result {
        Ok(Output::Json(bytes)) => Ok(serde_json::from_slice(&bytes).unwrap()),
        Ok(Output::Stream(mut sse)) => {
            use futures_util::StreamExt;
            let mut text = Vec::new();
            while let Some(Ok(bytes)) = sse.next().await {
                text.extend_from_slice(&bytes);
            }
            // The body accounts the request when it is dropped: collect its record.
            drop(sse);
            Ok(Value::String(String::from_utf8(text).unwrap()))
        }
        Err(e) => Err(e),
    };
    Outcome { result, record, elapsed: started.elapsed() }
}

async fn ask(snap: &Arc<Snapshot>, model: &str) -> Outcome {
    ask_with(snap, model, &HeaderMap::new(), false).await
}

fn mock(name: &str, script: &str) -> String {
    format!("  {name}: {{ kind: mock, mock: {{ latency: 50ms, script: [{script}] }} }}\n")
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_with_jitter_then_succeed() {
    let snap = snapshot(&format!(
        "providers:\n{}models:\n  m:\n    deployments: [ {{ provider: a, model: a1 }} ]\n    retry: {{ attempts: 3, base: 200ms, max: 5s }}\n",
        mock("a", "\"500\", \"503\", ok")
    ));
    let out = ask(&snap, "m").await;
    assert!(out.result.is_ok(), "{:?}", out.result.err());
    assert_eq!(out.attempts(), "a/a1=server_error:500, a/a1=server_error:503, a/a1=ok:200");
    // Three 50 ms answers plus two full-jitter waits capped at 200 ms and 400 ms.
    assert!(
        out.elapsed >= Duration::from_millis(150) && out.elapsed <= Duration::from_millis(750),
        "{:?}",
        out.elapsed
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_when_it_fits_the_budget() {
    let yaml = |budget: &str| {
        format!(
            "providers:\n{}models:\n  m:\n    deployments: [ {{ provider: a, model: a1 }} ]\n    retry: {{ attempts: 2 }}\n    budget: {budget}\n",
            mock("a", "\"429:3\", ok")
        )
    };
    let out = ask(&snapshot(&yaml("10s")), "m").await;
    assert!(out.result.is_ok());
    assert!(out.elapsed >= Duration::from_secs(3) && out.elapsed < Duration::from_millis(3200), "{:?}", out.elapsed);

    // Retry-After 3 s does not fit a 2 s budget: fail now rather than wait past the deadline.
    let out = ask(&snapshot(&yaml("2s")), "m").await;
    assert!(matches!(out.result, Err(GatewayError::UpstreamRateLimited { .. })));
    assert!(out.elapsed < Duration::from_millis(200), "{:?}", out.elapsed);
}

#[tokio::test(start_paused = true)]
async fn fails_over_to_the_next_deployment_then_to_fallback_models_by_class() {
    let snap = snapshot(&format!(
        "providers:\n{}{}{}{}models:\n  main:\n    strategy: round_robin\n    deployments: [ {{ provider: a, model: a1 }}, {{ provider: b, model: b1 }} ]\n    fallbacks: [ {{ model: big, on: [context_window_exceeded] }}, {{ model: backup, on: [server_error, rate_limited] }} ]\n  big:\n    deployments: [ {{ provider: c, model: big-context }} ]\n  backup:\n    deployments: [ {{ provider: c, model: backup-model }} ]\n",
        mock("a", "\"500\", context_overflow, \"429\", content_filter"),
        mock("b", "\"502\", ok, \"429\""),
        mock("c", "ok, ok, ok"),
        ""
    ));
    // Request 1: a fails (500), b fails (502): both deployments down → server_error fallback.
    let out = ask(&snap, "main").await;
    assert_eq!(out.attempts(), "a/a1=server_error:500, b/b1=server_error:502, c/backup-model=ok:200");
    assert_eq!(out.record.model.as_deref(), Some("backup"));
    // Request 2 (round robin starts at b): b answers.
    let out = ask(&snap, "main").await;
    assert_eq!(out.served_by(), "b/b1");
    // Request 3: a says the prompt is too long: the other deployment would say the same, so
    // straight to the model with a larger context.
    let out = ask(&snap, "main").await;
    assert_eq!(out.attempts(), "a/a1=upstream_rejected:400, c/big-context=ok:200");
    // Request 4: b 429 then a 429 → rate_limited fallback.
    let out = ask(&snap, "main").await;
    assert_eq!(out.attempts(), "b/b1=rate_limited:429, a/a1=rate_limited:429, c/backup-model=ok:200");
    // Request 5: content filtered has no rule: the error reaches the client.
    let out = ask(&snap, "main").await;
    let err = out.result.as_ref().unwrap_err();
    assert_eq!(err.status().as_u16(), 400);
    assert_eq!(out.attempts(), "a/a1=upstream_rejected:400");
}

#[tokio::test(start_paused = true)]
async fn explicit_status_lists_and_timeouts_trigger_fallbacks() {
    let snap = snapshot(&format!(
        "providers:\n{}{}models:\n  main:\n    deployments: [ {{ provider: a, model: a1 }} ]\n    timeouts: {{ first_byte: 1s, total: 5s }}\n    fallbacks: [ {{ model: spare, on_status: [418] }}, {{ model: spare, on: [timeout] }} ]\n  spare:\n    deployments: [ {{ provider: b, model: b1 }} ]\n",
        mock("a", "\"418\", hang"),
        mock("b", "ok, ok")
    ));
    let out = ask(&snap, "main").await;
    assert_eq!(out.attempts(), "a/a1=server_error:418, b/b1=ok:200");
    let out = ask(&snap, "main").await;
    assert_eq!(out.attempts(), "a/a1=timeout:504, b/b1=ok:200");
    assert!(out.elapsed >= Duration::from_secs(1) && out.elapsed < Duration::from_millis(1200), "{:?}", out.elapsed);
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_past_the_latency_budget() {
    let snap = snapshot(&format!(
        "providers:\n{}models:\n  m:\n    deployments: [ {{ provider: a, model: a1 }}, {{ provider: a, model: a2 }}, {{ provider: a, model: a3 }} ]\n    timeouts: {{ first_byte: 4s, total: 30s }}\n    budget: 6s\n    max_attempts: 10\n",
        mock("a", "hang, hang, hang")
    ));
    let out = ask(&snap, "m").await;
    assert!(matches!(out.result, Err(GatewayError::UpstreamTimeout { .. })));
    // 4 s for the first attempt, the second is cut to the 2 s left, and a third never starts.
    assert_eq!(out.elapsed, Duration::from_secs(6));
    assert_eq!(out.attempts().matches("timeout").count(), 2, "{}", out.attempts());
}

#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_everything() {
    let snap = snapshot(&format!(
        "providers:\n{}models:\n  m:\n    deployments: [ {{ provider: a, model: a1 }}, {{ provider: a, model: a2 }} ]\n    retry: {{ attempts: 5, base: 10ms }}\n    max_attempts: 3\n",
        mock("a", "\"500\", \"500\", \"500\", \"500\", \"500\", \"500\"")
    ));
    let out = ask(&snap, "m").await;
    assert!(out.result.is_err());
    assert_eq!(out.attempts().matches("server_error").count(), 3);
}

#[tokio::test(start_paused = true)]
async fn circuit_opens_then_canary_probes_recover_it() {
    let snap = snapshot(&format!(
        "providers:\n{}{}models:\n  m:\n    strategy: round_robin\n    deployments: [ {{ provider: a, model: a1 }}, {{ provider: b, model: b1 }} ]\n    health: {{ open_after: 3, cooldown: 10s, canary_share: 0.5 }}\n",
        mock("a", "\"500\", \"500\", \"500\""),
        mock("b", "")
    ));
    let health = |i: usize| snap.models["m"].members[i].health.state();
    for _ in 0..6 {
        ask(&snap, "m").await;
    }
    assert!(matches!(health(0), State::Open { .. }), "{:?}", health(0));
    // While open, a gets no traffic at all.
    for _ in 0..20 {
        assert_eq!(ask(&snap, "m").await.attempts(), "b/b1=ok:200");
    }
    // After the cooldown, canary probes reach a again; it answers and recovers gradually.
    tokio::time::advance(Duration::from_secs(11)).await;
    let mut probed = 0;
    for _ in 0..40 {
        if ask(&snap, "m").await.served_by() == "a/a1" {
            probed += 1;
        }
    }
    assert!(probed > 0);
    assert!(matches!(health(0), State::Recovering { .. } | State::Healthy), "{:?}", health(0));
}

#[tokio::test(start_paused = true)]
async fn hedge_wins_when_the_primary_is_slow_and_the_loser_is_cancelled() {
    let snap = snapshot(&format!(
        "providers:\n{}{}models:\n  m:\n    strategy: round_robin\n    deployments: [ {{ provider: slow, model: s1 }}, {{ provider: fast, model: f1 }} ]\n    hedge: {{ after: 300ms, max_extra_percent: 100 }}\n",
        mock("slow", "\"delay:5s\""),
        mock("fast", "ok")
    ));
    let out = ask(&snap, "m").await;
    assert!(out.result.is_ok());
    assert_eq!(out.attempts(), "~fast/f1=ok:200, slow/s1=cancelled:0");
    assert_eq!(out.elapsed, Duration::from_millis(350), "hedged after 300 ms, answered 50 ms later");
    assert_eq!(snap.models["m"].members[0].health.in_flight(), 0, "the slow attempt was dropped");
}

#[tokio::test(start_paused = true)]
async fn hedge_budget_caps_extra_calls() {
    let snap = snapshot(&format!(
        "providers:\n{}models:\n  m:\n    deployments: [ {{ provider: a, model: a1 }}, {{ provider: a, model: a2 }} ]\n    hedge: {{ after: 10ms, max_extra_percent: 10 }}\n",
        mock("a", "")
    ));
    let mut hedged = 0;
    for _ in 0..100 {
        if ask(&snap, "m").await.attempts().contains('~') {
            hedged += 1;
        }
    }
    // Every request is slow enough to hedge (50 ms > 10 ms) but only 10 % may.
    assert_eq!(hedged, 10);
}

#[tokio::test(start_paused = true)]
async fn a_stream_failing_before_its_first_chunk_fails_over_invisibly() {
    let snap = snapshot(&format!(
        "providers:\n{}{}models:\n  m:\n    strategy: round_robin\n    deployments: [ {{ provider: a, model: a1 }}, {{ provider: b, model: b1 }} ]\n",
        mock("a", "cut:0"),
        mock("b", "ok")
    ));
    let out = ask_with(&snap, "m", &HeaderMap::new(), true).await;
    let text = out.result.as_ref().unwrap().as_str().unwrap().to_string();
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(!text.contains("error"), "{text}");
    assert!(text.contains("\"model\":\"b1\""), "{text}");
    assert_eq!(out.attempts(), "a/a1=unreachable:502, b/b1=ok:200");
}

#[tokio::test(start_paused = true)]
async fn sticky_sessions_keep_an_agent_on_one_deployment() {
    let snap = snapshot(&format!(
        "providers:\n{}models:\n  m:\n    deployments: [ {{ provider: a, model: a1 }}, {{ provider: a, model: a2 }}, {{ provider: a, model: a3 }} ]\n    sticky: {{ header: x-session-id, ttl: 10m }}\n",
        mock("a", "")
    ));
    let mut headers = HeaderMap::new();
    headers.insert("x-session-id", "agent-42".parse().unwrap());
    let first = ask_with(&snap, "m", &headers, false).await.served_by();
    for _ in 0..20 {
        assert_eq!(ask_with(&snap, "m", &headers, false).await.served_by(), first);
    }
    // Without a session the traffic spreads.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        seen.insert(ask(&snap, "m").await.served_by());
    }
    assert!(seen.len() > 1, "{seen:?}");
}

/// The `data:` payloads of a stream, `[DONE]` excluded.
fn chunks(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn stream_dying_mid_way_resumes_on_another_deployment_as_one_stream() {
    let snap = snapshot(&format!(
        "providers:\n{}{}models:\n  m:\n    strategy: round_robin\n    stream_failover: continue\n    deployments: [ {{ provider: a, model: a1 }}, {{ provider: b, model: b1 }} ]\n",
        mock("a", "cut:4"),
        mock("b", "ok")
    ));
    let out = ask_with(&snap, "m", &HeaderMap::new(), true).await;
    let text = out.result.as_ref().unwrap().as_str().unwrap().to_string();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks = chunks(&text);
    assert!(chunks.iter().all(|c| c.get("error").is_none()), "{text}");
    let roles = chunks.iter().filter(|c| !c["choices"][0]["delta"]["role"].is_null()).count();
    assert_eq!(roles, 1, "one role chunk: {text}");
    let ids: std::collections::HashSet<&str> = chunks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one id throughout: {ids:?}");
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    // a1 streamed "Mock reply from" and died; b1 restated that and went on: the repeat is trimmed.
    assert!(content.starts_with("Mock reply from b1: you said"), "{content}");
    assert_eq!(content.matches("Mock reply from").count(), 1, "{content}");
    let finish = chunks.iter().find(|c| c["choices"][0]["finish_reason"].is_string()).unwrap();
    assert_eq!(finish["x_gateway"]["resumed_on"], "b/b1");
}

#[tokio::test(start_paused = true)]
async fn content_filter_and_credential_failures_have_their_own_fallbacks() {
    let snap = snapshot(&format!(
        "providers:\n{}{}models:\n  main:\n    deployments: [ {{ provider: a, model: a1 }} ]\n    fallbacks: [ {{ model: lenient, on: [content_filtered] }}, {{ model: other-account, on: [auth] }} ]\n  lenient:\n    deployments: [ {{ provider: b, model: lenient-model }} ]\n  other-account:\n    deployments: [ {{ provider: b, model: other-model }} ]\n",
        mock("a", "content_filter, \"401\""),
        mock("b", "ok, ok")
    ));
    let out = ask(&snap, "main").await;
    assert_eq!(out.attempts(), "a/a1=upstream_rejected:400, b/lenient-model=ok:200");
    let out = ask(&snap, "main").await;
    assert_eq!(out.attempts(), "a/a1=upstream_auth:401, b/other-model=ok:200");
}
