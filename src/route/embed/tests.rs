//! These tests need the model files (`scripts/fetch-model.sh`). Without them they print a skip line and
//! pass — except under `CI`, where a missing model is a failure.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::*;

/// The fetched model directory, or `None` (skip) when it is missing outside CI.
fn model_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL_DIR);
    if MODEL_FILES.iter().all(|f| dir.join(f).is_file()) {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing and CI is set: run scripts/fetch-model.sh before the tests",
        dir.display()
    );
    eprintln!("skipped: no model in {} — run scripts/fetch-model.sh to run the embedding tests", dir.display());
    None
}

/// One model for the whole test binary (loading takes ~0.2 s and ~90 MB).
fn minilm() -> Option<&'static MiniLm> {
    static MODEL: OnceLock<Option<MiniLm>> = OnceLock::new();
    MODEL.get_or_init(|| model_dir().map(|dir| MiniLm::load(&dir).expect("the fetched model loads"))).as_ref()
}

/// A static table distilled once per test binary into a temporary directory. Distilling all 30k tokens
/// takes a minute, so only the tokens of the test texts plus every 16th vocabulary token (for the mean)
/// are distilled; `cargo bench --bench embed` distills and scores the full table.
fn static_embedder() -> Option<&'static StaticEmbedder> {
    static TABLE: OnceLock<Option<StaticEmbedder>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let minilm = minilm()?;
            let texts = TRIPLES.iter().flat_map(|(a, b, c)| [*a, *b, *c]);
            let mut ids: Vec<u32> = texts
                .flat_map(|t| minilm.tokenizer.encode(t, false).expect("tokenizes").get_ids().to_vec())
                .chain((0..minilm.vocab_size as u32).step_by(16))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join("static.bin");
            let stats = StaticEmbedder::distill_ids(minilm, &path, &ids).expect("distillation succeeds");
            assert_eq!(stats.tokens, minilm.vocab_size);
            assert_eq!(stats.bytes, std::fs::metadata(&path).expect("table written").len());
            Some(StaticEmbedder::load(&path, minilm.dir()).expect("the distilled table loads"))
        })
        .as_ref()
}

fn embed_one(embedder: &dyn Embedder, text: &str) -> Vec<f32> {
    let mut vectors = embedder.embed(&[text]).expect("embeds");
    assert_eq!(vectors.len(), 1);
    vectors.remove(0)
}

fn sim(embedder: &dyn Embedder, a: &str, b: &str) -> f32 {
    cosine(&embed_one(embedder, a), &embed_one(embedder, b))
}

const ANCHOR: &str = "How do I fix this Rust borrow checker error?";
const PARAPHRASE: &str = "My Rust code fails to compile with a lifetime error";
const UNRELATED: &str = "Write a poem about the sea";

/// (anchor, paraphrase, unrelated) triples for ranking checks.
const TRIPLES: [(&str, &str, &str); 4] = [
    (ANCHOR, PARAPHRASE, UNRELATED),
    (
        "Translate this paragraph into German",
        "Can you render this text in German?",
        "What is the derivative of x squared?",
    ),
    (
        "Summarize this article in three bullet points",
        "Give me a short summary of this text",
        "SELECT the top 5 customers by revenue",
    ),
    (
        "Write a SQL query joining orders and customers",
        "SQL: join the orders table with customers",
        "Tell me a bedtime story about a dragon",
    ),
];

#[test]
fn loads_with_384_dims_and_unit_norm_vectors() {
    let Some(model) = minilm() else { return };
    assert_eq!(model.dim(), 384);
    assert_eq!(model.name(), "all-MiniLM-L6-v2");
    assert_eq!(model.max_tokens(), DEFAULT_MAX_TOKENS);
    let texts = ["hi", "", ANCHOR, &"a long repeated sentence about routing requests ".repeat(40)];
    let vectors = model.embed(&texts).expect("embeds");
    assert_eq!(vectors.len(), texts.len());
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    assert!(model.embed(&[]).expect("empty batch").is_empty());
}

/// Scores published for all-MiniLM-L6-v2 in the sentence-transformers documentation (sbert.net,
/// "Semantic Textual Similarity"): a wrong pooling or tokenizer setting moves them a lot.
#[test]
fn matches_sentence_transformers_reference_scores() {
    let Some(model) = minilm() else { return };
    for (a, b, expected) in [
        ("The new movie is awesome", "The new movie is so great", 0.8939),
        ("The cat sits outside", "The dog plays in the garden", 0.2838),
        ("I love pasta", "Do you like pizza?", 0.5096),
    ] {
        let got = sim(model, a, b);
        assert!((got - expected).abs() < 0.005, "`{a}` vs `{b}`: {got:.4}, sentence-transformers {expected}");
    }
}

#[test]
fn padding_does_not_change_a_vector() {
    let Some(model) = minilm() else { return };
    let alone = embed_one(model, "hi");
    let long = "Please explain in detail how the gateway decides which upstream provider receives a request";
    let batch = model.embed(&["hi", long, "hello there"]).expect("embeds");
    let cos = cosine(&alone, &batch[0]);
    assert!(cos > 0.9999, "cosine {cos} between `hi` alone and `hi` padded in a batch");
    assert!(cosine(&embed_one(model, long), &batch[1]) > 0.9999);
}

