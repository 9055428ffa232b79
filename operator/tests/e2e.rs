//! End to end against a real control plane: the Helm chart installed with `helm`, clusters
//! applied and edited with `kubectl`, the real `lfusys-operator` binary as a host process
//! authenticated as the chart's ServiceAccount, kwok playing the kubelets, moto playing SQS.
//! Run with `scripts/test-k8s.sh` (it starts and stops all of that); see tests/support.
//!
//! Each test has its own namespace and its own operator process, and they take turns (the
//! [`support::serial`] lock): every operator watches every namespace and competes for the
//! chart's one Lease, so two tests' operators would step on each other.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::Client;
use serde_json::json;
use support::{
    all_children, available, condition, eventually, kubectl, kubectl_apply, note,
    resource_versions, run, serial, Install, Namespace, Operator,
};

const CLUSTER: &str = "files";
/// Generous deadlines for a loaded 2-core machine; the timings the suite prints are the figures.
const CREATED: Duration = Duration::from_secs(30);
const AVAILABLE: Duration = Duration::from_secs(60);
const LEAD: Duration = Duration::from_secs(30);

/// A test's namespace, admin client and start time; holds the serial lock until dropped.
struct Scenario {
    test: &'static str,
    client: Client,
    ns: Namespace,
    started: Instant,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Scenario {
    async fn new(test: &'static str) -> Scenario {
        let serial = serial().await;
        Install::get();
        Scenario {
            test,
            client: support::admin().await,
            ns: Namespace::create(test).await,
            started: Instant::now(),
            _serial: serial,
        }
    }

    fn note(&self, what: impl std::fmt::Display) {
        note(
            self.test,
            format!("{:6.2} s  {what}", self.started.elapsed().as_secs_f64()),
        );
    }

    /// Applies the sample cluster with `spec` merged in, waits until it is available.
    async fn apply_available(&self, spec: &serde_json::Value) -> crds::LfusysCluster {
        kubectl_apply(&self.ns.cluster(CLUSTER, spec));
        let cluster = self
            .ns
            .wait_available(&self.client, CLUSTER, AVAILABLE)
            .await;
        self.note("cluster available");
        cluster
    }

    fn kubectl_ns(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.ns.name.as_str()];
        all.extend_from_slice(args);
        kubectl(&all)
    }

    /// `kubectl patch lfc files --type merge` with `{"spec": spec}`.
    fn patch_spec(&self, spec: &serde_json::Value) {
        self.kubectl_ns(&[
            "patch",
            "lfusysclusters",
            CLUSTER,
            "--type",
            "merge",
            "-p",
            &json!({ "spec": spec }).to_string(),
        ]);
    }

