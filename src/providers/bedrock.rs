//! Bedrock adapter (being written): see providers/anthropic.rs for the pattern.

use super::{CallLimits, ChatReply, Completion};
use crate::config::{DeploymentConfig, ProviderConfig};
use crate::error::GatewayError;
use crate::types::{ChatRequest, EmbeddingsRequest};

#[derive(Debug)]
pub struct Bedrock {}

impl Bedrock {
    pub fn new(_config: &ProviderConfig) -> Result<Self, GatewayError> {
        Ok(Self {})
    }

    /// The model-scoped endpoint stored in the Target; `chat`/`embeddings` append what they need.
    pub fn endpoint(config: &ProviderConfig, deployment: &DeploymentConfig) -> String {
        format!("{}/{}", config.base_url, deployment.model)
    }

    pub async fn chat(
        &self,
        _client: &reqwest::Client,
        _endpoint: &str,
        config: &ProviderConfig,
        _req: &ChatRequest,
        _limits: CallLimits,
    ) -> Result<ChatReply, GatewayError> {
        Err(GatewayError::Unsupported { provider: config.name.clone(), feature: "chat (adapter not finished)".into() })
    }

    pub async fn embeddings(
        &self,
        _client: &reqwest::Client,
        _endpoint: &str,
        config: &ProviderConfig,
        _req: &EmbeddingsRequest,
        _limits: CallLimits,
    ) -> Result<Completion, GatewayError> {
        Err(GatewayError::Unsupported { provider: config.name.clone(), feature: "embeddings".into() })
    }
}
