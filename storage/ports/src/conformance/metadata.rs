//! Conformance cases of [`MetadataStore`]: upload sessions, chunk claims and commits (a chunk is
//! known by the CRC-64/NVME it was recorded with), declared whole-file checksums, state
//! transitions, files and their pages.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lfusys_core::digest::Crc64;
use lfusys_core::state::UploadState;

use super::fixtures::{chunk, file, upload};
use super::scenarios::last_chunks_at_once;
use crate::{
    ClaimId, ClaimOutcome, CommitOutcome, Concat, MetadataStore, SizeDeclared, StoreError,
    UploadId, UploadRecord, UserId,
};

/// Opens metadata stores of one backend for the cases.
pub trait MetadataHarness: Sync {
    type Store: MetadataStore;
    /// Where a store keeps its data (a directory, a table prefix); the case drops it at its end.
    type Place: Send + Sync;
    /// Fresh, empty data that nothing else uses.
    fn place(&self) -> impl Future<Output = Self::Place> + Send;
    /// A store on `place`. Every call is another connection (or client), as another process
    /// would open.
    fn open(&self, place: &Self::Place) -> impl Future<Output = Self::Store> + Send;
}

const LEASE: Duration = Duration::from_secs(30);
const T0: i64 = 1_700_000_000_000;

/// A store on fresh data, and that data.
async fn fresh<H: MetadataHarness>(h: &H) -> (H::Place, H::Store) {
    let place = h.place().await;
    let store = h.open(&place).await;
    (place, store)
}

/// The ids of `uploads`, in order.
fn ids(uploads: &[UploadRecord]) -> Vec<&str> {
    uploads.iter().map(|u| u.upload_id.as_str()).collect()
}

async fn store_chunk(s: &impl MetadataStore, id: &str, index: u32, crc: Crc64) -> CommitOutcome {
    let claim = format!("claim-{index}-{crc:x}");
    let c = s
        .claim_chunk(
            &UploadId::from(&id),
            index,
            &ClaimId::from(&claim),
            LEASE,
            T0,
        )
        .await
        .unwrap();
    assert!(matches!(c, ClaimOutcome::Claimed { .. }), "{c:?}");
    s.commit_chunk(
        &UploadId::from(&id),
        &chunk(index, crc),
        &ClaimId::from(&claim),
        T0,
    )
    .await
    .unwrap()
}

