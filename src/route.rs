//! Request routing: local sentence embeddings for the semantic (intent) router.

pub mod embed;
