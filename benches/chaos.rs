//! Chaos benchmark: fault-injecting mock providers (error rates, latency spikes, a full outage,
//! 429 storms, streams that die or stall) called directly and through the gateway with two
//! deployments, measuring success rate and p50/p99. Everything runs in-process on 127.0.0.1.
//!
//! Run: `cargo bench --bench chaos` — prints the table and rewrites the chaos section of
//! BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llm_gateway::Gateway;
use llm_gateway::config::Config;
use llm_gateway::server::RunningServer;
use llm_gateway::testkit::{Chaos, MockUpstream};
use serde_json::json;
use tokio::sync::Semaphore;

const CONCURRENCY: usize = 16;

#[derive(Default)]
struct Stats {
    total: usize,
    ok: usize,
    garbled: usize,
    latencies: Vec<Duration>,
}

impl Stats {
    fn success(&self) -> f64 {
        100.0 * self.ok as f64 / self.total.max(1) as f64
    }
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((sorted.len() as f64) * p).ceil() as usize;
        sorted.get(rank.saturating_sub(1)).copied().unwrap_or_default()
    }
}

/// Whether a streamed body is complete and well-formed: every event parses, it ends with
/// `[DONE]`, and (for `clean`) carries no error event.
fn check_stream(text: &str) -> (bool, bool) {
    let mut garbled = !text.ends_with("data: [DONE]\n\n");
    let mut clean = true;
    for event in text.split("\n\n").filter(|e| !e.is_empty() && !e.starts_with(':')) {
        let Some(data) = event.strip_prefix("data: ") else {
            garbled = true;
            continue;
        };
        if data == "[DONE]" {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(data) {
            Ok(v) if v.get("error").is_some() => clean = false,
            Ok(_) => {}
            Err(_) => garbled = true,
        }
    }
    (!garbled && clean, garbled)
}

async fn one(client: &reqwest::Client, url: &str, model: &str, stream: bool) -> (bool, bool, Duration) {
    let started = Instant::now();
    let body = json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "chaos"}]});
    let result = tokio::time::timeout(Duration::from_secs(5), async {
        let response = client.post(url).json(&body).send().await.ok()?;
        let status = response.status();
        let text = response.text().await.ok();
        Some((status, text))
    })
    .await;
    let (ok, garbled) = match result {
        Ok(Some((status, Some(text)))) if status.is_success() => {
            if stream {
                check_stream(&text)
            } else {
                (serde_json::from_str::<serde_json::Value>(&text).is_ok(), false)
            }
        }
        // A stream cut mid-way surfaces as a body read error: the client got truncated output.
        Ok(Some((status, None))) if status.is_success() && stream => (false, true),
        _ => (false, false),
    };
    (ok, garbled, started.elapsed())
}

/// `count` requests (or as many as fit in `duration`) at a fixed concurrency.
async fn drive(url: String, model: &'static str, stream: bool, count: usize, duration: Option<Duration>) -> Stats {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY * 2).build().unwrap_or_default();
    let gate = Arc::new(Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..count {
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let Ok(permit) = gate.clone().acquire_owned().await else { break };
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let result = one(&client, &url, model, stream).await;
            drop(permit);
            result
        }));
    }
    let mut stats = Stats::default();
    for task in tasks {
        if let Ok((ok, garbled, latency)) = task.await {
            stats.total += 1;
            stats.ok += usize::from(ok);
            stats.garbled += usize::from(garbled);
            stats.latencies.push(latency);
        }
    }
    stats
}

struct Scenario {
    name: &'static str,
    primary: Chaos,
    secondary: Chaos,
    /// A full outage of the primary: (start, length) from the start of each half of the run.
    outage: Option<(Duration, Duration)>,
    /// Extra YAML under the gateway model.
    model_yaml: &'static str,
    stream: bool,
    count: usize,
    duration: Option<Duration>,
}

struct Row {
    name: &'static str,
    direct: Stats,
    gateway: Stats,
}

