//! Sentence embeddings for the router's second tier (placeholder interface; the candle-based
//! MiniLM engine lands here).

/// Turns texts into L2-normalised vectors.
pub trait Embedder: Send + Sync {
    fn name(&self) -> &str;
    fn dim(&self) -> usize;
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{0}")]
    Failed(String),
}

/// Loads the builtin model from `dir` (the MiniLM engine replaces this placeholder).
pub fn load_builtin(dir: &std::path::Path) -> Result<std::sync::Arc<dyn Embedder>, EmbedError> {
    Err(EmbedError::Failed(format!(
        "the builtin embedding model is not available in this build (looked in {}) — run scripts/fetch-model.sh, or set router.embedding.enabled: false",
        dir.display()
    )))
}
