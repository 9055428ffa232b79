//! Component tests of the AWS stores against moto (S3, DynamoDB, SQS) and MinIO (S3), the
//! servers `scripts/aws-servers.sh` runs. They mirror the embedded stores' unit tests (SQLite,
//! local disk) so both implementations of each port answer the same.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aws_support;

mod metadata {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::time::Duration;

    use lfusys_core::state::UploadState;
    use storage::{
        ChunkRecord, ClaimOutcome, CommitOutcome, FileRecord, MetadataStore, StoreError,
        UploadRecord,
    };
    use storage_aws::DynamoMetadataStore;

    use super::aws_support::{metadata_store, unique};

    const LEASE: Duration = Duration::from_secs(30);
    const T0: i64 = 1_700_000_000_000;

    async fn open() -> (String, DynamoMetadataStore) {
        let prefix = unique("m");
        let s = metadata_store(&prefix).await;
        (prefix, s)
    }
    fn upload(id: &str, owner: &str, total_chunks: u32, created_at_ms: i64) -> UploadRecord {
        UploadRecord {
            upload_id: id.into(),
            owner_id: owner.into(),
            name: format!("{id}.bin"),
            size: u64::from(total_chunks) * 10,
            content_type: "application/octet-stream".into(),
            sha256: None,
            chunk_size: 10,
            total_chunks,
            state: UploadState::Uploading,
            storage_handle: String::new(),
            error: None,
            file_id: None,
            created_at_ms,
            updated_at_ms: created_at_ms,
            expires_at_ms: created_at_ms + 86_400_000,
        }
    }

    fn chunk(index: u32, sha: &str) -> ChunkRecord {
        ChunkRecord {
            index,
            size: 10,
            sha256: sha.into(),
            etag: String::new(),
        }
    }

    fn file(upload_id: &str, owner: &str, created_at_ms: i64) -> FileRecord {
        FileRecord {
            file_id: format!("f-{upload_id}"),
            owner_id: owner.into(),
            upload_id: upload_id.into(),
            name: "a.bin".into(),
            size: 10,
            content_type: "application/octet-stream".into(),
            sha256: "ab".repeat(32),
            blob_key: format!("files/f-{upload_id}"),
            created_at_ms,
        }
    }

