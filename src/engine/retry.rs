//! The one retry/backoff helper: exponential backoff with full jitter and a cap, honouring an
//! upstream's `Retry-After` only when it fits what is left of the latency budget.

use std::time::Duration;

use crate::config::RetryPolicy;

/// The upper bound of the jittered wait before retry number `retry` (0 = the first retry).
pub fn backoff_cap(policy: &RetryPolicy, retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.min(30));
    policy.base.saturating_mul(factor).min(policy.max)
}

/// How long to wait before the next retry, or `None` if waiting would not fit: a `Retry-After`
/// longer than the remaining budget (or than the policy's cap when there is no budget) means the
/// deployment should be left for another one now.
pub fn delay(
    policy: &RetryPolicy,
    retry: u32,
    retry_after: Option<&str>,
    remaining: Option<Duration>,
    unit_random: f64,
) -> Option<Duration> {
    let limit = remaining.unwrap_or(Duration::MAX);
    if let Some(seconds) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
        let wait = Duration::from_secs(seconds);
        let cap = remaining.unwrap_or(policy.max);
        return (wait <= cap).then_some(wait);
    }
    // Full jitter: uniform over [0, cap] spreads retries from many clients apart.
    let wait = backoff_cap(policy, retry).mul_f64(unit_random.clamp(0.0, 1.0));
    (wait < limit).then_some(wait)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::ErrorClass;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
            on: vec![ErrorClass::ServerError],
        }
    }

    #[test]
    fn schedule_doubles_to_the_cap() {
        let caps: Vec<u128> = (0..7).map(|r| backoff_cap(&policy(), r).as_millis()).collect();
        assert_eq!(caps, [200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn retry_after_is_honoured_only_within_the_budget() {
        assert_eq!(delay(&policy(), 0, Some("2"), Some(Duration::from_secs(10)), 0.5), Some(Duration::from_secs(2)));
        assert_eq!(delay(&policy(), 0, Some("20"), Some(Duration::from_secs(10)), 0.5), None);
        assert_eq!(delay(&policy(), 0, Some("20"), None, 0.5), None, "without a budget the policy cap applies");
        assert_eq!(delay(&policy(), 0, Some("3"), None, 0.5), Some(Duration::from_secs(3)));
        // An HTTP-date Retry-After falls back to the jittered schedule.
        assert_eq!(
            delay(&policy(), 1, Some("Wed, 21 Oct 2015 07:28:00 GMT"), None, 0.5),
            Some(Duration::from_millis(200))
        );
    }

    proptest! {
        #[test]
        fn jitter_stays_within_cap_and_budget(retry in 0u32..40, r in 0.0f64..1.0, budget_ms in proptest::option::of(0u64..10_000)) {
            let remaining = budget_ms.map(Duration::from_millis);
            if let Some(wait) = delay(&policy(), retry, None, remaining, r) {
                prop_assert!(wait <= backoff_cap(&policy(), retry));
                prop_assert!(wait <= policy().max);
                if let Some(left) = remaining { prop_assert!(wait < left); }
            }
        }
    }
}
