//! Usage → USD. Prices come from the deployment's `price:` in the config, else from the built-in
//! list-price table (`prices.yaml`), matched on the upstream model id.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::config::Price as ConfigPrice;
use crate::types::Usage;

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl From<&ConfigPrice> for Price {
    fn from(p: &ConfigPrice) -> Self {
        Self {
            input: p.input_per_mtok,
            output: p.output_per_mtok,
            cached_input: p.cached_input_per_mtok,
            cache_write: p.cache_write_per_mtok,
        }
    }
}

impl Price {
    /// The cost of one request's usage.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens().min(usage.prompt_tokens);
        let written = usage.cache_creation_input_tokens.unwrap_or(0).min(usage.prompt_tokens - cached);
        let fresh = usage.prompt_tokens - cached - written;
        let per_token = |n: u64, per_million: f64| n as f64 * per_million / 1_000_000.0;
        per_token(fresh, self.input)
            + per_token(cached, self.cached_input.unwrap_or(self.input))
            + per_token(written, self.cache_write.unwrap_or(self.input))
            + per_token(usage.completion_tokens, self.output)
    }
}

fn table() -> &'static BTreeMap<String, Price> {
    static TABLE: OnceLock<BTreeMap<String, Price>> = OnceLock::new();
    // The table is compiled in and covered by tests; a parse failure would be a build bug.
    TABLE.get_or_init(|| serde_saphyr::from_str(include_str!("prices.yaml")).unwrap_or_default())
}

/// The built-in price for an upstream model id, by exact match or longest prefix, ignoring
/// vendor prefixes (`openai/gpt-4o`, `anthropic.claude-…`, `us.anthropic.claude-…`).
pub fn builtin_price(model: &str) -> Option<Price> {
    let table = table();
    let mut candidates = vec![model];
    if let Some((_, rest)) = model.rsplit_once('/') {
        candidates.push(rest);
    }
    let mut rest = model;
    while let Some((_, tail)) = rest.split_once('.') {
        // Stop at version dots such as gpt-4.1: only strip prefixes made of letters.
        if rest.split_once('.').is_some_and(|(head, _)| head.chars().all(|c| c.is_ascii_alphabetic())) {
            candidates.push(tail);
            rest = tail;
        } else {
            break;
        }
    }
    for candidate in candidates {
        if let Some(price) = table.get(candidate) {
            return Some(*price);
        }
        let best = table.iter().filter(|(key, _)| candidate.starts_with(key.as_str())).max_by_key(|(key, _)| key.len());
        if let Some((_, price)) = best {
            return Some(*price);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PromptTokensDetails;

    #[test]
    fn table_parses_and_matches_snapshots_and_vendor_prefixes() {
        assert!(table().len() > 20);
        assert_eq!(builtin_price("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(builtin_price("gpt-4o").unwrap().input, 2.50);
        assert_eq!(builtin_price("gpt-4.1-mini").unwrap().input, 0.40);
        assert_eq!(builtin_price("claude-sonnet-4-5-20250929").unwrap().output, 15.0);
        assert_eq!(builtin_price("us.anthropic.claude-3-5-sonnet-20240620-v1:0").unwrap().input, 3.0);
        assert_eq!(builtin_price("openai/gpt-4o-mini").unwrap().output, 0.60);
        assert_eq!(builtin_price("o3-mini").unwrap().input, 1.10);
        assert!(builtin_price("llama3.1:8b").is_none());
    }

    #[test]
    fn cost_prices_cached_and_written_tokens_apart() {
        let price = Price { input: 3.0, output: 15.0, cached_input: Some(0.30), cache_write: Some(3.75) };
        let mut usage = Usage::new(2112, 9);
        usage.prompt_tokens_details = Some(PromptTokensDetails { cached_tokens: 2000 });
        usage.cache_creation_input_tokens = Some(100);
        let expected = (12.0 * 3.0 + 2000.0 * 0.30 + 100.0 * 3.75 + 9.0 * 15.0) / 1e6;
        assert!((price.cost(&usage) - expected).abs() < 1e-12);
        let plain = Price { input: 0.15, output: 0.60, cached_input: None, cache_write: None };
        assert!((plain.cost(&Usage::new(1_000_000, 1_000_000)) - 0.75).abs() < 1e-9);
    }
}
