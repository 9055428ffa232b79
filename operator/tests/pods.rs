//! The deployed system on real Pods: what a cluster admin does, following docs/kubernetes.md,
//! on the real Node of `scripts/k8s-cluster.sh` (containerd + runc running the images that
//! `scripts/images.sh` built, kubelet, kube-proxy, CoreDNS, Traefik as the Ingress controller).
//! `helm install` of the chart runs the operator as the chart's Pod, in-cluster, with its own
//! ServiceAccount; `kubectl apply` of an `LfusysCluster` on MinIO (S3) and moto (DynamoDB, SQS)
//! gives gateway, sessions and worker Pods that turn Ready through their real probes; then the
//! CLI and Chromium upload through the Ingress, workers go away mid-upload, the operator Pod is
//! killed, and the workers scale with real assembly jobs.
//!
//! Run with `scripts/test-k8s-pods.sh` (it starts and stops all of that; the environment is in
//! tests/support/deployed.rs). The tests share one deployed cluster and take turns
//! ([`support::serial`]); each sets the replicas it needs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};
use support::deployed::{
    assemblies, kubectl_ns, need, patch_cluster, scratch, wait_chunks, ApiUser, Cli, Deployed,
    CLUSTER, MIB, NAMESPACE, READY,
};
use support::{container_status, eventually, kubectl, pod_ready, run, serial, Install};
use test_support::data::write_file;

// --- one runtime for all tests -----------------------------------------------------------------
// The deployed cluster and its API client are made once per process; a client lives on the
// runtime that made it, so every test runs on this one shared runtime (not one per test).
fn on_shared_runtime<F: std::future::Future<Output = ()>>(scenario: F) {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| tokio::runtime::Runtime::new().unwrap())
        .block_on(scenario);
}

#[test]
fn pods_run_the_built_images_hardened_and_the_operator_in_cluster() {
    on_shared_runtime(pods_run_the_built_images_hardened_and_the_operator_in_cluster_scenario());
}

#[test]
fn the_cli_uploads_and_downloads_through_the_ingress() {
    on_shared_runtime(the_cli_uploads_and_downloads_through_the_ingress_scenario());
}

#[test]
fn chromium_signs_in_uploads_and_downloads_through_the_ingress() {
    on_shared_runtime(chromium_signs_in_uploads_and_downloads_through_the_ingress_scenario());
}

#[test]
fn uploads_complete_while_worker_pods_go_away() {
    on_shared_runtime(uploads_complete_while_worker_pods_go_away_scenario());
}

#[test]
fn a_killed_operator_pod_is_replaced_and_leads_again() {
    on_shared_runtime(a_killed_operator_pod_is_replaced_and_leads_again_scenario());
}

#[test]
fn workers_scale_with_real_assembly_jobs() {
    on_shared_runtime(workers_scale_with_real_assembly_jobs_scenario());
}

// --- the scenarios --------------------------------------------------------------------------------

async fn pods_run_the_built_images_hardened_and_the_operator_in_cluster_scenario() {
    let _turn = serial().await;
    let d = Deployed::get().await;
    let install = Install::get();
    // The operator runs as the chart's Pod and leads through the Lease under its Pod name.
    let pods: Api<Pod> = Api::namespaced(d.client.clone(), &install.namespace);
    let operator = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=lfusys-operator"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect::<Vec<_>>();
    assert_eq!(operator.len(), 1, "one operator Pod");
    assert!(pod_ready(&operator[0]));
    let name = operator[0].metadata.name.clone().unwrap();
    let holder = install.lease_holder(&d.client).await;
    assert_eq!(
        holder.as_deref(),
        Some(name.as_str()),
        "the Pod holds the Lease"
    );
    // Every Pod runs our image (the spec's tag: a rolling update may have changed it),
    // read-only, and is Ready.
    let image = d.cluster().await.spec.image.reference();
    for component in ["gateway", "sessions", "uploads"] {
        let ready = d.ready_pods(component).await;
        assert!(!ready.is_empty(), "{component}: no Ready Pod");
        for pod in ready {
            let c = &pod.spec.as_ref().unwrap().containers[0];
            assert_eq!(c.image.as_deref(), Some(image.as_str()));
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            let cs = container_status(&pod);
            assert_eq!(cs.restart_count, 0, "{component}: the container restarted");
            assert!(cs.image_id.starts_with("sha256:") || cs.image_id.contains("@sha256:"));
        }
    }
    d.note("images", "every Pod Ready on the built images");
}

