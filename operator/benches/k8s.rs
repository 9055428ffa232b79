//! Benchmark of the operator on a real control plane (run by `scripts/bench-k8s.sh`, which
//! starts the control plane and moto; see tests/support for the environment):
//!
//! (a) `kubectl apply` of an `LfusysCluster` → all 13 children created (as the API server's
//!     watch reports them) → `Available=True` in its status, for several new clusters;
//! (b) a change of the SQS queue depth (messages sent, or received and deleted) → the uploads
//!     Deployment's `spec.replicas` at the new count, for several changes at random moments
//!     of the poll cycle, with `pollIntervalSeconds` 1 and 5 and no scale-down window.
//!
//! Arguments: `--clusters N` (default 10), `--changes N` per poll interval (default 20).
//! The operator is the release build, as the chart's image would run it, authenticated as the
//! chart's ServiceAccount.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;
use support::{available, children, kubectl, kubectl_apply, Install, Namespace, Operator};
use tokio::sync::mpsc;

const CLUSTER: &str = "bench";

#[tokio::main]
async fn main() {
    let mut clusters = 10;
    let mut changes = 20;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--clusters" => clusters = args.next().unwrap().parse().unwrap(),
            "--changes" => changes = args.next().unwrap().parse().unwrap(),
            // cargo bench passes --bench.
            "--bench" => {}
            "--help" | "-h" => {
                println!("k8s bench: --clusters N (default 10), --changes N (default 20)");
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let install = Install::get();
    let client = support::admin().await;
    let operator = Operator::start("bench", 15);
    operator.wait_leader(Duration::from_secs(30)).await;
    println!(
        "operator: {} (release build), as {}",
        support::OPERATOR_BIN,
        install.service_account
    );

    println!("machine: {} cores, load average {}", cores(), load());
    apply_to_available(&client, clusters).await;
    for poll in [1, 5] {
        queue_to_replicas(&client, &operator, poll, changes).await;
    }
    println!("\nload average at the end: {}", load());
    drop(operator);
}

/// (a): one new cluster at a time, each in a new namespace.
async fn apply_to_available(client: &Client, n: usize) {
    let mut kubectl_done = Vec::new();
    let mut all_created = Vec::new();
    let mut first_created = Vec::new();
    let mut ready = Vec::new();
    for _ in 0..n {
        let ns = Namespace::create("bench-apply").await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Watches opened before the apply: the first event of each child is its creation.
        let mut watches = Vec::new();
        let mut ready_watches = Vec::new();
        for kind in kinds() {
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &kind);
            let config =
                watcher::Config::default().labels(&format!("app.kubernetes.io/instance={CLUSTER}"));
            let tx = tx.clone();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            ready_watches.push(ready_rx);
            watches.push(tokio::spawn(async move {
                let mut ready_tx = Some(ready_tx);
                let mut stream = watcher(api, config).boxed();
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(watcher::Event::InitDone) => {
                            if let Some(r) = ready_tx.take() {
                                let _ = r.send(());
                            }
                        }
                        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                            let name = format!("{}/{}", kind.kind, o.metadata.name.unwrap());
                            let _ = tx.send((name, Instant::now()));
                        }
                        _ => {}
                    }
                }
            }));
        }
        for r in ready_watches {
            r.await.unwrap();
        }
        let wanted: Vec<String> = children(CLUSTER)
            .into_iter()
            .map(|c| format!("{}/{}", c.kind, c.name))
            .collect();
        let lfc: Api<crds::LfusysCluster> = Api::namespaced(client.clone(), &ns.name);
        let started = Instant::now();
        kubectl_apply(&ns.cluster(CLUSTER, &json!({})));
        kubectl_done.push(started.elapsed());
        let mut seen: BTreeMap<String, Instant> = BTreeMap::new();
        let mut available_at = None;
        let deadline = started + Duration::from_secs(120);
        while available_at.is_none() || wanted.iter().any(|w| !seen.contains_key(w)) {
            assert!(
                Instant::now() < deadline,
                "cluster not ready: seen {seen:?}"
            );
            while let Ok((name, at)) = rx.try_recv() {
                seen.entry(name).or_insert(at);
            }
            if available_at.is_none()
                && lfc
                    .get_opt(CLUSTER)
                    .await
                    .unwrap()
                    .is_some_and(|c| available(&c).is_ok())
            {
                available_at = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for w in watches {
            w.abort();
        }
        let times: Vec<Duration> = wanted.iter().map(|w| seen[w] - started).collect();
        first_created.push(*times.iter().min().unwrap());
        all_created.push(*times.iter().max().unwrap());
        ready.push(available_at.unwrap() - started);
        kubectl(&["-n", &ns.name, "delete", "lfc", CLUSTER, "--wait=false"]);
    }
    println!("\n(a) kubectl apply of a new LfusysCluster, {n} clusters one after the other:");
    println!("{}", row("kubectl apply returned", &kubectl_done));
    println!("{}", row("first child created", &first_created));
    println!("{}", row("all 13 children created", &all_created));
    println!("{}", row("status Available=True", &ready));
}

