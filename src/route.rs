//! The route step: a request for model `auto` is sent to the model of the route its prompt
//! belongs to, decided by the cheapest tier that is confident:
//!
//! 1. keyword and regex rules (microseconds),
//! 2. similarity to each route's example utterances with a local embedding model (milliseconds),
//! 3. a small LLM classifier asked to pick a route (the last resort, run by the pipeline),
//!
//! and the default route when none decides. Only the prompt's instruction is judged (see
//! `instruction`). Every decision carries a trace: which tier decided, the scores, the runner-up
//! and the time each tier took.

pub mod embed;
pub mod eval;
pub mod instruction;
mod linear;
pub mod ngram;
pub mod rules;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::ModelConfig;
use crate::config::router::{RouterConfig, Scoring};
use embed::Embedder;
use rules::Rules;

/// How many classifier answers are remembered (by instruction).
const CLASSIFIER_CACHE: usize = 10_000;

pub struct Router {
    pub config: RouterConfig,
    names: Vec<String>,
    /// The model each route sends to (after the cost-aware choice).
    models: Vec<String>,
    rules: Option<Rules>,
    examples: Option<Arc<ExampleIndex>>,
    classifier_cache: Mutex<HashMap<u64, Option<usize>>>,
}

struct ExampleIndex {
    embedder: Arc<dyn Embedder>,
    /// Built from the examples at config load when their vectors are stored, on a background
    /// thread when the local model must embed them (a first start), or on first use for a remote
    /// embedder; a request meanwhile waits for the build (a failed
    /// build is retried by the next request; meanwhile the tier abstains with the reason).
    scorer: std::sync::OnceLock<Scorer>,
    /// Held while building, so concurrent first requests embed the examples once, not each.
    building: Mutex<()>,
    /// (route, example utterance).
    examples: Vec<(usize, String)>,
    scoring: Scoring,
    /// How much the character n-gram classifier counts next to the embedding one (`linear`).
    lexical_weight: f64,
    routes: usize,
}

impl ExampleIndex {
    fn scorer(&self) -> Result<&Scorer, String> {
        if let Some(scorer) = self.scorer.get() {
            return Ok(scorer);
        }
        let _building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(scorer) = self.scorer.get() {
            return Ok(scorer);
        }
        let texts: Vec<&str> = self.examples.iter().map(|(_, t)| t.as_str()).collect();
        let vectors = if texts.is_empty() {
            Vec::new()
        } else {
            self.embedder.embed_examples(&texts).map_err(|e| format!("cannot embed the router's examples: {e}"))?
        };
        let vectors: Vec<(usize, Vec<f32>)> = self.examples.iter().map(|(r, _)| *r).zip(vectors).collect();
        let texts: Vec<(usize, &str)> = self.examples.iter().map(|(r, t)| (*r, t.as_str())).collect();
        let scorer = Scorer::build(
            self.scoring,
            self.lexical_weight,
            vectors,
            &texts,
            self.routes,
            self.embedder.dim(),
            self.embedder.parts(),
        )?;
        Ok(self.scorer.get_or_init(|| scorer))
    }
}

