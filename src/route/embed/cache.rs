//! Memoized embeddings: a config reload re-embeds only the examples that changed, a large batch (the
//! examples at start-up) is spread over every core, and example vectors are kept in a file beside the
//! model so the next start-up reads them instead of running the model (seconds for hundreds of
//! examples). The file holds vectors keyed by a hash of model and text, never prompt text, and
//! only example utterances go into it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{EmbedError, Embedder};

/// Vectors remembered (by text); the memo starts over when full. 8192 × 384 floats ≈ 12.6 MB.
const MEMO_ENTRIES: usize = 8192;
/// Texts per inference call when a batch is split over threads.
const CHUNK: usize = 16;

pub struct Memoized {
    inner: Arc<dyn Embedder>,
    memo: Mutex<HashMap<u64, Arc<[f32]>>>,
    /// Where example vectors persist (`None`: memory only).
    store: Option<PathBuf>,
}

// Bumped whenever an encoder's arithmetic changes, so stored vectors never mix with the new ones:
// 02 int8 encoder (files from the f32 one are ignored and rewritten); 03 fused multiply-adds;
// 04 7-bit weights; 06 attention rows normalised after the weighted sum, GELU's reciprocal by
// Newton steps (last-bit differences); 07 attention rows' exponentials summed in whole 16-lane
// steps over the padded row.
const STORE_MAGIC: &[u8; 8] = b"LGVEC07\n";

impl Memoized {
    pub fn new(inner: Arc<dyn Embedder>, store: Option<PathBuf>) -> Self {
        let mut memo = HashMap::new();
        if let Some(path) = &store
            && let Ok(bytes) = std::fs::read(path)
        {
            read_store(&bytes, inner.dim(), &mut memo);
        }
        Self { inner, memo: Mutex::new(memo), store }
    }

    /// Stable across builds and platforms (the store outlives the binary): sha256 of model and text.
    fn key(&self, text: &str) -> u64 {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.inner.name().as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        let digest = h.finalize();
        u64::from_le_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]])
    }

    /// Rewrites the store with `keys` (atomically: a temporary file, then a rename). A store that
    /// cannot be written costs only start-up time, so that is a warning.
    fn persist(&self, keys: &[u64]) {
        let Some(path) = &self.store else { return };
        let mut out = Vec::with_capacity(16 + keys.len() * (8 + 4 * self.inner.dim()));
        out.extend_from_slice(STORE_MAGIC);
        out.extend_from_slice(&(self.inner.dim() as u32).to_le_bytes());
        {
            let memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            for key in keys {
                if let Some(v) = memo.get(key) {
                    out.extend_from_slice(&key.to_le_bytes());
                    v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
                }
            }
        }
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, &out).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!(
                "cannot keep the router's example vectors in {}: {e} (start-up re-embeds them)",
                path.display()
            );
        }
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

    fn parts(&self) -> usize {
        self.inner.parts()
    }

    fn remote(&self) -> bool {
        self.inner.remote()
    }

    fn remembers(&self, texts: &[&str]) -> bool {
        let memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        texts.iter().all(|t| memo.contains_key(&self.key(t)))
    }

    fn embed_examples(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let keys: Vec<u64> = texts.iter().map(|t| self.key(t)).collect();
        let stored = {
            let memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter().all(|k| memo.contains_key(k))
        };
        let vectors = self.embed_keyed(texts, &keys)?;
        if !stored {
            self.persist(&keys);
        }
        Ok(vectors)
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let keys: Vec<u64> = texts.iter().map(|t| self.key(t)).collect();
        self.embed_keyed(texts, &keys)
    }
}

impl Memoized {
    /// Vectors for `texts` whose memo keys are `keys`: remembered ones from the memo, the rest from
    /// the model (then remembered).
    fn embed_keyed(&self, texts: &[&str], keys: &[u64]) -> Result<Vec<Vec<f32>>, EmbedError> {
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

/// Fills `memo` from a store file; a file of another dimension or a damaged one is ignored (its
/// vectors are recomputed and the file rewritten).
fn read_store(bytes: &[u8], dim: usize, memo: &mut HashMap<u64, Arc<[f32]>>) {
    let Some(rest) = bytes.strip_prefix(STORE_MAGIC.as_slice()) else { return };
    let Some((stored_dim, records)) = rest.split_first_chunk::<4>() else { return };
    if u32::from_le_bytes(*stored_dim) as usize != dim {
        return;
    }
    let record = 8 + 4 * dim;
    if records.len() % record != 0 {
        return;
    }
    for chunk in records.chunks_exact(record).take(MEMO_ENTRIES) {
        let (key, values) = chunk.split_at(8);
        let key = u64::from_le_bytes([key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7]]);
        let vector: Arc<[f32]> = values.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        memo.insert(key, vector);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Counts the texts it embeds; vector = [len, 1].
    struct Counting(std::sync::atomic::AtomicUsize);
    impl Embedder for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn dim(&self) -> usize {
            2
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.0.fetch_add(texts.len(), std::sync::atomic::Ordering::SeqCst);
            Ok(texts.iter().map(|t| vec![t.len() as f32, 1.0]).collect())
        }
    }

    #[test]
    fn example_vectors_survive_a_restart_and_prompts_are_not_stored() {
        let dir = std::env::temp_dir().join(format!("memo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("vectors.cache");
        let _ = std::fs::remove_file(&store);
        let examples: Vec<String> = (0..40).map(|i| format!("example {i}")).collect();
        let examples: Vec<&str> = examples.iter().map(String::as_str).collect();

        let first = Arc::new(Counting(0.into()));
        let memo = Memoized::new(first.clone(), Some(store.clone()));
        let vectors = memo.embed_examples(&examples).unwrap();
        assert_eq!(vectors[39], vec![10.0, 1.0]);
        memo.embed(&["a secret prompt"]).unwrap();
        assert_eq!(first.0.load(std::sync::atomic::Ordering::SeqCst), 41);

        // A restart reads the examples from the store and only embeds what is new.
        let second = Arc::new(Counting(0.into()));
        let memo = Memoized::new(second.clone(), Some(store.clone()));
        assert_eq!(memo.embed_examples(&examples).unwrap(), vectors);
        assert_eq!(second.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        memo.embed(&["a secret prompt"]).unwrap();
        assert_eq!(second.0.load(std::sync::atomic::Ordering::SeqCst), 1, "prompts were not persisted");

        // A damaged store is ignored, not trusted.
        std::fs::write(&store, b"LGVEC01\n\x02\0\0\0garbage").unwrap();
        let third = Arc::new(Counting(0.into()));
        Memoized::new(third.clone(), Some(store)).embed_examples(&examples).unwrap();
        assert_eq!(third.0.load(std::sync::atomic::Ordering::SeqCst), 40);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
