//! The request engine: a [`Snapshot`] (validated config plus everything built from it) and the
//! pipeline that runs every request's steps in order over it.

pub mod call;
pub mod pipeline;
pub mod resume;
pub mod retry;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use crate::balance::{Balancer, HealthRegistry, Member};
use crate::config::{Config, ModelConfig};
use crate::error::GatewayError;
use crate::providers::{ClientCache, Provider, Target};

/// State that outlives config snapshots: warm connection pools and deployment health.
#[derive(Default)]
pub struct Shared {
    pub clients: ClientCache,
    pub health: HealthRegistry,
}

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
    /// What balancing knows of each target (same order as `targets`).
    pub members: Vec<Member>,
    pub balancer: Balancer,
}

impl Snapshot {
    pub fn build(config: Config, shared: &Shared) -> Result<Self, GatewayError> {
        let mut providers = HashMap::new();
        for (name, provider) in &config.providers {
            providers.insert(name.clone(), Arc::new(Provider::new(provider.clone())?));
        }
        let mut models = HashMap::new();
        let mut entries = Vec::new();
        let mut model_entries = HashMap::new();
        for (name, model) in &config.models {
            let mut targets = Vec::new();
            let mut members = Vec::new();
            for deployment in &model.deployments {
                let provider = providers.get(&deployment.provider).ok_or_else(|| {
                    GatewayError::internal(format!("model {name}: provider {} missing", deployment.provider))
                })?;
                let target = Target::new(provider.clone(), deployment, model, &shared.clients)?;
                let key = format!("{}|{}|{}", deployment.provider, provider.config.base_url, deployment.model);
                members.push(Member {
                    weight: deployment.weight,
                    canary: deployment.canary,
                    score: deployment.score,
                    cost: target.price.map(|p| p.input + p.output),
                    health: shared.health.get(&key),
                });
                targets.push(target);
            }
            let entry = json!({"id": name, "object": "model", "created": 0, "owned_by": "llm-gateway"});
            model_entries.insert(name.clone(), Bytes::from(entry.to_string()));
            entries.push(entry);
            models.insert(
                name.clone(),
                Arc::new(Model {
                    name: Arc::from(name.as_str()),
                    config: model.clone(),
                    targets,
                    members,
                    balancer: Balancer::default(),
                }),
            );
        }
        let model_list = Bytes::from(json!({"object": "list", "data": entries}).to_string());
        Ok(Self { config, models, model_list, model_entries })
    }

    pub fn model_entry(&self, id: &str) -> Option<&Bytes> {
        self.model_entries.get(id)
    }
}
