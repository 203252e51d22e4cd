//! An embeddings model from the config as the router's tier 2 (`router.embedding.model: <a model
//! in models:>`): texts go to the model's deployments through their provider adapters (OpenAI,
//! Azure, Gemini, Bedrock, any OpenAI-compatible server), in order until one answers, with the
//! provider keys and timeouts of the config. Vectors are L2-normalised like the local models'.
//!
//! [`Embedder`] is synchronous: the router calls it off the async executor (`spawn_blocking`), so
//! a call blocks that thread on the runtime captured when the config was loaded.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::{EmbedError, Embedder, normalize};
use crate::engine::Model;
use crate::providers::CallLimits;
use crate::types::EmbeddingsRequest;

/// Inputs per upstream request (OpenAI accepts up to 2,048; smaller keeps each request modest).
const BATCH: usize = 128;

pub struct RemoteEmbedder {
    model: Arc<Model>,
    runtime: Option<tokio::runtime::Handle>,
    /// Learned from the first answer (0 until then).
    dim: AtomicUsize,
}

impl RemoteEmbedder {
    pub fn new(model: Arc<Model>) -> Self {
        Self { model, runtime: tokio::runtime::Handle::try_current().ok(), dim: AtomicUsize::new(0) }
    }

    async fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let mut failures = Vec::new();
        for target in &self.model.targets {
            let mut req = EmbeddingsRequest {
                model: String::new(),
                input: Value::from(texts.iter().map(|t| Value::from(*t)).collect::<Vec<_>>()),
                extra: serde_json::Map::new(),
            };
            let limits = CallLimits::starting_now(self.model.config.timeouts);
            match target.embeddings(&mut req, limits).await {
                Ok(completion) => return vectors(&completion.body, texts.len()),
                Err(e) => failures.push(format!("{}: {e}", target.provider_name())),
            }
        }
        Err(failures.join("; "))
    }
}

/// The vectors of an OpenAI-format embeddings answer, in input order, normalised.
fn vectors(body: &[u8], expected: usize) -> Result<Vec<Vec<f32>>, String> {
    let answer: Value = serde_json::from_slice(body).map_err(|e| format!("embeddings answer unreadable: {e}"))?;
    let data = answer["data"].as_array().ok_or("embeddings answer has no `data` array")?;
    let mut out = vec![Vec::new(); expected];
    for (position, item) in data.iter().enumerate() {
        let index = item["index"].as_u64().map_or(position, |i| i as usize);
        let values = item["embedding"].as_array().ok_or("an embedding is not an array of numbers")?;
        let mut vector: Vec<f32> = values.iter().filter_map(Value::as_f64).map(|v| v as f32).collect();
        if vector.len() != values.len() || vector.is_empty() {
            return Err("an embedding is not an array of numbers".into());
        }
        normalize(&mut vector);
        *out.get_mut(index).ok_or("embeddings answer has an index out of range")? = vector;
    }
    let dim = out.first().map_or(0, Vec::len);
    if out.iter().any(|v| v.len() != dim) {
        return Err(format!("embeddings answer has {} vectors of differing sizes for {expected} inputs", data.len()));
    }
    Ok(out)
}

impl Embedder for RemoteEmbedder {
    fn name(&self) -> &str {
        &self.model.name
    }

    fn dim(&self) -> usize {
        self.dim.load(Ordering::Relaxed)
    }

    fn remote(&self) -> bool {
        true
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let runtime = self.runtime.clone().or_else(|| tokio::runtime::Handle::try_current().ok()).ok_or_else(|| {
            EmbedError::Remote { model: self.model.name.to_string(), message: "no async runtime".into() }
        })?;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            let vectors = runtime
                .block_on(self.embed_batch(chunk))
                .map_err(|message| EmbedError::Remote { model: self.model.name.to_string(), message })?;
            out.extend(vectors);
        }
        if let Some(first) = out.first() {
            self.dim.store(first.len(), Ordering::Relaxed);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::vectors;

    #[test]
    fn answers_are_read_in_index_order_and_normalised() {
        let body = br#"{"data":[{"index":1,"embedding":[0,2]},{"index":0,"embedding":[3,4]}]}"#;
        assert_eq!(vectors(body, 2).unwrap(), vec![vec![0.6, 0.8], vec![0.0, 1.0]]);
        for bad in
            [&br#"{"error":{}}"#[..], br#"{"data":[{"embedding":"x"}]}"#, br#"{"data":[{"index":5,"embedding":[1]}]}"#]
        {
            assert!(vectors(bad, 1).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(vectors(br#"{"data":[{"embedding":[1,2]},{"embedding":[1]}]}"#, 2).is_err());
    }
}
