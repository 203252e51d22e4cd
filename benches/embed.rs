//! Embedding benchmark: MiniLM load time and RSS, single-query latency (p50/p99) for a short and a
//! 128-token input on one thread, static-table distillation time and size, static-embedder latency for a
//! short and a 4,000-token input, and intent accuracy of both on the router dev set (nearest centroid of
//! `datasets/router/tune.jsonl`, scored on `test.jsonl`).
//!
//! Run: `scripts/fetch-model.sh && cargo bench --bench embed` (add `CANDLE_NUM_THREADS=1` to keep
//! candle's element-wise ops on one core too; see `src/route/embed.rs`). Prints a table; writes nothing
//! but the distilled table under `target/embed-bench/`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use llm_gateway::route::embed::{
    DEFAULT_MODEL_DIR, EmbedError, Embedder, MiniLm, StaticEmbedder, candle_elementwise_threads, cosine,
};

const SHORT: &str = "How do I reverse a linked list in Rust?";

fn main() {
    common::main_with("embed", run);
}

fn run() -> Result<(), EmbedError> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join(DEFAULT_MODEL_DIR);
    println!("load average at start: {} (other work on the machine skews the latencies)", common::loadavg());
    println!(
        "candle element-wise threads: {} (MiniLM calls run gemm/softmax on 1 thread)",
        candle_elementwise_threads()
    );
    let rss_before = common::rss_kib();
    let started = Instant::now();
    let minilm = MiniLm::load(&dir)?;
    let load = started.elapsed();
    let rss_model = common::rss_kib();
    println!("MiniLM load: {:.0} ms; VmRSS {} MiB before, {} MiB after", ms(load), rss_before / 1024, rss_model / 1024);

    let long = "The gateway forwards each request to the provider that serves the model, retries on errors, \
                and records usage and cost for every key. "
        .repeat(12);
    println!("\n| embedder | input | tokens | n | p50 | p99 |\n|---|---|---|---|---|---|");
    bench_row(&minilm, "short", SHORT, 300)?;
    bench_row(&minilm, "128 tokens (truncated)", &long, 100)?;

    let out = root.join("target/embed-bench/static.bin");
    let stats = StaticEmbedder::distill(&minilm, &out)?;
    let started = Instant::now();
    let table = StaticEmbedder::load(&out, &dir)?;
    let table_load = started.elapsed();
    bench_row(&table, "short", SHORT, 20_000)?;
    let huge = long.repeat(4000usize.div_ceil(token_count(&table, &long)?));
    bench_row(&table, "~4,000 tokens", &huge, 500)?;
    println!(
        "\nstatic table: distilled {} tokens × {} in {:.1} s (release, all cores); {} bytes ({:.1} MiB) at {}; \
         load {:.0} ms; VmRSS with both loaded {} MiB",
        stats.tokens,
        stats.dim,
        stats.elapsed.as_secs_f64(),
        stats.bytes,
        stats.bytes as f64 / 1048576.0,
        out.display(),
        ms(table_load),
        common::rss_kib() / 1024,
    );

    println!("load average after the latency runs: {}", common::loadavg());
    let (tune, test) =
        (read_set(&root.join("datasets/router/tune.jsonl")), read_set(&root.join("datasets/router/test.jsonl")));
    if tune.is_empty() || test.is_empty() {
        println!("router dev set not found; skipping accuracy");
        return Ok(());
    }
    println!(
        "\nrouter intent accuracy on test.jsonl ({} prompts), centroids from tune.jsonl ({}):",
        test.len(),
        tune.len()
    );
    for embedder in [&minilm as &dyn Embedder, &table] {
        let started = Instant::now();
        let (centroid, nearest) = accuracy(embedder, &tune, &test)?;
        println!(
            "  {:<26} nearest centroid {:.1} %, 1-NN {:.1} % ({:.1} s)",
            embedder.name(),
            centroid,
            nearest,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Embeds `text` alone `n` times (after a warm-up) and prints p50/p99.
fn bench_row(embedder: &dyn Embedder, label: &str, text: &str, n: usize) -> Result<(), EmbedError> {
    for _ in 0..n.min(20) {
        embedder.embed(&[text])?;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        std::hint::black_box(embedder.embed(&[std::hint::black_box(text)])?);
        times.push(started.elapsed());
    }
    times.sort();
    let pct = |p: f64| common::percentile(&times, p);
    let tokens = token_count(embedder, text)?;
    println!("| {} | {label} | {tokens} | {n} | {} | {} |", embedder.name(), fmt(pct(0.5)), fmt(pct(0.99)));
    Ok(())
}

/// Tokens the embedder judges for `text`: MiniLM counts `[CLS]`/`[SEP]` and truncates, the static one not.
fn token_count(embedder: &dyn Embedder, text: &str) -> Result<usize, EmbedError> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL_DIR).join("tokenizer.json");
    let mut tokenizer = tokenizers::Tokenizer::from_file(path).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
    let with_special = embedder.name() == "all-MiniLM-L6-v2";
    tokenizer.with_padding(None);
    if !with_special {
        let _ = tokenizer.with_truncation(None);
    }
    let encoding = tokenizer.encode(text, with_special).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
    Ok(encoding.len())
}

/// (prompt, intent) rows of a JSONL file; empty when it cannot be read.
fn read_set(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|v| Some((v["prompt"].as_str()?.to_owned(), v["intent"].as_str()?.to_owned())))
        .collect()
}

/// Percent correct on `test` by nearest intent centroid and by nearest single tune prompt.
fn accuracy(
    embedder: &dyn Embedder,
    tune: &[(String, String)],
    test: &[(String, String)],
) -> Result<(f64, f64), EmbedError> {
    let embed_all = |rows: &[(String, String)]| -> Result<Vec<Vec<f32>>, EmbedError> {
        rows.iter().map(|(p, _)| embedder.embed(&[p.as_str()]).map(|mut v| v.remove(0))).collect()
    };
    let (tune_vecs, test_vecs) = (embed_all(tune)?, embed_all(test)?);
    let mut centroids: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    for ((_, intent), v) in tune.iter().zip(&tune_vecs) {
        let c = centroids.entry(intent.as_str()).or_insert_with(|| vec![0.0; v.len()]);
        c.iter_mut().zip(v).for_each(|(a, b)| *a += b);
    }
    for c in centroids.values_mut() {
        let norm = c.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        c.iter_mut().for_each(|x| *x /= norm);
    }
    let (mut by_centroid, mut by_neighbour) = (0usize, 0usize);
    for ((_, intent), v) in test.iter().zip(&test_vecs) {
        let best = centroids.iter().max_by(|a, b| cosine(v, a.1).total_cmp(&cosine(v, b.1))).map(|(k, _)| *k);
        by_centroid += usize::from(best == Some(intent.as_str()));
        let nearest = tune.iter().zip(&tune_vecs).max_by(|a, b| cosine(v, a.1).total_cmp(&cosine(v, b.1)));
        by_neighbour += usize::from(nearest.is_some_and(|((_, i), _)| i == intent));
    }
    let pct = |n: usize| 100.0 * n as f64 / test.len().max(1) as f64;
    Ok((pct(by_centroid), pct(by_neighbour)))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_millis(1) { format!("{:.1} µs", d.as_secs_f64() * 1e6) } else { format!("{:.2} ms", ms(d)) }
}
