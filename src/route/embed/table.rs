//! [`StaticEmbedder`]: a per-token embedding table distilled from [`MiniLm`] (model2vec-style).
//!
//! Distillation embeds every vocabulary token alone as `[CLS] token [SEP]` (256 tokens per forward pass,
//! masked mean pooling, L2 normalisation), subtracts the mean of all rows (the direction every BERT output
//! shares, which otherwise makes unrelated texts look alike), and stores one weight per token.
//! A query is tokenized without special tokens (no truncation); its vector is the weighted mean of its
//! tokens' rows, L2-normalised.
//!
//! Weights are all 1.0 (0.0 only for tokens left out of a partial test distillation). An IDF stand-in was
//! measured and dropped: no corpus frequencies are available offline, and down-weighting (×0.3) the 100
//! most frequent words of the frequency-ordered BERT vocabulary (ids from `the` on) plus single characters
//! lowered nearest-centroid intent accuracy on `datasets/router` from 30.6 % to 25.4 % (mean removal
//! alone: 29.4 → 30.6 %). The weight column stays in the format for corpus-derived weights later.
//!
//! File format (little-endian), version 1:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `LGWSTAT1` |
//! | 8 | 4 | u32 format version (1) |
//! | 12 | 4 | u32 `rows` (vocabulary size) |
//! | 16 | 4 | u32 `dim` |
//! | 20 | 4 | u32 element type: 1 = f16 |
//! | 24 | 32 | sha256 of the `tokenizer.json` it was distilled with |
//! | 56 | rows × 4 | f32 weight per token id |
//! | … | rows × dim × 2 | f16 rows, row-major, row `i` = token id `i` |

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use half::f16;
use half::slice::HalfFloatSliceExt;
use tokenizers::Tokenizer;

use super::{DistillStats, EmbedError, Embedder, MiniLm, normalize, read, sha256};

const MAGIC: &[u8; 8] = b"LGWSTAT1";
const VERSION: u32 = 1;
const DTYPE_F16: u32 = 1;
const HEADER: usize = 56;
/// Vocabulary tokens embedded per forward pass while distilling.
const DISTILL_BATCH: usize = 256;

/// Static token embeddings: microsecond lookups, no word order. See the module docs.
pub struct StaticEmbedder {
    /// No padding, no truncation: every token of the text counts.
    tokenizer: Tokenizer,
    rows: Vec<f16>,
    weights: Vec<f32>,
    dim: usize,
}

impl StaticEmbedder {
    /// Embeds every vocabulary token with `minilm` and writes the table to `out` (via a temporary file
    /// beside it, so a crash never leaves a truncated table). Uses every core.
    pub fn distill(minilm: &MiniLm, out: &Path) -> Result<DistillStats, EmbedError> {
        let vocab = u32::try_from(minilm.vocab_size)
            .map_err(|_| EmbedError::Inference(format!("vocabulary of {} tokens is too large", minilm.vocab_size)))?;
        let ids: Vec<u32> = (0..vocab).collect();
        Self::distill_ids(minilm, out, &ids)
    }

    /// [`distill`](Self::distill) restricted to `ids`: other tokens get a zero row and weight, and the
    /// mean is taken over the distilled rows only. Lets tests build a usable table in seconds.
    pub(super) fn distill_ids(minilm: &MiniLm, out: &Path, ids: &[u32]) -> Result<DistillStats, EmbedError> {
        let started = Instant::now();
        let special = |name: &str| {
            minilm.tokenizer.token_to_id(name).ok_or_else(|| EmbedError::BadModelFile {
                path: minilm.dir.join("tokenizer.json"),
                message: format!("the vocabulary has no {name} token"),
            })
        };
        let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);
        let (vocab, dim) = (minilm.vocab_size, minilm.dim);

        let mut rows = vec![0.0f32; vocab * dim];
        let mut distilled = vec![false; vocab];
        for chunk in ids.chunks(DISTILL_BATCH) {
            let batch: Vec<u32> = chunk.iter().flat_map(|&id| [cls, id, sep]).collect();
            let mask = vec![1u32; batch.len()];
            for (&id, vector) in chunk.iter().zip(minilm.pooled(batch, mask, chunk.len(), 3)?) {
                let id = id as usize;
                if let (Some(row), Some(flag)) = (rows.get_mut(id * dim..(id + 1) * dim), distilled.get_mut(id)) {
                    row.copy_from_slice(&vector);
                    *flag = true;
                }
            }
        }
        remove_mean(&mut rows, &distilled, dim);
        let weights: Vec<f32> = distilled.iter().map(|&d| if d { 1.0 } else { 0.0 }).collect();

