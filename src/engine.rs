//! The request engine: a [`Snapshot`] (validated config plus everything built from it) and the
//! pipeline that runs every request's steps in order over it.

pub mod pipeline;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use crate::config::{Config, ModelConfig};
use crate::error::GatewayError;
use crate::providers::{ClientCache, Provider, Target};

/// Everything a request needs from the configuration, built once per (re)load and then shared
/// read-only. A request holds its snapshot to the end, so a reload never changes a request mid-way.
pub struct Snapshot {
    pub config: Config,
    pub models: HashMap<String, Arc<Model>>,
    /// Pre-rendered `GET /v1/models` body.
    pub model_list: Bytes,
    model_entries: HashMap<String, Bytes>,
}

pub struct Model {
    pub name: Arc<str>,
    pub config: Arc<ModelConfig>,
    pub targets: Vec<Target>,
}

impl Snapshot {
    pub fn build(config: Config, clients: &ClientCache) -> Result<Self, GatewayError> {
        let mut providers = HashMap::new();
        for (name, provider) in &config.providers {
            providers.insert(name.clone(), Arc::new(Provider::new(provider.clone())?));
        }
        let mut models = HashMap::new();
        let mut entries = Vec::new();
        let mut model_entries = HashMap::new();
        for (name, model) in &config.models {
            let mut targets = Vec::new();
            for deployment in &model.deployments {
                let provider = providers.get(&deployment.provider).ok_or_else(|| {
                    GatewayError::internal(format!("model {name}: provider {} missing", deployment.provider))
                })?;
                targets.push(Target::new(provider.clone(), deployment, model, clients)?);
            }
            let entry = json!({"id": name, "object": "model", "created": 0, "owned_by": "llm-gateway"});
            model_entries.insert(name.clone(), Bytes::from(entry.to_string()));
            entries.push(entry);
            models.insert(
                name.clone(),
                Arc::new(Model { name: Arc::from(name.as_str()), config: model.clone(), targets }),
            );
        }
        let model_list = Bytes::from(json!({"object": "list", "data": entries}).to_string());
        Ok(Self { config, models, model_list, model_entries })
    }

    pub fn model_entry(&self, id: &str) -> Option<&Bytes> {
        self.model_entries.get(id)
    }
}
