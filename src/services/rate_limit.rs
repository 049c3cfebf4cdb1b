//! Leaky-bucket rate limiting with Synapse's semantics: a key may do `burst_count` actions at
//! once and then `per_second` on average. Unlike generic limiters, a check can look without
//! spending (`peek`), which Synapse's login flow needs: failed attempts are only counted when
//! they fail, but a locked-out account is refused before its password is even checked.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    config::RateLimit,
    error::{Error, Result},
};

pub struct RateLimiter<K> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    /// Actions counted, drained at `per_second` since `since`.
    level: f64,
    since: Instant,
}

/// Buckets are dropped once this many are held and they have drained.
const PRUNE_ABOVE: usize = 10_000;

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses with `M_LIMIT_EXCEEDED` if one more action would exceed the limit, without
    /// counting it.
    pub fn peek(&self, key: &K) -> Result<()> {
        self.act(key, false)
    }

    /// Counts one action, or refuses it with `M_LIMIT_EXCEEDED`.
    pub fn take(&self, key: &K) -> Result<()> {
        self.act(key, true)
    }

    /// Counts one action even over the limit (a failure that already happened).
    pub fn record(&self, key: &K) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let level = self.drained(buckets.get(key), now);
        buckets.insert(
            key.clone(),
            Bucket {
                level: level + 1.0,
                since: now,
            },
        );
    }

    fn act(&self, key: &K, count: bool) -> Result<()> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let level = self.drained(buckets.get(key), now);
        if level + 1.0 > self.limit.burst_count {
            let wait = (level + 1.0 - self.limit.burst_count) / self.limit.per_second;
            return Err(Error::limit_exceeded(Duration::from_secs_f64(wait)));
        }
        if count {
            if buckets.len() >= PRUNE_ABOVE {
                buckets.retain(|_, b| self.drained(Some(b), now) > 0.0);
            }
            buckets.insert(
                key.clone(),
                Bucket {
                    level: level + 1.0,
                    since: now,
                },
            );
        }
        Ok(())
    }

    fn drained(&self, bucket: Option<&Bucket>, now: Instant) -> f64 {
        bucket.map_or(0.0, |b| {
            (b.level - now.duration_since(b.since).as_secs_f64() * self.limit.per_second).max(0.0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refuses_with_a_retry_time() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.5,
            burst_count: 3.0,
        });
        for _ in 0..3 {
            limiter.take(&"a").unwrap();
        }
        let err = limiter.take(&"a").unwrap_err();
        assert!(err.to_string().contains("M_LIMIT_EXCEEDED"), "{err}");
        limiter.take(&"b").expect("other keys are not affected");
    }

    #[test]
    fn peek_does_not_spend() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 0.01,
            burst_count: 1.0,
        });
        for _ in 0..5 {
            limiter.peek(&1).unwrap();
        }
        limiter.record(&1);
        assert!(limiter.peek(&1).is_err());
    }
}