/// Embeds the examples on a thread of their own, so a first start (3,292 examples in
/// examples/routing.yaml: ~9 s on 2 cores) serves at once; routed requests wait for the index
/// meanwhile. (A reload during that build embeds the examples not yet stored a second time.)
fn build_in_background(index: &Arc<ExampleIndex>) {
    let index = Arc::clone(index);
    let examples = index.examples.len();
    tracing::info!(
        "router: embedding {examples} example utterances in the background (later starts read them from the vector store)"
    );
    let spawned = std::thread::Builder::new().name("router-examples".into()).spawn(move || {
        let started = Instant::now();
        match index.scorer() {
            Ok(_) => tracing::info!(
                "router: {examples} examples embedded in {:.1} s; the embedding tier is ready",
                started.elapsed().as_secs_f64()
            ),
            Err(e) => tracing::warn!("router: {e}; the first routed request tries again"),
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("router: cannot start the example-embedding thread ({e}); the first routed request embeds them");
    }
}

/// What the configured `scoring` keeps from the example vectors.
enum Scorer {
    /// (route, unit vector) for every example utterance.
    Nearest(Vec<(usize, Vec<f32>)>),
    /// Per route: the normalised mean of its examples (`None` for a route without examples).
    Centroid(Vec<Option<Vec<f32>>>),
    /// A softmax classifier trained on the example vectors, blended with one trained on their
    /// character n-grams when the weight is above 0.
    Linear(linear::Softmax, Option<(ngram::CharNgrams, f64)>),
}

impl Scorer {
    fn build(
        scoring: Scoring,
        lexical_weight: f64,
        vectors: Vec<(usize, Vec<f32>)>,
        texts: &[(usize, &str)],
        routes: usize,
        dim: usize,
        parts: usize,
    ) -> Result<Self, String> {
        Ok(match scoring {
            // Without examples every scorer abstains; nearest-example does so without training.
            _ if vectors.is_empty() => Scorer::Nearest(vectors),
            Scoring::Nearest => Scorer::Nearest(vectors),
            Scoring::Centroid => Scorer::Centroid(
                (0..routes)
                    .map(|route| {
                        let mut members = vectors.iter().filter(|(r, _)| *r == route).peekable();
                        members.peek()?;
                        let mut sum = vec![0f32; dim];
                        members.for_each(|(_, v)| sum.iter_mut().zip(v).for_each(|(s, x)| *s += x));
                        embed::normalize(&mut sum);
                        Some(sum)
                    })
                    .collect(),
            ),
            Scoring::Linear => {
                // Two independent trainings (~0.5 and ~0.8 s for examples/routing.yaml): side by side.
                let (softmax, lexical) = std::thread::scope(|scope| {
                    let lexical = (lexical_weight > 0.0)
                        .then(|| scope.spawn(|| (ngram::CharNgrams::train(texts, routes), lexical_weight)));
                    let softmax = linear::Softmax::train(&vectors, routes, parts);
                    (softmax, lexical.map(|handle| handle.join()))
                });
                let lexical = match lexical {
                    Some(Ok(model)) => Some(model),
                    Some(Err(_)) => return Err("training the router's n-gram classifier panicked".into()),
                    None => None,
                };
                Scorer::Linear(softmax.map_err(|e| format!("cannot train the router's classifier: {e}"))?, lexical)
            }
        })
    }

    /// Each route's score for `text` and its unit `query` vector (`f64::MIN` for a route it
    /// cannot score), and for a blend the scores of each of its two classifiers.
    fn scores(&self, text: &str, query: &[f32], routes: usize) -> (Vec<f64>, Option<[Vec<f64>; 2]>) {
        let mut best = vec![f64::MIN; routes];
        match self {
            Scorer::Linear(model, None) => best = model.probabilities(query),
            Scorer::Linear(model, Some((lexical, weight))) => {
                // A weighted product of the two distributions, renormalised: p ∝ p_emb · p_lex^w.
                let embedding = model.probabilities(query);
                let lexical: Vec<f64> = lexical.probabilities(text).into_iter().map(f64::from).collect();
                let logits: Vec<f64> =
                    embedding.iter().zip(&lexical).map(|(e, l)| e.max(1e-9).ln() + weight * l.max(1e-9).ln()).collect();
                let peak = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = logits.iter().map(|l| (l - peak).exp()).sum();
                let blend = logits.iter().map(|l| (l - peak).exp() / total).collect();
                return (blend, Some([embedding, lexical]));
            }
            Scorer::Centroid(centroids) => {
                for (route, centroid) in centroids.iter().enumerate() {
                    if let Some(c) = centroid {
                        best[route] = cosine(query, c);
                    }
                }
            }
            Scorer::Nearest(vectors) => {
                for (route, vector) in vectors {
                    best[*route] = best[*route].max(cosine(query, vector));
                }
            }
        }
        (best, None)
    }
}

/// What one tier saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TierTrace {
    pub ran: bool,
    pub decided: bool,
    /// Best routes first (at most 3).
    pub scores: Vec<(String, f64)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<String>,
    pub micros: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For a blended tier, the best routes of each classifier in the blend (`embedding`,
    /// `char_ngrams`), so a trace shows which of them carried the decision.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<&'static str, Vec<(String, f64)>>,
}

/// A routing decision and why.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub route: String,
    pub model: String,
    /// `keyword`, `embedding`, `classifier` or `default`.
    pub tier: &'static str,
    pub runner_up: Option<String>,
    pub instruction: String,
    pub keyword: TierTrace,
    pub embedding: TierTrace,
    pub classifier: TierTrace,
}

impl Decision {
    pub fn decided(&self) -> bool {
        self.tier != "pending"
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

fn top3(scores: &[(usize, f64)], names: &[String]) -> Vec<(String, f64)> {
    scores.iter().take(3).map(|(i, s)| (names[*i].clone(), (s * 1000.0).round() / 1000.0)).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum()
}

fn hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// When the embedding tier's example index is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexBuild {
    /// While the config loads when the example vectors are stored, otherwise on a background
    /// thread (a local model's first start); a remote embedder's on first use either way.
    #[default]
    AtLoad,
    /// On the first routed request (`check`, which only validates).
    OnFirstUse,
}

impl Router {
    /// Compiles the rules, embeds every example (through `embedder`, when the tier is on) and
    /// resolves each route's model. `price` gives a model's blended USD per million tokens.
    pub fn build(
        config: &RouterConfig,
        models: &BTreeMap<String, Arc<ModelConfig>>,
        price: &dyn Fn(&str) -> Option<f64>,
        embedder: Option<Arc<dyn Embedder>>,
        index_build: IndexBuild,
    ) -> Result<Self, String> {
        let names: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
        let rules =
            if config.keyword.enabled { Some(Rules::new(&config.routes, config.keyword.threshold)?) } else { None };
        let examples = match (config.embedding.enabled, embedder) {
            (true, Some(embedder)) => {
                let examples = config
                    .routes
                    .iter()
                    .enumerate()
                    .flat_map(|(route, r)| r.examples.iter().map(move |e| (route, e.clone())))
                    .collect();
                let remote = embedder.remote();
                let index = ExampleIndex {
                    embedder,
                    scorer: std::sync::OnceLock::new(),
                    building: Mutex::new(()),
                    examples,
                    scoring: config.embedding.scoring,
                    lexical_weight: config.embedding.lexical_weight,
                    routes: names.len(),
                };
                let index = Arc::new(index);
                if !remote && index_build == IndexBuild::AtLoad {
                    let texts: Vec<&str> = index.examples.iter().map(|(_, t)| t.as_str()).collect();
                    if index.embedder.remembers(&texts) {
                        index.scorer()?;
                    } else {
                        build_in_background(&index);
                    }
                }
                Some(index)
            }
            _ => None,
        };
        let models_for_routes = config
            .routes
            .iter()
            .map(|route| match route.quality_floor {
                None => route.model.clone(),
                Some(floor) => models
                    .iter()
                    .filter(|(_, m)| m.quality.get(&route.name).is_some_and(|q| *q >= floor))
                    .map(|(name, _)| (name, price(name).unwrap_or(f64::INFINITY)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or_else(|| route.model.clone(), |(name, _)| name.clone()),
            })
            .collect();
        Ok(Self {
            config: config.clone(),
            names,
            models: models_for_routes,
            rules,
            examples,
            classifier_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for the embedding tier's index (built in the background on a first start) and says
    /// why it could not be built; for a remote embedder, embeds the examples now.
    pub fn wait_ready(&self) -> Result<(), String> {
        self.examples.as_ref().map_or(Ok(()), |index| index.scorer().map(|_| ()))
    }

    pub fn route_names(&self) -> &[String] {
        &self.names
    }

    pub fn has_embeddings(&self) -> bool {
        self.examples.is_some()
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Starts a decision for `prompt` and runs tier 1.
    pub fn keyword_tier(&self, prompt: &str) -> Decision {
        let instruction = instruction::instruction(prompt);
        let mut decision = Decision {
            route: String::new(),
            model: String::new(),
            tier: "pending",
            runner_up: None,
            instruction,
            keyword: TierTrace::default(),
            embedding: TierTrace::default(),
            classifier: TierTrace::default(),
        };
        if let Some(rules) = &self.rules {
            let started = Instant::now();
            let scores = rules.score(&decision.instruction, &self.names);
            let choice = rules.decide(&scores);
            decision.keyword = TierTrace {
                ran: true,
                decided: choice.is_some(),
                scores: top3(&scores.scores, &self.names),
                matched: scores.matched,
                micros: started.elapsed().as_micros() as u64,
                ..TierTrace::default()
            };
            if let Some(route) = choice {
                decision.runner_up = scores.scores.get(1).map(|(i, _)| self.names[*i].clone());
                self.settle(&mut decision, route, "keyword");
            }
        }
        decision
    }

    /// Tier 2, when tier 1 abstained. CPU-bound: call it off the async executor.
    pub fn embedding_tier(&self, decision: &mut Decision) {
        let Some(index) = self.examples.as_ref().filter(|_| !decision.decided()) else { return };
        let started = Instant::now();
        let scorer = match index.scorer() {
            Ok(scorer) => scorer,
            Err(e) => {
                decision.embedding = TierTrace { ran: true, note: Some(e), ..TierTrace::default() };
                return;
            }
        };
        let query = match index.embedder.embed(&[decision.instruction.as_str()]) {
            Ok(mut v) if !v.is_empty() => v.swap_remove(0),
            Ok(_) => return,
            Err(e) => {
                decision.embedding = TierTrace { ran: true, note: Some(e.to_string()), ..TierTrace::default() };
                return;
            }
        };
        let (best, blended) = scorer.scores(&decision.instruction, &query, self.names.len());
        let ranked = |scores: &[f64]| {
            let mut ranked: Vec<(usize, f64)> = scores.iter().copied().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
            top3(&ranked, &self.names)
        };
        let components = blended
            .map(|[embedding, lexical]| {
                BTreeMap::from([("embedding", ranked(&embedding)), ("char_ngrams", ranked(&lexical))])
            })
            .unwrap_or_default();
        let mut scores: Vec<(usize, f64)> = best.into_iter().enumerate().filter(|(_, s)| *s > f64::MIN).collect();
        scores.sort_by(|a, b| b.1.total_cmp(&a.1));
        let cfg = &self.config.embedding;
        let choice = match scores.as_slice() {
            [(route, top), rest @ ..] => {
                let second = rest.first().map_or(0.0, |s| s.1);
                (*top >= cfg.min_score && top - second >= cfg.margin).then_some(*route)
            }
            [] => None,
        };
        decision.embedding = TierTrace {
            ran: true,
            decided: choice.is_some(),
            scores: top3(&scores, &self.names),
            matched: Vec::new(),
            micros: started.elapsed().as_micros() as u64,
            note: None,
            components,
        };
        if let Some(route) = choice {
            decision.runner_up = scores.get(1).map(|(i, _)| self.names[*i].clone());
            self.settle(decision, route, "embedding");
        }
    }

    pub fn wants_classifier(&self, decision: &Decision) -> bool {
        !decision.decided() && self.config.classifier.enabled
    }

    /// A cached classifier answer for this instruction: `Some(Some(route))`, `Some(None)` for a
    /// remembered "none of them", `None` if never asked.
    pub fn cached_classification(&self, decision: &Decision) -> Option<Option<usize>> {
        let cache = self.classifier_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(&hash(&decision.instruction)).copied()
    }

    /// The chat request body asking the classifier model to pick a route.
    pub fn classifier_request(&self, decision: &Decision) -> Value {
        let mut routes = String::new();
        for route in &self.config.routes {
            routes.push_str(&format!("- {}: {}\n", route.name, route.description));
        }
        let system = format!(
            "You route requests to the right specialist. Pick the one route that best fits the user's request, judging what the user asks to be done, not the material they pasted.\nRoutes:\n{routes}Answer with JSON only, exactly {{\"route\": \"<route name>\"}}, or {{\"route\": \"none\"}} if no route fits."
        );
        let request: String = decision.instruction.chars().take(2000).collect();
        json!({
            "model": self.config.classifier.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": request}],
            "temperature": 0,
            "max_tokens": 20,
            "response_format": {"type": "json_object"},
        })
    }

    /// Applies the classifier's answer (the assistant text), validating it; a bad or missing answer
    /// leaves the decision to the default route.
    pub fn apply_classification(
        &self,
        decision: &mut Decision,
        answer: Result<Option<usize>, String>,
        micros: u64,
        cached: bool,
    ) {
        let (choice, note) = match answer {
            Ok(choice) => (choice, cached.then(|| "cached".to_string())),
            Err(e) => (None, Some(e)),
        };
        decision.classifier = TierTrace {
            ran: true,
            decided: choice.is_some(),
            scores: choice.map(|i| vec![(self.names[i].clone(), 1.0)]).unwrap_or_default(),
            micros,
            note,
            ..TierTrace::default()
        };
        if let Some(route) = choice {
            self.settle(decision, route, "classifier");
        }
    }

    /// Parses a classifier answer text into a route (or a valid "none") and caches it.
    pub fn parse_classification(&self, decision: &Decision, text: &str) -> Result<Option<usize>, String> {
        let trimmed =
            text.trim().trim_start_matches("```json").trim_start_matches("```").trim_end_matches("```").trim();
        let value: Value =
            serde_json::from_str(trimmed).map_err(|_| format!("classifier answer is not JSON: {text:?}"))?;
        let route = value
            .get("route")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("classifier answer has no route: {text:?}"))?;
        let choice = if route == "none" {
            None
        } else {
            Some(self.index_of(route).ok_or_else(|| format!("classifier named an unknown route {route:?}"))?)
        };
        let mut cache = self.classifier_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CLASSIFIER_CACHE {
            cache.clear();
        }
        cache.insert(hash(&decision.instruction), choice);
        Ok(choice)
    }

    /// Falls back to the default route when no tier decided.
    pub fn finish(&self, decision: &mut Decision) {
        if !decision.decided() {
            let route = self.index_of(&self.config.default).unwrap_or(0);
            self.settle(decision, route, "default");
        }
    }

    fn settle(&self, decision: &mut Decision, route: usize, tier: &'static str) {
        decision.route = self.names[route].clone();
        decision.model = self.models[route].clone();
        decision.tier = tier;
    }
}
