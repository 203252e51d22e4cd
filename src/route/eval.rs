//! `llm-gateway eval-router`: accuracy, macro-F1, per-route precision/recall, the confusion
//! matrix, the share decided by each tier, per-tier latency and the estimated cost against always
//! using the most expensive route model.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::Decision;

#[derive(Debug, Deserialize)]
pub struct Row {
    pub prompt: String,
    pub intent: String,
}

/// Parses JSONL rows, naming the line of any bad one.
pub fn read_rows(text: &str, source: &str) -> Result<Vec<Row>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| format!("{source}:{}: {e} — each line must be {{\"prompt\": …, \"intent\": …}}", i + 1))
        })
        .collect()
}

fn percentile(values: &mut [u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64) * p).ceil() as usize;
    values[rank.saturating_sub(1).min(values.len() - 1)]
}

/// `price(model)` is the blended USD per million tokens of a model, when known.
pub fn report(rows: &[Row], decisions: &[Decision], routes: &[String], price: &dyn Fn(&str) -> Option<f64>) -> String {
    let n = rows.len().max(1);
    let correct = rows.iter().zip(decisions).filter(|(r, d)| r.intent == d.route).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rows: {}\naccuracy: {:.1} % ({correct}/{})",
        rows.len(),
        100.0 * correct as f64 / n as f64,
        rows.len()
    );

    let mut f1_sum = 0.0;
    let _ = writeln!(out, "\n{:<18} {:>9} {:>7} {:>6} {:>8}", "route", "precision", "recall", "f1", "support");
    for route in routes {
        let tp = rows.iter().zip(decisions).filter(|(r, d)| &r.intent == route && &d.route == route).count() as f64;
        let predicted = decisions.iter().filter(|d| &d.route == route).count() as f64;
        let actual = rows.iter().filter(|r| &r.intent == route).count() as f64;
        let precision = if predicted > 0.0 { tp / predicted } else { 0.0 };
        let recall = if actual > 0.0 { tp / actual } else { 0.0 };
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        f1_sum += f1;
        let _ = writeln!(out, "{route:<18} {:>9.3} {:>7.3} {f1:>6.3} {actual:>8}", precision, recall);
    }
    let _ = writeln!(out, "macro-F1: {:.3}", f1_sum / routes.len().max(1) as f64);

    let short = |r: &str| r.chars().take(6).collect::<String>();
    let _ = write!(out, "\nconfusion (rows = truth, columns = predicted)\n{:<18}", "");
    for route in routes {
        let _ = write!(out, " {:>6}", short(route));
    }
    let _ = writeln!(out);
    for truth in routes {
        let _ = write!(out, "{truth:<18}");
        for predicted in routes {
            let count = rows.iter().zip(decisions).filter(|(r, d)| &r.intent == truth && &d.route == predicted).count();
            let _ = write!(out, " {count:>6}");
        }
        let _ = writeln!(out);
    }

    let mut tiers: BTreeMap<&str, usize> = BTreeMap::new();
    for d in decisions {
        *tiers.entry(d.tier).or_default() += 1;
    }
    let _ = writeln!(out, "\ndecided by tier:");
    for (tier, count) in &tiers {
        let _ = writeln!(out, "  {tier:<11} {:>5.1} % ({count})", 100.0 * *count as f64 / n as f64);
    }

    let mut keyword: Vec<u64> = decisions.iter().filter(|d| d.keyword.ran).map(|d| d.keyword.micros).collect();
    let mut embedding: Vec<u64> = decisions.iter().filter(|d| d.embedding.ran).map(|d| d.embedding.micros).collect();
    let mut fast: Vec<u64> = decisions.iter().map(|d| d.keyword.micros + d.embedding.micros).collect();
    let mut classifier: Vec<u64> =
        decisions.iter().filter(|d| d.classifier.ran && d.classifier.micros > 0).map(|d| d.classifier.micros).collect();
    let _ = writeln!(out, "\nlatency (µs)      p50      p99   runs");
    for (name, values) in [
        ("keyword", &mut keyword),
        ("embedding", &mut embedding),
        ("tiers 1+2", &mut fast),
        ("classifier", &mut classifier),
    ] {
        let runs = values.len();
        let _ = writeln!(out, "  {name:<12} {:>8} {:>8} {runs:>6}", percentile(values, 0.5), percentile(values, 0.99));
    }

    // Cost: the routed models against sending everything to the priciest route model, with the
    // prompt's size as input (4 bytes a token) and a fixed 300-token answer.
    let priciest = decisions.iter().filter_map(|d| price(&d.model)).fold(0.0f64, f64::max);
    let mut routed = 0.0;
    let mut always = 0.0;
    for (row, d) in rows.iter().zip(decisions) {
        let tokens = row.prompt.len() as f64 / 4.0 + 300.0;
        routed += tokens * price(&d.model).unwrap_or(priciest) / 1e6;
        always += tokens * priciest / 1e6;
    }
    if always > 0.0 {
        let _ = writeln!(
            out,
            "\nestimated cost: ${routed:.4} routed vs ${always:.4} always on the priciest route model ({:.0} % saved)",
            100.0 * (1.0 - routed / always)
        );
    }
    out
}
