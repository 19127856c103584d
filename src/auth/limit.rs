//! Per-principal rate limits: a token bucket each, refilled continuously. A request
//! over the limit is told how long until a token is there (`Retry-After`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A rate: `per_second` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets by principal name.
#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limiter")
    }
}

impl Limiter {
    /// Takes a token from `who`'s bucket; `Err(wait)` when it is empty.
    pub fn take(&self, who: &str, rate: Rate, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(who.to_string()).or_insert(Bucket { tokens: rate.burst, at: now });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * rate.per_second;
        bucket.tokens = (bucket.tokens + refill).min(rate.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate.per_second.max(1e-6)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_then_recovery() {
        let limiter = Limiter::default();
        let rate = Rate { per_second: 2.0, burst: 3.0 };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("a", rate, t0).is_ok());
        }
        let wait = limiter.take("a", rate, t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        assert!(limiter.take("b", rate, t0).is_ok(), "another principal has its own bucket");
        assert!(limiter.take("a", rate, t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.take("a", rate, t0 + Duration::from_millis(500)).is_err());
        assert!(limiter.take("a", rate, t0 + Duration::from_secs(60)).is_ok(), "refills up to the burst");
    }
}
