//! The `llm-gateway` binary as a user runs it: `check`, `serve` with the built-in demo, refusing
//! an open public listener, SIGHUP reload and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use llm_gateway::testkit::{Fault, MockUpstream};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_llm-gateway");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Dummy secrets so every example validates; `check` only needs them to be set.
const EXAMPLE_ENV: &[(&str, &str)] = &[
    ("OPENAI_API_KEY", "sk-dummy"),
    ("APP_KEY", "app-key-0123456789"),
    ("CHAT_APP_KEY", "chat-key-0123456789"),
    ("AGENT_KEY", "agent-key-0123456789"),
    ("AZURE_OPENAI_API_KEY", "azure-dummy"),
    ("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com"),
    ("GROQ_API_KEY", "gsk-dummy"),
    ("MISTRAL_API_KEY", "mistral-dummy"),
    ("DEEPSEEK_API_KEY", "deepseek-dummy"),
    ("ANTHROPIC_API_KEY", "sk-ant-dummy"),
    ("GEMINI_API_KEY", "gemini-dummy"),
    ("AWS_ACCESS_KEY_ID", "AKIDDUMMY"),
    ("AWS_SECRET_ACCESS_KEY", "aws-secret-dummy"),
];

#[test]
fn check_accepts_every_example() {
    let examples: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(examples.len() >= 5);
    let output = Command::new(BIN).arg("check").args(&examples).envs(EXAMPLE_ENV.iter().copied()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}{}", stdout, String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.matches(": ok (").count(), examples.len(), "{stdout}");
}

#[test]
fn check_reports_file_key_and_fix_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "providers:\n  openai: { kind: openai, api_key: sk-x, base_url: ftp://nope }\nmodels:\n  fast: { deployments: [ { provider: openai, model: m, wieght: 2 } ] }\n").unwrap();
    let output = Command::new(BIN).arg("check").arg(&path).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.yaml: models.fast.deployments[0]"), "{stderr}");
    assert!(stderr.contains("unknown field `wieght`"), "{stderr}");
    assert!(stderr.contains("— remove the key or correct its spelling"), "{stderr}");
}

#[test]
fn refuses_a_public_address_without_client_keys() {
    let output = Command::new(BIN).args(["serve", "--listen", "0.0.0.0:0"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refusing to serve on 0.0.0.0:0 without client keys"), "{stderr}");
}

struct Served {
    child: Child,
    base: String,
    log: std::sync::mpsc::Receiver<String>,
}

impl Served {
    fn start(args: &[&str]) -> Self {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .args(["--listen", &listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let served = Self { child, base: format!("http://{listen}"), log };
        served.wait_for_log("listening on", Duration::from_secs(10));
        served
    }

    fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while let Ok(line) = self.log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if line.contains(needle) {
                return line;
            }
        }
        panic!("no log line containing {needle:?}");
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args(["-s", name, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn serves_the_builtin_demo_offline_and_logs_one_line_per_request() {
    llm_gateway::install_tls_provider();
    let served = Served::start(&[]);
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/chat/completions", served.base))
        .json(&json!({"model": "demo-fast", "messages": [{"role": "user", "content": "a secret prompt"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert!(body["choices"][0]["message"]["content"].as_str().unwrap().starts_with("Mock reply"));
    let line = served.wait_for_log("request finished", Duration::from_secs(5));
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["fields"]["model"], "demo-fast");
    assert_eq!(record["fields"]["status"], 200);
    assert!(!line.contains("a secret prompt"), "prompt text must not be logged by default: {line}");
}

#[tokio::test]
async fn sighup_reloads_and_sigterm_drains_in_flight_requests() {
    llm_gateway::install_tls_provider();
    let upstream = MockUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        format!(
            "server: {{ shutdown_grace: 10s }}\nproviders:\n  up: {{ kind: openai_compatible, base_url: \"{}\" }}\nmodels:\n  m:\n    deployments: [ {{ provider: up, model: m }} ]\n",
            upstream.base_url()
        ),
    )
    .unwrap();
    let served = Served::start(&["--config", path.to_str().unwrap()]);
    served.signal("HUP");
    served.wait_for_log("config reloaded", Duration::from_secs(5));

    upstream.push_fault(Fault::Delay(Duration::from_millis(700)));
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", served.base);
    let in_flight = tokio::spawn(async move {
        client.post(url).json(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})).send().await
    });
    // Signal only once the request is in flight (it has reached the upstream).
    let deadline = Instant::now() + Duration::from_secs(5);
    while upstream.hits() == 0 {
        assert!(Instant::now() < deadline, "the request never reached the upstream");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    served.signal("TERM");
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the in-flight request must complete during the drain");
    let mut served = served;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "gateway did not exit after draining");
        std::thread::sleep(Duration::from_millis(50));
    }
}
