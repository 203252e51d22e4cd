//! The plan step: for one model, the order in which its deployments are tried. The first is
//! picked by the model's strategy (or its sticky session, or the canary split); the rest follow as
//! in-model failover, open circuits last. Health feeds every choice through a traffic factor, so
//! degraded deployments lose traffic gradually and recovered ones regain it gradually.

pub mod health;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

pub use health::{Health, State};

use crate::config::{Reliability, Strategy};
use crate::rng;

/// What balancing needs to know about one deployment.
#[derive(Debug, Clone)]
pub struct Member {
    pub weight: u32,
    /// Percent of traffic reserved for a canary deployment.
    pub canary: Option<f64>,
    /// Custom score in 0..=1 (`weighted_score`).
    pub score: f64,
    /// Blended USD per million tokens (input + output), when the price is known.
    pub cost: Option<f64>,
    pub health: Arc<Health>,
}

/// Health outlives config reloads: keyed by provider, endpoint and upstream model.
#[derive(Default)]
pub struct HealthRegistry {
    map: Mutex<HashMap<String, Arc<Health>>>,
}

impl HealthRegistry {
    pub fn get(&self, key: &str) -> Arc<Health> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key.to_string()).or_default().clone()
    }
}

/// Per-model balancing state.
#[derive(Default)]
pub struct Balancer {
    round_robin: AtomicUsize,
    sticky: Mutex<HashMap<String, (usize, Instant)>>,
    requests: AtomicU64,
    hedges: AtomicU64,
}

