//! Benchmark of the deployed system on real Pods (run by `scripts/test-k8s-pods.sh --bench`,
//! which starts the real-Node cluster and the storage servers; see tests/support/deployed.rs):
//!
//! (a) `kubectl apply` of the `LfusysCluster` → `Available=True`, and → every Pod Ready;
//! (b) a deeper queue (real assembly jobs: many one-chunk uploads completed at once) → the
//!     autoscaler's new desired count in status → the first new worker Pod Ready, per round;
//! (c) chunk upload throughput through the Ingress (Traefik) vs. straight to the one worker
//!     Pod (its Pod IP), the same worker, the same file, the same chunks in flight: a ratio.
//!
//! Arguments: `--rounds N` (default 3), `--size-mib N` for (c) (default 1024).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use support::deployed::{patch_cluster, ApiUser, Deployed, MIB, READY};
use support::eventually;

const JOBS: usize = 40;
const IN_FLIGHT: usize = 8;

#[tokio::main]
async fn main() {
    let mut rounds = 3;
    let mut size_mib = 1024;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().unwrap().parse().unwrap(),
            "--size-mib" => size_mib = args.next().unwrap().parse().unwrap(),
            "--bench" => {}
            "--help" | "-h" => {
                println!("pods bench: --rounds N (default 3), --size-mib N (default 1024)");
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let d = Deployed::get().await;
    println!(
        "(a) kubectl apply → Available=True {:.2} s, → every Pod Ready {:.2} s",
        d.apply_to_available.as_secs_f64(),
        d.apply_to_ready.as_secs_f64()
    );
    let user = ApiUser::signup(&d.ingress, "bench").await;

    queue_depth_to_new_worker(d, &user, rounds).await;
    ingress_against_one_worker(d, &user, rounds, size_mib).await;
}

/// (b) queue depth → the autoscaler's new desired count → a new worker Pod Ready, per round.
async fn queue_depth_to_new_worker(d: &Deployed, user: &ApiUser, rounds: usize) {
    let mut to_desired = Vec::new();
    let mut to_ready = Vec::new();
    for round in 0..rounds {
        set_workers(d, 1, 4).await;
        let before = worker_names(d).await;
        let data: Vec<Vec<u8>> = (0..JOBS)
            .map(|i| vec![(round * JOBS + i) as u8; MIB])
            .collect();
        user.complete_at_once(&format!("b{round}"), data, &d.ingress)
            .await;
        let queued = Instant::now();
        eventually("desired replicas > 1", READY, || async {
            match d.cluster().await.status.and_then(|s| s.uploads) {
                Some(u) if u.desired_replicas > 1 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        to_desired.push(queued.elapsed());
        eventually("a new worker Pod Ready", READY, || async {
            let now = worker_names(d).await;
            if now.iter().any(|n| !before.contains(n)) {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        })
        .await;
        to_ready.push(queued.elapsed());
        println!(
            "(b) round {round}: {JOBS} jobs queued → desired > 1 in {:.2} s → new worker Pod Ready in {:.2} s",
            to_desired[round].as_secs_f64(),
            to_ready[round].as_secs_f64()
        );
    }
    println!(
        "(b) median: desired {:.2} s, new worker Pod Ready {:.2} s",
        median(&mut to_desired),
        median(&mut to_ready)
    );
}

/// (c) chunk upload throughput through the Ingress vs. straight to the one worker Pod.
async fn ingress_against_one_worker(d: &Deployed, user: &ApiUser, rounds: usize, size_mib: usize) {
    set_workers(d, 1, 1).await;
    let worker = d.ready_pods("uploads").await.remove(0);
    let pod_ip = worker.status.unwrap().pod_ip.unwrap();
    let direct = format!("http://{pod_ip}:8081");
    let size = size_mib * MIB;
    let mut ingress_rates = Vec::new();
    let mut direct_rates = Vec::new();
    for round in 0..rounds {
        for (origin, rates) in [
            (d.ingress.as_str(), &mut ingress_rates),
            (direct.as_str(), &mut direct_rates),
        ] {
            let created = user
                .create(&format!("t{round}-{}", rates.len()), size, None)
                .await;
            let chunk = created["chunk_size"].as_u64().unwrap() as usize;
            let total = created["total_chunks"].as_u64().unwrap() as usize;
            let started = Instant::now();
            let statuses: Vec<u16> = futures::stream::iter(0..total)
                .map(|i| {
                    let len = chunk.min(size - i * chunk);
                    let data = vec![(i % 251) as u8; len];
                    user.put_chunk(&created, i, data, origin)
                })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
            let secs = started.elapsed().as_secs_f64();
            assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
            rates.push(size as f64 / secs / 1e6);
        }
        println!(
            "(c) round {round}: {size_mib} MiB, {IN_FLIGHT} chunks in flight: Ingress {:.0} MB/s, one worker directly {:.0} MB/s",
            ingress_rates[round], direct_rates[round]
        );
    }
    let (i, w) = (median_f(&mut ingress_rates), median_f(&mut direct_rates));
    println!(
        "(c) median: Ingress {i:.0} MB/s, straight to the worker {w:.0} MB/s, ratio {:.2}",
        i / w
    );
}

async fn set_workers(d: &Deployed, min: i32, max: i32) {
    patch_cluster(&serde_json::json!({
        "uploads": {"autoscaling": {"minReplicas": min, "maxReplicas": max}}
    }));
    eventually(
        "the workers at their minimum",
        Duration::from_secs(300),
        || async {
            let want = d.deployment("uploads").await;
            let pods = want.status.and_then(|s| s.replicas);
            let ready = d.ready_pods("uploads").await.len();
            if pods == Some(min) && ready == min as usize {
                Ok(())
            } else {
                Err(format!("{pods:?} pods, {ready} ready"))
            }
        },
    )
    .await;
}

async fn worker_names(d: &Deployed) -> Vec<String> {
    d.ready_pods("uploads")
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect()
}

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

fn median_f(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
