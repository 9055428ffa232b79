//! Runs that the suite's cases and an adapter's own tests both make, each asserting what it
//! promises on the same outcomes: the suite what every backend does, the adapter what only it
//! does.

use std::sync::Arc;
use std::time::Duration;

use lfusys_core::state::UploadState;

use super::fixtures::{chunk, upload};
use crate::{ClaimId, ClaimOutcome, CommitOutcome, MetadataStore, UploadId};

const LEASE: Duration = Duration::from_secs(30);
const T0: i64 = 1_700_000_000_000;

/// The last chunks committed at once: a new upload `id` of one chunk per store, each store
/// (its own connection or client to `first`'s data) claims its chunk, waits for all the others,
/// then commits. Asserts what holds on every backend — every commit is stored, exactly one
/// completes the set, the upload is then assembling with all its chunks — and returns the
/// `received` count each commit reported, in the stores' order.
pub async fn last_chunks_at_once<S: MetadataStore>(
    first: &S,
    stores: Vec<Arc<S>>,
    id: &str,
) -> Vec<u32> {
    let total = u32::try_from(stores.len()).expect("fewer than 2^32 stores");
    let id = UploadId::from(id);
    first
        .insert_upload(&upload(&id, "o", total, T0))
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(stores.len()));
    let mut tasks = Vec::new();
    for (index, store) in (0..total).zip(stores) {
        let (id, barrier) = (id.clone(), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            let claim = ClaimId::from(format!("claim-{index}"));
            let claimed = store
                .claim_chunk(&id, index, &claim, LEASE, T0)
                .await
                .unwrap();
            assert!(
                matches!(claimed, ClaimOutcome::Claimed { .. }),
                "{claimed:?}"
            );
            barrier.wait().await;
            store
                .commit_chunk(&id, &chunk(index, u64::from(index)), &claim, T0 + 1)
                .await
                .unwrap()
        }));
    }
    let mut received = Vec::new();
    let mut completed = 0;
    for task in tasks {
        match task.await.unwrap() {
            CommitOutcome::Stored {
                received: count,
                completed_set,
            } => {
                completed += u32::from(completed_set);
                received.push(count);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(completed, 1, "exactly one commit completes the set");
    let record = first.get_upload(&id).await.unwrap().unwrap();
    assert_eq!(record.state, UploadState::Assembling);
    assert_eq!(first.list_chunks(&id).await.unwrap().len(), total as usize);
    received
}