impl Balancer {
    /// The order in which to try `members` for one request.
    pub fn plan(&self, members: &[Member], cfg: &Reliability, session: Option<&str>) -> Vec<usize> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let factors: Vec<f64> = members.iter().map(|m| m.health.traffic_factor(&cfg.health)).collect();
        let mut pool: Vec<usize> = (0..members.len()).filter(|&i| factors[i] > 0.0).collect();
        let mut order = Vec::with_capacity(members.len());
        if let Some(i) = session.and_then(|s| self.sticky_target(s)).filter(|i| pool.contains(i)) {
            order.push(i);
        } else if let Some(i) = canary_pick(members, &pool) {
            order.push(i);
        } else {
            let regular: Vec<usize> = pool.iter().copied().filter(|&i| members[i].canary.is_none()).collect();
            let from = if regular.is_empty() { &pool } else { &regular };
            if !from.is_empty() {
                order.push(self.choose(cfg, members, &factors, from, true));
            }
        }
        pool.retain(|i| !order.contains(i));
        while !pool.is_empty() {
            let next = self.choose(cfg, members, &factors, &pool, false);
            order.push(next);
            pool.retain(|&i| i != next);
        }
        // Open circuits still come last: trying them beats failing without trying.
        let mut closed: Vec<usize> = (0..members.len()).filter(|i| !order.contains(i)).collect();
        closed.sort_by_key(|&i| match members[i].health.state() {
            State::Open { since } => since,
            _ => Instant::now(),
        });
        order.extend(closed);
        order
    }

    fn sticky_target(&self, session: &str) -> Option<usize> {
        let sticky = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
        sticky.get(session).filter(|(_, until)| *until > Instant::now()).map(|(i, _)| *i)
    }

    /// Pins `session` to deployment `index` after it served a request.
    pub fn stick(&self, session: &str, index: usize, ttl: std::time::Duration) {
        let mut sticky = self.sticky.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if sticky.len() > 100_000 {
            sticky.retain(|_, (_, until)| *until > now);
        }
        sticky.insert(session.to_string(), (index, now + ttl));
    }

    /// Whether one more hedged attempt fits in `max_extra` (a fraction of requests); counts it if so.
    pub fn try_hedge(&self, max_extra: f64) -> bool {
        let requests = self.requests.load(Ordering::Relaxed) as f64;
        let hedges = self.hedges.load(Ordering::Relaxed) as f64;
        if hedges + 1.0 > (max_extra * requests).max(0.0) {
            return false;
        }
        self.hedges.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// One pick from `pool`; `primary` is the request's first choice (it advances round robin).
    fn choose(&self, cfg: &Reliability, members: &[Member], factors: &[f64], pool: &[usize], primary: bool) -> usize {
        let effective = |i: usize| f64::from(members[i].weight.max(1)) * factors[i];
        match cfg.strategy {
            Strategy::Weighted => weighted_pick(pool, effective),
            Strategy::RoundRobin => {
                let start = if primary {
                    self.round_robin.fetch_add(1, Ordering::Relaxed)
                } else {
                    self.round_robin.load(Ordering::Relaxed)
                };
                // Degraded deployments keep their turn only with their traffic factor's probability.
                (0..pool.len())
                    .map(|k| pool[(start + k) % pool.len()])
                    .find(|&i| rng::unit() < factors[i])
                    .unwrap_or(pool[start % pool.len()])
            }
            Strategy::LeastInflight => argmin(pool, |i| (members[i].health.in_flight() as f64 + 1.0) / effective(i)),
            Strategy::LeastLatency => {
                // Power of two choices over peak-EWMA × load: cheap, and avoids herding on one "best".
                let a = weighted_pick(pool, effective);
                let rest: Vec<usize> = pool.iter().copied().filter(|&i| i != a).collect();
                if rest.is_empty() {
                    return a;
                }
                let b = weighted_pick(&rest, effective);
                let load = |i: usize| {
                    let h = &members[i].health;
                    let latency = h.ewma().map_or(0.0, |d| d.as_secs_f64());
                    latency * (h.in_flight() as f64 + 1.0) / factors[i]
                };
                if load(b) < load(a) { b } else { a }
            }
            Strategy::LowestCost => argmin(pool, |i| members[i].cost.unwrap_or(f64::INFINITY) / factors[i]),
            Strategy::WeightedScore => {
                let w = cfg.score_weights;
                let latency = |i: usize| members[i].health.ewma().map(|d| d.as_secs_f64());
                let min_latency = pool.iter().filter_map(|&i| latency(i)).fold(f64::INFINITY, f64::min);
                let min_cost = pool.iter().filter_map(|&i| members[i].cost).fold(f64::INFINITY, f64::min);
                let total = (w.latency + w.cost + w.success + w.custom).max(f64::EPSILON);
                let score = |i: usize| {
                    // Unknown latency scores as the best (explore); unknown cost as middling.
                    let latency_score =
                        latency(i).map_or(1.0, |l| if l > 0.0 { (min_latency / l).min(1.0) } else { 1.0 });
                    let cost_score =
                        members[i].cost.map_or(0.5, |c| if c > 0.0 { (min_cost / c).min(1.0) } else { 1.0 });
                    let s = w.latency * latency_score
                        + w.cost * cost_score
                        + w.success * members[i].health.success_rate()
                        + w.custom * members[i].score;
                    s / total * factors[i]
                };
                argmin(pool, |i| -score(i))
            }
        }
    }
}

fn canary_pick(members: &[Member], pool: &[usize]) -> Option<usize> {
    let roll = rng::unit() * 100.0;
    let mut cumulative = 0.0;
    for &i in pool {
        if let Some(percent) = members[i].canary {
            cumulative += percent;
            if roll < cumulative {
                return Some(i);
            }
        }
    }
    None
}

fn weighted_pick(pool: &[usize], weight: impl Fn(usize) -> f64) -> usize {
    let total: f64 = pool.iter().map(|&i| weight(i)).sum();
    if total <= 0.0 {
        return pool[rng::below(pool.len())];
    }
    let mut roll = rng::unit() * total;
    for &i in pool {
        roll -= weight(i);
        if roll < 0.0 {
            return i;
        }
    }
    pool[pool.len() - 1]
}