async fn the_cli_uploads_and_downloads_through_the_ingress_scenario() {
    let _turn = serial().await;
    let d = Deployed::get().await;
    let dir = scratch();
    let cli = Cli::signup(&d.ingress, "cli");
    let big = dir.join("big.bin");
    let big_sha = write_file(&big, 300 * MIB + 4321, 1);
    let small = dir.join("small.txt");
    let small_sha = write_file(&small, 123_457, 2);
    let t0 = Instant::now();
    let big_report = Cli::finish_upload(cli.spawn_upload(&big));
    let secs = t0.elapsed().as_secs_f64();
    d.note(
        "cli",
        format!(
            "300 MiB through the Ingress in {secs:.1} s ({:.0} MB/s)",
            (300 * MIB) as f64 / secs / 1e6
        ),
    );
    assert_eq!(big_report["sha256"], big_sha.as_str());
    let small_report = Cli::finish_upload(cli.spawn_upload(&small));
    assert_eq!(small_report["sha256"], small_sha.as_str());
    let listing: Value = serde_json::from_str(&cli.ok(&["ls", "--json"])).unwrap();
    let names: Vec<&str> = listing["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"big.bin") && names.contains(&"small.txt"),
        "{names:?}"
    );
    cli.download_matches(big_report["file_id"].as_str().unwrap(), &big_sha, &dir);
    cli.download_matches(small_report["file_id"].as_str().unwrap(), &small_sha, &dir);
    std::fs::remove_dir_all(dir).unwrap();
}

async fn chromium_signs_in_uploads_and_downloads_through_the_ingress_scenario() {
    let _turn = serial().await;
    let d = Deployed::get().await;
    let frontend = Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend");
    let out = run(
        "node",
        &[
            "--test",
            frontend.join("e2e/ingress.k8s.mjs").to_str().unwrap(),
        ],
        None,
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser test failed:\n{log}");
    assert!(log.contains("# fail 0"), "{log}");
    d.note("chromium", "signed in, uploaded two files, downloaded one");
}

/// A worker Pod deleted mid-upload: the upload completes with the right SHA-256.
async fn a_worker_pod_deleted_mid_upload(d: &Deployed, cli: &Cli, dir: &Path) {
    let file = dir.join("deleted-pod.bin");
    let sha = write_file(&file, 400 * MIB, 3);
    let upload = cli.spawn_upload(&file);
    wait_chunks(cli, 3).await;
    let victim = d.ready_pods("uploads").await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    kubectl_ns(&["delete", "pod", &victim, "--wait=false"]);
    d.note(
        "disruption",
        format!("deleted worker Pod {victim} mid-upload"),
    );
    let report = Cli::finish_upload(upload);
    assert_eq!(report["sha256"], sha.as_str());
    cli.download_matches(report["file_id"].as_str().unwrap(), &sha, dir);
    d.note("disruption", "the upload completed with the right SHA-256");
    d.wait_rolled_out("the workers back to full strength", READY)
        .await;
}

/// The PodDisruptionBudget: one voluntary eviction at a time.
async fn one_eviction_at_a_time(d: &Deployed) {
    // 2. The PodDisruptionBudget: one voluntary eviction at a time. First the budget settles
    // on the two Ready workers (the deleted Pod gone, the controller's count up to date).
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(d.client.clone(), NAMESPACE);
    eventually(
        "the workers' PDB allowing one disruption",
        READY,
        || async {
            let pods: Api<Pod> = Api::namespaced(d.client.clone(), NAMESPACE);
            let all = pods
                .list(&ListParams::default().labels(&format!(
                    "app.kubernetes.io/instance={CLUSTER},app.kubernetes.io/component=uploads"
                )))
                .await
                .map_err(|e| e.to_string())?
                .items;
            let status = pdbs
                .get(&format!("{CLUSTER}-uploads"))
                .await
                .map_err(|e| e.to_string())?
                .status
                .ok_or("no status")?;
            if all.len() == 2
                && status.current_healthy == 2
                && status.disruptions_allowed == 1
                && status.disrupted_pods.unwrap_or_default().is_empty()
            {
                Ok(())
            } else {
                Err(format!(
                    "{} Pods, PDB {}/{} healthy, {} allowed",
                    all.len(),
                    status.current_healthy,
                    status.expected_pods,
                    status.disruptions_allowed
                ))
            }
        },
    )
    .await;
    let workers = d.ready_pods("uploads").await;
    assert!(workers.len() >= 2, "two workers to evict from");
    let first = workers[0].metadata.name.clone().unwrap();
    let second = workers[1].metadata.name.clone().unwrap();
    let evicted = evict(&first);
    assert!(
        evicted.status.success(),
        "{}",
        String::from_utf8_lossy(&evicted.stderr)
    );
    let refused = evict(&second);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("TooManyRequests"),
        "a second eviction while one is under way must be refused: {stderr}"
    );
    d.note(
        "disruption",
        "the PDB allowed one eviction and refused a second",
    );
    d.wait_rolled_out("the workers back after the eviction", READY)
        .await;
}

