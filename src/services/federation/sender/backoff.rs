//! Synapse's per-destination backoff (`synapse/util/retryutils.py`): the first failure waits
//! `destination_min_retry_interval`, each further one multiplies the wait by
//! `destination_retry_multiplier` and a random factor in [0.8, 1.4), up to
//! `destination_max_retry_interval`; a success (or any request from that server) clears it.

use crate::config::federation_backoff::FederationConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub min_ms: i64,
    pub multiplier: f64,
    pub max_ms: i64,
}

impl Backoff {
    pub fn from_config(config: &FederationConfig) -> Self {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self {
            min_ms: ms(config.destination_min_retry_interval.0).max(1),
            multiplier: config.destination_retry_multiplier,
            max_ms: ms(config.destination_max_retry_interval.0),
        }
    }

    /// The wait after a failure, given the wait before it (0 when the destination was up) and a
    /// random number in [0, 1).
    pub fn next_interval(&self, previous_ms: i64, random: f64) -> i64 {
        if previous_ms <= 0 {
            return self.min_ms.min(self.max_ms);
        }
        let jitter = 0.8 + 0.6 * random.clamp(0.0, 1.0);
        let next = previous_ms as f64 * self.multiplier * jitter;
        if next >= self.max_ms as f64 {
            self.max_ms
        } else {
            (next as i64).max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synapse_defaults() -> Backoff {
        Backoff::from_config(&FederationConfig::default())
    }

    #[test]
    fn defaults_are_synapses() {
        let backoff = synapse_defaults();
        assert_eq!(backoff.min_ms, 10 * 60 * 1000);
        assert_eq!(backoff.multiplier, 2.0);
        assert_eq!(backoff.max_ms, 7 * 24 * 3600 * 1000);
    }

    #[test]
    fn the_first_failure_waits_the_minimum_then_grows_by_the_multiplier_and_jitter() {
        let backoff = synapse_defaults();
        let first = backoff.next_interval(0, 0.99);
        assert_eq!(first, 600_000, "no jitter on the first wait");
        // 0.8 .. 1.4 times the multiplier.
        assert_eq!(backoff.next_interval(first, 0.0), 960_000);
        assert_eq!(backoff.next_interval(first, 0.5), 1_320_000);
        let top = backoff.next_interval(first, 0.999_999);
        assert!((1_679_000..1_680_000).contains(&top), "{top}");
        // Always more than before with a multiplier of 2.
        let mut wait = first;
        for i in 0..10 {
            let next = backoff.next_interval(wait, f64::from(i) / 10.0);
            assert!(next > wait, "{next} after {wait}");
            wait = next;
        }
    }

    #[test]
    fn the_wait_is_capped_at_the_maximum() {
        let backoff = synapse_defaults();
        let mut wait = 0;
        for _ in 0..100 {
            wait = backoff.next_interval(wait, 0.99);
        }
        assert_eq!(wait, backoff.max_ms);
        assert_eq!(backoff.next_interval(backoff.max_ms, 0.0), backoff.max_ms);
        let small = Backoff {
            min_ms: 1000,
            multiplier: 2.0,
            max_ms: 3000,
        };
        assert_eq!(small.next_interval(0, 0.5), 1000);
        assert_eq!(small.next_interval(1000, 0.5), 2200);
        assert_eq!(small.next_interval(2200, 0.5), 3000);
    }
}
