//! The `router:` section: semantic routes for requests that ask for model `auto`, and the
//! three tiers that pick one (keyword rules, local embeddings, an LLM classifier).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{ModelConfig, Problems, duration_field};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    /// The model name clients ask for to be routed. Default `auto`.
    pub model_name: Option<String>,
    /// The route used when no tier decides.
    pub default: String,
    #[serde(default)]
    pub keyword: Option<RawKeywordTier>,
    #[serde(default)]
    pub embedding: Option<RawEmbeddingTier>,
    #[serde(default)]
    pub classifier: Option<RawClassifierTier>,
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeywordTier {
    pub enabled: Option<bool>,
    /// Weighted keyword score a route needs to decide. Default 2.
    pub threshold: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmbeddingTier {
    pub enabled: Option<bool>,
    /// A local model: `builtin` (= `multilingual-e5-small`) or `all-MiniLM-L6-v2` (English only).
    pub model: Option<String>,
    /// Where the local model's files are. Default `models/<model>`.
    pub model_dir: Option<String>,
    /// How a prompt is compared with the examples: `linear` (default), `centroid` or `nearest`.
    pub scoring: Option<String>,
    /// Score the best route needs: a probability for `linear`, a cosine similarity otherwise.
    /// Default 0.5 for `linear`, 0.45 otherwise.
    #[serde(alias = "min_similarity")]
    pub min_score: Option<f64>,
    /// Lead over the runner-up route the best one needs. Default 0.1 for `linear`, 0.04 otherwise.
    pub margin: Option<f64>,
    /// Tokens of the instruction the model reads (latency grows with it). Default 48.
    pub max_tokens: Option<usize>,
    /// Encoder layers the builtin model runs, from the first (latency and memory traffic shrink
    /// with it; the vector is pooled after layer `layers / 2` and the last one run). Default: all 12.
    pub layers: Option<usize>,
    /// `linear` only: how much a classifier over the examples' character n-grams counts next to
    /// the embedding classifier (its probabilities' exponent in their product). Default 1; 0
    /// judges by embeddings alone.
    pub lexical_weight: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClassifierTier {
    pub enabled: Option<bool>,
    /// A chat model from `models:` that picks a route when the other tiers abstain.
    pub model: Option<String>,
    /// Default `800ms`.
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    /// The model that serves this route (or, with `quality_floor`, the fallback if no model meets it).
    pub model: String,
    pub description: String,
    #[serde(default)]
    pub keywords: Vec<RawKeyword>,
    #[serde(default)]
    pub regexes: Vec<RawRegex>,
    #[serde(default)]
    pub examples: Vec<String>,
    /// The cheapest model whose `quality` for this route reaches the floor is chosen.
    pub quality_floor: Option<f64>,
}

/// A regex, optionally weighted: `"^translate"` (weight 2) or `{ pattern: "don't translate", weight: -4 }`.
/// A negative weight counts against the route: the tie-breaks ("translate this to Rust" is code).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "expected a regex string or { pattern: \"…\", weight: <number> }")]
pub enum RawRegex {
    Plain(String),
    Weighted { pattern: String, weight: f64 },
}

/// A regex match weighs as much as this many keywords unless the config says otherwise.
pub const REGEX_WEIGHT: f64 = 2.0;

/// A keyword, optionally weighted: `"traceback"` or `{ text: "select", weight: 0.5 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "expected a keyword string or { text: \"…\", weight: <number> }")]
pub enum RawKeyword {
    Plain(String),
    Weighted { text: String, weight: f64 },
}

#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub model_name: String,
    pub default: String,
    pub keyword: KeywordTier,
    pub embedding: EmbeddingTier,
    pub classifier: ClassifierTier,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, Copy)]
pub struct KeywordTier {
    pub enabled: bool,
    pub threshold: f64,
}