/// A rolling update to a second image tag while an upload runs: the upload completes, every
/// Pod runs the new tag.
async fn a_rolling_update_mid_upload(d: &Deployed, cli: &Cli, dir: &Path) {
    let file = dir.join("rolling.bin");
    let sha = write_file(&file, 400 * MIB, 4);
    let upload = cli.spawn_upload(&file);
    wait_chunks(cli, 3).await;
    let rolled = need("LFUSYS_TEST_ROLLED_TAG");
    patch_cluster(&json!({"image": {"tag": rolled}}));
    d.note("disruption", format!("rolling update to tag {rolled}"));
    let report = Cli::finish_upload(upload);
    assert_eq!(report["sha256"], sha.as_str());
    cli.download_matches(report["file_id"].as_str().unwrap(), &sha, dir);
    d.wait_rolled_out("every Deployment on the new tag", READY)
        .await;
    for component in ["gateway", "sessions", "uploads"] {
        for pod in d.ready_pods(component).await {
            let image = pod.spec.unwrap().containers[0].image.clone().unwrap();
            assert_eq!(
                image,
                format!("ghcr.io/lfusys/lfusys:{rolled}"),
                "{component}"
            );
        }
    }
    d.note("disruption", "the upload survived the rolling update");
}

async fn uploads_complete_while_worker_pods_go_away_scenario() {
    let _turn = serial().await;
    let d = Deployed::get().await;
    patch_cluster(&json!({"uploads":{"autoscaling":{"minReplicas":2}}}));
    d.wait_rolled_out("two workers", READY).await;
    let dir = scratch();
    let cli = Cli::signup(&d.ingress, "disruption");

    a_worker_pod_deleted_mid_upload(d, &cli, &dir).await;
    one_eviction_at_a_time(d).await;
    a_rolling_update_mid_upload(d, &cli, &dir).await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// The eviction of a Pod, as `kubectl drain` asks for it (the Eviction subresource, which
/// enforces the PodDisruptionBudgets).
fn evict(pod: &str) -> std::process::Output {
    let body = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": NAMESPACE}
    });
    run(
        "kubectl",
        &[
            "create",
            "--raw",
            &format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}/eviction"),
            "-f",
            "-",
        ],
        Some(&body.to_string()),
    )
}