/// The pool member with the lowest key; ties broken at random so equal deployments share load.
fn argmin(pool: &[usize], key: impl Fn(usize) -> f64) -> usize {
    let best = pool.iter().map(|&i| key(i)).fold(f64::INFINITY, f64::min);
    let ties: Vec<usize> = pool.iter().copied().filter(|&i| key(i) <= best).collect();
    if ties.is_empty() { pool[rng::below(pool.len())] } else { ties[rng::below(ties.len())] }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::HealthConfig;

    fn member(weight: u32) -> Member {
        Member { weight, canary: None, score: 0.5, cost: None, health: Arc::new(Health::default()) }
    }

    fn first_picks(balancer: &Balancer, members: &[Member], cfg: &Reliability, n: usize) -> Vec<usize> {
        let mut counts = vec![0; members.len()];
        for _ in 0..n {
            counts[balancer.plan(members, cfg, None)[0]] += 1;
        }
        counts
    }

    #[test]
    fn weighted_random_follows_weights_and_plans_cover_everyone() {
        let members = vec![member(3), member(1)];
        let cfg = Reliability::default();
        let b = Balancer::default();
        let counts = first_picks(&b, &members, &cfg, 4000);
        assert!((2800..3200).contains(&counts[0]), "{counts:?}");
        let plan = b.plan(&members, &cfg, None);
        assert_eq!(plan.len(), 2);
        assert_ne!(plan[0], plan[1]);
    }

    #[test]
    fn round_robin_alternates() {
        let members = vec![member(1), member(1), member(1)];
        let cfg = Reliability { strategy: Strategy::RoundRobin, ..Reliability::default() };
        let b = Balancer::default();
        let picks: Vec<usize> = (0..6).map(|_| b.plan(&members, &cfg, None)[0]).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn lowest_cost_and_least_inflight() {
        let mut members = vec![member(1), member(1)];
        members[0].cost = Some(10.0);
        members[1].cost = Some(1.0);
        let cfg = Reliability { strategy: Strategy::LowestCost, ..Reliability::default() };
        assert_eq!(Balancer::default().plan(&members, &cfg, None), [1, 0]);
        let cfg = Reliability { strategy: Strategy::LeastInflight, ..Reliability::default() };
        let _busy = members[1].health.start();
        assert_eq!(Balancer::default().plan(&members, &cfg, None)[0], 0);
    }

    #[tokio::test(start_paused = true)]
    async fn least_latency_and_weighted_score_prefer_the_fast_one() {
        let members = vec![member(1), member(1)];
        let hc = HealthConfig::default();
        for _ in 0..20 {
            members[0].health.record_success(Duration::from_millis(400), &hc);
            members[1].health.record_success(Duration::from_millis(40), &hc);
        }
        for strategy in [Strategy::LeastLatency, Strategy::WeightedScore] {
            let cfg = Reliability { strategy, ..Reliability::default() };
            let counts = first_picks(&Balancer::default(), &members, &cfg, 200);
            assert_eq!(counts[0], 0, "{strategy:?}: {counts:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_circuits_go_last_and_degraded_ones_lose_traffic() {
        let members = vec![member(1), member(1)];
        let cfg = Reliability::default();
        for _ in 0..cfg.health.open_after {
            members[0].health.record_failure(true, &cfg.health);
        }
        let b = Balancer::default();
        for _ in 0..50 {
            assert_eq!(b.plan(&members, &cfg, None), [1, 0]);
        }
    }

    #[test]
    fn canary_gets_its_percentage_and_sticky_sessions_stay() {
        let mut members = vec![member(1), member(1)];
        members[1].canary = Some(10.0);
        let cfg = Reliability::default();
        let b = Balancer::default();
        let counts = first_picks(&b, &members, &cfg, 5000);
        assert!((400..600).contains(&counts[1]), "{counts:?}");
        b.stick("agent-7", 1, Duration::from_secs(60));
        for _ in 0..20 {
            assert_eq!(b.plan(&members, &cfg, Some("agent-7"))[0], 1);
        }
    }

    #[test]
    fn hedge_budget_caps_extra_calls() {
        let b = Balancer::default();
        let members = vec![member(1)];
        let cfg = Reliability::default();
        let mut hedges = 0;
        for _ in 0..1000 {
            b.plan(&members, &cfg, None);
            if b.try_hedge(0.05) {
                hedges += 1;
            }
        }
        assert_eq!(hedges, 50);
    }
}
