//! Health of one deployment, fed by every attempt: peak-EWMA latency, a rolling window for p95
//! and the error ratio, and a graduated circuit:
//!
//! ```text
//! healthy ──(p95 > slow_factor × its own baseline for 5 requests in a row, or error ratio high)──▶ degraded
//! healthy/degraded ──(open_after consecutive hard failures)──▶ open
//! open ──(cooldown, then canary probes)──▶ recovering ──(successes ramp its share back)──▶ healthy
//! ```
//!
//! Lock sections are tiny and never span an `.await`. Time is tokio's, so paused-time tests drive it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::HealthConfig;

const WINDOW: usize = 50;
/// Samples needed before a p95 baseline or an error ratio means anything.
const MIN_SAMPLES: usize = 10;
const SLOW_STREAK: u32 = 5;
/// Successes after which a recovering deployment is fully healthy again.
const RECOVERY_RAMP: u32 = 10;
/// EWMA decay for latency (per sample).
const EWMA_ALPHA: f64 = 0.3;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    Healthy,
    Degraded,
    Open { since: Instant },
    Recovering { successes: u32 },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Degraded => "degraded",
            State::Open { .. } => "open",
            State::Recovering { .. } => "recovering",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// (success, latency in ms) of recent attempts.
    window: VecDeque<(bool, f64)>,
    /// Peak-EWMA of latency: jumps up to a slow sample at once, decays slowly.
    ewma_ms: Option<f64>,
    baseline_p95: Option<f64>,
    slow_streak: u32,
    consecutive_failures: u32,
}

#[derive(Debug)]
pub struct Health {
    inner: Mutex<Inner>,
    in_flight: AtomicUsize,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                state: State::Healthy,
                window: VecDeque::with_capacity(WINDOW),
                ewma_ms: None,
                baseline_p95: None,
                slow_streak: 0,
                consecutive_failures: 0,
            }),
            in_flight: AtomicUsize::new(0),
        }
    }
}

/// Counts an attempt as in flight until dropped.
pub struct InFlight<'a>(&'a Health);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn p95(window: &VecDeque<(bool, f64)>) -> Option<f64> {
    // Runs on every attempt: a fixed buffer and a selection, no allocation and no full sort.
    let mut latencies = [0.0f64; WINDOW];
    let mut n = 0;
    for (_, ms) in window.iter().filter(|(ok, _)| *ok) {
        latencies[n] = *ms;
        n += 1;
    }
    if n < MIN_SAMPLES {
        return None;
    }
    let rank = (((n as f64) * 0.95).ceil() as usize).saturating_sub(1);
    let (_, value, _) = latencies[..n].select_nth_unstable_by(rank, f64::total_cmp);
    Some(*value)
}

fn error_ratio(window: &VecDeque<(bool, f64)>) -> Option<f64> {
    (window.len() >= MIN_SAMPLES).then(|| window.iter().filter(|(ok, _)| !ok).count() as f64 / window.len() as f64)
}

impl Health {
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere mid-update; the numbers are still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    pub fn ewma(&self) -> Option<Duration> {
        self.lock().ewma_ms.map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }

    pub fn p95(&self) -> Option<Duration> {
        p95(&self.lock().window).map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }

    /// Share of recent attempts that succeeded (1.0 with no history).
    pub fn success_rate(&self) -> f64 {
        1.0 - error_ratio(&self.lock().window).unwrap_or(0.0)
    }

    pub fn record_success(&self, latency: Duration, cfg: &HealthConfig) {
        let ms = latency.as_secs_f64() * 1000.0;
        let mut h = self.lock();
        h.consecutive_failures = 0;
        push(&mut h.window, (true, ms));
        h.ewma_ms = Some(match h.ewma_ms {
            Some(old) if ms < old => old + EWMA_ALPHA * (ms - old),
            _ => ms,
        });
        let current = p95(&h.window);
        let slow = match (current, h.baseline_p95) {
            (Some(p), Some(base)) => p > cfg.slow_factor * base,
            _ => false,
        };
        h.slow_streak = if slow { h.slow_streak + 1 } else { 0 };
        if let Some(p) = current {
            // The baseline learns only from normal periods, so slowness cannot become normal.
            h.baseline_p95 = Some(match h.baseline_p95 {
                None => p,
                Some(base) if !slow => base + 0.05 * (p - base),
                Some(base) => base,
            });
        }
        let erroring = error_ratio(&h.window).is_some_and(|r| r > cfg.degrade_error_ratio);
        h.state = match h.state {
            State::Healthy if h.slow_streak >= SLOW_STREAK || erroring => State::Degraded,
            State::Degraded if h.slow_streak == 0 && !erroring => State::Healthy,
            State::Open { .. } => State::Recovering { successes: 1 },
            State::Recovering { successes } if successes + 1 >= RECOVERY_RAMP => State::Healthy,
            State::Recovering { successes } => State::Recovering { successes: successes + 1 },
            other => other,
        };
    }