/// SIGKILLs the process of the Pod's (first) container on the Node, as a crash would end it.
fn sigkill_container(pod: &Pod) {
    let container = container_status(pod)
        .container_id
        .as_deref()
        .unwrap()
        .trim_start_matches("containerd://")
        .to_owned();
    let out = run(
        "ctr",
        &[
            "--address",
            &need("CONTAINERD_ADDRESS"),
            "--namespace",
            "k8s.io",
            "tasks",
            "kill",
            "--signal",
            "SIGKILL",
            &container,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for the workers to be down to one; returns that Pod's name.
async fn one_worker(d: &Deployed) -> Vec<String> {
    eventually("the workers down to one", READY, || async {
        let n = d.ready_pods("uploads").await.len();
        let deployment = d.deployment("uploads").await;
        let want = deployment.spec.and_then(|s| s.replicas);
        let total = deployment.status.and_then(|s| s.replicas);
        if n == 1 && want == Some(1) && total == Some(1) {
            Ok(())
        } else {
            Err(format!("{n} ready, spec {want:?}, pods {total:?}"))
        }
    })
    .await;
    d.ready_pods("uploads")
        .await
        .into_iter()
        .map(|p| p.metadata.name.unwrap())
        .collect()
}

/// Waits for every created upload to be completed (and none to fail).
async fn all_completed(user: &ApiUser, created: &[Value]) {
    eventually("every upload assembled", READY, || async {
        let mut done = 0;
        for c in created {
            let id = c["upload_id"].as_str().unwrap();
            let state = user.get(&format!("/api/v1/uploads/{id}")).await;
            match state["state"].as_str() {
                Some("completed") => done += 1,
                Some("uploading" | "assembling") => {}
                other => return Err(format!("upload {id} is {other:?}: {state}")),
            }
        }
        if done == created.len() {
            Ok(())
        } else {
            Err(format!("{done}/{} completed", created.len()))
        }
    })
    .await;
}

async fn a_killed_operator_pod_is_replaced_and_leads_again_scenario() {
    let _turn = serial().await;
    let d = Deployed::get().await;
    let install = Install::get();
    let pods: Api<Pod> = Api::namespaced(d.client.clone(), &install.namespace);
    let selector = ListParams::default().labels("app.kubernetes.io/name=lfusys-operator");
    let current = || async {
        pods.list(&selector)
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_none())
            .unwrap()
    };
    let gateway_replicas = |n: i32| {
        patch_cluster(&json!({"gateway": {"replicas": n}}));
        async move {
            eventually("the leader scales the gateway", READY, || async {
                let replicas = d.deployment("gateway").await.spec.and_then(|s| s.replicas);
                if replicas == Some(n) {
                    Ok(())
                } else {
                    Err(format!("{replicas:?}"))
                }
            })
            .await;
        }
    };

    // 1. A crash: the operator's process SIGKILLed on the Node (no step-down, no SIGTERM).
    // kubelet restarts the container in the same Pod, which leads again under its Pod name.
    let pod = current().await;
    let name = pod.metadata.name.clone().unwrap();
    let restarts = container_status(&pod).restart_count;
    sigkill_container(&pod);
    d.note("operator", format!("SIGKILLed the operator in Pod {name}"));
    eventually(
        "the container restarted, Ready and leading",
        READY,
        || async {
            let p = current().await;
            let s = container_status(&p);
            let holder = install.lease_holder(&d.client).await;
            if p.metadata.name.as_deref() == Some(name.as_str())
                && s.restart_count > restarts
                && pod_ready(&p)
                && holder.as_deref() == Some(name.as_str())
            {
                Ok(())
            } else {
                Err(format!("restarts {}, holder {holder:?}", s.restart_count))
            }
        },
    )
    .await;
    d.note("operator", "restarted by kubelet and leading");
    gateway_replicas(2).await;
    d.note("operator", "the restarted operator reconciled a spec edit");

    // 2. The Pod deleted: the Deployment's new Pod takes the Lease over.
    kubectl(&[
        "-n",
        &install.namespace,
        "delete",
        "pod",
        &name,
        "--wait=false",
    ]);
    d.note("operator", format!("deleted operator Pod {name}"));
    let new = eventually("a new operator Pod holding the Lease", READY, || async {
        let holder = install.lease_holder(&d.client).await.unwrap_or_default();
        let items = pods.list(&selector).await.map_err(|e| e.to_string())?.items;
        let leader = items
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(holder.as_str()) && pod_ready(p));
        match leader {
            Some(p) if holder != name => Ok(p.metadata.name.clone().unwrap()),
            _ => Err(format!("holder {holder:?}")),
        }
    })
    .await;
    d.note("operator", format!("{new} leads"));
    gateway_replicas(1).await;
    d.wait_rolled_out("the gateway back to one", READY).await;
    d.note("operator", "the new leader reconciled a spec edit");
}

async fn workers_scale_with_real_assembly_jobs_scenario() {
    const JOBS: usize = 80;
    let _turn = serial().await;
    let d = Deployed::get().await;
    patch_cluster(&json!({"uploads":{"autoscaling":{"minReplicas":1}}}));
    let before = one_worker(d).await;
    d.note("autoscale", format!("one worker: {before:?}"));
    // Many one-chunk uploads with a declared SHA-256 (each job commits the multipart upload,
    // reads the object back and publishes the File): all created first, then every chunk at
    // once, so their assembly jobs land together and deepen the queue.
    let user = ApiUser::signup(&d.ingress, "autoscale").await;
    let data: Vec<Vec<u8>> = (0..JOBS)
        .map(|i| test_support::data::bytes(MIB + i, i as u64))
        .collect();
    let created = user.complete_at_once("job", data, &d.ingress).await;
    d.note(
        "autoscale",
        format!("{JOBS} uploads complete: their jobs are queued"),
    );
    let scaled = eventually("the autoscaler asks for more workers", READY, || async {
        let status = d.cluster().await.status.and_then(|s| s.uploads);
        match status {
            Some(u) if u.desired_replicas > 1 => Ok(u),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    d.note(
        "autoscale",
        format!(
            "queue depth {:?} → desired {}",
            scaled.queue_depth, scaled.desired_replicas
        ),
    );
    let new_pods = eventually("new worker Pods Ready", READY, || async {
        let new: Vec<Pod> = d
            .ready_pods("uploads")
            .await
            .into_iter()
            .filter(|p| !before.contains(p.metadata.name.as_ref().unwrap()))
            .collect();
        if new.is_empty() {
            Err("none new".to_owned())
        } else {
            Ok(new)
        }
    })
    .await;
    d.note(
        "autoscale",
        format!("{} new worker Pods Ready", new_pods.len()),
    );
    all_completed(&user, &created).await;
    let mut taken = 0.0;
    for pod in &new_pods {
        taken += assemblies(pod).await;
    }
    d.note(
        "autoscale",
        format!("every upload assembled; the new Pods took {taken} jobs"),
    );
    assert!(taken >= 1.0, "the new worker Pods took no assembly job");
    eventually(
        "the workers scale back down after the window",
        READY,
        || async {
            let want = d.deployment("uploads").await.spec.and_then(|s| s.replicas);
            if want == Some(1) {
                Ok(())
            } else {
                Err(format!("{want:?}"))
            }
        },
    )
    .await;
    d.note("autoscale", "scaled back to one worker after the window");
}