/// (b): depth changes at random moments of the poll cycle; each waits for its replica count.
async fn queue_to_replicas(client: &Client, operator: &Operator, poll: u64, n: usize) {
    let ns = Namespace::create("bench-queue").await;
    let spec = json!({"uploads": {"autoscaling": {
        "minReplicas": 1, "maxReplicas": 20, "targetQueueDepthPerReplica": 1,
        "pollIntervalSeconds": poll, "scaleDownStabilizationSeconds": 0
    }}});
    kubectl_apply(&ns.cluster(CLUSTER, &spec));
    ns.wait_available(client, CLUSTER, Duration::from_secs(60))
        .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let (tx, mut rx) = tokio::sync::watch::channel(None);
    let config = watcher::Config::default().fields(&format!("metadata.name={CLUSTER}-uploads"));
    let watch = tokio::spawn(async move {
        let mut stream = watcher(deployments, config).boxed();
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) = event {
                let _ = tx.send(d.spec.and_then(|s| s.replicas));
            }
        }
    });
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut rng = Lcg(u64::from(std::process::id()));
    let reconciles_before = operator.reconciliations().await.unwrap();
    for i in 0..n {
        // A random moment of the poll cycle.
        tokio::time::sleep(Duration::from_millis(rng.below(poll * 1000))).await;
        let (want, changed) = if i % 2 == 0 {
            // 2..=10 messages, one per worker: one SendMessageBatch, and the drain below one
            // receive and one DeleteMessageBatch, so the depth changes at one moment.
            let messages = 2 + rng.below(9) as usize;
            ns.queue.send(messages).await;
            (messages as i32, Instant::now())
        } else {
            ns.queue.drain().await;
            (1, Instant::now())
        };
        tokio::time::timeout(
            Duration::from_secs(poll * 4 + 10),
            rx.wait_for(|r| *r == Some(want)),
        )
        .await
        .expect("no new replica count")
        .unwrap();
        let took = changed.elapsed();
        if i % 2 == 0 {
            up.push(took);
        } else {
            down.push(took);
        }
    }
    watch.abort();
    let reconciles = operator.reconciliations().await.unwrap() - reconciles_before;
    println!(
        "\n(b) queue depth change → uploads Deployment replicas, pollIntervalSeconds {poll}, \
         {n} changes ({reconciles} reconciliations meanwhile):"
    );
    println!("{}", row("messages sent → scaled up", &up));
    println!("{}", row("messages deleted → scaled down", &down));
    kubectl(&["-n", &ns.name, "delete", "lfc", CLUSTER, "--wait=false"]);
}

fn kinds() -> Vec<ApiResource> {
    let mut seen = Vec::new();
    let mut kinds: Vec<ApiResource> = Vec::new();
    for c in children(CLUSTER) {
        if !seen.contains(&c.kind) {
            seen.push(c.kind.clone());
            kinds.push(c.resource().clone());
        }
    }
    kinds
}

fn row(what: &str, samples: &[Duration]) -> String {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        return format!("  {what:<32} (no samples)");
    }
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    format!(
        "  {what:<32} n={:<3} min {:>7.0} ms  median {:>7.0} ms  mean {:>7.0} ms  max {:>7.0} ms",
        ms.len(),
        ms[0],
        ms[ms.len() / 2],
        mean,
        ms[ms.len() - 1]
    )
}

/// A small deterministic generator for the random moments (no dependency for this).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
