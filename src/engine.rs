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

/// Loaded local embedding models by (model, directory, max tokens, layers).
type EmbedderCache =
    HashMap<(String, std::path::PathBuf, usize, Option<usize>), Arc<dyn crate::route::embed::Embedder>>;

/// State that outlives config snapshots: warm connection pools and deployment health.
#[derive(Default)]
pub struct Shared {
    pub clients: ClientCache,
    pub health: HealthRegistry,
    /// Loaded embedding models by (model, directory): loading takes a while, so reloads reuse them
    /// (and their memo of embedded texts, so unchanged examples are not embedded again).
    embedders: std::sync::Mutex<EmbedderCache>,
    /// When routers build their example index: `check` builds everything that validates the config
    /// but not that (embedding and training on thousands of examples is serving work).
    index_build: crate::route::IndexBuild,
}

impl Shared {
    /// For `check`: see `index_build`.
    pub fn for_validation() -> Self {
        Self { index_build: crate::route::IndexBuild::OnFirstUse, ..Self::default() }
    }

    pub fn embedder(
        &self,
        model: &str,
        dir: &std::path::Path,
        max_tokens: usize,
        layers: Option<usize>,
    ) -> Result<Arc<dyn crate::route::embed::Embedder>, GatewayError> {
        let mut loaded = self.embedders.lock().unwrap_or_else(|e| e.into_inner());
        let key = (model.to_string(), dir.to_path_buf(), max_tokens, layers);
        if let Some(e) = loaded.get(&key) {
            return Ok(e.clone());
        }
        let embedder = crate::route::embed::load_local(model, dir, max_tokens, layers)
            .map_err(|e| GatewayError::internal(e.to_string()))?;
        loaded.insert(key, embedder.clone());
        Ok(embedder)
    }
}

/// Everything a request needs from the configuration, built once per (re)load and then shared
/// read-only. A request holds its snapshot to the end, so a reload never changes a request mid-way.
pub struct Snapshot {
    pub config: Config,
    pub models: HashMap<String, Arc<Model>>,
    /// Pre-rendered `GET /v1/models` body.
    pub model_list: Bytes,
    /// Semantic routing for requests to the router's model name (`auto`).
    pub router: Option<Arc<crate::route::Router>>,
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
        let router = match &config.router {
            None => None,
            Some(rc) => {
                let tier = &rc.embedding;
                let embedder = if !tier.enabled {
                    None
                } else if tier.remote {
                    // Validation made sure the model exists.
                    let model = models.get(&tier.model).ok_or_else(|| {
                        GatewayError::internal(format!("router.embedding.model {:?} is not in models:", tier.model))
                    })?;
                    Some(crate::route::embed::remote_embedder(model.clone()))
                } else {
                    Some(shared.embedder(&tier.model, &tier.model_dir, tier.max_tokens, tier.layers)?)
                };
                let price = |name: &str| {
                    models
                        .get(name)
                        .and_then(|m: &Arc<Model>| m.targets.first())
                        .and_then(|t| t.price)
                        .map(|p| p.input + p.output)
                };
                let router = crate::route::Router::build(rc, &config.models, &price, embedder, shared.index_build)
                    .map_err(GatewayError::internal)?;
                entries.push(json!({"id": rc.model_name, "object": "model", "created": 0, "owned_by": "llm-gateway"}));
                Some(Arc::new(router))
            }
        };
        let model_list = Bytes::from(json!({"object": "list", "data": entries}).to_string());
        Ok(Self { config, models, model_list, model_entries, router })
    }

    pub fn model_entry(&self, id: &str) -> Option<&Bytes> {
        self.model_entries.get(id)
    }
}
