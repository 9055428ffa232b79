//! Waiting for a condition that other processes or tasks make true. Every wait is bounded and
//! fails the test with what it waited for and what it saw last, never with a bare timeout.

use std::future::Future;
use std::time::{Duration, Instant};

/// What a check returns: `true`, `Some(v)` or `Ok(v)` when the condition holds; otherwise
/// `false`, `None` or `Err(what was seen)`.
pub trait Outcome {
    type Value;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl Outcome for bool {
    type Value = ();
    fn into_result(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "not yet".to_owned())
    }
}

impl<T, E: std::fmt::Display> Outcome for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// The pause after the `n`th unsuccessful check: quick at first (most conditions hold within
/// milliseconds), then at most every 100 ms so a slow one does not spin.
fn pause(n: u32) -> Duration {
    Duration::from_millis((5u64 << n.min(5)).min(100))
}

/// Runs `check` until its outcome holds and returns the value, for at most `timeout`.
///
/// # Panics
/// After `timeout`, with `what` and the last outcome seen.
pub async fn eventually<O, F, Fut>(what: &str, timeout: Duration, mut check: F) -> O::Value
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = Instant::now() + timeout;
    let mut misses = 0;
    loop {
        match check().await.into_result() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(pause(misses)).await,
        }
        misses += 1;
    }
}

/// [`eventually`] for code that is not async (a test driving child processes).
///
/// # Panics
/// After `timeout`, with `what` and the last outcome seen.
pub fn blocking<O: Outcome>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> O,
) -> O::Value {
    let deadline = Instant::now() + timeout;
    let mut misses = 0;
    loop {
        match check().into_result() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(pause(misses)),
        }
        misses += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_holds() {
        let mut calls = 0;
        let v = eventually("three calls", Duration::from_secs(5), || {
            calls += 1;
            std::future::ready((calls >= 3).then_some(calls))
        })
        .await;
        assert_eq!(v, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for the impossible; last seen: still 1")]
    fn fails_with_what_was_seen_last() {
        blocking("the impossible", Duration::from_millis(30), || {
            Err::<(), _>("still 1")
        });
    }

    #[test]
    fn pauses_grow_to_a_bound() {
        assert_eq!(pause(0), Duration::from_millis(5));
        assert_eq!(pause(2), Duration::from_millis(20));
        assert_eq!(pause(30), Duration::from_millis(100));
    }
}
