//! Built-in example handlers: what `courier worker`, `dev` and `demo` run, and what
//! the integration and interop tests drive. Each shows one kind of work or failure.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::router::{Context, Handler, HandlerError, Router};

/// `echo`: returns its input. The smallest possible handler.
pub struct Echo;

#[derive(Debug, Serialize, JsonSchema)]
pub struct Echoed {
    pub echo: Value,
}

impl Handler for Echo {
    type Input = Value;
    type Output = Echoed;
    async fn handle(&self, input: Value, _ctx: Context) -> Result<Echoed, HandlerError> {
        Ok(Echoed { echo: input })
    }
}

/// `sleep`: I/O-bound work that reports progress and honours cancellation.
pub struct Sleep;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SleepInput {
    /// Total time to sleep, in milliseconds.
    pub ms: u64,
    /// Progress events to send along the way (default 4).
    #[serde(default)]
    pub steps: Option<u32>,
    /// Misbehave: keep sleeping when cancelled (shows the cancel grace period).
    #[serde(default)]
    pub ignore_cancel: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SleepOutput {
    pub slept_ms: u64,
}

impl Handler for Sleep {
    type Input = SleepInput;
    type Output = SleepOutput;
    async fn handle(&self, input: SleepInput, ctx: Context) -> Result<SleepOutput, HandlerError> {
        let steps = input.steps.unwrap_or(4).clamp(1, 100);
        let step = Duration::from_millis(input.ms / u64::from(steps));
        for i in 1..=steps {
            if input.ignore_cancel {
                tokio::time::sleep(step).await;
            } else {
                tokio::select! {
                    _ = tokio::time::sleep(step) => {}
                    _ = ctx.cancel.cancelled() => return Err(HandlerError::permanent("cancelled", "sleep interrupted")),
                }
            }
            if steps > 1 && i < steps {
                ctx.progress(100.0 * i as f32 / steps as f32, Some(format!("step {i} of {steps}")));
            }
        }
        Ok(SleepOutput { slept_ms: input.ms })
    }
}

/// `primes`: CPU-bound work, run off the async threads.
pub struct Primes;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PrimesInput {
    /// Count primes up to this number (at most 10,000,000).
    pub n: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct PrimesOutput {
    pub n: u64,
    pub primes: u64,
}

impl Handler for Primes {
    type Input = PrimesInput;
    type Output = PrimesOutput;
    async fn handle(&self, input: PrimesInput, _ctx: Context) -> Result<PrimesOutput, HandlerError> {
        if input.n > 10_000_000 {
            return Err(HandlerError::permanent("too_big", "n must be at most 10,000,000"));
        }
        let n = input.n;
        let primes = tokio::task::spawn_blocking(move || count_primes(n))
            .await
            .map_err(|e| HandlerError::retryable("worker_busy", e.to_string()))?;
        Ok(PrimesOutput { n, primes })
    }
}

fn count_primes(n: u64) -> u64 {
    if n < 2 {
        return 0;
    }
    let mut sieve = vec![true; n as usize + 1];
    sieve[0] = false;
    sieve[1] = false;
    let mut i = 2;
    while i * i <= n as usize {
        if sieve[i] {
            (i * i..=n as usize).step_by(i).for_each(|j| sieve[j] = false);
        }
        i += 1;
    }
    sieve.iter().filter(|p| **p).count() as u64
}

/// `fail`: always fails with the code and message it is given.
pub struct Fail;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FailInput {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub retryable: bool,
}

impl Handler for Fail {
    type Input = FailInput;
    type Output = ();
    async fn handle(&self, input: FailInput, _ctx: Context) -> Result<(), HandlerError> {
        Err(HandlerError { code: input.code, message: input.message, retryable: input.retryable, retry_after: None })
    }
}

/// `flaky`: fails with a retryable error until attempt `succeed_on_attempt` (or
/// until the clock passes `succeed_after`), then succeeds. Shows retry tiers.
pub struct Flaky;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FlakyInput {
    #[serde(default)]
    pub succeed_on_attempt: Option<u32>,
    /// RFC 3339 time after which it succeeds.
    #[serde(default)]
    pub succeed_after: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FlakyOutput {
    pub attempt: u32,
}

impl Handler for Flaky {
    type Input = FlakyInput;
    type Output = FlakyOutput;
    async fn handle(&self, input: FlakyInput, ctx: Context) -> Result<FlakyOutput, HandlerError> {
        let by_attempt = input.succeed_on_attempt.is_none_or(|n| ctx.attempt >= n);
        let by_time = input.succeed_after.is_none_or(|t| chrono::Utc::now() >= t);
        if by_attempt && by_time {
            Ok(FlakyOutput { attempt: ctx.attempt })
        } else {
            Err(HandlerError::retryable("flaky", format!("attempt {} failed on purpose", ctx.attempt)))
        }
    }
}

/// `panic`: panics. Shows that a handler panic is caught, dead-lettered, and the
/// worker goes on.
pub struct Panic;

impl Handler for Panic {
    type Input = Value;
    type Output = ();
    async fn handle(&self, _input: Value, _ctx: Context) -> Result<(), HandlerError> {
        panic!("the panic handler panicked, as asked")
    }
}

/// The router of all example handlers.
pub fn example_router() -> Router {
    Router::new()
        .route_described("echo", "Returns its input unchanged.", Echo)
        .route_described("sleep", "Sleeps, reporting progress; honours cancellation.", Sleep)
        .route_described("primes", "Counts primes up to n (CPU-bound).", Primes)
        .route_described("fail", "Always fails with the given code and message.", Fail)
        .route_described("flaky", "Fails retryably until an attempt or a time, then succeeds.", Flaky)
        .route_described("panic", "Panics (the worker survives; the command is dead-lettered).", Panic)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_primes() {
        assert_eq!(super::count_primes(100), 25);
        assert_eq!(super::count_primes(1), 0);
    }
}
