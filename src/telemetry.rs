//! Telemetry as named events: metric names live here, and one function per event does the log
//! line and the metrics together. Labels are low-cardinality: configured model and provider
//! names, endpoints, status codes and error kinds, never keys or prompts.

pub mod cost;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::time::Instant;

use crate::types::Usage;

pub const REQUESTS_TOTAL: &str = "gateway_requests_total";
pub const REQUEST_DURATION: &str = "gateway_request_duration_seconds";
pub const UPSTREAM_DURATION: &str = "gateway_upstream_duration_seconds";
pub const OVERHEAD_DURATION: &str = "gateway_overhead_seconds";
pub const TOKENS_TOTAL: &str = "gateway_tokens_total";
pub const UPSTREAM_ERRORS_TOTAL: &str = "gateway_upstream_errors_total";
pub const CONFIG_RELOADS_TOTAL: &str = "gateway_config_reloads_total";
/// A running total in USD (a gauge, since Prometheus counters in `metrics` are integers).
pub const COST_USD_TOTAL: &str = "gateway_cost_usd_total";

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once; later calls return the same handle.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ];
            let overhead = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(OVERHEAD_DURATION.into()), &overhead)
                .and_then(|b| b.set_buckets(&latency))
                .and_then(|b| b.install_recorder())
                .inspect_err(|e| tracing::warn!("Prometheus metrics are disabled: {e}"))
                .ok()
        })
        .as_ref()
}

/// What one request did, filled in as the pipeline runs and emitted once by [`RequestRecord::finish`].
#[derive(Debug)]
pub struct RequestRecord {
    pub request_id: String,
    pub endpoint: &'static str,
    pub started: Instant,
    pub client: Option<Arc<str>>,
    /// The configured model name the client asked for (only once it is known to exist).
    pub model: Option<Arc<str>>,
    pub provider: Option<Arc<str>>,
    pub upstream_model: Option<Arc<str>>,
    pub stream: bool,
    /// Time spent waiting on the upstream (to the full body, or to the first chunk for streams).
    pub upstream_time: Duration,
    pub usage: Option<Usage>,
    pub error: Option<&'static str>,
    pub prompt_excerpt: Option<String>,
    /// The chosen deployment's price, when known.
    pub price: Option<cost::Price>,
    /// Every upstream attempt, rendered for `x-gateway-attempts` and the log.
    pub attempts: Option<String>,
    /// The semantic route and the tier that decided it, for requests to `auto`.
    pub route: Option<(String, &'static str)>,
    /// The routing decision trace (JSON) for the log.
    pub route_trace: Option<String>,
}

impl RequestRecord {
    pub fn new(request_id: String, endpoint: &'static str) -> Self {
        Self {
            request_id,
            endpoint,
            started: Instant::now(),
            client: None,
            model: None,
            provider: None,
            upstream_model: None,
            stream: false,
            upstream_time: Duration::ZERO,
            usage: None,
            error: None,
            prompt_excerpt: None,
            price: None,
            attempts: None,
            route: None,
            route_trace: None,
        }
    }

    /// USD for the usage so far, when both usage and a price are known.
    pub fn cost_usd(&self) -> Option<f64> {
        Some(self.price?.cost(self.usage.as_ref()?))
    }

    /// Gateway time so far that was not spent waiting on the upstream.
    pub fn overhead(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.upstream_time)
    }

    /// Emits the request log line and metrics. `outcome` is `ok`, `error` or `client_closed`.
    pub fn finish(self, status: u16, outcome: &'static str, overhead: Duration) {
        let total = self.started.elapsed();
        let model = self.model.clone().unwrap_or_else(|| Arc::from("unknown"));
        let provider = self.provider.clone().unwrap_or_else(|| Arc::from("none"));
        let status_label = status_label(status);
        metrics::counter!(REQUESTS_TOTAL, "endpoint" => self.endpoint, "model" => model.clone(), "provider" => provider.clone(), "status" => status_label)
            .increment(1);
        metrics::histogram!(REQUEST_DURATION, "endpoint" => self.endpoint, "model" => model.clone(), "provider" => provider.clone())
            .record(total.as_secs_f64());
        metrics::histogram!(OVERHEAD_DURATION, "endpoint" => self.endpoint).record(overhead.as_secs_f64());
        if self.provider.is_some() {
            metrics::histogram!(UPSTREAM_DURATION, "model" => model.clone(), "provider" => provider.clone())
                .record(self.upstream_time.as_secs_f64());
        }
        let cost = self.cost_usd();
        if let Some(cost) = cost {
            metrics::gauge!(COST_USD_TOTAL, "model" => model.clone(), "provider" => provider.clone()).increment(cost);
        }
        if let Some(usage) = self.usage {
            metrics::counter!(TOKENS_TOTAL, "model" => model.clone(), "provider" => provider.clone(), "type" => "prompt")
                .increment(usage.prompt_tokens);
            metrics::counter!(TOKENS_TOTAL, "model" => model.clone(), "provider" => provider.clone(), "type" => "completion")
                .increment(usage.completion_tokens);
        }
        tracing::info!(
            target: "llm_gateway::request",
            request_id = %self.request_id,
            endpoint = self.endpoint,
            client = self.client.as_deref().unwrap_or("-"),
            model = &*model,
            provider = &*provider,
            upstream_model = self.upstream_model.as_deref().unwrap_or("-"),
            stream = self.stream,
            status,
            outcome,
            error = self.error.unwrap_or("-"),
            prompt_tokens = self.usage.map_or(0, |u| u.prompt_tokens),
            completion_tokens = self.usage.map_or(0, |u| u.completion_tokens),
            cached_tokens = self.usage.map_or(0, |u| u.cached_tokens()),
            cost_usd = cost,
            upstream_ms = self.upstream_time.as_secs_f64() * 1000.0,
            overhead_ms = overhead.as_secs_f64() * 1000.0,
            total_ms = total.as_secs_f64() * 1000.0,
            prompt = self.prompt_excerpt.as_deref(),
            attempts = self.attempts.as_deref(),
            route = self.route.as_ref().map(|r| r.0.as_str()),
            route_tier = self.route.as_ref().map(|r| r.1),
            route_trace = self.route_trace.as_deref(),
            "request finished"
        );
    }
}

/// Counts an upstream failure (including ones that end a stream after it started).
pub fn upstream_error(model: &str, provider: &str, status: u16, kind: &'static str) {
    metrics::counter!(UPSTREAM_ERRORS_TOTAL, "model" => model.to_string(), "provider" => provider.to_string(), "status" => status_label(status), "kind" => kind)
        .increment(1);
}

pub fn config_reloaded(ok: bool) {
    metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => if ok { "ok" } else { "rejected" }).increment(1);
}

fn status_label(status: u16) -> &'static str {
    #[expect(clippy::match_overlapping_arm, reason = "exact codes first, then classes")]
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
