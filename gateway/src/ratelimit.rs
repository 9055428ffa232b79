//! In-memory sliding-window rate limits (per client address, per account).
//!
//! The core ([`SlidingWindow`]) is pure: the caller passes the time, so it is tested without
//! a clock. Each key keeps the times of its last `limit` admitted requests; a request is
//! admitted when fewer than `limit` of them fall inside the window. That is exact (no burst
//! of twice the limit at a window boundary) and bounded: at most `limit` timestamps per key,
//! and keys idle for a whole window are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Above this many tracked keys, idle keys are swept on the next admission.
const SWEEP_THRESHOLD: usize = 10_000;

#[derive(Debug)]
pub struct SlidingWindow {
    limit: usize,
    window_ms: i64,
    hits: HashMap<String, VecDeque<i64>>,
    next_sweep_ms: i64,
}

impl SlidingWindow {
    /// `limit` requests per `window`; a limit of 0 admits everything.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit as usize,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(1),
            hits: HashMap::new(),
            next_sweep_ms: 0,
        }
    }

    /// Admits (and records) one request of `key` at `now_ms`, or says how long to wait.
    pub fn check(&mut self, key: &str, now_ms: i64) -> Result<(), Duration> {
        if self.limit == 0 {
            return Ok(());
        }
        self.sweep(now_ms);
        let window_start = now_ms.saturating_sub(self.window_ms);
        let times = self.hits.entry(key.to_owned()).or_default();
        while times.front().is_some_and(|&t| t <= window_start) {
            times.pop_front();
        }
        if times.len() >= self.limit {
            // The oldest admitted request leaves the window first.
            let oldest = times.front().copied().unwrap_or(now_ms);
            let wait_ms = (oldest + self.window_ms - now_ms).max(1);
            return Err(Duration::from_millis(wait_ms as u64));
        }
        times.push_back(now_ms);
        Ok(())
    }

    /// Number of keys currently tracked.
    pub fn tracked(&self) -> usize {
        self.hits.len()
    }

    fn sweep(&mut self, now_ms: i64) {
        if self.hits.len() < SWEEP_THRESHOLD && now_ms < self.next_sweep_ms {
            return;
        }
        let window_start = now_ms.saturating_sub(self.window_ms);
        self.hits
            .retain(|_, times| times.back().is_some_and(|&t| t > window_start));
        self.next_sweep_ms = now_ms.saturating_add(self.window_ms);
    }
}

/// A thread-safe [`SlidingWindow`] on the wall clock.
#[derive(Debug)]
pub struct RateLimiter {
    inner: Mutex<SlidingWindow>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            inner: Mutex::new(SlidingWindow::new(limit, window)),
        }
    }

    /// `Err(seconds to wait)` (at least 1) when `key` is over its limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let now = lfusys_core::clock::now_ms();
        let mut window = match self.inner.lock() {
            Ok(g) => g,
            // A panic while holding the lock leaves only counters behind: keep going.
            Err(poisoned) => poisoned.into_inner(),
        };
        window
            .check(key, now)
            .map_err(|wait| wait.as_millis().div_ceil(1000).max(1) as u64)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn admits_up_to_the_limit_then_says_when_to_retry() {
        let mut w = SlidingWindow::new(3, MIN);
        assert_eq!(w.check("a", 1_000), Ok(()));
        assert_eq!(w.check("a", 2_000), Ok(()));
        assert_eq!(w.check("a", 3_000), Ok(()));
        // The first request leaves the window at 61 000.
        assert_eq!(w.check("a", 10_000), Err(Duration::from_secs(51)));
        // Refused requests are not recorded, so the wait does not grow.
        assert_eq!(w.check("a", 20_000), Err(Duration::from_secs(41)));
        // Other keys are independent.
        assert_eq!(w.check("b", 20_000), Ok(()));
    }

    #[test]
    fn the_window_slides() {
        let mut w = SlidingWindow::new(2, MIN);
        assert_eq!(w.check("a", 0), Ok(()));
        assert_eq!(w.check("a", 30_000), Ok(()));
        assert!(w.check("a", 59_999).is_err());
        assert_eq!(w.check("a", 60_000), Ok(()));
        assert!(w.check("a", 60_001).is_err());
        assert_eq!(w.check("a", 90_000), Ok(()));
    }

    #[test]
    fn no_double_burst_at_a_boundary() {
        let mut w = SlidingWindow::new(10, MIN);
        for i in 0..10 {
            assert_eq!(w.check("a", 59_000 + i), Ok(()));
        }
        // A fixed window would reset at 60 000; a sliding one does not.
        assert!(w.check("a", 61_000).is_err());
    }

    #[test]
    fn zero_limit_is_off() {
        let mut w = SlidingWindow::new(0, MIN);
        for i in 0..1000 {
            assert_eq!(w.check("a", i), Ok(()));
        }
        assert_eq!(w.tracked(), 0);
    }

    #[test]
    fn idle_keys_are_swept() {
        let mut w = SlidingWindow::new(5, MIN);
        for i in 0..100 {
            w.check(&format!("k{i}"), 0).unwrap();
        }
        assert_eq!(w.tracked(), 100);
        w.check("late", 120_000).unwrap();
        assert_eq!(w.tracked(), 1);
    }

    #[test]
    fn limiter_rounds_retry_after_up_to_seconds() {
        let l = RateLimiter::new(1, MIN);
        assert_eq!(l.check("x"), Ok(()));
        let wait = l.check("x").unwrap_err();
        assert!((59..=60).contains(&wait), "{wait}");
    }
}
