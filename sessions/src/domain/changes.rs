//! Who is waiting for an upload to change, for the long poll of an upload's status
//! (`GET /api/v1/uploads/{id}?wait=N`, DESIGN §3.5).
//!
//! Every write of this process that may change an upload's state (the completing chunk
//! commit, a transition, the published File) tells [`UploadChanges::changed`]; a waiting
//! status read holds the upload's [`Notify`] and reads the upload again when woken. Writes of
//! other replicas (on AWS several sessions replicas share the stores) do not reach this
//! process: waiters also read again every `Config::wait_recheck`. Entries live only while
//! someone waits, so the map is bounded by the waits in progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use lfusys_core::ids::UploadId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct UploadChanges {
    waiting: Mutex<Waiting>,
    /// Cancelled when the service shuts down: waits answer at once then.
    closing: CancellationToken,
}

#[derive(Debug, Default)]
struct Waiting {
    by_upload: HashMap<UploadId, Weak<Notify>>,
    /// Entries whose waiters are gone are dropped when the map reaches this size.
    prune_at: usize,
}

impl UploadChanges {
    /// Wakes whoever waits on `upload_id` in this process.
    pub fn changed(&self, upload_id: &UploadId) {
        let notify = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_upload
            .get(upload_id)
            .and_then(Weak::upgrade);
        if let Some(n) = notify {
            n.notify_waiters();
        }
    }

    /// The notification of `upload_id`'s changes, kept while the returned handle lives.
    pub fn watch(&self, upload_id: &UploadId) -> Arc<Notify> {
        let mut w = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = w.by_upload.get(upload_id).and_then(Weak::upgrade) {
            return n;
        }
        if w.by_upload.len() >= w.prune_at {
            w.by_upload.retain(|_, n| n.strong_count() > 0);
            w.prune_at = 2 * w.by_upload.len() + 64;
        }
        let n = Arc::new(Notify::new());
        w.by_upload.insert(upload_id.clone(), Arc::downgrade(&n));
        n
    }

    /// Ends every wait (now and later) with the current answer: the service is stopping.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Resolves once [`close`](Self::close) was called.
    pub async fn closed(&self) {
        self.closing.cancelled().await;
    }

    /// Uploads someone waits on now.
    pub fn waiting(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_upload
            .values()
            .filter(|n| n.strong_count() > 0)
            .count()
    }

    /// Uploads with an entry (live or not yet pruned).
    pub fn tracked(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_upload
            .len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_change_wakes_the_waiters_of_that_upload_only() {
        let changes = UploadChanges::default();
        let (a, b) = (
            UploadId::from("a".to_owned()),
            UploadId::from("b".to_owned()),
        );
        let na = changes.watch(&a);
        let nb = changes.watch(&b);
        let wa = na.notified();
        let wb = nb.notified();
        tokio::pin!(wa, wb);
        wa.as_mut().enable();
        wb.as_mut().enable();
        changes.changed(&a);
        tokio::time::timeout(Duration::from_secs(1), wa)
            .await
            .unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(50), wb)
            .await
            .is_err());
    }

    #[test]
    fn entries_go_with_their_waiters() {
        let changes = UploadChanges::default();
        for i in 0..1000 {
            drop(changes.watch(&UploadId::from(format!("u{i}"))));
        }
        assert!(changes.tracked() <= 64 + 1, "{} entries", changes.tracked());
        let held = changes.watch(&UploadId::from("kept".to_owned()));
        for i in 0..200 {
            drop(changes.watch(&UploadId::from(format!("v{i}"))));
        }
        assert!(Arc::ptr_eq(
            &held,
            &changes.watch(&UploadId::from("kept".to_owned()))
        ));
    }
}
