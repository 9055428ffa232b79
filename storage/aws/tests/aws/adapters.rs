//! Tests of what only the AWS adapters do, against the servers `scripts/aws-servers.sh` runs
//! (moto for S3, DynamoDB and SQS; MinIO for S3): the SQS dead-letter queue, S3 receipts,
//! presigned URLs, part checksums (declared, or the SDK's trailer) and the whole-file check on a
//! server that lists none, part listing and orphan multipart uploads, and readiness checks that
//! say which resource is missing. What every adapter of a port does is
//! the conformance suite (`conformance.rs` beside it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod queue {
    use std::time::{Duration, Instant};

    use storage::{JobQueue, QueueDepth, StoreError};

    use test_support::aws::{moto, queue, unique};

    const VIS: Duration = Duration::from_secs(30);
    const NO_WAIT: Duration = Duration::ZERO;

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
        let sdk = moto().await;
        let q = storage_aws::SqsJobQueue::new(&sdk, &name);
        match q.check().await {
            Err(StoreError::Unavailable { message: m, .. }) => {
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
    use storage::UploadId;

    use bytes::Bytes;
    use futures::StreamExt;
    use lfusys_core::digest::{crc64_base64, crc64nvme, crc64nvme_of_pieces};
    use lfusys_core::ids;
    use lfusys_core::range::ByteRange;
    use sha2::{Digest, Sha256};
    use storage::conformance::fixtures::{self, body, part, pattern};
    use storage::{BlobStore, ByteStream, ChunkTarget, PartRef, StoreError};
    use storage_aws::S3BlobStore;

    use test_support::aws::{bucket, moto, real_s3, s3_url, unique};

    const MIB: usize = 1024 * 1024;

    /// On S3 a part's offset is its number's business: every chunk here is at offset 0.
    fn target(upload_id: &str, handle: &str, index: u32, data: &[u8]) -> ChunkTarget {
        fixtures::target(upload_id, Some(handle), index, 0, data)
    }

    /// The whole file's CRC-64/NVME from its parts', in index order.
    fn whole_of(parts: &[PartRef]) -> u64 {
        crc64nvme_of_pieces(parts.iter().map(|p| (p.crc64nvme, p.size)))
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
                let written = s
                    .write_chunk(
                        &target(&id, &handle, i as u32, &data),
                        body(&data, 64 * 1024 + 7),
                    )
                    .await
                    .unwrap();
                part(i as u32, &data, written)
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
        let handle = s
            .begin_upload(&UploadId::from(&id), whole.len() as u64)
            .await
            .unwrap()
            .expect("S3 hands back its multipart upload id");
        let parts = write_parts(&s, &id, &handle, &chunks).await;
        assert!(parts.iter().all(|p| p.etag.is_some()));
        // Retried part: replaced, same receipt.
        let again = s
            .write_chunk(&target(&id, &handle, 2, &chunks[2]), body(&chunks[2], 1000))
            .await
            .unwrap();
        assert_eq!(again.etag, parts[2].etag);
        assert_eq!(again.crc64nvme, parts[2].crc64nvme);
        let whole_crc = whole_of(&parts);
        assert_eq!(whole_crc, crc64nvme(&whole));
        s.complete_upload(&UploadId::from(&id), Some(&handle), &parts, &key, whole_crc)
            .await
            .unwrap();
        // A redelivered job completes again: success.
        s.complete_upload(&UploadId::from(&id), Some(&handle), &parts, &key, whole_crc)
            .await
            .unwrap();
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
            .complete_upload(
                &UploadId::from(&id),
                Some(&handle),
                &parts,
                "files/other",
                whole_crc
            )
            .await
            .is_err());
    }

    /// A part whose CRC-64/NVME the client did not declare goes with the one the SDK computes,
    /// as a trailer, which the server records as the part's checksum (MinIO, like S3, lists it);
    /// the store answers the same CRC, and the upload completes against it. moto takes the
    /// trailer too.
    #[tokio::test]
    async fn a_part_without_a_declared_crc_carries_the_sdks_trailing_checksum() {
        for (sdk, real) in [(real_s3().await, true), (moto().await, false)] {
            let s = bucket(&sdk, &unique("b")).await;
            let id = ids::new_upload_id();
            let key = S3BlobStore::key_for_upload(&id);
            let data = pattern(MIB + 17, 5);
            let handle = s
                .begin_upload(&UploadId::from(&id), data.len() as u64)
                .await
                .unwrap()
                .expect("S3 hands back its multipart upload id");
            let mut t = target(&id, &handle, 0, &data);
            t.crc64nvme = None;
            let written = s.write_chunk(&t, body(&data, 64 * 1024)).await.unwrap();
            assert_eq!(
                written.crc64nvme,
                crc64nvme(&data),
                "real S3 server: {real}"
            );
            if real {
                let listed = s.list_parts(&key, &handle).await.unwrap();
                assert_eq!(
                    listed[0].checksum_crc64_nvme(),
                    Some(crc64_base64(crc64nvme(&data)).as_str())
                );
            }
            s.complete_upload(
                &UploadId::from(&id),
                Some(&handle),
                &[part(0, &data, written)],
                &key,
                crc64nvme(&data),
            )
            .await
            .unwrap();
            assert_eq!(
                read_all(&s, &key, None).await,
                data,
                "real S3 server: {real}"
            );
        }
    }

    /// S3 verifies each part's CRC-64/NVME itself: a body that does not match the declared
    /// checksum is refused, and nothing of it is stored; moto, which does not check it, keeps
    /// the part, and the store refuses it alike.
    #[tokio::test]
    async fn a_part_whose_checksum_does_not_match_is_refused() {
        for (sdk, real) in [(real_s3().await, true), (moto().await, false)] {
            let s = bucket(&sdk, &unique("b")).await;
            let id = ids::new_upload_id();
            let handle = s
                .begin_upload(&UploadId::from(&id), 10)
                .await
                .unwrap()
                .expect("S3 hands back its multipart upload id");
            let good = pattern(MIB, 9);
            let mut bad_target = target(&id, &handle, 0, &good);
            bad_target.crc64nvme = Some(crc64nvme(b"something else"));
            let refused = s.write_chunk(&bad_target, body(&good, 8192)).await;
            assert!(
                matches!(refused, Err(StoreError::DigestMismatch)),
                "real S3 server: {real}: {refused:?}"
            );
            let key = S3BlobStore::key_for_upload(&id);
            if real {
                assert!(
                    s.list_parts(&key, &handle).await.unwrap().is_empty(),
                    "nothing stored"
                );
            }
            // The same part with its true checksum goes through.
            let written = s
                .write_chunk(&target(&id, &handle, 0, &good), body(&good, 8192))
                .await
                .unwrap();
            assert!(written.etag.is_some());
            assert_eq!(written.crc64nvme, crc64nvme(&good));
            s.abort_upload(&UploadId::from(&id), Some(&handle))
                .await
                .unwrap();
        }
    }

    /// moto keeps no part checksums it could list (and its `ListParts` answer is not one the
    /// SDK reads): chunks at each other's place are still refused (their ETags are not the
    /// parts'), and so is a wrong whole CRC (the chunks' recorded CRCs do not make it); the
    /// upload then completes with the right ones.
    #[tokio::test]
    async fn the_whole_file_is_checked_on_a_server_that_lists_no_part_checksums() {
        let s = bucket(&moto().await, &unique("b")).await;
        let id = ids::new_upload_id();
        let key = S3BlobStore::key_for_upload(&id);
        let (a, b) = (pattern(1000, 1), pattern(1000, 2));
        let handle = s
            .begin_upload(&UploadId::from(&id), 2000)
            .await
            .unwrap()
            .expect("S3 hands back its multipart upload id");
        let a_at_1 = s
            .write_chunk(&target(&id, &handle, 1, &a), body(&a, 100))
            .await
            .unwrap();
        let b_at_0 = s
            .write_chunk(&target(&id, &handle, 0, &b), body(&b, 100))
            .await
            .unwrap();
        let swapped = [part(0, &a, a_at_1), part(1, &b, b_at_0)];
        let refused = s
            .complete_upload(
                &UploadId::from(&id),
                Some(&handle),
                &swapped,
                &key,
                whole_of(&swapped),
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::ChecksumMismatch(_))),
            "{refused:?}"
        );
        let a_at_0 = s
            .write_chunk(&target(&id, &handle, 0, &a), body(&a, 100))
            .await
            .unwrap();
        let b_at_1 = s
            .write_chunk(&target(&id, &handle, 1, &b), body(&b, 100))
            .await
            .unwrap();
        let parts = [part(0, &a, a_at_0), part(1, &b, b_at_1)];
        let wrong = s
            .complete_upload(&UploadId::from(&id), Some(&handle), &parts, &key, 1)
            .await;
        assert!(
            matches!(wrong, Err(StoreError::ChecksumMismatch(_))),
            "{wrong:?}"
        );
        assert!(matches!(
            s.blob_size(&key).await,
            Err(StoreError::NotFound(_))
        ));
        let whole_crc = whole_of(&parts);
        s.complete_upload(&UploadId::from(&id), Some(&handle), &parts, &key, whole_crc)
            .await
            .unwrap();
        assert_eq!(read_all(&s, &key, None).await, [a, b].concat());
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
            let handle = s
                .begin_upload(&UploadId::from(&id), 10)
                .await
                .unwrap()
                .expect("S3 hands back its multipart upload id");
            let _orphan = s
                .begin_upload(&UploadId::from(&id), 10)
                .await
                .unwrap()
                .expect("S3 hands back its multipart upload id");
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
                Err(StoreError::Body { .. })
            ));
            s.abort_upload(&UploadId::from(&id), Some(&handle))
                .await
                .unwrap();
            assert!(s.open_multipart_uploads(&key).await.unwrap().is_empty());
            s.abort_upload(&UploadId::from(&id), Some(&handle))
                .await
                .unwrap();
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
        let handle = s
            .begin_upload(&UploadId::from(&id), 0)
            .await
            .unwrap()
            .expect("S3 hands back its multipart upload id");
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
        s.abort_upload(&UploadId::from(&id), Some(&handle))
            .await
            .unwrap();

        let id = ids::new_upload_id();
        let key = S3BlobStore::key_for_upload(&id);
        let chunks = vec![pattern(5 * MIB, 7), pattern(999, 8)];
        let handle = s
            .begin_upload(&UploadId::from(&id), 0)
            .await
            .unwrap()
            .expect("S3 hands back its multipart upload id");
        write_parts(&s, &id, &handle, &chunks).await;
        let whole_crc = crc64nvme(&chunks.concat());
        // The listed parts are checked against the whole CRC too.
        let wrong = s
            .complete_upload(&UploadId::from(&id), Some(&handle), &[], &key, !whole_crc)
            .await;
        assert!(
            matches!(wrong, Err(StoreError::ChecksumMismatch(_))),
            "{wrong:?}"
        );
        s.complete_upload(&UploadId::from(&id), Some(&handle), &[], &key, whole_crc)
            .await
            .unwrap();
        assert_eq!(read_all(&s, &key, None).await, chunks.concat());
        s.complete_upload(&UploadId::from(&id), Some(&handle), &[], &key, whole_crc)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_missing_bucket_or_bad_credentials_fail_the_check() {
        let sdk = real_s3().await;
        let name = unique("b");
        let s = S3BlobStore::new(&sdk, &name);
        match s.check().await {
            Err(StoreError::Unavailable { message: m, .. }) => {
                assert!(m.contains("does not exist"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        storage_aws::s3::create_bucket(&sdk, &name).await.unwrap();
        s.check().await.unwrap();
        let wrong = storage_aws::sdk_config_for(&s3_url(), "nobody", "wrong-secret-key").await;
        match S3BlobStore::new(&wrong, &name).check().await {
            Err(StoreError::Unavailable { message: m, .. }) => {
                assert!(m.contains("credentials"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}

mod tables {
    use storage::{MetadataStore, StoreError};
    use storage_aws::{dynamodb, DynamoMetadataStore, TableNames};

    use test_support::aws::{moto, unique};

    #[tokio::test]
    async fn missing_tables_fail_the_check_until_they_exist() {
        let sdk = moto().await;
        let prefix = unique("t");
        let s = DynamoMetadataStore::new(&sdk, &prefix);
        match s.check().await {
            Err(StoreError::Unavailable { message: m, .. }) => {
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
