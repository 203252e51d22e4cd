//! multilingual-e5-small (the router's builtin model) on one core: load time, RSS, and single-query
//! latency p50/p99 by input length, with the int8 kernel this CPU runs.
//!
//! Run: `scripts/fetch-model.sh && cargo bench --bench e5`. Prints a table; writes nothing.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use llm_gateway::route::embed::{E5_NAME, E5Small, EmbedError, Embedder, int8_kernel};

fn main() {
    common::main_with("e5", run);
}

fn run() -> Result<(), EmbedError> {
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
    for tokens in [8, 16, 32, 48, 64, 128] {
        let capped = E5Small::load(&dir, tokens)?;
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
        let pct = |p: f64| times[((n as f64 * p).ceil() as usize).saturating_sub(1)].as_secs_f64() * 1e3;
        println!("| {tokens} | {n} | {:.2} ms | {:.2} ms |", pct(0.5), pct(0.99));
    }
    println!("load average after: {}", common::loadavg());
    Ok(())
}
