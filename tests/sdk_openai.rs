//! The official `openai` Python SDK against the real gateway and a mock upstream: chat (plain,
//! streamed with usage, tool round trips), embeddings, models and the error classes the SDK maps
//! statuses to. The checks live in `tests/sdk/test_openai_sdk.py`; this test starts the servers,
//! runs the script and then checks what the upstream was sent.
//! See `tests/common/python.rs` for how the interpreter is found.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{CLIENT_KEY, Harness, PROVIDER_KEY, python};
use llm_gateway::testkit::{Fault, Recorded};
use serde_json::{Value, json};

const SCRIPT: &str = "tests/sdk/test_openai_sdk.py";
const RETRY_AFTER: &str = "7";
/// Must match the script's prompts.
const PROMPT: &str = "hello from the python sdk";
const TOOL_RESULT: &str = "18C and sunny";

fn user_text(request: &Recorded) -> Option<&str> {
    request.body["messages"].as_array()?.last()?["content"].as_str()
}

fn describe(requests: &[Recorded]) -> String {
    requests.iter().map(|r| format!("{} {} {}\n", r.method, r.path, r.body)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_round_trips_through_the_gateway() {
    let Some(python) = python::python_or_skip("sdk_openai", &["openai"]) else { return };

    let h = Harness::start().await;
    // The script's first two requests that reach the upstream consume these, in order.
    h.upstream.push_fault(Fault::rate_limited(RETRY_AFTER));
    h.upstream.push_fault(Fault::StreamCut { after: 3 });
    let envs = vec![
        ("LLM_GATEWAY_BASE_URL", format!("{}/v1", h.server.url())),
        ("LLM_GATEWAY_API_KEY", CLIENT_KEY.to_string()),
        ("LLM_GATEWAY_CHAT_MODEL", "gpt".to_string()),
        ("LLM_GATEWAY_UPSTREAM_MODEL", "gpt-4o-mini".to_string()),
        ("LLM_GATEWAY_EMBED_MODEL", "embed".to_string()),
        ("LLM_GATEWAY_MODELS", "gpt,embed,azure-gpt,no-stream-usage,offline".to_string()),
        ("LLM_GATEWAY_RETRY_AFTER", RETRY_AFTER.to_string()),
    ];
    let output = tokio::task::spawn_blocking(move || python::run_script(&python, SCRIPT, &envs)).await.unwrap();
    println!("{output}");

    // What the upstream was sent, in the script's order.
    let requests = h.upstream.requests();
    let all = describe(&requests);
    for r in &requests {
        assert_eq!(r.headers["authorization"], format!("Bearer {PROVIDER_KEY}"), "{all}");
        let headers = format!("{:?}", r.headers);
        assert!(
            !headers.contains(CLIENT_KEY) && !headers.contains("not-a-real-key"),
            "client key leaked upstream: {headers}"
        );
    }
    // 429, cut stream, chat, stream with usage, stream without, tool call + follow-up, streamed
    // tool call, stream helper, async stream, embeddings. Bad keys, invalid requests and unknown
    // models never reach it.
    assert_eq!(requests.len(), 11, "unexpected upstream requests:\n{all}");
    assert_eq!(user_text(&requests[0]), Some("rate limit me"), "the 429 must be the first upstream request:\n{all}");
    assert_eq!(user_text(&requests[1]), Some("cut me off"), "the cut stream must be the second:\n{all}");
    assert_eq!(requests[1].body["stream"], true);

    let chats: Vec<&Recorded> = requests.iter().filter(|r| r.path == "/v1/chat/completions").collect();
    assert!(chats.iter().all(|r| r.body["model"] == "gpt-4o-mini"), "{all}");
    let plain: Vec<&&Recorded> = chats.iter().filter(|r| user_text(r) == Some(PROMPT)).collect();
    // Non-streamed, streamed with usage, streamed without usage, async streamed.
    assert_eq!(plain.len(), 4, "{all}");
    assert!(plain[0].body.get("stream").is_none_or(|s| s == false), "{}", plain[0].body);
    for streamed in &plain[1..] {
        assert_eq!(streamed.body["stream"], true, "{}", streamed.body);
        // Asked for by the client (plain[1]) or added by the gateway (the others) to count tokens.
        assert_eq!(streamed.body["stream_options"]["include_usage"], true, "{}", streamed.body);
    }

    // Tool calls: the tool definition and the forced choice pass through verbatim.
    let tool_asks: Vec<&&Recorded> = chats.iter().filter(|r| r.body.get("tool_choice").is_some()).collect();
    assert_eq!(tool_asks.len(), 3, "plain, streamed and stream-helper tool calls:\n{all}");
    for ask in &tool_asks {
        assert_eq!(ask.body["tool_choice"], json!({"type": "function", "function": {"name": "get_weather"}}));
        assert_eq!(ask.body["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(ask.body["tools"][0]["function"]["parameters"]["required"], json!(["city"]));
    }
    // The follow-up carries the assistant's tool call and the tool result.
    let follow_ups: Vec<&&Recorded> = chats
        .iter()
        .filter(|r| r.body["messages"].as_array().is_some_and(|m| m.iter().any(|m| m["role"] == "tool")))
        .collect();
    assert_eq!(follow_ups.len(), 1, "{all}");
    let messages = follow_ups[0].body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{}", follow_ups[0].body);
    let assistant = &messages[1];
    assert_eq!(assistant["role"], "assistant");
    let call = &assistant["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "mock-city"}));
    let tool = &messages[2];
    assert_eq!(tool["role"], "tool");
    assert_eq!(tool["tool_call_id"], call["id"]);
    assert_eq!(tool["content"], TOOL_RESULT);

    // Embeddings: the SDK's default `encoding_format: base64` reaches the upstream unchanged.
    let embeddings: Vec<&Recorded> = requests.iter().filter(|r| r.path == "/v1/embeddings").collect();
    assert_eq!(embeddings.len(), 1, "{all}");
    assert_eq!(embeddings[0].body["model"], "text-embedding-3-small");
    assert_eq!(embeddings[0].body["input"], json!(["a", "b"]));
    assert_eq!(embeddings[0].body["encoding_format"], "base64");
}
