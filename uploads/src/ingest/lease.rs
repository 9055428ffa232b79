//! The lease on a chunk (DESIGN §3 step 2: "another request is streaming the same chunk right
//! now" is a `409` with `Retry-After`): whoever holds it writes the chunk; it is renewed
//! every third of its length while the body streams, and given back on every path that does
//! not record the chunk, so that the client's retry need not wait for it to run out.
//!
//! [`LeaseGuard`] is that promise. Armed when the lease is granted, it releases it:
//! - [`LeaseGuard::release`]: now, and waits for the release (an answer is sent after it);
//! - on drop, without [`LeaseGuard::disarm`]: in the background, on the Tokio runtime. That
//!   covers a request future that is cancelled (the client went away and the server dropped
//!   the handler) or that panics. Outside a runtime nothing can be sent: the lease runs out.
//!
//! A chunk that was recorded (`CommitChunk` stored it) is disarmed and never released.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use storage::StoreResult;
use tokio_util::sync::CancellationToken;

use super::IngestError;

type Release = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Releases a chunk's lease unless disarmed; see the module documentation.
#[must_use = "dropping the guard at once releases the lease"]
pub struct LeaseGuard {
    // In a mutex only so that the guard is `Sync` (a held chunk is shared while its lease is
    // renewed); it is taken once, never contended.
    release: std::sync::Mutex<Option<Release>>,
}

impl LeaseGuard {
    /// A guard whose release is `release` (a future: nothing happens before it is run).
    pub fn new(release: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            release: std::sync::Mutex::new(Some(Box::pin(release))),
        }
    }

    /// The lease is used up (the chunk was recorded): nothing will be released.
    pub fn disarm(self) {
        drop(self.take());
    }

    fn take(&self) -> Option<Release> {
        self.release
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Releases the lease now and waits until that is done. The release runs as its own
    /// task, so that cancelling the caller midway does not cut it off.
    pub async fn release(self) {
        let Some(release) = self.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                if let Err(e) = runtime.spawn(release).await {
                    tracing::warn!(error = %e, "releasing a chunk lease did not finish");
                }
            }
            Err(_) => release.await,
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(release) = self.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // Detached: drop cannot wait; the task runs on after the request is gone.
                drop(runtime.spawn(release));
            }
            Err(_) => {
                tracing::warn!("a chunk lease was dropped outside a runtime; it will run out");
            }
        }
    }
}

/// Runs `write` while calling `renew` every `every`. A renewal that fails stops the write
/// (someone else may own the chunk now) through `abort`, the write's own error path rather
/// than dropping it, so that no byte of it can land after the chunk passed to another
/// writer; the renewal's error is returned. Otherwise the write's result is.
pub(crate) async fn write_with_lease<T, W, R, F>(
    write: W,
    every: Duration,
    mut renew: R,
    abort: &CancellationToken,
) -> Result<StoreResult<T>, IngestError>
where
    W: Future<Output = StoreResult<T>>,
    R: FnMut() -> F,
    F: Future<Output = Result<(), IngestError>>,
{
    tokio::pin!(write);
    let every = every.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lost = loop {
        tokio::select! {
            written = &mut write => return Ok(written),
            _ = tick.tick() => {
                if let Err(e) = renew().await {
                    break e;
                }
            }
        }
    };
    abort.cancel();
    let _ = write.await;
    Err(lost)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A fake release that counts how often it ran.
    fn counting() -> (Arc<AtomicUsize>, impl Future<Output = ()> + Send + 'static) {
        let n = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&n);
        (n, async move {
            seen.fetch_add(1, Ordering::SeqCst);
        })
    }

    /// Lets spawned tasks run (the tests use the current-thread runtime).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn dropped_without_disarm_releases_exactly_once() {
        let (n, release) = counting();
        let guard = LeaseGuard::new(release);
        settle().await;
        assert_eq!(n.load(Ordering::SeqCst), 0, "nothing before the drop");
        drop(guard);
        settle().await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn disarmed_never_releases() {
        let (n, release) = counting();
        LeaseGuard::new(release).disarm();
        settle().await;
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn released_explicitly_once_and_not_again_on_drop() {
        let (n, release) = counting();
        LeaseGuard::new(release).release().await;
        assert_eq!(n.load(Ordering::SeqCst), 1, "done when release returns");
        settle().await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_cancelled_request_future_releases() {
        let (n, release) = counting();
        let request = async move {
            let guard = LeaseGuard::new(release);
            // The body never finishes: the client went away and the server drops us.
            std::future::pending::<()>().await;
            guard.disarm();
        };
        let cut = tokio::time::timeout(Duration::from_millis(10), request).await;
        assert!(cut.is_err());
        settle().await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_aborted_or_panicking_task_releases() {
        let (n, release) = counting();
        let task = tokio::spawn(async move {
            let _guard = LeaseGuard::new(release);
            std::future::pending::<()>().await;
        });
        settle().await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        settle().await;
        assert_eq!(n.load(Ordering::SeqCst), 1);

        let (n, release) = counting();
        let task: tokio::task::JoinHandle<()> = tokio::spawn(async move {
            let _guard = LeaseGuard::new(release);
            tokio::task::yield_now().await;
            panic!("handler bug");
        });
        assert!(task.await.unwrap_err().is_panic());
        settle().await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn dropped_outside_a_runtime_does_not_panic() {
        let (n, release) = counting();
        drop(LeaseGuard::new(release));
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_failed_renewal_stops_the_write() {
        let abort = CancellationToken::new();
        let stopped = abort.clone();
        let write = async move {
            stopped.cancelled().await;
            Err::<String, _>(storage::StoreError::body("aborted"))
        };
        let renewals = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&renewals);
        let renew = move || {
            let seen = Arc::clone(&seen);
            async move {
                if seen.fetch_add(1, Ordering::SeqCst) < 2 {
                    Ok(())
                } else {
                    Err(IngestError::LeaseLost { index: 0 })
                }
            }
        };
        let out = write_with_lease(write, Duration::from_millis(5), renew, &abort).await;
        assert!(matches!(out, Err(IngestError::LeaseLost { index: 0 })));
        assert_eq!(renewals.load(Ordering::SeqCst), 3);
        assert!(abort.is_cancelled());
    }

    #[tokio::test]
    async fn a_finished_write_is_returned() {
        let abort = CancellationToken::new();
        let out = write_with_lease(
            async { Ok("etag".to_owned()) },
            Duration::from_secs(10),
            || async { Err(IngestError::LeaseLost { index: 0 }) },
            &abort,
        )
        .await;
        assert_eq!(out.unwrap().unwrap(), "etag");
        assert!(!abort.is_cancelled());
    }
}