#[derive(Debug, Clone)]
pub struct EmbeddingTier {
    pub enabled: bool,
    /// A local model name (`builtin` already resolved), or with `remote` a model from `models:`.
    pub model: String,
    /// `model` is a configured embeddings model called through its provider, not a local one.
    pub remote: bool,
    pub model_dir: PathBuf,
    pub scoring: Scoring,
    pub max_tokens: usize,
    /// Encoder layers the local model runs (`None`: all of them).
    pub layers: Option<usize>,
    pub min_score: f64,
    pub margin: f64,
    /// `linear` only: the exponent of the character n-gram classifier's probabilities in the
    /// blend with the embedding classifier's (0 = embeddings alone).
    pub lexical_weight: f64,
}

/// The local embedding models the router can run.
pub const LOCAL_EMBEDDING_MODELS: [&str; 2] = ["multilingual-e5-small", "all-MiniLM-L6-v2"];
/// Encoder layers of the builtin model (`router.embedding.layers` may run fewer).
const E5_DEPTH: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// A softmax classifier over the example vectors, trained at config load; scores are probabilities.
    Linear,
    /// Cosine similarity to the mean of each route's examples.
    Centroid,
    /// Cosine similarity to each route's most similar example.
    Nearest,
}

#[derive(Debug, Clone)]
pub struct ClassifierTier {
    pub enabled: bool,
    pub model: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub model: String,
    pub description: String,
    pub keywords: Vec<(String, f64)>,
    /// Patterns with their weights.
    pub regexes: Vec<(String, f64)>,
    pub examples: Vec<String>,
    pub quality_floor: Option<f64>,
}

