//! No panic ends a thread silently. Per-record code on a reader's thread runs under
//! [`guard`] (the record is reported and skipped, the reader goes on); a background
//! loop runs under [`restarting`] (reported, then started again with backoff until
//! its stop token fires).
//!
//! Panics here are Courier's bugs, not input: decoding never panics by design
//! (fuzzed). These wrappers make a bug a logged, counted event instead of a reader
//! that stops following its topic while the process looks healthy.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `f`; a panic is logged as an error with `what` and gives `None`.
pub fn guard<T>(what: &str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(panic) => {
            tracing::error!(what, panic = %panic_text(panic.as_ref()), "panic caught; the record is skipped and the reader goes on");
            None
        }
    }
}

/// Runs `body` until `stop` fires, starting it again (after 1 s, doubling up to a
/// minute) whenever it returns an error or panics before then. Blocking: for a
/// thread of its own.
pub fn restarting<E: std::fmt::Display>(name: &str, stop: &CancellationToken, mut body: impl FnMut() -> Result<(), E>) {
    let mut backoff = Duration::from_secs(1);
    while !stop.is_cancelled() {
        match catch_unwind(AssertUnwindSafe(&mut body)) {
            Ok(Ok(())) if stop.is_cancelled() => return,
            Ok(Ok(())) => tracing::error!(name, "background loop returned before its stop; restarting"),
            Ok(Err(e)) => tracing::error!(name, error = %e, ?backoff, "background loop failed; restarting"),
            Err(panic) => tracing::error!(name, panic = %panic_text(panic.as_ref()), ?backoff, "background loop panicked; restarting"),
        }
        let until = std::time::Instant::now() + backoff;
        while std::time::Instant::now() < until && !stop.is_cancelled() {
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// A panic payload as text (`panic!` gives a `&str` or a `String`).
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_and_reported_as_none() {
        assert_eq!(guard("ok", || 7), Some(7));
        assert_eq!(guard("boom", || -> u8 { panic!("boom") }), None);
    }

    #[test]
    fn a_failing_loop_is_restarted_until_its_stop() {
        let stop = CancellationToken::new();
        let mut runs = 0;
        restarting("test", &stop, || -> Result<(), String> {
            runs += 1;
            if runs == 1 {
                panic!("first run panics");
            }
            stop.cancel();
            Ok(())
        });
        assert_eq!(runs, 2);
    }
}