    /// A failed attempt. `hard` failures (5xx, timeouts, unreachable) can open the circuit; soft
    /// ones (rate limiting) only count toward the error ratio.
    pub fn record_failure(&self, hard: bool, cfg: &HealthConfig) {
        let mut h = self.lock();
        push(&mut h.window, (false, 0.0));
        if hard {
            h.consecutive_failures += 1;
        }
        let erroring = error_ratio(&h.window).is_some_and(|r| r > cfg.degrade_error_ratio);
        h.state = match h.state {
            State::Recovering { .. } if hard => State::Open { since: Instant::now() },
            _ if h.consecutive_failures >= cfg.open_after => State::Open { since: Instant::now() },
            State::Healthy if erroring => State::Degraded,
            other => other,
        };
    }

    /// The share of its configured traffic this deployment should get now, in 0..=1.
    pub fn traffic_factor(&self, cfg: &HealthConfig) -> f64 {
        let h = self.lock();
        match h.state {
            State::Healthy => 1.0,
            State::Degraded => {
                // Shift away in proportion to how bad it is, never below a trickle that keeps measuring.
                let errors = error_ratio(&h.window).unwrap_or(0.0);
                let slowness = match (p95(&h.window), h.baseline_p95) {
                    (Some(p), Some(base)) if p > 0.0 => base / p,
                    _ => 1.0,
                };
                (1.0 - errors).min(slowness).clamp(0.05, 0.5)
            }
            State::Open { since } if since.elapsed() < cfg.cooldown => 0.0,
            State::Open { .. } => cfg.canary_share,
            State::Recovering { successes } => {
                cfg.canary_share + (1.0 - cfg.canary_share) * f64::from(successes) / f64::from(RECOVERY_RAMP)
            }
        }
    }
}

fn push(window: &mut VecDeque<(bool, f64)>, sample: (bool, f64)) {
    if window.len() == WINDOW {
        window.pop_front();
    }
    window.push_back(sample);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HealthConfig {
        HealthConfig {
            degrade_error_ratio: 0.25,
            slow_factor: 2.0,
            open_after: 3,
            cooldown: Duration::from_secs(10),
            canary_share: 0.05,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_for_five_requests_degrades_and_recovers() {
        let h = Health::default();
        for _ in 0..20 {
            h.record_success(Duration::from_millis(100), &cfg());
        }
        assert_eq!(h.state(), State::Healthy);
        // p95 needs enough slow samples to move; then five slow requests in a row degrade.
        let mut slow_requests = 0;
        while h.state() == State::Healthy {
            h.record_success(Duration::from_millis(900), &cfg());
            slow_requests += 1;
            assert!(slow_requests < 20, "never degraded");
        }
        assert_eq!(h.state(), State::Degraded);
        assert!(h.traffic_factor(&cfg()) < 0.5);
        for _ in 0..60 {
            h.record_success(Duration::from_millis(100), &cfg());
        }
        assert_eq!(h.state(), State::Healthy);
        assert_eq!(h.traffic_factor(&cfg()), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn error_ratio_degrades() {
        let h = Health::default();
        for i in 0..20 {
            if i % 3 == 0 {
                h.record_failure(false, &cfg());
            } else {
                h.record_success(Duration::from_millis(50), &cfg());
            }
        }
        assert_eq!(h.state(), State::Degraded);
    }

    #[tokio::test(start_paused = true)]
    async fn hard_failures_open_then_canary_probes_and_ramp_back() {
        let h = Health::default();
        for _ in 0..3 {
            h.record_failure(true, &cfg());
        }
        assert!(matches!(h.state(), State::Open { .. }));
        assert_eq!(h.traffic_factor(&cfg()), 0.0);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(h.traffic_factor(&cfg()), 0.05, "after the cooldown only canary probes");
        h.record_success(Duration::from_millis(50), &cfg());
        assert_eq!(h.state(), State::Recovering { successes: 1 });
        let mut last = h.traffic_factor(&cfg());
        for _ in 0..8 {
            h.record_success(Duration::from_millis(50), &cfg());
            let now = h.traffic_factor(&cfg());
            assert!(now > last, "traffic returns gradually");
            last = now;
        }
        h.record_success(Duration::from_millis(50), &cfg());
        assert_eq!(h.state(), State::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens() {
        let h = Health::default();
        for _ in 0..3 {
            h.record_failure(true, &cfg());
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        h.record_success(Duration::from_millis(50), &cfg());
        h.record_failure(true, &cfg());
        assert!(matches!(h.state(), State::Open { .. }));
        assert_eq!(h.traffic_factor(&cfg()), 0.0, "the cooldown starts again");
    }
}