    async fn store_chunk(
        s: &DynamoMetadataStore,
        id: &str,
        index: u32,
        sha: &str,
    ) -> CommitOutcome {
        let claim = format!("claim-{index}-{sha}");
        let c = s
            .claim_chunk(id, index, sha, &claim, LEASE, T0)
            .await
            .unwrap();
        assert!(matches!(c, ClaimOutcome::Claimed { .. }), "{c:?}");
        s.commit_chunk(id, &chunk(index, sha), &claim, T0)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn uploads_round_trip_and_list() {
        let (prefix, s) = open().await;
        let mut u = upload("u1", "alice", 3, T0);
        u.sha256 = Some("cd".repeat(32));
        u.size = 5_000_000_000_000; // TBs fit
        s.insert_upload(&u).await.unwrap();
        assert!(matches!(
            s.insert_upload(&u).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.get_upload("u1").await.unwrap(), Some(u.clone()));
        assert_eq!(s.get_upload("nope").await.unwrap(), None);
        s.insert_upload(&upload("u2", "alice", 1, T0 + 1))
            .await
            .unwrap();
        s.insert_upload(&upload("u3", "bob", 1, T0 + 2))
            .await
            .unwrap();
        assert!(s
            .transition(
                "u2",
                &[UploadState::Uploading],
                UploadState::Cancelled,
                None,
                T0 + 5
            )
            .await
            .unwrap());
        let ids = |v: Vec<UploadRecord>| v.into_iter().map(|u| u.upload_id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.list_uploads("alice", &[]).await.unwrap()),
            ["u2", "u1"]
        );
        assert_eq!(
            ids(s
                .list_uploads("alice", &[UploadState::Uploading, UploadState::Assembling])
                .await
                .unwrap()),
            ["u1"]
        );
        assert_eq!(
            ids(s.list_uploads("carol", &[]).await.unwrap()),
            Vec::<String>::new()
        );
        s.check().await.unwrap();
        // Another store on the same tables (another process) sees the same data.
        drop(s);
        let s = metadata_store(&prefix).await;
        assert_eq!(s.get_upload("u1").await.unwrap(), Some(u));
    }

    #[tokio::test]
    async fn claims_lease_renew_and_expire() {
        let (_d, s) = open().await;
        s.insert_upload(&upload("u", "o", 2, T0)).await.unwrap();
        let a = "aa".repeat(32);
        let b = "bb".repeat(32);
        assert!(matches!(
            s.claim_chunk("missing", 0, &a, "c1", LEASE, T0).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            s.claim_chunk("u", 0, &a, "c1", LEASE, T0).await.unwrap(),
            ClaimOutcome::Claimed {
                lease_until_ms: T0 + 30_000
            }
        );
        // Another claimant while the lease lives.
        assert_eq!(
            s.claim_chunk("u", 0, &a, "c2", LEASE, T0 + 1)
                .await
                .unwrap(),
            ClaimOutcome::InProgress
        );
        // The holder renews.
        assert_eq!(
            s.claim_chunk("u", 0, &a, "c1", LEASE, T0 + 10_000)
                .await
                .unwrap(),
            ClaimOutcome::Claimed {
                lease_until_ms: T0 + 40_000
            }
        );
        assert_eq!(
            s.claim_chunk("u", 0, &a, "c2", LEASE, T0 + 39_999)
                .await
                .unwrap(),
            ClaimOutcome::InProgress
        );
        // Expired: taken over; the old holder can no longer commit.
        assert_eq!(
            s.claim_chunk("u", 0, &b, "c2", LEASE, T0 + 40_000)
                .await
                .unwrap(),
            ClaimOutcome::Claimed {
                lease_until_ms: T0 + 70_000
            }
        );
        assert_eq!(
            s.commit_chunk("u", &chunk(0, &a), "c1", T0 + 41_000)
                .await
                .unwrap(),
            CommitOutcome::NotAccepting(UploadState::Uploading)
        );
        // Release only by the holder.
        s.release_chunk("u", 0, "c1").await.unwrap();
        assert_eq!(
            s.claim_chunk("u", 0, &a, "c3", LEASE, T0 + 41_000)
                .await
                .unwrap(),
            ClaimOutcome::InProgress
        );
        s.release_chunk("u", 0, "c2").await.unwrap();
        // Released: a commit without the claim is refused, a new claim succeeds.
        assert_eq!(
            s.commit_chunk("u", &chunk(0, &b), "c2", T0 + 41_000)
                .await
                .unwrap(),
            CommitOutcome::NotAccepting(UploadState::Uploading)
        );
        assert!(matches!(
            s.claim_chunk("u", 0, &a, "c3", LEASE, T0 + 41_000)
                .await
                .unwrap(),
            ClaimOutcome::Claimed { .. }
        ));
        // An expired claim that nobody took may still commit.
        assert_eq!(
            s.commit_chunk("u", &chunk(0, &a), "c3", T0 + 999_000)
                .await
                .unwrap(),
            CommitOutcome::Stored {
                received: 1,
                completed_set: false
            }
        );
        assert_eq!(
            s.claim_chunk("u", 0, &a, "c4", LEASE, T0).await.unwrap(),
            ClaimOutcome::AlreadyStored
        );
        assert_eq!(
            s.claim_chunk("u", 0, &b, "c4", LEASE, T0).await.unwrap(),
            ClaimOutcome::DigestConflict
        );
        assert_eq!(
            s.commit_chunk("u", &chunk(0, &a), "whoever", T0)
                .await
                .unwrap(),
            CommitOutcome::AlreadyStored { received: 1 }
        );
        assert_eq!(
            s.commit_chunk("u", &chunk(0, &b), "c3", T0).await.unwrap(),
            CommitOutcome::DigestConflict
        );
        assert!(s.claim_chunk("u", 2, &a, "c5", LEASE, T0).await.is_err());
        assert_eq!(s.list_chunks("u").await.unwrap(), vec![chunk(0, &a)]);
        // A cancelled upload takes no chunks.
        assert!(s
            .transition(
                "u",
                &[UploadState::Uploading],
                UploadState::Cancelled,
                None,
                T0
            )
            .await
            .unwrap());
        assert_eq!(
            s.claim_chunk("u", 1, &a, "c6", LEASE, T0).await.unwrap(),
            ClaimOutcome::NotAccepting(UploadState::Cancelled)
        );
        assert_eq!(
            s.claim_chunk("u", 0, &a, "c6", LEASE, T0).await.unwrap(),
            ClaimOutcome::NotAccepting(UploadState::Cancelled)
        );
    }

    #[tokio::test]
    async fn last_commit_completes_and_retries_stay_idempotent() {
        let (_d, s) = open().await;
        s.insert_upload(&upload("u", "o", 2, T0)).await.unwrap();
        let a = "aa".repeat(32);
        assert_eq!(
            store_chunk(&s, "u", 1, &a).await,
            CommitOutcome::Stored {
                received: 1,
                completed_set: false
            }
        );
        let claim = "late";
        s.claim_chunk("u", 0, &a, claim, LEASE, T0).await.unwrap();
        assert_eq!(
            s.commit_chunk("u", &chunk(0, &a), claim, T0 + 7)
                .await
                .unwrap(),
            CommitOutcome::Stored {
                received: 2,
                completed_set: true
            }
        );
        let u = s.get_upload("u").await.unwrap().unwrap();
        assert_eq!(
            (u.state, u.updated_at_ms),
            (UploadState::Assembling, T0 + 7)
        );
        // Retries after completion: same digest is a success, another is a conflict.
        assert_eq!(
            s.claim_chunk("u", 0, &a, "x", LEASE, T0).await.unwrap(),
            ClaimOutcome::AlreadyStored
        );
        assert_eq!(
            s.commit_chunk("u", &chunk(0, &a), claim, T0).await.unwrap(),
            CommitOutcome::AlreadyStored { received: 2 }
        );
        assert_eq!(
            s.commit_chunk("u", &chunk(1, &"cc".repeat(32)), claim, T0)
                .await
                .unwrap(),
            CommitOutcome::DigestConflict
        );
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
        s.delete_chunks("u").await.unwrap();
        assert!(s.list_chunks("u").await.unwrap().is_empty());
    }

    /// Twenty writers, each through its own client, commit the last chunks at once: exactly
    /// one of them completes the set. (Unlike SQLite, concurrent commits may report the same
    /// `received` count: the count is read after the transaction.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn completion_is_exactly_once_across_connections() {
        let (prefix, first) = open().await;
        let total = 20u32;
        for round in 0..3 {
            let id = format!("race-{round}");
            first
                .insert_upload(&upload(&id, "o", total, T0))
                .await
                .unwrap();
            let mut stores: Vec<Arc<DynamoMetadataStore>> = Vec::new();
            for _ in 0..total {
                stores.push(Arc::new(metadata_store(&prefix).await));
            }
            let barrier = Arc::new(tokio::sync::Barrier::new(total as usize));
            let mut tasks = Vec::new();
            for (i, s) in stores.into_iter().enumerate() {
                let (id, barrier) = (id.clone(), Arc::clone(&barrier));
                tasks.push(tokio::spawn(async move {
                    let sha = format!("{i:064}");
                    let claim = format!("claim-{i}");
                    let c = s
                        .claim_chunk(&id, i as u32, &sha, &claim, LEASE, T0)
                        .await
                        .unwrap();
                    assert!(matches!(c, ClaimOutcome::Claimed { .. }));
                    barrier.wait().await;
                    s.commit_chunk(&id, &chunk(i as u32, &sha), &claim, T0 + 1)
                        .await
                        .unwrap()
                }));
            }
            let mut completed = 0;
            let mut counts = HashSet::new();
            for t in tasks {
                match t.await.unwrap() {
                    CommitOutcome::Stored {
                        received,
                        completed_set,
                    } => {
                        completed += u32::from(completed_set);
                        assert!((1..=total).contains(&received));
                        counts.insert(received);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(completed, 1);
            assert!(counts.contains(&total), "the last commit sees them all");
            let u = first.get_upload(&id).await.unwrap().unwrap();
            assert_eq!(u.state, UploadState::Assembling);
            assert_eq!(first.list_chunks(&id).await.unwrap().len(), total as usize);
        }
    }

    #[tokio::test]
    async fn transitions_are_conditional() {
        let (_d, s) = open().await;
        s.insert_upload(&upload("u", "o", 1, T0)).await.unwrap();
        assert!(!s
            .transition("u", &[], UploadState::Failed, None, T0)
            .await
            .unwrap());
        assert!(!s
            .transition(
                "u",
                &[UploadState::Assembling],
                UploadState::Failed,
                Some("x"),
                T0
            )
            .await
            .unwrap());
        assert!(!s
            .transition(
                "missing",
                &[UploadState::Uploading],
                UploadState::Failed,
                None,
                T0
            )
            .await
            .unwrap());
        assert!(s
            .transition(
                "u",
                &[UploadState::Uploading, UploadState::Assembling],
                UploadState::Failed,
                Some("bad sha"),
                T0 + 3
            )
            .await
            .unwrap());
        let u = s.get_upload("u").await.unwrap().unwrap();
        assert_eq!(
            (u.state, u.error.as_deref(), u.updated_at_ms),
            (UploadState::Failed, Some("bad sha"), T0 + 3)
        );
    }

    #[tokio::test]
    async fn expired_uploads_are_listed() {
        let (_d, s) = open().await;
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            let mut u = upload(id, "o", 1, T0);
            u.expires_at_ms = T0 + 100 * i as i64;
            s.insert_upload(&u).await.unwrap();
        }
        s.transition(
            "a",
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

    #[tokio::test]
    async fn publish_is_atomic_and_idempotent() {
        let (_d, s) = open().await;
        s.insert_upload(&upload("u", "o", 1, T0)).await.unwrap();
        let f = file("u", "o", T0 + 5);
        // Not assembling yet.
        assert!(matches!(
            s.publish_file(&f, T0).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(s.get_file(&f.file_id).await.unwrap().is_none());
        assert!(matches!(
            store_chunk(&s, "u", 0, "aa").await,
            CommitOutcome::Stored {
                completed_set: true,
                ..
            }
        ));
        assert_eq!(s.publish_file(&f, T0 + 6).await.unwrap(), f);
        let u = s.get_upload("u").await.unwrap().unwrap();
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
        assert!(s.delete_file(&f.file_id).await.unwrap());
        assert!(!s.delete_file(&f.file_id).await.unwrap());
        assert!(s.publish_file(&f, T0 + 200).await.is_err());
        assert!(s.get_file(&f.file_id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn files_paginate_newest_first() {
        let (_d, s) = open().await;
        let mut expected = Vec::new();
        for i in 0..25u32 {
            let id = format!("u{i:02}");
            s.insert_upload(&upload(&id, "alice", 1, T0)).await.unwrap();
            store_chunk(&s, &id, 0, "aa").await;
            // Several files share a timestamp: the id breaks the tie.
            let f = file(&id, "alice", T0 + i64::from(i / 3));
            s.publish_file(&f, T0).await.unwrap();
            expected.push(f);
        }
        s.insert_upload(&upload("b", "bob", 1, T0)).await.unwrap();
        store_chunk(&s, "b", 0, "aa").await;
        s.publish_file(&file("b", "bob", T0 + 50), T0)
            .await
            .unwrap();
        expected.sort_by(|a, b| (b.created_at_ms, &b.file_id).cmp(&(a.created_at_ms, &a.file_id)));

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = s.list_files("alice", cursor.as_deref(), 10).await.unwrap();
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
        let all = s.list_files("alice", None, 25).await.unwrap();
        assert_eq!((all.items.len(), all.next_cursor), (25, None));
        assert_eq!(s.list_files("alice", None, 0).await.unwrap().items.len(), 1);
        assert_eq!(
            s.list_files("alice", None, 5000).await.unwrap().items.len(),
            25
        );
        assert!(s
            .list_files("carol", None, 10)
            .await
            .unwrap()
            .items
            .is_empty());
        assert!(s
            .list_files("alice", Some("!!not-a-cursor"), 10)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn delete_chunks_drops_claims() {
        let (_d, s) = open().await;
        s.insert_upload(&upload("u", "o", 2, T0)).await.unwrap();
        store_chunk(&s, "u", 0, "aa").await;
        s.claim_chunk("u", 1, "bb", "c", LEASE, T0).await.unwrap();
        s.delete_chunks("u").await.unwrap();
        assert!(s.list_chunks("u").await.unwrap().is_empty());
        assert!(matches!(
            s.claim_chunk("u", 1, "bb", "other", LEASE, T0)
                .await
                .unwrap(),
            ClaimOutcome::Claimed { .. }
        ));
    }
}

mod auth {
    use storage::{AuthStore, RefreshRecord, RotateOutcome, StoreError, UserRecord};
    use storage_aws::DynamoAuthStore;

    use super::aws_support::{auth_store, unique};

    const T0: i64 = 1_700_000_000_000;

    async fn open() -> (String, DynamoAuthStore) {
        let prefix = unique("a");
        let s = auth_store(&prefix).await;
        (prefix, s)
    }
    fn user(id: &str, email: &str) -> UserRecord {
        UserRecord {
            user_id: id.into(),
            email: email.into(),
            name: "Ada".into(),
            password_hash: "$argon2id$v=19$...".into(),
            created_at_ms: T0,
        }
    }

    fn token(hash: &str, family: &str, expires_at_ms: i64) -> RefreshRecord {
        RefreshRecord {
            token_hash: hash.into(),
            family_id: family.into(),
            user_id: "u1".into(),
            expires_at_ms,
        }
    }

    #[tokio::test]
    async fn users_are_unique_by_email() {
        let (_d, s) = open().await;
        let u = user("u1", "ada@example.com");
        s.create_user(&u).await.unwrap();
        assert!(matches!(
            s.create_user(&user("u2", "ada@example.com")).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            s.user_by_email("ada@example.com").await.unwrap(),
            Some(u.clone())
        );
        assert_eq!(s.user_by_id("u1").await.unwrap(), Some(u));
        assert_eq!(s.user_by_email("bob@example.com").await.unwrap(), None);
        assert_eq!(s.user_by_id("u2").await.unwrap(), None);
        s.check().await.unwrap();
    }

    #[tokio::test]
    async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
        let (_d, s) = open().await;
        let exp = T0 + 3_600_000;
        s.insert_refresh(&token("h1", "fam", exp)).await.unwrap();
        assert_eq!(s.family_of("h1").await.unwrap().as_deref(), Some("fam"));
        assert!(!s.is_family_revoked("fam").await.unwrap());
        assert_eq!(
            s.rotate_refresh("h1", &token("h2", "fam", exp), T0)
                .await
                .unwrap(),
            RotateOutcome::Rotated {
                user_id: "u1".into()
            }
        );
        assert_eq!(
            s.rotate_refresh("h2", &token("h3", "fam", exp), T0 + 1)
                .await
                .unwrap(),
            RotateOutcome::Rotated {
                user_id: "u1".into()
            }
        );
        // h1 is presented again: theft. The family ends, h3 included.
        assert_eq!(
            s.rotate_refresh("h1", &token("h4", "fam", exp), T0 + 2)
                .await
                .unwrap(),
            RotateOutcome::Reused {
                family_id: "fam".into()
            }
        );
        assert!(s.is_family_revoked("fam").await.unwrap());
        assert_eq!(
            s.rotate_refresh("h3", &token("h5", "fam", exp), T0 + 3)
                .await
                .unwrap(),
            RotateOutcome::Invalid
        );
        assert_eq!(
            s.family_of("h4").await.unwrap(),
            None,
            "nothing stored on reuse"
        );
        assert_eq!(
            s.rotate_refresh("nope", &token("h6", "x", exp), T0)
                .await
                .unwrap(),
            RotateOutcome::Invalid
        );
    }

    #[tokio::test]
    async fn expired_and_revoked_tokens_are_invalid() {
        let (_d, s) = open().await;
        s.insert_refresh(&token("old", "f1", T0)).await.unwrap();
        assert_eq!(
            s.rotate_refresh("old", &token("n", "f1", T0 + 10), T0)
                .await
                .unwrap(),
            RotateOutcome::Invalid
        );
        s.insert_refresh(&token("live", "f2", T0 + 1000))
            .await
            .unwrap();
        s.insert_refresh(&token("live2", "f2", T0 + 1000))
            .await
            .unwrap();
        s.revoke_family("f2").await.unwrap();
        s.revoke_family("f2").await.unwrap();
        assert!(s.is_family_revoked("f2").await.unwrap());
        assert_eq!(
            s.rotate_refresh("live", &token("n2", "f2", T0 + 10), T0)
                .await
                .unwrap(),
            RotateOutcome::Invalid
        );
        assert!(!s.is_family_revoked("unknown").await.unwrap());
        // Duplicate token hashes are refused.
        assert!(matches!(
            s.insert_refresh(&token("live", "f3", T0)).await,
            Err(StoreError::Conflict(_))
        ));
    }
}

mod queue {
    use std::time::{Duration, Instant};

    use storage::{JobQueue, QueueDepth, StoreError};

    use super::aws_support::{queue, unique};

    const VIS: Duration = Duration::from_secs(30);
    const NO_WAIT: Duration = Duration::ZERO;

    #[tokio::test]
    async fn fifo_delivery_and_ack() {
        let q = queue(&unique("q"), 5).await;
        for i in 0..3 {
            q.send(&format!("d{i}"), &format!("job {i}")).await.unwrap();
        }
        assert_eq!(
            q.depth().await.unwrap(),
            QueueDepth {
                visible: 3,
                in_flight: 0
            }
        );
        let a = q.receive(NO_WAIT, VIS).await.unwrap().unwrap();
        let b = q.receive(NO_WAIT, VIS).await.unwrap().unwrap();
        assert_eq!((a.body.as_str(), a.receive_count), ("job 0", 1));
        assert_eq!(b.body, "job 1");
        assert_ne!(a.receipt, b.receipt);
        assert_eq!(
            q.depth().await.unwrap(),
            QueueDepth {
                visible: 1,
                in_flight: 2
            }
        );
        q.delete(&a.receipt).await.unwrap();
        q.extend_visibility(&b.receipt, VIS).await.unwrap();
        assert_eq!(
            q.receive(NO_WAIT, VIS).await.unwrap().unwrap().body,
            "job 2"
        );
        assert_eq!(q.receive(NO_WAIT, VIS).await.unwrap(), None);
        q.check().await.unwrap();
    }

    #[tokio::test]
    async fn unacked_messages_are_redelivered_with_their_count() {
        let q = queue(&unique("q"), 5).await;
        q.send("u1", "assemble u1").await.unwrap();
        let first = q
            .receive(NO_WAIT, Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            q.receive(NO_WAIT, VIS).await.unwrap(),
            None,
            "invisible while in flight"
        );
        // Long poll: comes back once the visibility runs out.
        let again = q
            .receive(Duration::from_secs(10), VIS)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (again.body.as_str(), again.receive_count),
            ("assemble u1", 2)
        );
        assert_ne!(first.receipt, again.receipt);
        q.delete(&again.receipt).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    }

    #[tokio::test]
    async fn extended_visibility_holds_the_message() {
        let q = queue(&unique("q"), 5).await;
        q.send("u1", "b").await.unwrap();
        let m = q
            .receive(NO_WAIT, Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        q.extend_visibility(&m.receipt, VIS).await.unwrap();
        // Well past the original second: still hidden.
        assert_eq!(q.receive(Duration::from_secs(3), VIS).await.unwrap(), None);
        q.delete(&m.receipt).await.unwrap();
    }

    #[tokio::test]
    async fn duplicates_within_the_window_are_dropped() {
        let q = queue(&unique("q"), 5).await;
        q.send("u1", "first").await.unwrap();
        q.send("u1", "second").await.unwrap();
        q.send("u2", "other").await.unwrap();
        assert_eq!(q.depth().await.unwrap().visible, 2);
        // While the first is in flight too. (SQS also drops a resend after the first was
        // acknowledged, within 5 minutes; moto forgets acknowledged ids, so that is not
        // asserted here.)
        let m = q.receive(NO_WAIT, VIS).await.unwrap().unwrap();
        assert_eq!(m.body, "first");
        q.send("u1", "third").await.unwrap();
        assert_eq!(
            q.depth().await.unwrap(),
            QueueDepth {
                visible: 1,
                in_flight: 1
            }
        );
        q.delete(&m.receipt).await.unwrap();
    }

    #[tokio::test]
    async fn long_poll_wakes_on_send_and_times_out() {
        let name = unique("q");
        let q = queue(&name, 5).await;
        let started = Instant::now();
        assert_eq!(q.receive(Duration::from_secs(1), VIS).await.unwrap(), None);
        assert!(started.elapsed() >= Duration::from_secs(1));
        let other = queue(&name, 5).await;
        let waiter = tokio::spawn(async move { other.receive(Duration::from_secs(20), VIS).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        q.send("u9", "wake up").await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(15), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.body, "wake up");
        q.delete(&got.receipt).await.unwrap();
    }

    /// After `max_receives` receives without an acknowledgement, the redrive policy moves
    /// the message to the dead-letter queue, where its consumer finds it.
    #[tokio::test]
    async fn a_message_received_too_often_moves_to_the_dead_letter_queue() {
        let q = queue(&unique("q"), 2).await;
        q.send("poison", "{\"upload_id\":\"poison\"}")
            .await
            .unwrap();
        let short = Duration::from_secs(1);
        for n in 1..=2 {
            let m = q
                .receive(Duration::from_secs(10), short)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(m.receive_count, n);
        }
        let dlq = q
            .dead_letters()
            .expect("SQS queues have a dead-letter queue");
        assert!(dlq.dead_letters().is_none());
        let deadline = Instant::now() + Duration::from_secs(20);
        let dead = loop {
            // Receiving from the main queue is what makes SQS move the message.
            assert_eq!(
                q.receive(Duration::from_secs(2), short).await.unwrap(),
                None
            );
            if let Some(m) = dlq.receive(NO_WAIT, VIS).await.unwrap() {
                break m;
            }
            assert!(Instant::now() < deadline, "never dead-lettered");
        };
        assert_eq!(dead.body, "{\"upload_id\":\"poison\"}");
        dlq.delete(&dead.receipt).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    }

    #[tokio::test]
    async fn a_missing_queue_fails_the_check_until_it_exists() {
        let name = unique("q");
        let sdk = super::aws_support::moto().await;
        let q = storage_aws::SqsJobQueue::new(&sdk, &name);
        match q.check().await {
            Err(StoreError::Unavailable(m)) => {
                assert!(m.contains("does not exist") && m.contains(".fifo"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        storage_aws::sqs::create_queues(&sdk, &name, 3)
            .await
            .unwrap();
        q.check().await.unwrap();
    }
}

mod blobs {
    use std::time::Duration;

    use bytes::Bytes;
    use futures::StreamExt;
    use lfusys_core::ids;
    use lfusys_core::range::ByteRange;
    use sha2::{Digest, Sha256};
    use storage::{BlobStore, ByteStream, ChunkTarget, PartRef, StoreError};
    use storage_aws::S3BlobStore;

    use super::aws_support::{bucket, moto, real_s3, unique};

    const MIB: usize = 1024 * 1024;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
            .collect()
    }

    fn body(data: &[u8], frame: usize) -> ByteStream {
        let frames: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(frame)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(frames))
    }

    fn target(upload_id: &str, handle: &str, index: u32, data: &[u8]) -> ChunkTarget {
        ChunkTarget {
            upload_id: upload_id.into(),
            handle: handle.into(),
            index,
            offset: 0,
            len: data.len() as u64,
            sha256: Sha256::digest(data).into(),
        }
    }

    fn part(index: u32, data: &[u8], etag: String) -> PartRef {
        PartRef {
            index,
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
            etag,
        }
    }

    async fn read_all(s: &S3BlobStore, key: &str, range: Option<ByteRange>) -> Vec<u8> {
        let mut stream = s.read_blob(key, range).await.unwrap();
        let mut out = Vec::new();
        while let Some(b) = stream.next().await {
            out.extend_from_slice(&b.unwrap());
        }
        out
    }

    /// Writes `chunks` as the parts of a new upload, out of order; returns the receipts.
    async fn write_parts(
        s: &S3BlobStore,
        id: &str,
        handle: &str,
        chunks: &[Vec<u8>],
    ) -> Vec<PartRef> {
        let mut tasks = Vec::new();
        for (i, data) in chunks.iter().enumerate().rev() {
            let (s, id, handle, data) = (s.clone(), id.to_owned(), handle.to_owned(), data.clone());
            tasks.push(tokio::spawn(async move {
                let etag = s
                    .write_chunk(
                        &target(&id, &handle, i as u32, &data),
                        body(&data, 64 * 1024 + 7),
                    )
                    .await
                    .unwrap();
                part(i as u32, &data, etag)
            }));
        }
        let mut parts = Vec::new();
        for t in tasks {
            parts.push(t.await.unwrap());
        }
        parts.sort_by_key(|p| p.index);
        parts
    }

    /// The whole life of a blob on a real S3 server (5 MiB parts): parts in any order,
    /// complete, idempotent re-complete, ranged reads, presigned download, delete.
    #[tokio::test]
    async fn multipart_upload_on_a_real_s3_server() {
        let sdk = real_s3().await;
        let s = bucket(&sdk, &unique("b")).await;
        s.check().await.unwrap();
        let id = ids::new_upload_id();
        let key = S3BlobStore::key_for_upload(&id);
        let chunks = vec![pattern(5 * MIB, 1), pattern(5 * MIB, 2), pattern(12_345, 3)];
        let whole: Vec<u8> = chunks.concat();
        let handle = s.begin_upload(&id, whole.len() as u64).await.unwrap();
        let parts = write_parts(&s, &id, &handle, &chunks).await;
        assert!(parts.iter().all(|p| !p.etag.is_empty()));
        // Retried part: replaced, same receipt.
        let again = s
            .write_chunk(&target(&id, &handle, 2, &chunks[2]), body(&chunks[2], 1000))
            .await
            .unwrap();
        assert_eq!(again, parts[2].etag);
        s.complete_upload(&id, &handle, &parts, &key).await.unwrap();
        // A redelivered job completes again: success.
        s.complete_upload(&id, &handle, &parts, &key).await.unwrap();
        assert_eq!(s.blob_size(&key).await.unwrap(), whole.len() as u64);
        assert_eq!(
            Sha256::digest(read_all(&s, &key, None).await),
            Sha256::digest(&whole)
        );
        let r = ByteRange {
            start: 5 * MIB as u64 - 10,
            end: 5 * MIB as u64 + 10,
        };
        assert_eq!(
            read_all(&s, &key, Some(r)).await,
            &whole[r.start as usize..=r.end as usize]
        );
        let url = s
            .presigned_url(
                &key,
                Duration::from_secs(60),
                "attachment; filename=\"x.bin\"",
                "application/x-test",
            )
            .await
            .unwrap()
            .unwrap();
        let res = reqwest::get(&url).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/x-test");
        assert_eq!(
            res.headers()["content-disposition"],
            "attachment; filename=\"x.bin\""
        );
        assert_eq!(res.bytes().await.unwrap().len(), whole.len());
        s.delete_blob(&key).await.unwrap();
        s.delete_blob(&key).await.unwrap();
        assert!(matches!(
            s.blob_size(&key).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.read_blob(&key, None).await,
            Err(StoreError::NotFound(_))
        ));
        // Committing to another key than the upload's is refused (it would need a copy).
        assert!(s
            .complete_upload(&id, &handle, &parts, "files/other")
            .await
            .is_err());
    }

    /// S3 verifies each part's SHA-256 itself: a body that does not match the declared
    /// checksum is refused, and nothing of it is stored.
    /// The store relies on the server's checksum check only where a probe showed it: MinIO
    /// refuses a part under a wrong checksum, moto does not; the probe leaves nothing open.
    #[tokio::test]
    async fn checksum_verification_is_probed() {
        let name = unique("b");
        let verifying = bucket(&real_s3().await, &name).await;
        assert!(verifying.verifies_digest().await);
        assert!(verifying.verifies_digest().await, "remembered");
        let open = verifying
            .client()
            .list_multipart_uploads()
            .bucket(verifying.bucket())
            .send()
            .await
            .unwrap();
        assert!(open.uploads().is_empty(), "{open:?}");
        let not_verifying = bucket(&moto().await, &unique("b")).await;
        assert!(!not_verifying.verifies_digest().await);
    }

    #[tokio::test]
    async fn s3_rejects_a_part_whose_checksum_does_not_match() {
        let sdk = real_s3().await;
        let s = bucket(&sdk, &unique("b")).await;
        let id = ids::new_upload_id();
        let handle = s.begin_upload(&id, 10).await.unwrap();
        let good = pattern(MIB, 9);
        let mut bad_target = target(&id, &handle, 0, &good);
        bad_target.sha256 = Sha256::digest(b"something else").into();
        let refused = s.write_chunk(&bad_target, body(&good, 8192)).await;
        assert!(
            matches!(refused, Err(StoreError::DigestMismatch)),
            "{refused:?}"
        );
        let key = S3BlobStore::key_for_upload(&id);
        assert!(
            s.list_parts(&key, &handle).await.unwrap().is_empty(),
            "nothing stored"
        );
        // The same part with its true checksum goes through.
        let etag = s
            .write_chunk(&target(&id, &handle, 0, &good), body(&good, 8192))
            .await
            .unwrap();
        assert!(!etag.is_empty());
        s.abort_upload(&id, &handle).await.unwrap();
    }

    /// Abort releases everything on the upload's key, also an orphan multipart upload of a
    /// repeated begin; it is idempotent; a body of the wrong length never becomes a part.
    #[tokio::test]
    async fn abort_leaves_no_multipart_upload_behind() {
        // moto answers a part for an aborted upload with a bare 500, MinIO like S3 (NoSuchUpload).
        for (sdk, real) in [(moto().await, false), (real_s3().await, true)] {
            let s = bucket(&sdk, &unique("b")).await;
            let id = ids::new_upload_id();
            let key = S3BlobStore::key_for_upload(&id);
            let handle = s.begin_upload(&id, 10).await.unwrap();
            let _orphan = s.begin_upload(&id, 10).await.unwrap();
            assert_eq!(s.open_multipart_uploads(&key).await.unwrap().len(), 2);
            let data = pattern(1000, 4);
            let mut short = target(&id, &handle, 0, &data);
            short.len = 2000;
            assert!(matches!(
                s.write_chunk(&short, body(&data, 100)).await,
                Err(StoreError::LengthMismatch {
                    expected: 2000,
                    actual: 1000
                })
            ));
            let mut long = target(&id, &handle, 0, &data);
            long.len = 500;
            assert!(matches!(
                s.write_chunk(&long, body(&data, 100)).await,
                Err(StoreError::LengthMismatch { expected: 500, .. })
            ));
            let failing: ByteStream = Box::pin(futures::stream::iter(vec![
                Ok(Bytes::from_static(b"abc")),
                Err(std::io::Error::other("connection reset")),
            ]));
            let mut t = target(&id, &handle, 0, &data);
            t.len = 10;
            assert!(matches!(
                s.write_chunk(&t, failing).await,
                Err(StoreError::Body(_))
            ));
            s.abort_upload(&id, &handle).await.unwrap();
            assert!(s.open_multipart_uploads(&key).await.unwrap().is_empty());
            s.abort_upload(&id, &handle).await.unwrap();
            let after = s
                .write_chunk(&target(&id, &handle, 0, &data), body(&data, 100))
                .await;
            if real {
                assert!(matches!(after, Err(StoreError::NotFound(_))), "{after:?}");
            } else {
                assert!(after.is_err());
            }
        }
    }

    /// More than one page of parts (ListParts pages at 1,000) are all listed; completing
    /// without recorded parts uses the listed ones. (On MinIO: moto's ListParts answer is
    /// not S3's XML.)
    #[tokio::test]
    async fn lists_parts_across_pages_and_completes_from_them() {
        let sdk = real_s3().await;
        let s = bucket(&sdk, &unique("b")).await;
        let id = ids::new_upload_id();
        let key = S3BlobStore::key_for_upload(&id);
        let handle = s.begin_upload(&id, 0).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..1005u32 {
            let (s, id, handle) = (s.clone(), id.clone(), handle.clone());
            tasks.push(tokio::spawn(async move {
                let c = pattern(16, i as u8);
                s.write_chunk(&target(&id, &handle, i, &c), body(&c, 16))
                    .await
                    .unwrap();
            }));
            if tasks.len() >= 16 {
                for t in tasks.drain(..) {
                    t.await.unwrap();
                }
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(s.list_parts(&key, &handle).await.unwrap().len(), 1005);
        s.abort_upload(&id, &handle).await.unwrap();

        let id = ids::new_upload_id();
        let key = S3BlobStore::key_for_upload(&id);
        let chunks = vec![pattern(5 * MIB, 7), pattern(999, 8)];
        let handle = s.begin_upload(&id, 0).await.unwrap();
        write_parts(&s, &id, &handle, &chunks).await;
        s.complete_upload(&id, &handle, &[], &key).await.unwrap();
        assert_eq!(read_all(&s, &key, None).await, chunks.concat());
        s.complete_upload(&id, &handle, &[], &key).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_bucket_or_bad_credentials_fail_the_check() {
        let sdk = real_s3().await;
        let name = unique("b");
        let s = S3BlobStore::new(&sdk, &name);
        match s.check().await {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("does not exist"), "{m}"),
            other => panic!("{other:?}"),
        }
        storage_aws::s3::create_bucket(&sdk, &name).await.unwrap();
        s.check().await.unwrap();
        let wrong = storage_aws::sdk_config_for(
            &super::aws_support::s3_url(),
            "nobody",
            "wrong-secret-key",
        )
        .await;
        match S3BlobStore::new(&wrong, &name).check().await {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("credentials"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

mod tables {
    use storage::{MetadataStore, StoreError};
    use storage_aws::{dynamodb, DynamoMetadataStore, TableNames};

    use super::aws_support::{moto, unique};

    #[tokio::test]
    async fn missing_tables_fail_the_check_until_they_exist() {
        let sdk = moto().await;
        let prefix = unique("t");
        let s = DynamoMetadataStore::new(&sdk, &prefix);
        match s.check().await {
            Err(StoreError::Unavailable(m)) => {
                assert!(
                    m.contains(&format!("{prefix}uploads")) && m.contains("does not exist"),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
        dynamodb::create_tables(&sdk, &TableNames::new(&prefix))
            .await
            .unwrap();
        // Idempotent.
        dynamodb::create_tables(&sdk, &TableNames::new(&prefix))
            .await
            .unwrap();
        s.check().await.unwrap();
    }
}