    /// Waits until the cluster's Pods run (kwok): `want` per component.
    async fn wait_pods(&self, want: &[(&str, usize)], image: &str) {
        eventually("the Pods to run", AVAILABLE, || async {
            let pods = self.ns.running_pods(&self.client, CLUSTER).await;
            let mut problems = Vec::new();
            for (component, n) in want {
                let matching = pods
                    .get(*component)
                    .map_or(0, |p| p.iter().filter(|p| pod_image(p) == image).count());
                let total = pods.get(*component).map_or(0, Vec::len);
                if matching != *n || total != *n {
                    problems.push(format!(
                        "{component}: {matching} running with {image} of {total}, want {n}"
                    ));
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        })
        .await;
    }

    /// Waits until nothing changes any more: Progressing=False, the workers ready, and no
    /// resourceVersion of the cluster or a child moving for three seconds (Deployment and
    /// PodDisruptionBudget controllers finish their status updates).
    async fn wait_settled(&self) -> std::collections::BTreeMap<String, String> {
        eventually("the cluster to settle", AVAILABLE, || async {
            let cluster = self.ns.get_cluster(&self.client, CLUSTER).await.unwrap();
            available(&cluster)?;
            let progressing = condition(&cluster, crds::condition::PROGRESSING).ok_or("none")?;
            if progressing.status != "False" {
                return Err(format!("Progressing: {}", progressing.message));
            }
            let uploads = cluster.status.as_ref().and_then(|s| s.uploads.clone());
            if uploads
                .as_ref()
                .is_none_or(|u| u.replicas != u.desired_replicas)
            {
                return Err(format!("uploads {uploads:?}"));
            }
            Ok(())
        })
        .await;
        let last = std::cell::RefCell::new((
            resource_versions(&self.client, &self.ns.name, CLUSTER).await,
            Instant::now(),
        ));
        eventually("resourceVersions steady for 3 s", AVAILABLE, || async {
            let now = resource_versions(&self.client, &self.ns.name, CLUSTER).await;
            let mut last = last.borrow_mut();
            if now != last.0 {
                *last = (now.clone(), Instant::now());
                return Err(format!("changed: {now:?}"));
            }
            if last.1.elapsed() < Duration::from_secs(3) {
                return Err("steady for less than 3 s".into());
            }
            Ok(now)
        })
        .await
    }
}

fn pod_image(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn deployment_image(d: &k8s_openapi::api::apps::v1::Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn default_image() -> String {
    format!("ghcr.io/lfusys/lfusys:{}", crds::DEFAULT_IMAGE_TAG)
}

/// The status of a new cluster: of generation 1, every condition too, not degraded, scaling.
fn assert_first_status(cluster: &crds::LfusysCluster) {
    assert_eq!(cluster.metadata.generation, Some(1));
    let status = cluster.status.clone().unwrap();
    assert_eq!(status.observed_generation, Some(1));
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        ["Available", "Progressing", "Degraded", "ScalingActive"],
        "{status:?}"
    );
    for c in &status.conditions {
        assert_eq!(c.observed_generation, Some(1), "{c:?}");
    }
    let degraded = condition(cluster, crds::condition::DEGRADED).unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("False", "AsExpected"),
        "{degraded:?}"
    );
    let scaling = condition(cluster, crds::condition::SCALING_ACTIVE).unwrap();
    assert_eq!(scaling.status, "True", "{scaling:?}");
}

/// The Ingress: chunks to the workers, the rest to the gateway.
async fn assert_ingress_routes(s: &Scenario) {
    let ingress = Api::<Ingress>::namespaced(s.client.clone(), &s.ns.name)
        .get(CLUSTER)
        .await
        .unwrap();
    let rule = &ingress.spec.unwrap().rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("files.e2e.example"));
    let routes: Vec<(String, String)> = rule
        .http
        .as_ref()
        .unwrap()
        .paths
        .iter()
        .map(|p| {
            (
                p.path.clone().unwrap_or_default(),
                p.backend.service.as_ref().unwrap().name.clone(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("/api/v1/chunks".to_owned(), format!("{CLUSTER}-uploads")),
            ("/api/v1/tus".to_owned(), format!("{CLUSTER}-uploads")),
            ("/".to_owned(), format!("{CLUSTER}-gateway")),
        ]
    );
}

#[tokio::test]
async fn a_cluster_gets_every_child_and_becomes_available() {
    let s = Scenario::new("children").await;
    let operator = Operator::start("e2e-children", 15);
    operator.wait_leader(LEAD).await;
    s.note("operator leads");

    let applied = Instant::now();
    kubectl_apply(&s.ns.cluster(CLUSTER, &json!({})));
    let cluster = eventually("the cluster", CREATED, || async {
        s.ns.get_cluster(&s.client, CLUSTER)
            .await
            .ok_or("absent".to_owned())
    })
    .await;
    let children = eventually("every child, owned and labelled", CREATED, || {
        all_children(&s.client, &s.ns.name, &cluster)
    })
    .await;
    s.note(format!(
        "{} children created, owned and labelled {:.2} s after kubectl apply",
        children.len(),
        applied.elapsed().as_secs_f64()
    ));
    let cluster = s.ns.wait_available(&s.client, CLUSTER, AVAILABLE).await;
    s.note(format!(
        "Available=True {:.2} s after kubectl apply",
        applied.elapsed().as_secs_f64()
    ));

    assert_first_status(&cluster);

    // The Deployments as the spec asks, the Pods running (kwok).
    for (component, replicas) in [("gateway", 2), ("sessions", 1), ("uploads", 1)] {
        let d =
            s.ns.deployment(&s.client, &format!("{CLUSTER}-{component}"))
                .await
                .unwrap();
        assert_eq!(
            d.spec.as_ref().unwrap().replicas,
            Some(replicas),
            "{component}"
        );
        assert_eq!(deployment_image(&d), default_image(), "{component}");
    }
    s.wait_pods(
        &[("gateway", 2), ("sessions", 1), ("uploads", 1)],
        &default_image(),
    )
    .await;
    s.note("Pods running: gateway 2, sessions 1, uploads 1");
    let cluster = eventually("status.uploads", CREATED, || async {
        let c = s.ns.get_cluster(&s.client, CLUSTER).await.unwrap();
        let u = c
            .status
            .as_ref()
            .and_then(|s| s.uploads.clone())
            .ok_or("none")?;
        if (u.replicas, u.desired_replicas, u.queue_depth) == (1, 1, Some(0)) {
            Ok(c)
        } else {
            Err(format!("{u:?}"))
        }
    })
    .await;
    assert_eq!(cluster.metadata.generation, Some(1));

    assert_ingress_routes(&s).await;

    // The generated key pair, and what `kubectl get lfc` shows.
    let secret = s.kubectl_ns(&[
        "get",
        "secret",
        &format!("{CLUSTER}-signing-key"),
        "-o",
        "jsonpath={.data}",
    ]);
    assert!(
        secret.contains("signing-key.pem") && secret.contains("signing-key.pub.pem"),
        "{secret}"
    );
    let table = s.kubectl_ns(&["get", "lfc", CLUSTER, "--no-headers"]);
    let columns: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(&columns[..4], [CLUSTER, "True", "1", "0"], "{table}");
    for reason in ["SigningKeyCreated", "Available"] {
        s.ns.wait_event(&s.client, CLUSTER, reason).await;
    }
    s.note("done");
}

#[tokio::test]
async fn editing_the_spec_updates_the_children() {
    let s = Scenario::new("edit").await;
    let operator = Operator::start("e2e-edit", 15);
    operator.wait_leader(LEAD).await;
    s.apply_available(&json!({})).await;

    let edited = Instant::now();
    s.patch_spec(&json!({"gateway": {"replicas": 3}, "image": {"tag": "0.2.0"}}));
    let image = "ghcr.io/lfusys/lfusys:0.2.0";
    eventually("the Deployments to follow the spec", CREATED, || async {
        let mut problems = Vec::new();
        for (component, replicas) in [("gateway", 3), ("sessions", 1), ("uploads", 1)] {
            let d =
                s.ns.deployment(&s.client, &format!("{CLUSTER}-{component}"))
                    .await
                    .ok_or("missing")?;
            let got = (
                d.spec.as_ref().and_then(|s| s.replicas),
                deployment_image(&d),
            );
            let version = d
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/version").cloned());
            if got != (Some(replicas), image.to_owned()) || version.as_deref() != Some("0.2.0") {
                problems.push(format!("{component}: {got:?} version {version:?}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    })
    .await;
    s.note(format!(
        "Deployments updated {:.2} s after kubectl patch",
        edited.elapsed().as_secs_f64()
    ));
    let cluster = s.ns.wait_available(&s.client, CLUSTER, AVAILABLE).await;
    assert_eq!(cluster.metadata.generation, Some(2));
    s.wait_pods(&[("gateway", 3), ("sessions", 1), ("uploads", 1)], image)
        .await;
    eventually("Progressing=False at generation 2", AVAILABLE, || async {
        let c = s.ns.get_cluster(&s.client, CLUSTER).await.unwrap();
        let p = condition(&c, crds::condition::PROGRESSING).ok_or("none")?;
        if p.status == "False" && p.observed_generation == Some(2) {
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .await;
    s.note("rolled out: Pods of 0.2.0 running, observedGeneration 2");

    // A child the spec no longer asks for goes.
    s.patch_spec(&json!({"ingress": {"enabled": false}}));
    let ingresses: Api<Ingress> = Api::namespaced(s.client.clone(), &s.ns.name);
    eventually("the Ingress to be deleted", CREATED, || async {
        match ingresses.get_opt(CLUSTER).await.unwrap() {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await;
    let cluster = s.ns.wait_available(&s.client, CLUSTER, AVAILABLE).await;
    assert_eq!(cluster.status.unwrap().observed_generation, Some(3));
    s.note("ingress.enabled=false deleted the Ingress; observedGeneration 3");
}

#[tokio::test]
async fn an_invalid_spec_is_refused_at_apply_time() {
    // No operator: the API server alone refuses these (OpenAPI schema and CEL rules of the CRD).
    // Serial all the same: another test's operator would reconcile the valid cluster below.
    let _serial = serial().await;
    Install::get();
    let ns = Namespace::create("invalid").await;
    let cases = [
        (
            json!({"uploads": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}),
            "minReplicas must not be greater than maxReplicas",
        ),
        (
            json!({"uploads": {"autoscaling": {"targetQueueDepthPerReplica": 0}}}),
            "spec.uploads.autoscaling.targetQueueDepthPerReplica in body should be greater than or equal to 1",
        ),
        (
            json!({"ingress": {"tlsSecretName": "files-tls", "host": null}}),
            "tlsSecretName needs a host",
        ),
    ];
    for (spec, message) in &cases {
        let out = run(
            "kubectl",
            &["apply", "-f", "-"],
            Some(&ns.cluster(CLUSTER, spec).to_string()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{spec} was accepted");
        assert!(stderr.contains(message), "{spec}: {stderr}");
        note("invalid", format!("refused: {}", stderr.trim()));
    }
    let out = run("kubectl", &["-n", &ns.name, "get", "lfc", CLUSTER], None);
    assert!(!out.status.success(), "an invalid cluster was stored");

    // An edit that breaks the rule is refused too, and the stored spec stays.
    kubectl_apply(&ns.cluster(CLUSTER, &json!({})));
    let out = run(
        "kubectl",
        &[
            "-n",
            &ns.name,
            "patch",
            "lfc",
            CLUSTER,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"uploads":{"autoscaling":{"minReplicas":30}}}}"#,
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("minReplicas must not be greater than maxReplicas"));
    let stored = kubectl(&[
        "-n",
        &ns.name,
        "get",
        "lfc",
        CLUSTER,
        "-o",
        "jsonpath={.metadata.generation} {.spec.uploads.autoscaling.minReplicas}",
    ]);
    assert_eq!(stored, "1 1");
}

#[tokio::test]
async fn deleted_children_are_recreated() {
    let s = Scenario::new("recreate").await;
    let operator = Operator::start("e2e-recreate", 15);
    operator.wait_leader(LEAD).await;
    let cluster = s.apply_available(&json!({})).await;
    let children = all_children(&s.client, &s.ns.name, &cluster).await.unwrap();
    let victims: Vec<_> = children
        .into_iter()
        .filter(|(c, _)| {
            (c.kind == "Deployment" && c.name == format!("{CLUSTER}-gateway"))
                || (c.kind == "Service" && c.name == format!("{CLUSTER}-uploads"))
                || c.kind == "ConfigMap"
        })
        .collect();
    assert_eq!(victims.len(), 3);
    let deleted = Instant::now();
    for (c, _) in &victims {
        c.delete(&s.client, &s.ns.name).await;
    }
    for (c, old) in &victims {
        eventually(&format!("{} {} again", c.kind, c.name), CREATED, || async {
            let now = c.get(&s.client, &s.ns.name).await.ok_or("absent")?;
            if now.metadata.uid == old.metadata.uid {
                return Err("not deleted yet".to_owned());
            }
            let problems = c.problems(&now.metadata, &cluster);
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        })
        .await;
    }
    s.note(format!(
        "Deployment, Service and ConfigMap recreated {:.2} s after their deletion",
        deleted.elapsed().as_secs_f64()
    ));
    s.ns.wait_available(&s.client, CLUSTER, AVAILABLE).await;
    s.wait_pods(
        &[("gateway", 2), ("sessions", 1), ("uploads", 1)],
        &default_image(),
    )
    .await;
    s.note("available again");
}

#[tokio::test]
async fn a_missing_credentials_secret_degrades_the_cluster_until_it_exists() {
    let s = Scenario::new("secret").await;
    let operator = Operator::start("e2e-secret", 15);
    operator.wait_leader(LEAD).await;
    kubectl_apply(&s.ns.cluster(
        CLUSTER,
        &json!({"storage": {"credentialsSecretRef": {"name": "late-credentials"}}}),
    ));
    let degraded = eventually("Degraded=True", CREATED, || async {
        let c = s.ns.get_cluster(&s.client, CLUSTER).await.ok_or("absent")?;
        let d = condition(&c, crds::condition::DEGRADED)
            .ok_or("no Degraded")?
            .clone();
        if d.status == "True" {
            Ok(d)
        } else {
            Err(format!("{d:?}"))
        }
    })
    .await;
    assert_eq!(degraded.reason, "CredentialsSecretMissing", "{degraded:?}");
    assert!(
        degraded.message.contains("late-credentials"),
        "{degraded:?}"
    );
    assert_eq!(degraded.observed_generation, Some(1));
    s.note(format!("Degraded=True: {}", degraded.message));
    let note =
        s.ns.wait_event(&s.client, CLUSTER, "CredentialsSecretMissing")
            .await;
    assert!(note.contains("late-credentials"), "{note}");
    // Not a crash loop: the operator runs on and the children are there.
    operator.assert_running();
    let cluster = s.ns.get_cluster(&s.client, CLUSTER).await.unwrap();
    eventually("the children", CREATED, || {
        all_children(&s.client, &s.ns.name, &cluster)
    })
    .await;

    let created = Instant::now();
    s.kubectl_ns(&[
        "create",
        "secret",
        "generic",
        "late-credentials",
        &format!("--from-literal=AWS_ACCESS_KEY_ID={}", support::MOTO_KEY),
        &format!("--from-literal=AWS_SECRET_ACCESS_KEY={}", support::MOTO_KEY),
    ]);
    eventually("Degraded=False", CREATED, || async {
        let c = s.ns.get_cluster(&s.client, CLUSTER).await.unwrap();
        let d = condition(&c, crds::condition::DEGRADED).ok_or("none")?;
        let scaling = condition(&c, crds::condition::SCALING_ACTIVE).ok_or("none")?;
        if (
            d.status.as_str(),
            d.reason.as_str(),
            scaling.status.as_str(),
        ) == ("False", "AsExpected", "True")
        {
            Ok(())
        } else {
            Err(format!("{d:?} {scaling:?}"))
        }
    })
    .await;
    s.note(format!(
        "Degraded=False {:.2} s after the Secret was created",
        created.elapsed().as_secs_f64()
    ));
    s.ns.wait_event(&s.client, CLUSTER, "Recovered").await;
}

/// 12 messages / 3 per worker = 4 workers, at the next poll; returns when it scaled.
async fn scale_up_to_four(s: &Scenario, poll: Duration) -> Time {
    // Up: 12 messages / 3 per worker = 4 workers, at the next poll.
    s.ns.queue.send(12).await;
    let raised = Instant::now();
    assert_eq!(s.ns.queue.depth().await, 12);
    eventually("4 workers", poll * 4, || async {
        match s.ns.uploads_replicas(&s.client, CLUSTER).await {
            Some(4) => Ok(()),
            other => Err(format!("replicas {other:?}")),
        }
    })
    .await;
    let up = raised.elapsed();
    s.note(format!(
        "queue 0 → 12: uploads Deployment at 4 replicas {:.2} s later (poll interval {} s)",
        up.as_secs_f64(),
        poll.as_secs()
    ));
    assert!(
        up <= poll * 3,
        "scaled up after {up:?}, poll interval {poll:?}"
    );
    let status = eventually("status.uploads after the scale-up", CREATED, || async {
        let c = s.ns.get_cluster(&s.client, CLUSTER).await.unwrap();
        match c.status.and_then(|s| s.uploads) {
            Some(u) if u.desired_replicas == 4 && u.queue_depth == Some(12) && u.replicas == 4 => {
                Ok(u)
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let note = s.ns.wait_event(&s.client, CLUSTER, "ScaledUp").await;
    // The messages go out in two batches: a poll between them may scale to 2 first.
    assert!(
        note.contains("scaled upload workers up from 1 to "),
        "{note}"
    );
    s.wait_pods(&[("uploads", 4)], &default_image()).await;
    status.last_scale_time.expect("lastScaleTime")
}

/// The workers take and delete every message; the pool stays for the stabilization window,
/// then shrinks to one worker.
async fn scale_down_after_the_window(
    s: &Scenario,
    operator: &Operator,
    poll: Duration,
    window: Duration,
    scaled_up_at: &Time,
) {
    // Down: the workers take and delete every message; the pool stays for the stabilization
    // window. The drain starts right after a reconciliation (which saw 12) ends, so the last
    // recommendation of 4 workers is made at the drop or later, give or take the 50 ms this
    // polls /metrics at.
    let passes = operator.reconciliations().await.unwrap();
    eventually("the next reconciliation", poll * 5, || async {
        let now = operator.reconciliations().await.unwrap();
        if now > passes {
            Ok(())
        } else {
            Err(format!("{now} reconciliations"))
        }
    })
    .await;
    let dropped = Instant::now();
    s.ns.queue.drain().await;
    assert_eq!(s.ns.queue.depth().await, 0);
    let saw_depth_zero = std::cell::Cell::new(None);
    let checked_inside_window = std::cell::Cell::new(false);
    let down = eventually("1 worker after the window", window + poll * 5, || async {
        let replicas = s.ns.uploads_replicas(&s.client, CLUSTER).await;
        let status =
            s.ns.get_cluster(&s.client, CLUSTER)
                .await
                .unwrap()
                .status
                .and_then(|s| s.uploads);
        if saw_depth_zero.get().is_none()
            && status.as_ref().is_some_and(|u| u.queue_depth == Some(0))
        {
            saw_depth_zero.set(Some(dropped.elapsed()));
        }
        let elapsed = dropped.elapsed();
        match replicas {
            Some(1) => Ok(elapsed),
            // moto's approximate counts can overshoot for a moment while messages move from
            // visible to in-flight, and the autoscaler follows what SQS reports: any count of
            // 4 or more is "still scaled up".
            Some(n) if n >= 4 => {
                if elapsed >= window / 2 {
                    checked_inside_window.set(true);
                }
                Err(format!("still {n} after {elapsed:?}"))
            }
            other => panic!("uploads replicas {other:?} {elapsed:?} after the queue emptied"),
        }
    })
    .await;
    let seen = saw_depth_zero
        .get()
        .expect("the status never showed queue depth 0 while scaled up");
    s.note(format!(
        "queue 12 → 0: status showed depth 0 after {:.2} s, still 4 workers {:.1} s into the \
         window, down to 1 replica {:.2} s after the drop (window {} s)",
        seen.as_secs_f64(),
        (window / 2).as_secs_f64(),
        down.as_secs_f64(),
        window.as_secs()
    ));
    assert!(
        checked_inside_window.get(),
        "never looked inside the window"
    );
    // The highest recommendation of the last window counts, and the last one of 4 workers was
    // made at the drop.
    assert!(
        down + Duration::from_millis(300) >= window,
        "scaled down {down:?} after the drop, before the {window:?} window"
    );
    let status = eventually("status.uploads after the scale-down", CREATED, || async {
        let c = s.ns.get_cluster(&s.client, CLUSTER).await.unwrap();
        match c.status.and_then(|s| s.uploads) {
            Some(u) if u.desired_replicas == 1 && u.queue_depth == Some(0) => Ok(u),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(status.last_scale_time.unwrap().0 > scaled_up_at.0);
    let note = s.ns.wait_event(&s.client, CLUSTER, "ScaledDown").await;
    assert!(note.contains("from 4 to 1"), "{note}");
    s.wait_pods(&[("uploads", 1)], &default_image()).await;
}

#[tokio::test]
async fn the_uploads_deployment_follows_the_queue_depth() {
    let s = Scenario::new("queue").await;
    let operator = Operator::start("e2e-queue", 15);
    operator.wait_leader(LEAD).await;
    // The sample's autoscaling: target 3 per worker, 1..10 workers, poll every 2 s, 10 s window.
    let poll = Duration::from_secs(2);
    let window = Duration::from_secs(10);
    s.apply_available(&json!({})).await;
    eventually("queue depth 0 in the status", CREATED, || async {
        let c = s.ns.get_cluster(&s.client, CLUSTER).await.unwrap();
        match c.status.and_then(|s| s.uploads) {
            Some(u) if u.queue_depth == Some(0) && u.desired_replicas == 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let scaled_up_at = scale_up_to_four(&s, poll).await;
    scale_down_after_the_window(&s, &operator, poll, window, &scaled_up_at).await;
    s.note("ScaledUp and ScaledDown Events recorded");
}

#[tokio::test]
async fn restarting_the_operator_writes_nothing() {
    let s = Scenario::new("restart").await;
    let mut first = Operator::start("e2e-restart-1", 15);
    first.wait_leader(LEAD).await;
    s.apply_available(&json!({})).await;
    let before = s.wait_settled().await;
    let events_before = s.ns.events(&s.client, CLUSTER).await;
    s.note(format!(
        "settled: {} resourceVersions recorded, {} Events",
        before.len(),
        events_before.len()
    ));

    let status = first.terminate();
    assert!(status.success(), "{status}");
    let second = Operator::start("e2e-restart-2", 15);
    second.wait_leader(LEAD).await;
    // Two full passes of this cluster (the only one): the first after the initial lists, the
    // next one a poll interval later.
    let gauge = format!(
        "lfusys_operator_uploads_desired_replicas{{cluster=\"{}/{CLUSTER}\"}}",
        s.ns.name
    );
    eventually(
        "two reconciliations by the new operator",
        CREATED,
        || async {
            let n = second.reconciliations().await?;
            let seen = second.metric(&gauge).await?;
            if n >= 2.0 && seen == Some(1.0) {
                Ok(())
            } else {
                Err(format!("{n} reconciliations, {gauge} = {seen:?}"))
            }
        },
    )
    .await;
    s.note("restarted operator reconciled twice");
    let after = resource_versions(&s.client, &s.ns.name, CLUSTER).await;
    assert_eq!(before, after, "the restart changed objects");
    let events_after = s.ns.events(&s.client, CLUSTER).await;
    assert_eq!(events_before, events_after, "the restart recorded Events");
    assert_eq!(
        Install::get().lease_holder(&s.client).await.as_deref(),
        Some("e2e-restart-2")
    );
    s.note("no resourceVersion changed, no Event recorded");
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over() {
    let s = Scenario::new("leader").await;
    let install = Install::get();
    let lease_secs = 4;
    let mut leader = Operator::start("e2e-leader-a", lease_secs);
    leader.wait_leader(LEAD).await;
    s.apply_available(&json!({})).await;

    let standby = Operator::start("e2e-leader-b", lease_secs);
    eventually(
        "the standby to be ready but not leading",
        CREATED,
        || async {
            let (status, _) = standby.get("/readyz").await?;
            let leading = standby.metric("lfusys_operator_leader").await?;
            if status == 200 && leading == Some(0.0) {
                Ok(())
            } else {
                Err(format!("/readyz {status}, leader {leading:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        install.lease_holder(&s.client).await.as_deref(),
        Some("e2e-leader-a")
    );
    s.note("standby ready, lfusys_operator_leader 0");

    // An edit while both run: the leader applies it, the standby does nothing.
    s.patch_spec(&json!({"gateway": {"replicas": 3}}));
    wait_gateway_replicas(&s, 3).await;
    s.ns.wait_available(&s.client, CLUSTER, AVAILABLE).await;
    assert!(leader.reconciliations().await.unwrap() >= 1.0);
    assert_eq!(
        standby
            .metric("lfusys_operator_reconciliations_total{result=\"ok\"}")
            .await
            .unwrap(),
        None,
        "the standby reconciled"
    );
    assert_eq!(
        standby.metric("lfusys_operator_leader").await.unwrap(),
        Some(0.0)
    );
    s.note("edit applied by the leader; the standby has no reconciliations");

    // The leader crashes: the standby takes the Lease once it runs out.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(s.client.clone(), &install.namespace);
    let transitions = |l: k8s_openapi::api::coordination::v1::Lease| {
        l.spec.and_then(|s| s.lease_transitions).unwrap_or(0)
    };
    let before = transitions(leases.get(&install.lease_name).await.unwrap());
    leader.kill();
    let killed = Instant::now();
    eventually("the standby to hold the Lease", CREATED, || async {
        match install.lease_holder(&s.client).await {
            Some(h) if h == "e2e-leader-b" => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;
    let failover = killed.elapsed();
    standby.wait_leader(LEAD).await;
    s.note(format!(
        "leader killed (SIGKILL): the standby holds the Lease {:.2} s later (lease {lease_secs} s)",
        failover.as_secs_f64()
    ));
    let lease_duration = Duration::from_secs(lease_secs.into());
    assert!(
        failover <= lease_duration + lease_duration / 3 * 2 + Duration::from_secs(3),
        "took over after {failover:?}"
    );
    assert_eq!(
        transitions(leases.get(&install.lease_name).await.unwrap()),
        before + 1
    );
    s.patch_spec(&json!({"gateway": {"replicas": 1}}));
    wait_gateway_replicas(&s, 1).await;
    assert!(standby.reconciliations().await.unwrap() >= 1.0);
    s.note("the new leader applied the next edit");
}

async fn wait_gateway_replicas(s: &Scenario, want: i32) {
    eventually(&format!("gateway replicas {want}"), CREATED, || async {
        let d =
            s.ns.deployment(&s.client, &format!("{CLUSTER}-gateway"))
                .await
                .ok_or("missing")?;
        match d.spec.and_then(|s| s.replicas) {
            Some(n) if n == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn deleting_the_cluster_garbage_collects_every_child() {
    let s = Scenario::new("gc").await;
    let operator = Operator::start("e2e-gc", 15);
    operator.wait_leader(LEAD).await;
    let cluster = s.apply_available(&json!({})).await;
    all_children(&s.client, &s.ns.name, &cluster).await.unwrap();
    s.wait_pods(
        &[("gateway", 2), ("sessions", 1), ("uploads", 1)],
        &default_image(),
    )
    .await;

    let deleted = Instant::now();
    s.kubectl_ns(&["delete", "lfc", CLUSTER]);
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={CLUSTER}"));
    eventually("every child to be garbage-collected", AVAILABLE, || async {
        let mut left = Vec::new();
        for c in support::children(CLUSTER) {
            if c.get(&s.client, &s.ns.name).await.is_some() {
                left.push(format!("{} {}", c.kind, c.name));
            }
        }
        let replica_sets = Api::<ReplicaSet>::namespaced(s.client.clone(), &s.ns.name)
            .list(&selector)
            .await
            .unwrap()
            .items
            .len();
        let pods = Api::<Pod>::namespaced(s.client.clone(), &s.ns.name)
            .list(&selector)
            .await
            .unwrap()
            .items
            .len();
        if left.is_empty() && replica_sets == 0 && pods == 0 {
            Ok(())
        } else {
            Err(format!(
                "left: {left:?}, {replica_sets} ReplicaSets, {pods} Pods"
            ))
        }
    })
    .await;
    s.note(format!(
        "children, ReplicaSets and Pods gone {:.2} s after kubectl delete",
        deleted.elapsed().as_secs_f64()
    ));
    // What the cluster did not own stays.
    s.kubectl_ns(&["get", "secret", support::CREDENTIALS_SECRET]);
    operator.assert_running();
}

#[tokio::test]
async fn ops_endpoints_answer_and_sigterm_releases_the_lease() {
    let s = Scenario::new("ops").await;
    let install = Install::get();
    let mut operator = Operator::start("e2e-ops", 15);
    let (status, body) = eventually("/healthz", CREATED, || operator.get("/healthz")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ok"), "{body}");
    let (status, body) = operator.get("/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    operator.wait_leader(LEAD).await;
    s.apply_available(&json!({})).await;
    let series = |name: &str| format!("{name}{{cluster=\"{}/{CLUSTER}\"}}", s.ns.name);
    eventually("the operator's metrics", CREATED, || async {
        let (status, body) = operator.get("/metrics").await?;
        let value = |series: &str| support::parse_metric(&body, series);
        let ok = value("lfusys_operator_reconciliations_total{result=\"ok\"}");
        let desired = value(&series("lfusys_operator_uploads_desired_replicas"));
        let depth = value(&series("lfusys_operator_queue_depth"));
        let leader = value("lfusys_operator_leader");
        if status == 200
            && ok.is_some_and(|n| n >= 1.0)
            && desired == Some(1.0)
            && depth == Some(0.0)
            && leader == Some(1.0)
        {
            Ok(())
        } else {
            Err(format!(
                "{status}: ok {ok:?} desired {desired:?} depth {depth:?} leader {leader:?}"
            ))
        }
    })
    .await;
    assert_eq!(
        install.lease_holder(&s.client).await.as_deref(),
        Some("e2e-ops")
    );

    let signalled = Instant::now();
    let status = operator.terminate();
    s.note(format!(
        "SIGTERM: exited with {status} after {:.2} s",
        signalled.elapsed().as_secs_f64()
    ));
    assert_eq!(status.code(), Some(0), "{}", operator.log_tail(20));
    assert_eq!(
        install.lease_holder(&s.client).await,
        None,
        "the Lease was not released"
    );
    // Released, not left to run out: the next replica leads at once, well within the 15 s.
    let started = Instant::now();
    let next = Operator::start("e2e-ops-2", 15);
    next.wait_leader(Duration::from_secs(10)).await;
    s.note(format!(
        "a new operator leads {:.2} s after its start",
        started.elapsed().as_secs_f64()
    ));
}
