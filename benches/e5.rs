//! multilingual-e5-small (the router's builtin model) on one core: load time, RSS, and single-query
//! latency p50/p99 by input length, with the int8 kernel this CPU runs; and the character n-gram
//! classifier blended with it: training time on examples/routing.yaml's examples, query latency.
//!
//! Run: `scripts/fetch-model.sh && cargo bench --bench e5`. Prints a table; writes nothing.
//! `E5_BENCH_LAYERS=N` runs the first N encoder layers (`router.embedding.layers`; default all).
//! `E5_BENCH_TOKENS=N` (any N ≥ 3) measures that input length only and skips the n-grams (for a profiler).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use llm_gateway::route::embed::{E5_NAME, E5Small, Embedder, int8_kernel};
use llm_gateway::route::ngram::CharNgrams;

fn main() {
    common::main_with("e5", run);
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(E5_NAME);
    println!("load average at start: {}", common::loadavg());
    let started = Instant::now();
    let model = E5Small::load(&dir, 512)?;
    let loaded = common::rss_kib();
    drop(model);
    println!(
        "load: {:.0} ms; VmRSS {} MiB; int8 kernel: {}",
        started.elapsed().as_secs_f64() * 1e3,
        loaded / 1024,
        int8_kernel()
    );
    println!("\n| tokens (with <s>, </s>) | n | p50 | p99 |\n|---|---|---|---|");
    let text = "Écris une fonction Python qui trie une liste de dictionnaires par date, puis explique la complexité. "
        .repeat(40);
    let only: Option<usize> = std::env::var("E5_BENCH_TOKENS").ok().and_then(|v| v.parse().ok());
    let lengths = only.map_or_else(|| vec![8, 16, 32, 48, 64, 128], |tokens| vec![tokens]);
    for tokens in lengths {
        let capped = load(&dir, tokens)?;
        assert_eq!(capped.token_ids(&text).len(), tokens);
        let n = 200;
        for _ in 0..10 {
            capped.embed(&[text.as_str()])?;
        }
        let mut times: Vec<Duration> = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            std::hint::black_box(capped.embed(&[std::hint::black_box(text.as_str())])?);
            times.push(started.elapsed());
        }
        times.sort();
        let pct = |p: f64| common::percentile(&times, p).as_secs_f64() * 1e3;
        println!("| {tokens} | {n} | {:.2} ms | {:.2} ms |", pct(0.5), pct(0.99));
    }
    if only.is_none() {
        router_instructions(&dir)?;
        char_ngrams()?;
    }
    println!("load average after: {}", common::loadavg());
    Ok(())
}

/// The model cut to `tokens`, running `E5_BENCH_LAYERS` layers if set.
fn load(dir: &Path, tokens: usize) -> Result<E5Small, Box<dyn std::error::Error>> {
    let layers = std::env::var("E5_BENCH_LAYERS").ok().and_then(|v| v.parse().ok());
    Ok(E5Small::load_layers(dir, tokens, layers)?)
}

/// The n-gram classifier is trained at every config load (beside the embedding softmax) and asked
/// once per prompt the embedding tier judges.
fn char_ngrams() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let yaml = std::fs::read_to_string(root.join("examples/routing.yaml"))
        .map_err(|e| format!("examples/routing.yaml: {e}"))?;
    let config = llm_gateway::config::Config::parse("examples/routing.yaml", &yaml, &|_| Some("dummy".into()))
        .map_err(|e| e.to_string())?;
    let router = config.router.ok_or("examples/routing.yaml has no router")?;
    let examples: Vec<(usize, &str)> =
        router.routes.iter().enumerate().flat_map(|(i, r)| r.examples.iter().map(move |e| (i, e.as_str()))).collect();
    let started = Instant::now();
    let model = CharNgrams::train(&examples, router.routes.len());
    println!(
        "\nchar n-grams: trained on {} examples in {:.0} ms",
        examples.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    println!("\n| instruction | n | p50 | p99 |\n|---|---|---|---|");
    let long = "Summarise this incident report for the on-call channel in three bullets, no blame: ".repeat(7);
    for (name, text) in [("short (41 B)", "write a haiku about a failing CI pipeline"), ("long (510 B)", &long[..510])]
    {
        let n = 2000;
        let mut times: Vec<Duration> = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            std::hint::black_box(model.probabilities(std::hint::black_box(text)));
            times.push(started.elapsed());
        }
        times.sort();
        let pct = |p: f64| common::percentile(&times, p).as_secs_f64() * 1e6;
        println!("| {name} | {n} | {:.0} µs | {:.0} µs |", pct(0.5), pct(0.99));
    }
    Ok(())
}

/// The router's real inputs: holdout3's prompts reduced to their instructions (as tier 2 sees
/// them), by token count, one after another and again with a 2 ms sleep before each. A server
/// idles between requests, and a pass after an idle gap is slower (caches and the shared L3 lose
/// the weights; the e5 table above, one text repeated, is the warm case).
fn router_instructions(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let model = load(dir, 64)?;
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/router/holdout3.jsonl");
    let rows = llm_gateway::route::eval::read_rows(&std::fs::read_to_string(&data)?, "holdout3.jsonl")?;
    let instructions: Vec<String> =
        rows.iter().map(|row| llm_gateway::route::instruction::instruction(&row.prompt)).collect();
    println!("\nholdout3 instructions (max_tokens 64), per pass:\n");
    println!("| tokens | n | back to back p50 | p99 | after 2 ms idle p50 | p99 |\n|---|---|---|---|---|---|");
    let mut times: [std::collections::BTreeMap<usize, Vec<Duration>>; 2] = Default::default();
    for (pause, by_length) in [Duration::ZERO, Duration::from_millis(2)].into_iter().zip(&mut times) {
        for _round in 0..3 {
            for text in &instructions {
                let bucket = model.token_ids(text).len().div_ceil(16) * 16;
                std::thread::sleep(pause);
                let started = Instant::now();
                std::hint::black_box(model.embed(&[text.as_str()])?);
                by_length.entry(bucket).or_default().push(started.elapsed());
            }
        }
    }
    let pct = |times: &[Duration], p: f64| common::percentile(times, p).as_secs_f64() * 1e3;
    let [mut warm, mut idle] = times;
    for (bucket, warm) in &mut warm {
        let idle = idle.get_mut(bucket).ok_or("bucket missing")?;
        warm.sort();
        idle.sort();
        println!(
            "| {}–{bucket} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            bucket - 15,
            warm.len() / 3,
            pct(warm, 0.5),
            pct(warm, 0.99),
            pct(idle, 0.5),
            pct(idle, 0.99)
        );
    }
    Ok(())
}