pub async fn uploads_round_trip_and_list(h: &impl MetadataHarness) {
    let (place, s) = fresh(h).await;
    let mut u = upload("u1", "alice", 3, T0);
    u.sha256 = Some("cd".repeat(32));
    u.crc64nvme = Some(u64::MAX); // all 64 bits
    u.size = 5_000_000_000_000; // TBs fit
    s.insert_upload(&u).await.unwrap();
    assert!(matches!(
        s.insert_upload(&u).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_upload(&UploadId::from("u1")).await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(s.get_upload(&UploadId::from("nope")).await.unwrap(), None);
    s.insert_upload(&upload("u2", "alice", 1, T0 + 1))
        .await
        .unwrap();
    s.insert_upload(&upload("u3", "bob", 1, T0 + 2))
        .await
        .unwrap();
    assert!(s
        .transition(
            &UploadId::from("u2"),
            &[UploadState::Uploading],
            UploadState::Cancelled,
            None,
            T0 + 5
        )
        .await
        .unwrap());
    let ids = |v: Vec<UploadRecord>| v.into_iter().map(|u| u.upload_id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_uploads(&UserId::from("alice"), &[]).await.unwrap()),
        ["u2", "u1"]
    );
    assert_eq!(
        ids(s
            .list_uploads(
                &UserId::from("alice"),
                &[UploadState::Uploading, UploadState::Assembling]
            )
            .await
            .unwrap()),
        ["u1"]
    );
    assert_eq!(
        ids(s.list_uploads(&UserId::from("carol"), &[]).await.unwrap()),
        Vec::<String>::new()
    );
    s.check().await.unwrap();
    // Reopening keeps the data and the schema; another store on the same data (another
    // process) sees the same data.
    drop(s);
    let s = h.open(&place).await;
    assert_eq!(s.get_upload(&UploadId::from("u1")).await.unwrap(), Some(u));
}

pub async fn claims_lease_renew_and_expire(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    s.insert_upload(&upload("u", "o", 2, T0)).await.unwrap();
    // Two CRCs of chunk 0; `b` is above i64::MAX.
    let a: Crc64 = 0xaaaa;
    let b: Crc64 = 0xbbbb_0000_0000_bbbb;
    assert!(matches!(
        s.claim_chunk(
            &UploadId::from("missing"),
            0,
            &ClaimId::from("c1"),
            LEASE,
            T0
        )
        .await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.claim_chunk(&UploadId::from("u"), 0, &ClaimId::from("c1"), LEASE, T0)
            .await
            .unwrap(),
        ClaimOutcome::Claimed {
            lease_until_ms: T0 + 30_000
        }
    );
    // Another claimant while the lease lives.
    assert_eq!(
        s.claim_chunk(&UploadId::from("u"), 0, &ClaimId::from("c2"), LEASE, T0 + 1)
            .await
            .unwrap(),
        ClaimOutcome::InProgress
    );
    // The holder renews.
    assert_eq!(
        s.claim_chunk(
            &UploadId::from("u"),
            0,
            &ClaimId::from("c1"),
            LEASE,
            T0 + 10_000
        )
        .await
        .unwrap(),
        ClaimOutcome::Claimed {
            lease_until_ms: T0 + 40_000
        }
    );
    assert_eq!(
        s.claim_chunk(
            &UploadId::from("u"),
            0,
            &ClaimId::from("c2"),
            LEASE,
            T0 + 39_999
        )
        .await
        .unwrap(),
        ClaimOutcome::InProgress
    );
    expired_and_released_claims(&s, a, b).await;
    stored_chunks_and_closed_uploads(&s, a, b).await;
}

/// A lease that ran out is taken over; a released claim is free; only its holder releases it.
async fn expired_and_released_claims(s: &impl MetadataStore, a: Crc64, b: Crc64) {
    // Expired: taken over; the old holder can no longer commit.
    assert_eq!(
        s.claim_chunk(
            &UploadId::from("u"),
            0,
            &ClaimId::from("c2"),
            LEASE,
            T0 + 40_000
        )
        .await
        .unwrap(),
        ClaimOutcome::Claimed {
            lease_until_ms: T0 + 70_000
        }
    );
    assert_eq!(
        s.commit_chunk(
            &UploadId::from("u"),
            &chunk(0, a),
            &ClaimId::from("c1"),
            T0 + 41_000
        )
        .await
        .unwrap(),
        CommitOutcome::NotAccepting(UploadState::Uploading)
    );
    // Release only by the holder.
    s.release_chunk(&UploadId::from("u"), 0, &ClaimId::from("c1"))
        .await
        .unwrap();
    assert_eq!(
        s.claim_chunk(
            &UploadId::from("u"),
            0,
            &ClaimId::from("c3"),
            LEASE,
            T0 + 41_000
        )
        .await
        .unwrap(),
        ClaimOutcome::InProgress
    );
    s.release_chunk(&UploadId::from("u"), 0, &ClaimId::from("c2"))
        .await
        .unwrap();
    // Released: a commit without the claim is refused, a new claim succeeds.
    assert_eq!(
        s.commit_chunk(
            &UploadId::from("u"),
            &chunk(0, b),
            &ClaimId::from("c2"),
            T0 + 41_000
        )
        .await
        .unwrap(),
        CommitOutcome::NotAccepting(UploadState::Uploading)
    );
    assert!(matches!(
        s.claim_chunk(
            &UploadId::from("u"),
            0,
            &ClaimId::from("c3"),
            LEASE,
            T0 + 41_000
        )
        .await
        .unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
}

/// An expired claim that nobody took may still commit; a stored chunk answers every later claim
/// with its CRC, and every later commit by comparing CRCs; a closed upload takes no chunks.
async fn stored_chunks_and_closed_uploads(s: &impl MetadataStore, a: Crc64, b: Crc64) {
    // An expired claim that nobody took may still commit.
    assert_eq!(
        s.commit_chunk(
            &UploadId::from("u"),
            &chunk(0, a),
            &ClaimId::from("c3"),
            T0 + 999_000
        )
        .await
        .unwrap(),
        CommitOutcome::Stored {
            received: 1,
            completed_set: false
        }
    );
    assert_eq!(
        s.claim_chunk(&UploadId::from("u"), 0, &ClaimId::from("c4"), LEASE, T0)
            .await
            .unwrap(),
        ClaimOutcome::AlreadyStored { crc64nvme: a }
    );
    assert_eq!(
        s.commit_chunk(
            &UploadId::from("u"),
            &chunk(0, a),
            &ClaimId::from("whoever"),
            T0
        )
        .await
        .unwrap(),
        CommitOutcome::AlreadyStored { received: 1 }
    );
    assert_eq!(
        s.commit_chunk(&UploadId::from("u"), &chunk(0, b), &ClaimId::from("c3"), T0)
            .await
            .unwrap(),
        CommitOutcome::DigestConflict
    );
    assert!(s
        .claim_chunk(&UploadId::from("u"), 2, &ClaimId::from("c5"), LEASE, T0)
        .await
        .is_err());
    assert_eq!(
        s.list_chunks(&UploadId::from("u")).await.unwrap(),
        vec![chunk(0, a)]
    );
    // A cancelled upload takes no chunks.
    assert!(s
        .transition(
            &UploadId::from("u"),
            &[UploadState::Uploading],
            UploadState::Cancelled,
            None,
            T0
        )
        .await
        .unwrap());
    assert_eq!(
        s.claim_chunk(&UploadId::from("u"), 1, &ClaimId::from("c6"), LEASE, T0)
            .await
            .unwrap(),
        ClaimOutcome::NotAccepting(UploadState::Cancelled)
    );
    assert_eq!(
        s.claim_chunk(&UploadId::from("u"), 0, &ClaimId::from("c6"), LEASE, T0)
            .await
            .unwrap(),
        ClaimOutcome::NotAccepting(UploadState::Cancelled)
    );
}

pub async fn last_commit_completes_and_retries_stay_idempotent(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    s.insert_upload(&upload("u", "o", 2, T0)).await.unwrap();
    let a: Crc64 = 0xaaaa;
    assert_eq!(
        store_chunk(&s, "u", 1, a).await,
        CommitOutcome::Stored {
            received: 1,
            completed_set: false
        }
    );
    let claim = "late";
    s.claim_chunk(&UploadId::from("u"), 0, &ClaimId::from(&claim), LEASE, T0)
        .await
        .unwrap();
    assert_eq!(
        s.commit_chunk(
            &UploadId::from("u"),
            &chunk(0, a),
            &ClaimId::from(&claim),
            T0 + 7
        )
        .await
        .unwrap(),
        CommitOutcome::Stored {
            received: 2,
            completed_set: true
        }
    );
    let u = s.get_upload(&UploadId::from("u")).await.unwrap().unwrap();
    assert_eq!(
        (u.state, u.updated_at_ms),
        (UploadState::Assembling, T0 + 7)
    );
    // Retries after completion: a claim learns the stored CRC; a commit of the same CRC is a
    // success, of another a conflict.
    assert_eq!(
        s.claim_chunk(&UploadId::from("u"), 0, &ClaimId::from("x"), LEASE, T0)
            .await
            .unwrap(),
        ClaimOutcome::AlreadyStored { crc64nvme: a }
    );
    assert_eq!(
        s.commit_chunk(
            &UploadId::from("u"),
            &chunk(0, a),
            &ClaimId::from(&claim),
            T0
        )
        .await
        .unwrap(),
        CommitOutcome::AlreadyStored { received: 2 }
    );
    assert_eq!(
        s.commit_chunk(
            &UploadId::from("u"),
            &chunk(1, 0xcccc),
            &ClaimId::from(&claim),
            T0
        )
        .await
        .unwrap(),
        CommitOutcome::DigestConflict
    );
    // Its job is in the outbox, not yet stale: the stale check is for sent jobs.
    assert_eq!(ids(&s.list_unsent_jobs(10).await.unwrap()), ["u"]);
    assert!(s
        .list_stale_assembling(T0 + 8, 10)
        .await
        .unwrap()
        .is_empty());
    s.mark_job_sent(&UploadId::from("u")).await.unwrap();
    assert_eq!(
        s.list_stale_assembling(T0 + 8, 10).await.unwrap().len(),
        1,
        "assembling since T0+7"
    );
    assert!(s
        .list_stale_assembling(T0 + 7, 10)
        .await
        .unwrap()
        .is_empty());
    s.delete_chunks(&UploadId::from("u")).await.unwrap();
    assert!(s
        .list_chunks(&UploadId::from("u"))
        .await
        .unwrap()
        .is_empty());
}

/// Twenty writers, each through its own connection (or client) to the same data, commit the
/// last chunks at once: exactly one of them completes the set, and the last commit counts them
/// all. (Whether concurrent commits report distinct `received` counts is the store's own: SQLite
/// counts in the transaction and does; DynamoDB reads the count after it and may not.)
pub async fn completion_is_exactly_once_across_connections<H: MetadataHarness>(h: &H) {
    let (place, first) = fresh(h).await;
    let total = 20u32;
    for round in 0..3 {
        let mut stores = Vec::new();
        for _ in 0..total {
            stores.push(Arc::new(h.open(&place).await));
        }
        let received = last_chunks_at_once(&first, stores, &format!("race-{round}")).await;
        assert!(
            received.iter().all(|r| (1..=total).contains(r)),
            "{received:?}"
        );
        assert!(received.contains(&total), "the last commit sees them all");
    }
}

/// The outbox of assembly jobs: every way into assembling (the completing commit, a
/// transition) puts the upload in it in the same write; it stays there, oldest first, until
/// its job is marked sent (idempotently), or until the upload leaves assembling.
pub async fn the_outbox_holds_assembling_uploads_until_their_job_is_sent(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    assert!(s.list_unsent_jobs(10).await.unwrap().is_empty());
    s.insert_upload(&upload("by-commit", "o", 1, T0))
        .await
        .unwrap();
    s.insert_upload(&upload("by-transition", "o", 3, T0))
        .await
        .unwrap();
    s.insert_upload(&upload("still-uploading", "o", 2, T0))
        .await
        .unwrap();
    assert_eq!(
        store_chunk(&s, "by-commit", 0, 0xaa).await,
        CommitOutcome::Stored {
            received: 1,
            completed_set: true
        }
    );
    store_chunk(&s, "still-uploading", 0, 0xbb).await;
    assert!(s
        .transition(
            &UploadId::from("by-transition"),
            &[UploadState::Uploading],
            UploadState::Assembling,
            None,
            T0 + 1
        )
        .await
        .unwrap());
    assert_eq!(
        ids(&s.list_unsent_jobs(10).await.unwrap()),
        ["by-commit", "by-transition"]
    );
    assert_eq!(ids(&s.list_unsent_jobs(1).await.unwrap()), ["by-commit"]);
    assert!(s
        .list_stale_assembling(i64::MAX, 10)
        .await
        .unwrap()
        .is_empty());

    for _ in 0..2 {
        s.mark_job_sent(&UploadId::from("by-commit")).await.unwrap();
    }
    s.mark_job_sent(&UploadId::from("still-uploading"))
        .await
        .unwrap();
    s.mark_job_sent(&UploadId::from("unknown")).await.unwrap();
    assert_eq!(
        ids(&s.list_unsent_jobs(10).await.unwrap()),
        ["by-transition"]
    );
    assert_eq!(
        ids(&s.list_stale_assembling(i64::MAX, 10).await.unwrap()),
        ["by-commit"]
    );

    // Leaving assembling leaves the outbox; coming back (a transition) enters it again.
    assert!(s
        .transition(
            &UploadId::from("by-transition"),
            &[UploadState::Assembling],
            UploadState::Failed,
            Some("gave up"),
            T0 + 2
        )
        .await
        .unwrap());
    assert!(s.list_unsent_jobs(10).await.unwrap().is_empty());
    let marked = s
        .get_upload(&UploadId::from("by-commit"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        marked.state,
        UploadState::Assembling,
        "marking leaves the state"
    );
}

/// The outbox of releases: a move to cancelled, expired or failed, and the deletion of the File
/// an upload became, put the upload in it in the same write; it stays there, oldest first,
/// until it is marked released (idempotently).
pub async fn the_outbox_of_releases_holds_what_is_to_be_released(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    for id in ["cancelled", "expired", "failed", "published", "uploading"] {
        s.insert_upload(&upload(id, "o", 1, T0)).await.unwrap();
    }
    let moves = [
        ("cancelled", UploadState::Uploading, UploadState::Cancelled),
        ("expired", UploadState::Uploading, UploadState::Expired),
        ("failed", UploadState::Uploading, UploadState::Assembling),
        ("failed", UploadState::Assembling, UploadState::Failed),
    ];
    for (at, (id, from, to)) in (1..).zip(moves) {
        assert!(s
            .transition(&UploadId::from(id), &[from], to, None, T0 + at)
            .await
            .unwrap());
    }
    store_chunk(&s, "published", 0, 0xaa).await;
    let f = file("published", "o", T0 + 10);
    s.publish_file(&f, T0 + 10).await.unwrap();
    assert_eq!(
        ids(&s.list_pending_releases(10).await.unwrap()),
        ["cancelled", "expired", "failed"],
        "a published upload keeps its storage"
    );

    assert!(s.delete_file(&f.file_id, T0 + 20).await.unwrap());
    assert!(!s.delete_file(&f.file_id, T0 + 21).await.unwrap());
    assert_eq!(
        ids(&s.list_pending_releases(10).await.unwrap()),
        ["cancelled", "expired", "failed", "published"]
    );

    for _ in 0..2 {
        s.mark_released(&UploadId::from("cancelled")).await.unwrap();
    }
    s.mark_released(&UploadId::from("uploading")).await.unwrap();
    s.mark_released(&UploadId::from("unknown")).await.unwrap();
    assert_eq!(
        ids(&s.list_pending_releases(10).await.unwrap()),
        ["expired", "failed", "published"]
    );
    let released = s
        .get_upload(&UploadId::from("cancelled"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        released.state,
        UploadState::Cancelled,
        "marking leaves the state"
    );
    assert!(s.list_unsent_jobs(10).await.unwrap().is_empty());
}

pub async fn transitions_are_conditional(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    s.insert_upload(&upload("u", "o", 1, T0)).await.unwrap();
    assert!(!s
        .transition(&UploadId::from("u"), &[], UploadState::Failed, None, T0)
        .await
        .unwrap());
    assert!(!s
        .transition(
            &UploadId::from("u"),
            &[UploadState::Assembling],
            UploadState::Failed,
            Some("x"),
            T0
        )
        .await
        .unwrap());
    assert!(!s
        .transition(
            &UploadId::from("missing"),
            &[UploadState::Uploading],
            UploadState::Failed,
            None,
            T0
        )
        .await
        .unwrap());
    assert!(s
        .transition(
            &UploadId::from("u"),
            &[UploadState::Uploading, UploadState::Assembling],
            UploadState::Failed,
            Some("bad sha"),
            T0 + 3
        )
        .await
        .unwrap());
    let u = s.get_upload(&UploadId::from("u")).await.unwrap().unwrap();
    assert_eq!(
        (u.state, u.error.as_deref(), u.updated_at_ms),
        (UploadState::Failed, Some("bad sha"), T0 + 3)
    );
}

pub async fn expired_uploads_are_listed(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let mut u = upload(id, "o", 1, T0);
        u.expires_at_ms = T0 + 100 * i as i64;
        s.insert_upload(&u).await.unwrap();
    }
    s.transition(
        &UploadId::from("a"),
        &[UploadState::Uploading],
        UploadState::Cancelled,
        None,
        T0,
    )
    .await
    .unwrap();
    let ids: Vec<_> = s
        .list_expired(T0 + 150, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.upload_id)
        .collect();
    assert_eq!(ids, ["b"]);
    assert_eq!(s.list_expired(T0 + 1000, 1).await.unwrap().len(), 1);
    assert_eq!(s.list_expired(T0 + 1000, 10).await.unwrap().len(), 2);
}

pub async fn publish_is_atomic_and_idempotent(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    s.insert_upload(&upload("u", "o", 1, T0)).await.unwrap();
    let f = file("u", "o", T0 + 5);
    // Not assembling yet.
    assert!(matches!(
        s.publish_file(&f, T0).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(s.get_file(&f.file_id).await.unwrap().is_none());
    assert!(matches!(
        store_chunk(&s, "u", 0, 0xaa).await,
        CommitOutcome::Stored {
            completed_set: true,
            ..
        }
    ));
    assert_eq!(s.publish_file(&f, T0 + 6).await.unwrap(), f);
    let u = s.get_upload(&UploadId::from("u")).await.unwrap().unwrap();
    assert_eq!(u.state, UploadState::Completed);
    assert_eq!(u.file_id.as_deref(), Some(f.file_id.as_str()));
    // A redelivered job publishes the same File, unchanged.
    let mut again = f.clone();
    again.created_at_ms = T0 + 99;
    assert_eq!(s.publish_file(&again, T0 + 100).await.unwrap(), f);
    assert_eq!(s.get_file(&f.file_id).await.unwrap(), Some(f.clone()));
    assert!(matches!(
        s.publish_file(&file("missing", "o", T0), T0).await,
        Err(StoreError::NotFound(_))
    ));
    // Deleted by its owner: a late job does not bring it back.
    assert!(s.delete_file(&f.file_id, T0 + 150).await.unwrap());
    assert!(!s.delete_file(&f.file_id, T0 + 150).await.unwrap());
    assert!(s.publish_file(&f, T0 + 200).await.is_err());
    assert!(s.get_file(&f.file_id).await.unwrap().is_none());
}

pub async fn files_paginate_newest_first(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    let mut expected = Vec::new();
    for i in 0..25u32 {
        let id = format!("u{i:02}");
        s.insert_upload(&upload(&id, "alice", 1, T0)).await.unwrap();
        store_chunk(&s, &id, 0, 0xaa).await;
        // Several files share a timestamp: the id breaks the tie.
        let mut f = file(&id, "alice", T0 + i64::from(i / 3));
        if i % 2 == 1 {
            // Without a SHA-256 (none declared) and without a CRC (published before CRCs).
            f.sha256 = None;
            f.sha256_source = None;
            f.crc64nvme = None;
        }
        s.publish_file(&f, T0).await.unwrap();
        expected.push(f);
    }
    s.insert_upload(&upload("b", "bob", 1, T0)).await.unwrap();
    store_chunk(&s, "b", 0, 0xaa).await;
    s.publish_file(&file("b", "bob", T0 + 50), T0)
        .await
        .unwrap();
    expected.sort_by(|a, b| (b.created_at_ms, &b.file_id).cmp(&(a.created_at_ms, &a.file_id)));

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = s
            .list_files(&UserId::from("alice"), cursor.as_deref(), 10)
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, expected);
    // Exactly a page's worth: no empty trailing page.
    let all = s
        .list_files(&UserId::from("alice"), None, 25)
        .await
        .unwrap();
    assert_eq!((all.items.len(), all.next_cursor), (25, None));
    assert_eq!(
        s.list_files(&UserId::from("alice"), None, 0)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        s.list_files(&UserId::from("alice"), None, 5000)
            .await
            .unwrap()
            .items
            .len(),
        25
    );
    assert!(s
        .list_files(&UserId::from("carol"), None, 10)
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(s
        .list_files(&UserId::from("alice"), Some("!!not-a-cursor"), 10)
        .await
        .is_err());
}

pub async fn delete_chunks_drops_claims(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    s.insert_upload(&upload("u", "o", 2, T0)).await.unwrap();
    store_chunk(&s, "u", 0, 0xaa).await;
    s.claim_chunk(&UploadId::from("u"), 1, &ClaimId::from("c"), LEASE, T0)
        .await
        .unwrap();
    s.delete_chunks(&UploadId::from("u")).await.unwrap();
    assert!(s
        .list_chunks(&UploadId::from("u"))
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.claim_chunk(&UploadId::from("u"), 1, &ClaimId::from("other"), LEASE, T0)
            .await
            .unwrap(),
        ClaimOutcome::Claimed { .. }
    ));
}

/// A chunk is read back alone as it was recorded, its SHA-256 chain with it (the bytes as
/// given: a store keeps them, never reads them); an unrecorded chunk is `None`.
pub async fn chunks_are_read_one_by_one_with_their_sha256_chain(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    let id = UploadId::from("u");
    s.insert_upload(&upload("u", "o", 40, T0)).await.unwrap();
    assert_eq!(s.get_chunk(&id, 0).await.unwrap(), None);
    store_chunk(&s, "u", 0, 0xaa).await;
    // Chunk 33 is in another group of a store that keeps chunks in groups.
    let chained = |index, crc| crate::ChunkRecord {
        sha256_chain: Some((0..=104u8).map(|b| b ^ index as u8).collect()),
        ..chunk(index, crc)
    };
    for index in [1, 33] {
        let claim = ClaimId::from(&format!("c{index}"));
        s.claim_chunk(&id, index, &claim, LEASE, T0).await.unwrap();
        assert!(matches!(
            s.commit_chunk(&id, &chained(index, 0xbb), &claim, T0)
                .await
                .unwrap(),
            CommitOutcome::Stored { .. }
        ));
    }
    assert_eq!(s.get_chunk(&id, 0).await.unwrap(), Some(chunk(0, 0xaa)));
    assert_eq!(s.get_chunk(&id, 1).await.unwrap(), Some(chained(1, 0xbb)));
    assert_eq!(s.get_chunk(&id, 33).await.unwrap(), Some(chained(33, 0xbb)));
    assert_eq!(s.get_chunk(&id, 2).await.unwrap(), None);
    assert_eq!(
        s.list_chunks(&id).await.unwrap(),
        vec![chunk(0, 0xaa), chained(1, 0xbb), chained(33, 0xbb)]
    );
    assert_eq!(s.get_chunk(&UploadId::from("nope"), 0).await.unwrap(), None);
}

/// Two writers of one chunk: the first one's lease runs out, the second takes the chunk over
/// and records it; the first, which wrote other bytes meanwhile, then commits: a conflict, and
/// the chunk keeps the second one's CRC, which a claim answers. A commit of that CRC is a retry.
pub async fn a_commit_racing_a_stored_chunk_of_another_crc_conflicts(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    s.insert_upload(&upload("u", "o", 2, T0)).await.unwrap();
    let id = UploadId::from("u");
    // The second one's is above i64::MAX.
    let (slow, fast): (Crc64, Crc64) = (0x1111, 0xffff_0000_ffff_0000);
    let claimed = s
        .claim_chunk(&id, 0, &ClaimId::from("slow"), LEASE, T0)
        .await
        .unwrap();
    assert!(
        matches!(claimed, ClaimOutcome::Claimed { .. }),
        "{claimed:?}"
    );
    let taken_over = s
        .claim_chunk(&id, 0, &ClaimId::from("fast"), LEASE, T0 + 30_000)
        .await
        .unwrap();
    assert!(
        matches!(taken_over, ClaimOutcome::Claimed { .. }),
        "{taken_over:?}"
    );
    assert_eq!(
        s.commit_chunk(&id, &chunk(0, fast), &ClaimId::from("fast"), T0 + 30_001)
            .await
            .unwrap(),
        CommitOutcome::Stored {
            received: 1,
            completed_set: false
        }
    );
    assert_eq!(
        s.commit_chunk(&id, &chunk(0, slow), &ClaimId::from("slow"), T0 + 30_002)
            .await
            .unwrap(),
        CommitOutcome::DigestConflict
    );
    assert_eq!(
        s.claim_chunk(&id, 0, &ClaimId::from("slow"), LEASE, T0 + 30_003)
            .await
            .unwrap(),
        ClaimOutcome::AlreadyStored { crc64nvme: fast }
    );
    assert_eq!(
        s.commit_chunk(&id, &chunk(0, fast), &ClaimId::from("slow"), T0 + 30_004)
            .await
            .unwrap(),
        CommitOutcome::AlreadyStored { received: 1 }
    );
    assert_eq!(s.list_chunks(&id).await.unwrap(), vec![chunk(0, fast)]);
    let u = s.get_upload(&id).await.unwrap().unwrap();
    assert_eq!(
        u.state,
        UploadState::Uploading,
        "the conflict changed nothing"
    );
}

/// An upload's declared SHA-256, CRC-64/NVME and last change.
async fn declared(s: &impl MetadataStore, id: &str) -> (Option<String>, Option<Crc64>, i64) {
    let u = s.get_upload(&UploadId::from(id)).await.unwrap().unwrap();
    (u.sha256, u.crc64nvme, u.updated_at_ms)
}

/// The whole-file checksums a client declares are recorded once, while the upload is
/// uploading (a SHA-256 declared at creation stays); once a CRC is declared, or when the upload
/// no longer takes chunks, or is unknown, nothing applies.
pub async fn declared_checksums_apply_once_while_uploading(h: &impl MetadataHarness) {
    let (place, s) = fresh(h).await;
    let (sha_x, sha_y) = ("1a".repeat(32), "2b".repeat(32));
    s.insert_upload(&upload("plain", "o", 2, T0)).await.unwrap();
    let mut with_sha = upload("with-sha", "o", 2, T0);
    with_sha.sha256 = Some(sha_x.clone());
    s.insert_upload(&with_sha).await.unwrap();
    for id in ["crc-only", "cancelled", "assembling"] {
        s.insert_upload(&upload(id, "o", 1, T0)).await.unwrap();
    }

    let plain = UploadId::from("plain");
    assert!(s
        .declare_checksums(&plain, Some(sha_x.as_str()), 7, T0 + 1)
        .await
        .unwrap());
    assert_eq!(
        declared(&s, "plain").await,
        (Some(sha_x.clone()), Some(7), T0 + 1)
    );
    // Once: neither other checksums nor the same ones again apply.
    assert!(!s
        .declare_checksums(&plain, Some(sha_y.as_str()), 8, T0 + 2)
        .await
        .unwrap());
    assert!(!s
        .declare_checksums(&plain, Some(sha_x.as_str()), 7, T0 + 2)
        .await
        .unwrap());
    assert_eq!(
        declared(&s, "plain").await,
        (Some(sha_x.clone()), Some(7), T0 + 1)
    );
    // The SHA-256 declared at creation stays.
    assert!(s
        .declare_checksums(&UploadId::from("with-sha"), Some(sha_y.as_str()), 9, T0 + 3)
        .await
        .unwrap());
    assert_eq!(
        declared(&s, "with-sha").await,
        (Some(sha_x.clone()), Some(9), T0 + 3)
    );
    // A CRC alone, all 64 bits of it.
    assert!(s
        .declare_checksums(&UploadId::from("crc-only"), None, u64::MAX, T0 + 4)
        .await
        .unwrap());
    assert_eq!(
        declared(&s, "crc-only").await,
        (None, Some(u64::MAX), T0 + 4)
    );

    // Not uploading, or unknown: nothing applies.
    for (id, to) in [
        ("cancelled", UploadState::Cancelled),
        ("assembling", UploadState::Assembling),
    ] {
        assert!(s
            .transition(
                &UploadId::from(id),
                &[UploadState::Uploading],
                to,
                None,
                T0 + 5
            )
            .await
            .unwrap());
        assert!(
            !s.declare_checksums(&UploadId::from(id), Some(sha_x.as_str()), 1, T0 + 6)
                .await
                .unwrap(),
            "{id}"
        );
        assert_eq!(declared(&s, id).await, (None, None, T0 + 5), "{id}");
    }
    assert!(!s
        .declare_checksums(&UploadId::from("missing"), None, 1, T0 + 6)
        .await
        .unwrap());

    // Another store on the same data (another process) reads them.
    drop(s);
    let s = h.open(&place).await;
    assert_eq!(declared(&s, "plain").await, (Some(sha_x), Some(7), T0 + 1));
}

/// An upload created with its length deferred holds at most its bound; declaring the length
/// cuts it (once: a retry of the same size applies again, another size does not), and the
/// declaration completes the set when every chunk of the new plan is recorded already — also
/// when the chunks end exactly at a group's end in a store that keeps chunks in groups.
pub async fn a_deferred_length_is_declared_once_and_may_complete_the_set(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    let deferred = |id: &str| UploadRecord {
        length_deferred: true,
        ..upload(id, "o", 100, T0)
    };
    // 34 chunks recorded across two groups, then the length: 35 chunks.
    s.insert_upload(&deferred("d")).await.unwrap();
    let cut = UploadId::from("d");
    assert!(s.get_upload(&cut).await.unwrap().unwrap().length_deferred);
    for index in 0..34 {
        store_chunk(&s, "d", index, 0xd0).await;
    }
    assert_eq!(
        s.declare_size(&cut, 345, 35, T0 + 1).await.unwrap(),
        SizeDeclared::Applied {
            completed_set: false
        }
    );
    let rec = s.get_upload(&cut).await.unwrap().unwrap();
    assert_eq!(
        (rec.size, rec.total_chunks, rec.length_deferred),
        (345, 35, false)
    );
    assert_eq!(rec.state, UploadState::Uploading);
    assert_eq!(
        s.declare_size(&cut, 345, 35, T0 + 2).await.unwrap(),
        SizeDeclared::Applied {
            completed_set: false
        },
        "a retry"
    );
    assert_eq!(
        s.declare_size(&cut, 341, 35, T0 + 2).await.unwrap(),
        SizeDeclared::NotApplied,
        "the length is set"
    );
    assert!(matches!(
        store_chunk(&s, "d", 34, 0xd0).await,
        CommitOutcome::Stored {
            received: 35,
            completed_set: true
        }
    ));

    // Every chunk there, ending at a group's end: the declaration completes the set.
    s.insert_upload(&deferred("e")).await.unwrap();
    let whole = UploadId::from("e");
    for index in 0..32 {
        store_chunk(&s, "e", index, 0xe0).await;
    }
    assert_eq!(
        s.declare_size(&whole, 320, 32, T0 + 1).await.unwrap(),
        SizeDeclared::Applied {
            completed_set: true
        }
    );
    assert_eq!(
        s.get_upload(&whole).await.unwrap().unwrap().state,
        UploadState::Assembling
    );
    assert!(ids(&s.list_unsent_jobs(10).await.unwrap()).contains(&"e"));
    assert_eq!(
        s.declare_size(&whole, 320, 32, T0 + 2).await.unwrap(),
        SizeDeclared::NotApplied,
        "no longer uploading"
    );

    // Declared before any chunk: the plan is the new one; nothing past it is claimed.
    s.insert_upload(&deferred("g")).await.unwrap();
    let early = UploadId::from("g");
    assert_eq!(
        s.declare_size(&early, 25, 3, T0 + 1).await.unwrap(),
        SizeDeclared::Applied {
            completed_set: false
        }
    );
    assert!(s
        .claim_chunk(&early, 3, &ClaimId::from("past"), LEASE, T0 + 2)
        .await
        .is_err());
    for index in 0..2 {
        store_chunk(&s, "g", index, 0x90).await;
    }
    assert!(matches!(
        store_chunk(&s, "g", 2, 0x90).await,
        CommitOutcome::Stored {
            completed_set: true,
            ..
        }
    ));

    // An upload of a known length, or none at all.
    s.insert_upload(&upload("k", "o", 3, T0)).await.unwrap();
    assert_eq!(
        s.declare_size(&UploadId::from("k"), 20, 2, T0 + 1)
            .await
            .unwrap(),
        SizeDeclared::NotApplied
    );
    assert_eq!(
        s.declare_size(&UploadId::from("nope"), 20, 2, T0 + 1)
            .await
            .unwrap(),
        SizeDeclared::NotApplied
    );
}

/// How an upload takes part in a parallel upload (tus concatenation) is kept with it: none, a
/// part, or the whole made of parts (in their order), read back alone, listed, and by another
/// store on the same data.
pub async fn the_concatenation_of_an_upload_round_trips(h: &impl MetadataHarness) {
    let (place, s) = fresh(h).await;
    let plain = upload("plain", "alice", 2, T0);
    let part = UploadRecord {
        concat: Concat::Partial,
        ..upload("part", "alice", 2, T0 + 1)
    };
    let whole = UploadRecord {
        concat: Concat::Final(vec!["p-1".into(), "p-2".into(), "p-3".into()]),
        ..upload("whole", "alice", 3, T0 + 2)
    };
    for u in [&plain, &part, &whole] {
        s.insert_upload(u).await.unwrap();
    }
    for u in [&plain, &part, &whole] {
        assert_eq!(
            s.get_upload(&u.upload_id).await.unwrap().as_ref(),
            Some(u),
            "{}",
            u.upload_id
        );
    }
    let expected = vec![whole.clone(), part.clone(), plain.clone()];
    assert_eq!(
        s.list_uploads(&UserId::from("alice"), &[]).await.unwrap(),
        expected
    );
    drop(s);
    let s = h.open(&place).await;
    assert_eq!(
        s.list_uploads(&UserId::from("alice"), &[UploadState::Uploading])
            .await
            .unwrap(),
        expected
    );
}

/// The state of upload `id`, which exists.
async fn state(s: &impl MetadataStore, id: &str) -> UploadState {
    s.get_upload(&UploadId::from(id))
        .await
        .unwrap()
        .unwrap()
        .state
}

/// A partial upload (tus concatenation) is not completed by its chunks: with every chunk
/// recorded, by the last commit or by the declaration of a deferred length, it stays uploading
/// and out of the outbox of jobs, until a final upload takes it (a transition to assembling,
/// which puts it into the outbox as any upload). An ordinary upload with the same chunks
/// completes.
pub async fn a_partial_upload_is_not_completed_by_its_chunks(h: &impl MetadataHarness) {
    let (_place, s) = fresh(h).await;
    let part = UploadRecord {
        concat: Concat::Partial,
        ..upload("part", "o", 2, T0)
    };
    s.insert_upload(&part).await.unwrap();
    s.insert_upload(&upload("plain", "o", 2, T0)).await.unwrap();
    for id in ["part", "plain"] {
        assert_eq!(
            store_chunk(&s, id, 0, 0xaa).await,
            CommitOutcome::Stored {
                received: 1,
                completed_set: false
            },
            "{id}"
        );
    }
    assert_eq!(
        store_chunk(&s, "plain", 1, 0xbb).await,
        CommitOutcome::Stored {
            received: 2,
            completed_set: true
        }
    );
    assert_eq!(
        store_chunk(&s, "part", 1, 0xbb).await,
        CommitOutcome::Stored {
            received: 2,
            completed_set: false
        },
        "a partial upload's last chunk does not complete it"
    );
    let id = UploadId::from("part");
    // A retry of the last commit does not complete it either.
    assert_eq!(
        s.commit_chunk(&id, &chunk(1, 0xbb), &ClaimId::from("retry"), T0 + 1)
            .await
            .unwrap(),
        CommitOutcome::AlreadyStored { received: 2 }
    );
    assert_eq!(state(&s, "plain").await, UploadState::Assembling);
    assert_eq!(state(&s, "part").await, UploadState::Uploading);
    assert_eq!(s.list_chunks(&id).await.unwrap().len(), 2);
    assert_eq!(ids(&s.list_unsent_jobs(10).await.unwrap()), ["plain"]);

    // With its length deferred, every chunk recorded before the length is declared.
    let deferred = UploadRecord {
        length_deferred: true,
        concat: Concat::Partial,
        ..upload("deferred-part", "o", 100, T0)
    };
    s.insert_upload(&deferred).await.unwrap();
    for index in 0..3 {
        store_chunk(&s, "deferred-part", index, 0xd0).await;
    }
    assert_eq!(
        s.declare_size(&deferred.upload_id, 25, 3, T0 + 2)
            .await
            .unwrap(),
        SizeDeclared::Applied {
            completed_set: false
        }
    );
    assert_eq!(state(&s, "deferred-part").await, UploadState::Uploading);
    assert_eq!(ids(&s.list_unsent_jobs(10).await.unwrap()), ["plain"]);

    // A final upload takes it: the ordinary transition, into the outbox.
    assert!(s
        .transition(
            &id,
            &[UploadState::Uploading],
            UploadState::Assembling,
            None,
            T0 + 3
        )
        .await
        .unwrap());
    let taken = s.get_upload(&id).await.unwrap().unwrap();
    assert_eq!(
        (taken.state, taken.concat, taken.updated_at_ms),
        (UploadState::Assembling, Concat::Partial, T0 + 3)
    );
    assert_eq!(
        ids(&s.list_unsent_jobs(10).await.unwrap()),
        ["plain", "part"]
    );
}