pub(crate) fn validate(
    raw: RawRouter,
    models: &BTreeMap<String, Arc<ModelConfig>>,
    problems: &mut Problems,
) -> Option<RouterConfig> {
    let model_exists = |name: &str| models.contains_key(name);
    let mut routes = Vec::new();
    for (i, r) in raw.routes.into_iter().enumerate() {
        let at = |key: &str| format!("router.routes[{i}].{key}");
        if !model_exists(&r.model) {
            problems.push(at("model"), format!("unknown model {:?}", r.model), "name a model from `models:`");
        }
        if routes.iter().any(|x: &RouteConfig| x.name == r.name) {
            problems.push(at("name"), format!("route {:?} is defined twice", r.name), "give each route its own name");
        }
        let regexes: Vec<(String, f64)> = r
            .regexes
            .into_iter()
            .map(|raw| match raw {
                RawRegex::Plain(pattern) => (pattern, REGEX_WEIGHT),
                RawRegex::Weighted { pattern, weight } => (pattern, weight),
            })
            .collect();
        for (j, (pattern, _)) in regexes.iter().enumerate() {
            if let Err(e) = regex::Regex::new(pattern) {
                problems.push(at(&format!("regexes[{j}]")), format!("not a valid regex: {e}"), "fix the pattern");
            }
        }
        if let Some(floor) = r.quality_floor
            && !(0.0..=1.0).contains(&floor)
        {
            problems.push(at("quality_floor"), format!("{floor} is outside 0..=1"), "use a score between 0 and 1");
        }
        let keywords = r
            .keywords
            .into_iter()
            .map(|k| match k {
                RawKeyword::Plain(text) => (text, 1.0),
                RawKeyword::Weighted { text, weight } => (text, weight),
            })
            .filter(|(text, _)| !text.is_empty())
            .collect();
        routes.push(RouteConfig {
            name: r.name,
            model: r.model,
            description: r.description,
            keywords,
            regexes,
            examples: r.examples,
            quality_floor: r.quality_floor,
        });
    }
    if routes.is_empty() {
        problems.push(
            "router.routes",
            "a router needs at least one route",
            "add routes with a name, model, description and examples",
        );
    }
    if !routes.iter().any(|r| r.name == raw.default) {
        problems.push(
            "router.default",
            format!("{:?} is not one of the routes", raw.default),
            "name one of the routes",
        );
    }
    let keyword = raw.keyword.unwrap_or_default();
    let embedding = raw.embedding.unwrap_or_default();
    let classifier = raw.classifier.unwrap_or_default();
    if let Some(model) = &classifier.model
        && !model_exists(model)
    {
        problems.push(
            "router.classifier.model",
            format!("unknown model {model:?}"),
            "name a chat model from `models:`",
        );
    }
    let embedding_model = match embedding.model.as_deref() {
        None | Some("builtin") => LOCAL_EMBEDDING_MODELS[0].to_string(),
        Some(name) => name.to_string(),
    };
    let local = LOCAL_EMBEDDING_MODELS.contains(&embedding_model.as_str());
    let remote = !local && model_exists(&embedding_model);
    if !local && !remote {
        problems.push(
            "router.embedding.model",
            format!("{embedding_model:?} is neither a local embedding model nor a model in `models:`"),
            format!(
                "use builtin, one of {}, or the name of an embeddings model from `models:`",
                LOCAL_EMBEDDING_MODELS.join(", ")
            ),
        );
    }
    let scoring = match embedding.scoring.as_deref() {
        None | Some("linear") => Scoring::Linear,
        Some("centroid") => Scoring::Centroid,
        Some("nearest") => Scoring::Nearest,
        Some(other) => {
            problems.push(
                "router.embedding.scoring",
                format!("unknown scoring {other:?}"),
                "use linear, centroid or nearest",
            );
            Scoring::Linear
        }
    };
    if let Some(n) = embedding.max_tokens
        && !(8..=512).contains(&n)
    {
        problems.push("router.embedding.max_tokens", format!("{n} is outside 8..=512"), "use e.g. 48");
    }
    if let Some(n) = embedding.layers {
        if !(1..=E5_DEPTH).contains(&n) {
            problems.push(
                "router.embedding.layers",
                format!("{n} is outside 1..={E5_DEPTH} (the builtin model's layers)"),
                "use e.g. 10, or remove it to run all of them",
            );
        } else if embedding_model != LOCAL_EMBEDDING_MODELS[0] {
            problems.push(
                "router.embedding.layers",
                format!("only the builtin {} can run fewer layers", LOCAL_EMBEDDING_MODELS[0]),
                "remove layers",
            );
        }
    }
    let lexical_weight = match embedding.lexical_weight {
        Some(w) if !(0.0..=4.0).contains(&w) => {
            problems.push(
                "router.embedding.lexical_weight",
                format!("{w} is outside 0..=4"),
                "use e.g. 1, or 0 to turn it off",
            );
            0.0
        }
        Some(w) if w > 0.0 && scoring != Scoring::Linear => {
            problems.push(
                "router.embedding.lexical_weight",
                "the n-gram classifier is blended with `scoring: linear` only",
                "remove lexical_weight or use scoring: linear",
            );
            0.0
        }
        Some(w) => w,
        None if scoring == Scoring::Linear => 1.0,
        None => 0.0,
    };
    let (default_min, default_margin) = if scoring == Scoring::Linear { (0.5, 0.1) } else { (0.45, 0.04) };
    let model_name = raw.model_name.unwrap_or_else(|| "auto".into());
    if model_exists(&model_name) {
        problems.push(
            "router.model_name",
            format!("{model_name:?} is also a model name"),
            "pick a name no model uses, e.g. auto",
        );
    }
    Some(RouterConfig {
        model_name,
        default: raw.default,
        keyword: KeywordTier { enabled: keyword.enabled.unwrap_or(true), threshold: keyword.threshold.unwrap_or(2.0) },
        embedding: EmbeddingTier {
            enabled: embedding.enabled.unwrap_or(true),
            model_dir: PathBuf::from(embedding.model_dir.unwrap_or_else(|| format!("models/{embedding_model}"))),
            model: embedding_model,
            remote,
            scoring,
            max_tokens: embedding.max_tokens.unwrap_or(48),
            layers: embedding.layers,
            min_score: embedding.min_score.unwrap_or(default_min),
            margin: embedding.margin.unwrap_or(default_margin),
            lexical_weight,
        },
        classifier: ClassifierTier {
            enabled: classifier.enabled.unwrap_or(true) && classifier.model.is_some(),
            model: classifier.model,
            timeout: duration_field(problems, "router.classifier.timeout", classifier.timeout.as_deref())
                .unwrap_or(Duration::from_millis(800)),
        },
        routes,
    })
}
