//! Hot reload: a valid file change swaps the snapshot, an invalid one is rejected while the old
//! config keeps serving, and in-flight requests finish on the config they started with.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use llm_gateway::Gateway;
use llm_gateway::config::Config;
use llm_gateway::server::RunningServer;
use llm_gateway::testkit::{Fault, MockUpstream};
use serde_json::{Value, json};

fn config_text(upstream: &MockUpstream, models: &[&str]) -> String {
    let mut text =
        format!("providers:\n  up: {{ kind: openai_compatible, base_url: \"{}\" }}\nmodels:\n", upstream.base_url());
    for model in models {
        text.push_str(&format!("  {model}:\n    deployments: [ {{ provider: up, model: {model}-upstream }} ]\n"));
    }
    text
}

/// Replaces the file the way editors and ConfigMaps do: write a temp file, then rename over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn model_ids(client: &reqwest::Client, base: &str) -> Vec<String> {
    let list: Value = client.get(format!("{base}/v1/models")).send().await.unwrap().json().await.unwrap();
    list["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

async fn wait_for_models(client: &reqwest::Client, base: &str, expected: &[&str]) {
    for _ in 0..100 {
        if model_ids(client, base).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("models never became {expected:?}; still {:?}", model_ids(client, base).await);
}

#[tokio::test]
async fn file_changes_reload_and_bad_files_are_rejected() {
    let upstream = MockUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config_text(&upstream, &["alpha"])).unwrap();
    let gateway = Gateway::new(Config::load(&path).unwrap(), Some(path.clone())).unwrap();
    let _watcher = llm_gateway::reload::spawn(gateway.clone()).unwrap();
    let server = RunningServer::start(gateway.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = reqwest::Client::new();
    let base = server.url();
    assert_eq!(model_ids(&client, &base).await, ["alpha"]);

    replace(&path, &config_text(&upstream, &["alpha", "beta"]));
    wait_for_models(&client, &base, &["alpha", "beta"]).await;

    // An invalid file is logged and rejected; the previous snapshot keeps serving.
    replace(&path, "models:\n  gamma: { deployments: [ { provider: ghost, model: x } ] }\n");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(model_ids(&client, &base).await, ["alpha", "beta"]);
    let err = gateway.reload().unwrap_err();
    assert!(err.contains("gateway.yaml: models.gamma.deployments[0].provider: unknown provider \"ghost\""), "{err}");
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "beta", "messages": [{"role": "user", "content": "still here?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("gateway_config_reloads_total{result=\"rejected\"}"), "{metrics}");
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_config_they_started_with() {
    let upstream = MockUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config_text(&upstream, &["old"])).unwrap();
    let gateway = Gateway::new(Config::load(&path).unwrap(), Some(path.clone())).unwrap();
    let server = RunningServer::start(gateway.clone(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = server.url();

    upstream.push_fault(Fault::Delay(Duration::from_millis(500)));
    let client = reqwest::Client::new();
    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/v1/chat/completions");
        async move {
            client
                .post(url)
                .json(&json!({"model": "old", "messages": [{"role": "user", "content": "slow"}]}))
                .send()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    std::fs::write(&path, config_text(&upstream, &["new"])).unwrap();
    gateway.reload().unwrap();
    assert_eq!(model_ids(&client, &base).await, ["new"]);

    let response = in_flight.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-gateway-model"], "old");
    assert_eq!(response.headers()["x-gateway-upstream-model"], "old-upstream");
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "old", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn a_reload_cannot_open_a_public_listener() {
    let upstream = MockUpstream::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let with_keys =
        format!("auth:\n  keys: [ {{ name: a, key: \"0123456789abcdef\" }} ]\n{}", config_text(&upstream, &["m"]));
    std::fs::write(&path, &with_keys).unwrap();
    let gateway = Gateway::new(Config::load(&path).unwrap(), Some(path.clone())).unwrap();
    gateway.set_listen("0.0.0.0:8080".parse().unwrap());
    std::fs::write(&path, config_text(&upstream, &["m"])).unwrap();
    let err = gateway.reload().unwrap_err();
    assert!(err.contains("refusing to serve on 0.0.0.0:8080 without client keys"), "{err}");
    assert!(!gateway.snapshot().config.client_keys.is_empty());
}