async fn run(scenario: Scenario) -> Row {
    let primary = MockUpstream::start_on(([127, 0, 0, 1], 0).into(), false, 0).await.unwrap_or_else(|e| panic!("{e}"));
    let secondary =
        MockUpstream::start_on(([127, 0, 0, 1], 0).into(), false, 0).await.unwrap_or_else(|e| panic!("{e}"));
    let yaml = format!(
        "providers:\n  a: {{ kind: openai_compatible, base_url: \"{}\" }}\n  b: {{ kind: openai_compatible, base_url: \"{}\" }}\nmodels:\n  chaos:\n    deployments: [ {{ provider: a, model: m }}, {{ provider: b, model: m }} ]\n{}",
        primary.base_url(),
        secondary.base_url(),
        scenario.model_yaml
    );
    let config = Config::parse("chaos.yaml", &yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let gateway = Gateway::new(config, None).unwrap_or_else(|e| panic!("{e}"));
    let server = RunningServer::start(gateway, ([127, 0, 0, 1], 0).into()).await.unwrap_or_else(|e| panic!("{e}"));

    let with_outage = |mut chaos: Chaos| {
        if let Some((start, length)) = scenario.outage {
            let now = tokio::time::Instant::now();
            chaos.outage = Some((now + start, now + start + length));
        }
        chaos
    };
    primary.set_chaos(with_outage(scenario.primary.clone()));
    let direct = drive(
        format!("{}/chat/completions", primary.base_url()),
        "m",
        scenario.stream,
        scenario.count,
        scenario.duration,
    )
    .await;
    primary.set_chaos(with_outage(scenario.primary.clone()));
    secondary.set_chaos(scenario.secondary.clone());
    let gateway = drive(
        format!("{}/v1/chat/completions", server.url()),
        "chaos",
        scenario.stream,
        scenario.count,
        scenario.duration,
    )
    .await;
    let _ = server.shutdown().await;
    Row { name: scenario.name, direct, gateway }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes --bench; anything else (e.g. `cargo test --all-targets`) only checks it builds.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("chaos: run with `cargo bench --bench chaos`");
        return;
    }
    let base = Chaos { latency: Duration::from_millis(5), ..Chaos::default() };
    let failover = "    timeouts: { first_byte: 2s, total: 3s }\n    retry: { attempts: 2, base: 10ms, max: 200ms }\n    max_attempts: 4\n";
    let scenarios = vec![
        Scenario {
            name: "errors: primary 1 % 500s, second deployment 10 % 500s",
            primary: Chaos { error_rate: 0.01, ..base.clone() },
            secondary: Chaos { error_rate: 0.10, ..base.clone() },
            outage: None,
            model_yaml: failover,
            stream: false,
            count: 10_000,
            duration: None,
        },
        Scenario {
            name: "latency spikes: 5 % of requests +1 s on both",
            primary: Chaos { spike_rate: 0.05, spike_latency: Duration::from_secs(1), ..base.clone() },
            secondary: Chaos { spike_rate: 0.05, spike_latency: Duration::from_secs(1), ..base.clone() },
            outage: None,
            model_yaml: "    timeouts: { first_byte: 2s, total: 3s }\n    strategy: least_latency\n    hedge: { after: 50ms, max_extra_percent: 10 }\n",
            stream: false,
            count: 2_000,
            duration: None,
        },
        Scenario {
            name: "outage: primary down (503) for 2 s of a 4 s run",
            primary: base.clone(),
            secondary: base.clone(),
            outage: Some((Duration::from_secs(1), Duration::from_secs(2))),
            model_yaml: failover,
            stream: false,
            count: usize::MAX,
            duration: Some(Duration::from_secs(4)),
        },
        Scenario {
            name: "429 storm: primary rate-limits 30 %",
            primary: Chaos { rate_limit_rate: 0.30, ..base.clone() },
            secondary: base.clone(),
            outage: None,
            model_yaml: failover,
            stream: false,
            count: 5_000,
            duration: None,
        },
        Scenario {
            name: "streams: primary cuts 5 % and stalls 2 % mid-way",
            primary: Chaos { stream_cut_rate: 0.05, stream_stall_rate: 0.02, ..base.clone() },
            secondary: base.clone(),
            outage: None,
            model_yaml: "    stream_failover: continue\n    timeouts: { first_byte: 2s, total: 1s }\n",
            stream: true,
            count: 2_000,
            duration: None,
        },
    ];
    let mut rows = Vec::new();
    for scenario in scenarios {
        eprintln!("running: {}", scenario.name);
        rows.push(run(scenario).await);
    }
    let mut table = String::from(
        "| scenario | requests | direct success % | gateway success % | direct p50 ms | gateway p50 ms | direct p99 ms | gateway p99 ms | p99 change | garbled streams direct / gateway |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for row in &rows {
        let (d99, g99) = (row.direct.percentile(0.99), row.gateway.percentile(0.99));
        let change = 100.0 * (g99.as_secs_f64() - d99.as_secs_f64()) / d99.as_secs_f64().max(1e-9);
        table.push_str(&format!(
            "| {} | {} / {} | {:.2} | {:.3} | {} | {} | {} | {} | {:+.0} % | {} / {} |\n",
            row.name,
            row.direct.total,
            row.gateway.total,
            row.direct.success(),
            row.gateway.success(),
            ms(row.direct.percentile(0.5)),
            ms(row.gateway.percentile(0.5)),
            ms(d99),
            ms(g99),
            change,
            row.direct.garbled,
            row.gateway.garbled,
        ));
    }
    println!("{table}");
    let section = format!(
        "<!-- chaos:begin -->\n## Chaos benchmark\n\nGenerated by `cargo bench --bench chaos` ({}). Two mock deployments speaking the OpenAI wire format over loopback HTTP, 5 ms base latency, {CONCURRENCY} concurrent clients, 5 s client timeout. *Direct* calls the primary deployment; *gateway* calls a model with both deployments (config per scenario in `benches/chaos.rs`). Success = HTTP 200 with a well-formed body (streams: every event valid JSON, no error event, ends with `[DONE]`).\n\n{table}\n<!-- chaos:end -->\n",
        chrono_like_now()
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/BENCHMARKS.md");
    let current = std::fs::read_to_string(path).unwrap_or_default();
    let updated = match (current.find("<!-- chaos:begin -->"), current.find("<!-- chaos:end -->")) {
        (Some(start), Some(end)) => {
            format!(
                "{}{}{}",
                &current[..start],
                section,
                &current[end + "<!-- chaos:end -->\n".len().min(current.len() - end)..]
            )
        }
        _ => format!("{current}\n{section}"),
    };
    if let Err(e) = std::fs::write(path, updated) {
        eprintln!("cannot update {path}: {e}");
    }
}

fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("unix time {secs}")
}