        let bytes = write_table(out, &minilm.tokenizer_sha256, &weights, &rows, dim)?;
        Ok(DistillStats { path: out.to_path_buf(), tokens: vocab, dim, bytes, elapsed: started.elapsed() })
    }

    /// Loads a table written by [`distill`](Self::distill), with the `tokenizer.json` from `tokenizer_dir`
    /// (the model directory). Refuses a table distilled with another tokenizer.
    pub fn load(path: &Path, tokenizer_dir: &Path) -> Result<Self, EmbedError> {
        let tokenizer_path = tokenizer_dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(EmbedError::ModelMissing {
                dir: tokenizer_dir.to_path_buf(),
                missing: "tokenizer.json".to_owned(),
            });
        }
        let tokenizer_bytes = read(&tokenizer_path)?;
        let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes)
            .map_err(|e| EmbedError::BadModelFile { path: tokenizer_path.clone(), message: e.to_string() })?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| EmbedError::BadModelFile { path: tokenizer_path.clone(), message: e.to_string() })?;

        let bytes = read(path)?;
        let bad = |problem: String| EmbedError::BadTable { path: path.to_path_buf(), problem };
        let header =
            bytes.get(..HEADER).ok_or_else(|| bad(format!("{} bytes is shorter than the header", bytes.len())))?;
        if &header[..8] != MAGIC {
            return Err(bad("wrong magic bytes".to_owned()));
        }
        let field = |at: usize| u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let (version, rows, dim, dtype) = (field(8), field(12) as usize, field(16) as usize, field(20));
        if version != VERSION || dtype != DTYPE_F16 {
            return Err(bad(format!(
                "format version {version} / element type {dtype}; this build reads {VERSION} / {DTYPE_F16}"
            )));
        }
        if header[24..56] != sha256(&tokenizer_bytes) {
            return Err(EmbedError::TableMismatch { path: path.to_path_buf(), tokenizer: tokenizer_path });
        }
        let expected =
            rows.checked_mul(dim).and_then(|n| n.checked_mul(2)).and_then(|n| n.checked_add(HEADER + rows * 4));
        if dim == 0 || expected != Some(bytes.len()) {
            return Err(bad(format!("{} bytes does not match {rows} rows × {dim} dims", bytes.len())));
        }
        let (weights, values) = bytes[HEADER..].split_at(rows * 4);
        let weights = weights.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let rows = values.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect();
        Ok(Self { tokenizer, rows, weights, dim })
    }

    /// The weighted, normalised mean of the text's token rows; all zeros when no token is known.
    fn embed_one(&self, text: &str, scratch: &mut [f32]) -> Result<Vec<f32>, EmbedError> {
        let encoding = self.tokenizer.encode_fast(text, false).map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        let mut sum = vec![0.0f32; self.dim];
        for &id in encoding.get_ids() {
            let id = id as usize;
            let (Some(row), Some(&weight)) = (self.rows.get(id * self.dim..(id + 1) * self.dim), self.weights.get(id))
            else {
                continue;
            };
            row.convert_to_f32_slice(scratch);
            sum.iter_mut().zip(scratch.iter()).for_each(|(s, x)| *s += weight * x);
        }
        normalize(&mut sum);
        Ok(sum)
    }
}

impl Embedder for StaticEmbedder {
    fn name(&self) -> &str {
        "all-MiniLM-L6-v2-static"
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut scratch = vec![0.0f32; self.dim];
        texts.iter().map(|text| self.embed_one(text, &mut scratch)).collect()
    }
}

/// Subtracts the mean of the `distilled` rows from each of them (`rows` is row-major with `dim`
/// columns), then renormalises them.
fn remove_mean(rows: &mut [f32], distilled: &[bool], dim: usize) {
    let count = distilled.iter().filter(|d| **d).count().max(1) as f32;
    let mut mean = vec![0.0f32; dim];
    for (row, _) in rows.chunks_exact(dim).zip(distilled).filter(|(_, d)| **d) {
        mean.iter_mut().zip(row).for_each(|(m, x)| *m += x / count);
    }
    for (row, _) in rows.chunks_exact_mut(dim).zip(distilled).filter(|(_, d)| **d) {
        row.iter_mut().zip(&mean).for_each(|(x, m)| *x -= m);
        normalize(row);
    }
}

/// Writes the table to `out` through `out.tmp` + rename; returns the file size.
pub(super) fn write_table(
    out: &Path,
    tokenizer_sha256: &[u8; 32],
    weights: &[f32],
    rows: &[f32],
    dim: usize,
) -> Result<u64, EmbedError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EmbedError::Io { path, source }
    };
    let count = u32::try_from(weights.len()).map_err(|_| EmbedError::Inference("too many rows".to_owned()))?;
    let dim32 = u32::try_from(dim).map_err(|_| EmbedError::Inference("dimension too large".to_owned()))?;
    let mut bytes = Vec::with_capacity(HEADER + weights.len() * 4 + rows.len() * 2);
    bytes.extend_from_slice(MAGIC);
    for field in [VERSION, count, dim32, DTYPE_F16] {
        bytes.extend_from_slice(&field.to_le_bytes());
    }
    bytes.extend_from_slice(tokenizer_sha256);
    weights.iter().for_each(|w| bytes.extend_from_slice(&w.to_le_bytes()));
    rows.iter().for_each(|x| bytes.extend_from_slice(&f16::from_f32(*x).to_le_bytes()));

    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io(out))?;
    Ok(bytes.len() as u64)
}
