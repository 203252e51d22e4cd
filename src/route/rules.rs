//! Tier 1: keywords and regexes, compiled once per config (Aho-Corasick and a `RegexSet`), scored
//! per route in microseconds. It decides only when the best route clears the threshold and leads
//! the runner-up clearly; otherwise it abstains and the next tier judges.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::RegexSet;

use crate::config::router::RouteConfig;

/// The winner must score at least this multiple of the runner-up.
const LEAD: f64 = 1.5;

pub struct Rules {
    keywords: Option<AhoCorasick>,
    /// Keyword id → (route, weight, whether it needs word boundaries).
    keyword_info: Vec<(usize, f64, bool)>,
    regexes: Option<RegexSet>,
    /// Regex id → (route, weight).
    regex_routes: Vec<(usize, f64)>,
    threshold: f64,
    routes: usize,
}

/// Scores per route, best first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleScores {
    pub scores: Vec<(usize, f64)>,
    pub matched: Vec<String>,
}

impl Rules {
    pub fn new(routes: &[RouteConfig], threshold: f64) -> Result<Self, String> {
        let mut patterns = Vec::new();
        let mut keyword_info = Vec::new();
        let mut regex_patterns = Vec::new();
        let mut regex_routes = Vec::new();
        for (route, config) in routes.iter().enumerate() {
            for (text, weight) in &config.keywords {
                // Latin keywords match whole words ("sum" must not fire inside "summary");
                // CJK and symbol keywords match anywhere.
                let edges = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
                let bounded = edges(text.chars().next()) || edges(text.chars().last());
                patterns.push(text.to_lowercase());
                keyword_info.push((route, *weight, bounded));
            }
            for (pattern, weight) in &config.regexes {
                regex_patterns.push(pattern.clone());
                regex_routes.push((route, *weight));
            }
        }
        let keywords = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .map_err(|e| format!("cannot compile the router keywords: {e}"))?,
            )
        };
        let regexes = if regex_patterns.is_empty() {
            None
        } else {
            Some(RegexSet::new(&regex_patterns).map_err(|e| format!("cannot compile the router regexes: {e}"))?)
        };
        Ok(Self { keywords, keyword_info, regexes, regex_routes, threshold, routes: routes.len() })
    }

    pub fn score(&self, text: &str, names: &[String]) -> RuleScores {
        let mut totals = vec![0.0f64; self.routes];
        let mut seen = vec![false; self.keyword_info.len()];
        let mut matched = Vec::new();
        if let Some(ac) = &self.keywords {
            let lower = text.to_lowercase();
            let bytes = lower.as_bytes();
            for m in ac.find_iter(&lower) {
                let id = m.pattern().as_usize();
                let (route, weight, bounded) = self.keyword_info[id];
                if bounded {
                    let before = lower[..m.start()].chars().next_back();
                    let after = lower[m.end()..].chars().next();
                    if before.is_some_and(char::is_alphanumeric) || after.is_some_and(char::is_alphanumeric) {
                        continue;
                    }
                }
                if !seen[id] {
                    seen[id] = true;
                    totals[route] += weight;
                    matched.push(format!("{}:{}", names[route], String::from_utf8_lossy(&bytes[m.start()..m.end()])));
                }
            }
        }
        if let Some(set) = &self.regexes {
            for i in set.matches(text).iter() {
                let (route, weight) = self.regex_routes[i];
                totals[route] += weight;
                matched.push(format!("{}:/{}/", names[route], set.patterns()[i]));
            }
        }
        let mut scores: Vec<(usize, f64)> = totals.into_iter().enumerate().filter(|(_, s)| *s > 0.0).collect();
        scores.sort_by(|a, b| b.1.total_cmp(&a.1));
        RuleScores { scores, matched }
    }

    /// The route tier 1 decides on, if it is confident.
    pub fn decide(&self, scores: &RuleScores) -> Option<usize> {
        let (best, top) = *scores.scores.first()?;
        let second = scores.scores.get(1).map_or(0.0, |s| s.1);
        (top >= self.threshold && top >= LEAD * second && top > second).then_some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, keywords: &[(&str, f64)], regexes: &[(&str, f64)]) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            model: "m".into(),
            description: String::new(),
            keywords: keywords.iter().map(|(k, w)| (k.to_string(), *w)).collect(),
            regexes: regexes.iter().map(|(r, w)| (r.to_string(), *w)).collect(),
            examples: Vec::new(),
            quality_floor: None,
        }
    }

    #[test]
    fn keywords_need_word_boundaries_and_count_once() {
        let routes = vec![
            route("math", &[("sum", 1.0), ("integral", 2.0)], &[]),
            route("summarization", &[("summarize", 2.0), ("tl;dr", 2.0), ("总结", 2.0)], &[]),
            route("sql", &[], &[(r"(?i)\bselect\b.+\bfrom\b", 2.0)]),
        ];
        let names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
        let rules = Rules::new(&routes, 2.0).unwrap();
        let s = rules.score("Please SUMMARIZE the summary", &names);
        assert_eq!(s.scores, vec![(1, 2.0)], "`sum` inside summary does not count");
        assert_eq!(rules.decide(&s), Some(1));
        let s = rules.score("sum sum sum", &names);
        assert_eq!(s.scores, vec![(0, 1.0)]);
        assert_eq!(rules.decide(&s), None, "below the threshold");
        assert_eq!(rules.decide(&rules.score("请总结这篇文章", &names)), Some(1), "CJK keywords match inside text");
        assert_eq!(rules.decide(&rules.score("select name from users where id = 1", &names)), Some(2));
        let tie = rules.score("summarize this integral", &names);
        assert_eq!(rules.decide(&tie), None, "no clear lead");
    }

    #[test]
    fn a_negative_regex_weight_counts_against_its_route() {
        let routes = vec![
            route("translation", &[("translate", 1.0)], &[("(?i)^translate", 2.0), (r"(?i)\binto (rust|go)\b", -4.0)]),
            route("code", &[("rust", 1.0)], &[]),
        ];
        let names: Vec<String> = routes.iter().map(|r| r.name.clone()).collect();
        let rules = Rules::new(&routes, 3.0).unwrap();
        assert_eq!(rules.decide(&rules.score("translate this into French", &names)), Some(0));
        let vetoed = rules.score("translate this into Rust", &names);
        assert_eq!(vetoed.scores, vec![(1, 1.0)], "translation drops out: {vetoed:?}");
        assert!(vetoed.matched.iter().any(|m| m.starts_with("translation:/")), "the veto is explained");
        assert_eq!(rules.decide(&vetoed), None);
    }
}
