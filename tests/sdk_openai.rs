//! The official `openai` Python SDK against the real gateway and a mock upstream: chat (plain,
//! streamed with usage, tool round trips), embeddings, models and the error classes the SDK maps
//! statuses to. The checks live in `tests/sdk/test_openai_sdk.py`; this test starts the servers,
//! runs the script and then checks what the upstream was sent.
//!
//! Python comes from `LLM_GATEWAY_TEST_PYTHON`, else `.venv/bin/python` (made by
//! `scripts/setup-python.sh`). Without a Python that imports `openai` the test is skipped, or
//! fails when `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{CLIENT_KEY, Harness, PROVIDER_KEY};
use llm_gateway::testkit::{Fault, Recorded};
use serde_json::{Value, json};

const SCRIPT: &str = "tests/sdk/test_openai_sdk.py";
const SETUP: &str = "scripts/setup-python.sh";
const RETRY_AFTER: &str = "7";
const SCRIPT_TIME_LIMIT: Duration = Duration::from_secs(180);
/// Must match the script's prompts.
const PROMPT: &str = "hello from the python sdk";
const TOOL_RESULT: &str = "18C and sunny";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The interpreter to use, or why there is none.
fn find_python() -> Result<PathBuf, String> {
    let python = match std::env::var_os("LLM_GATEWAY_TEST_PYTHON").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => repo().join(".venv/bin/python"),
    };
    if !python.exists() {
        return Err(format!("no Python interpreter at {}", python.display()));
    }
    let probe = Command::new(&python)
        .args(["-c", "import openai, sys; sys.stdout.write(openai.__version__)"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !probe.status.success() {
        let stderr = String::from_utf8_lossy(&probe.stderr);
        let why = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(format!("`import openai` fails with {}: {}", python.display(), why.trim()));
    }
    eprintln!("sdk_openai: {} (openai {})", python.display(), String::from_utf8_lossy(&probe.stdout));
    Ok(python)
}

struct Run {
    status: Option<std::process::ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs the script to completion (killing it after [`SCRIPT_TIME_LIMIT`]), capturing its output.
fn run_script(python: &Path, envs: &[(&str, String)]) -> Run {
    let mut child = Command::new(python)
        .arg(repo().join(SCRIPT))
        .current_dir(repo())
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

fn user_text(request: &Recorded) -> Option<&str> {
    request.body["messages"].as_array()?.last()?["content"].as_str()
}

fn describe(requests: &[Recorded]) -> String {
    requests.iter().map(|r| format!("{} {} {}\n", r.method, r.path, r.body)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_python_sdk_round_trips_through_the_gateway() {
    let python = match find_python() {
        Ok(python) => python,
        Err(why) if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => {
            panic!("{why}; CI needs the Python SDK: run `{SETUP}` first")
        }
        Err(why) => {
            eprintln!("sdk_openai skipped: {why}; run `{SETUP}` to enable this test");
            return;
        }
    };

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
    let run = tokio::task::spawn_blocking(move || run_script(&python, &envs)).await.unwrap();
    let output = format!("--- stdout ---\n{}--- stderr ---\n{}", run.stdout, run.stderr);
    match run.status {
        None => panic!("{SCRIPT} ran longer than {SCRIPT_TIME_LIMIT:?} and was killed\n{output}"),
        Some(status) if !status.success() => panic!("{SCRIPT} failed ({status})\n{output}"),
        Some(_) => println!("{output}"),
    }

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
