//! Many chunks at once, in any order, on several workers; racing last chunks complete the
//! upload exactly once (DESIGN §3 steps 2–3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use futures::future::join_all;
use lfusys_core::state::UploadState;
use rand::seq::SliceRandom;
use rand::Rng;

/// The upload is completed with exactly one File equal to the source, assembled once.
async fn assert_assembled_once(h: &Harness, up: &TestUpload, workers: &[&Worker]) {
    let done = h
        .wait_for_state(&up.id, UploadState::Completed, Duration::from_secs(60))
        .await;
    assert_eq!(
        h.sessions_queue.sent(),
        1,
        "exactly one commit completes the set and enqueues"
    );
    let files = h.files().await;
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    assert_eq!(file.file_id, done.file_id);
    assert_eq!(file.size, up.data.len() as u64);
    assert_eq!(file.sha256, up.file_sha256());
    let bytes = h.read_blob(&file.blob_key).await;
    assert!(bytes == up.data, "the file's bytes differ from the source");
    // One delivery, acknowledged once, wherever it ran.
    eventually(
        "the job to be acknowledged",
        Duration::from_secs(10),
        || async {
            let acked: u32 = workers.iter().map(|w| w.queue.deleted()).sum();
            (acked >= 1).then_some(())
        },
    )
    .await;
    let acked: u32 = workers.iter().map(|w| w.queue.deleted()).sum();
    let receives: Vec<u32> = workers.iter().flat_map(|w| w.queue.receives()).collect();
    assert_eq!((acked, receives), (1, vec![1]));
    let depth = h
        .storage()
        .job_queue()
        .await
        .unwrap()
        .depth()
        .await
        .unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_chunks_in_flight_in_random_order_with_duplicates() {
    let h = Harness::start(Options::default()).await;
    let second = h.start_worker(&WorkerOptions::default()).await;
    let data = random_bytes((63 * CHUNK + 12_345) as usize);
    let sha = sha256_hex(&data);
    let up = h.create_upload_of(data, Some(sha)).await;
    assert_eq!(up.plan.total_chunks, 64);

    let mut rng = rand::thread_rng();
    let mut order: Vec<u32> = (0..64).collect();
    order.extend((0..16).map(|_| rng.gen_range(0..64)));
    order.shuffle(&mut rng);
    let workers = [&h.worker, &second];
    let replies = join_all(
        order
            .iter()
            .enumerate()
            .map(|(n, &i)| h.put_chunk_to(workers[n % 2], &up, i)),
    )
    .await;

    let mut stored: BTreeMap<u64, usize> = BTreeMap::new();
    for r in &replies {
        match r.status {
            201 => *stored.entry(r.body["index"].as_u64().unwrap()).or_default() += 1,
            200 => assert_eq!(r.body["sha256"].as_str().map(str::len), Some(64)),
            409 => r.assert_problem(409, "chunk-in-progress"),
            _ => panic!("unexpected answer {r:?}"),
        }
    }
    assert_eq!(stored.len(), 64, "every chunk stored");
    assert!(
        stored.values().all(|&n| n == 1),
        "each chunk stored exactly once: {stored:?}"
    );
    let with_all = replies
        .iter()
        .filter(|r| r.status == 201 && r.body["received_count"] == 64)
        .count();
    assert_eq!(with_all, 1, "exactly one request recorded the 64th chunk");
    assert_assembled_once(&h, &up, &workers).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_racing_last_chunks_make_exactly_one_file() {
    let h = Harness::start(Options::default()).await;
    let up = h.create_upload((40 * CHUNK) as usize, None).await;
    for i in 0..20 {
        assert_eq!(h.put_chunk(&up, i).await.status, 201);
    }
    let replies = join_all((20..40).map(|i| h.put_chunk(&up, i))).await;
    assert!(replies.iter().all(|r| r.status == 201), "{replies:?}");
    let mut counts: Vec<u64> = replies
        .iter()
        .map(|r| r.body["received_count"].as_u64().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (21..=40).collect::<Vec<_>>(),
        "each commit saw its own count"
    );
    assert_assembled_once(&h, &up, &[&h.worker]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_requests_for_the_one_missing_chunk_make_exactly_one_file() {
    let h = Harness::start(Options::default()).await;
    let up = h.create_upload((3 * CHUNK + 77) as usize, None).await;
    for i in 0..3 {
        assert_eq!(h.put_chunk(&up, i).await.status, 201);
    }
    let replies = join_all((0..20).map(|_| h.put_chunk(&up, 3))).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 1, "{replies:?}");
    for r in &replies {
        match r.status {
            201 | 200 => assert_eq!(r.body["complete"], true, "{r:?}"),
            _ => r.assert_problem(409, "chunk-in-progress"),
        }
    }
    assert_assembled_once(&h, &up, &[&h.worker]).await;
}