#[test]
fn truncates_to_max_tokens() {
    let Some(model) = minilm() else { return };
    let prefix = "word ".repeat(200);
    let a = embed_one(model, &format!("{prefix} apples"));
    let b = embed_one(model, &format!("{prefix} a completely different ending about quantum physics"));
    assert!(cosine(&a, &b) > 0.9999, "everything past {} tokens is ignored", model.max_tokens());
    let dir = model.dir().to_path_buf();
    assert!(matches!(MiniLm::load_with(&dir, 2), Err(EmbedError::MaxTokens { got: 2, .. })));
    assert!(matches!(MiniLm::load_with(&dir, 513), Err(EmbedError::MaxTokens { got: 513, limit: 512 })));
}

#[test]
fn paraphrases_score_higher_than_unrelated_texts() {
    let Some(model) = minilm() else { return };
    for (anchor, paraphrase, unrelated) in TRIPLES {
        let (close, far) = (sim(model, anchor, paraphrase), sim(model, anchor, unrelated));
        assert!(close > far + 0.2, "`{anchor}`: paraphrase {close:.3} vs unrelated {far:.3}");
    }
}

#[test]
fn concurrent_calls_agree_with_sequential_ones() {
    let Some(model) = minilm() else { return };
    let expected: Vec<Vec<f32>> = TRIPLES.iter().map(|t| embed_one(model, t.0)).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = TRIPLES.iter().map(|t| scope.spawn(move || embed_one(model, t.0))).collect();
        for (handle, want) in handles.into_iter().zip(&expected) {
            let got = handle.join().expect("thread");
            assert!(cosine(&got, want) > 0.99999);
        }
    });
}

#[test]
fn static_embedder_ranks_like_minilm() {
    let Some(table) = static_embedder() else { return };
    assert_eq!(table.dim(), 384);
    for (anchor, paraphrase, unrelated) in TRIPLES {
        let (close, far) = (sim(table, anchor, paraphrase), sim(table, anchor, unrelated));
        assert!(close > far, "static: `{anchor}`: paraphrase {close:.3} vs unrelated {far:.3}");
    }
    let v = embed_one(table, ANCHOR);
    assert!((v.iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() < 1e-4);
    assert!(embed_one(table, "").iter().all(|x| *x == 0.0), "no tokens → zero vector");
    let long = "routing ".repeat(4000);
    assert_eq!(embed_one(table, &long).len(), 384, "no truncation, no panic on long input");
}

#[test]
fn static_table_rejects_other_tokenizers_and_garbage() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, b"not a table").expect("write");
    let err = StaticEmbedder::load(&garbage, model.dir()).err().expect("garbage is refused");
    assert!(matches!(err, EmbedError::BadTable { .. }), "{err}");
    assert!(err.to_string().contains("distill_to"), "{err}");

    let Some(_) = static_embedder() else { return };
    // A table whose tokenizer hash differs from the model directory's tokenizer.json.
    let other_dir = dir.path().join("other-model");
    std::fs::create_dir_all(&other_dir).expect("mkdir");
    let mut tokenizer = std::fs::read(model.dir().join("tokenizer.json")).expect("read tokenizer");
    tokenizer.push(b'\n');
    std::fs::write(other_dir.join("tokenizer.json"), tokenizer).expect("write");
    let table = dir.path().join("table.bin");
    distill_small_copy(model, &table);
    let err = StaticEmbedder::load(&table, &other_dir).err().expect("mismatch is refused");
    assert!(matches!(err, EmbedError::TableMismatch { .. }), "{err}");
}

/// Writes a valid tiny table (4 tokens × 2 dims) stamped with the real tokenizer's hash.
fn distill_small_copy(model: &MiniLm, out: &Path) {
    table::write_table(out, &model.tokenizer_sha256, &[1.0; 4], &[0.5; 4 * 2], 2).expect("write table");
}

#[test]
fn missing_model_files_name_the_fetch_script() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = MiniLm::load(dir.path()).err().expect("an empty directory has no model");
    let message = err.to_string();
    assert!(message.contains("scripts/fetch-model.sh"), "{message}");
    assert!(message.contains("model.safetensors"), "{message}");
    let err = StaticEmbedder::load(&dir.path().join("static.bin"), dir.path()).err().expect("no tokenizer");
    assert!(err.to_string().contains("scripts/fetch-model.sh"), "{err}");
    let err = distill_to(dir.path(), &dir.path().join("out.bin")).expect_err("nothing to distill");
    assert!(err.to_string().contains("scripts/fetch-model.sh"), "{err}");
}

#[test]
fn corrupt_config_is_reported_with_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    for file in MODEL_FILES {
        std::fs::write(dir.path().join(file), "{").expect("write");
    }
    let message = MiniLm::load(dir.path()).err().expect("broken config").to_string();
    assert!(message.contains("config.json") && message.contains("fetch-model.sh"), "{message}");
}
