//! Memoized embeddings: a config reload re-embeds only the examples that changed, and a large batch
//! (the examples at start-up) is spread over every core.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use super::{EmbedError, Embedder};

/// Vectors remembered (by text); the memo starts over when full. 8192 × 384 floats ≈ 12.6 MB.
const MEMO_ENTRIES: usize = 8192;
/// Texts per inference call when a batch is split over threads.
const CHUNK: usize = 16;

pub struct Memoized {
    inner: Arc<dyn Embedder>,
    memo: Mutex<HashMap<u64, Arc<[f32]>>>,
}

impl Memoized {
    pub fn new(inner: Arc<dyn Embedder>) -> Self {
        Self { inner, memo: Mutex::new(HashMap::new()) }
    }

    fn key(text: &str) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        h.finish()
    }

    /// Embeds `texts`, several chunks at once on scoped threads when there are many.
    fn embed_uncached(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if texts.len() <= CHUNK || threads == 1 {
            return self.inner.embed(texts);
        }
        let per_thread = texts.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = texts
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || -> Result<Vec<Vec<f32>>, EmbedError> {
                        let mut out = Vec::with_capacity(part.len());
                        for chunk in part.chunks(CHUNK) {
                            out.extend(self.inner.embed(chunk)?);
                        }
                        Ok(out)
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(texts.len());
            for handle in handles {
                let part = handle.join().map_err(|_| EmbedError::Thread("an embedding thread panicked".into()))??;
                out.extend(part);
            }
            Ok(out)
        })
    }
}

impl Embedder for Memoized {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let keys: Vec<u64> = texts.iter().map(|t| Self::key(t)).collect();
        let mut found: Vec<Option<Arc<[f32]>>> = {
            let memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter().map(|k| memo.get(k).cloned()).collect()
        };
        let missing: Vec<usize> = (0..texts.len()).filter(|i| found[*i].is_none()).collect();
        if !missing.is_empty() {
            let fresh = self.embed_uncached(&missing.iter().map(|i| texts[*i]).collect::<Vec<_>>())?;
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            if memo.len() + fresh.len() > MEMO_ENTRIES {
                memo.clear();
            }
            for (i, vector) in missing.into_iter().zip(fresh) {
                let vector: Arc<[f32]> = vector.into();
                memo.insert(keys[i], vector.clone());
                found[i] = Some(vector);
            }
        }
        Ok(found.into_iter().map(|v| v.map(|v| v.to_vec()).unwrap_or_default()).collect())
    }
}
