//! The status step: computes the conditions (DESIGN §5: `Available`, `Progressing`, `Degraded`,
//! `ScalingActive`, see [`crate::conditions`]) from what the apply step returned and what the
//! dereference and scale steps found, records Events for conditions that turned bad or good (so
//! `kubectl describe` tells the story), and patches `status` only when it differs from the
//! stored one: a steady cluster causes no write at all, not even after an operator restart.

use crds::{LfusysCluster, LfusysClusterStatus, UploadsStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::scale::Scaling;
use super::{Context, Error};
use crate::build::Component;
use crate::conditions::{self, DeploymentObservation, Observations, Problem};

/// Writes the status of `cluster` when it changed.
///
/// # Errors
/// [`Error::Status`] when the workers' Deployment cannot be read or the status not written.
pub async fn update(
    ctx: &Context,
    cluster: &LfusysCluster,
    namespace: &str,
    problems: Vec<Problem>,
    scaling: &Scaling,
    deployments: &[Deployment],
) -> Result<(), Error> {
    let name = cluster.name_any();
    let ready_workers =
        ready_replicas(ctx, namespace, &Component::Uploads.object_name(cluster)).await?;
    let status = desired(
        cluster,
        problems,
        scaling,
        deployments,
        ready_workers,
        &now(),
    );
    let previous = cluster.status.clone().unwrap_or_default();
    report_transitions(ctx, cluster, &previous, &status).await;
    if cluster.status.as_ref() != Some(&status) {
        let api: Api<LfusysCluster> = Api::namespaced(ctx.client.clone(), namespace);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map_err(|source| Error::Status {
            what: format!("updating the status of {name}"),
            source,
        })?;
    }
    Ok(())
}

/// The status for what this reconcile found (pure): conditions keep the transition times of the
/// stored ones where their status did not change, and `lastScaleTime` moves only on a change.
#[must_use]
pub fn desired(
    cluster: &LfusysCluster,
    problems: Vec<Problem>,
    scaling: &Scaling,
    deployments: &[Deployment],
    ready_workers: i32,
    now: &Time,
) -> LfusysClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let observations = Observations {
        generation: cluster.metadata.generation,
        deployments: deployments.iter().map(observe).collect(),
        problems,
        queue: Some(scaling.queue.clone()),
    };
    let last_scale_time = if scaling.scaled() {
        Some(now.clone())
    } else {
        previous.uploads.and_then(|u| u.last_scale_time)
    };
    LfusysClusterStatus {
        observed_generation: cluster.metadata.generation,
        conditions: conditions::compute(&observations, &previous.conditions, now),
        uploads: Some(UploadsStatus {
            replicas: ready_workers,
            desired_replicas: scaling.replicas(),
            queue_depth: scaling
                .queue
                .as_ref()
                .ok()
                .map(|d| i64::try_from(*d).unwrap_or(i64::MAX)),
            last_scale_time,
        }),
    }
}

/// Now, to the second (the API server keeps no more of a `Time`).
fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()))
}

fn observe(d: &Deployment) -> DeploymentObservation {
    let status = d.status.clone().unwrap_or_default();
    DeploymentObservation {
        name: d.name_any(),
        desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        available: status.available_replicas.unwrap_or(0),
        updated: status.updated_replicas.unwrap_or(0),
        observed_latest: status.observed_generation >= d.metadata.generation,
    }
}

async fn ready_replicas(ctx: &Context, namespace: &str, name: &str) -> Result<i32, Error> {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    Ok(api
        .get_opt(name)
        .await
        .map_err(|source| Error::Status {
            what: format!("reading Deployment {name}"),
            source,
        })?
        .and_then(|d| d.status)
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0))
}

/// Events for conditions that turned bad or good, so `kubectl describe` tells the story.
async fn report_transitions(
    ctx: &Context,
    cluster: &LfusysCluster,
    before: &LfusysClusterStatus,
    after: &LfusysClusterStatus,
) {
    let find =
        |s: &LfusysClusterStatus, t: &str| s.conditions.iter().find(|c| c.type_ == t).cloned();
    let degraded_before = find(before, crds::condition::DEGRADED);
    if let Some(now) = find(after, crds::condition::DEGRADED) {
        let changed = degraded_before
            .as_ref()
            .is_none_or(|b| b.status != now.status || b.reason != now.reason);
        if changed && now.status == "True" {
            ctx.publish(
                cluster,
                EventType::Warning,
                &now.reason,
                now.message.clone(),
            )
            .await;
        } else if changed && degraded_before.is_some_and(|b| b.status == "True") {
            ctx.publish(cluster, EventType::Normal, "Recovered", now.message.clone())
                .await;
        }
    }
    if let Some(now) = find(after, crds::condition::AVAILABLE) {
        let was = find(before, crds::condition::AVAILABLE).map(|c| c.status);
        if now.status == "True" && was.as_deref() != Some("True") {
            ctx.publish(cluster, EventType::Normal, "Available", now.message.clone())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::autoscaler::{Decision, Recommendation};
    use crate::build::fixtures::minimal;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn scaling(current: Option<i32>, replicas: i32) -> Scaling {
        Scaling {
            queue: Ok(12),
            current,
            from: current.unwrap_or(1),
            recommendation: Recommendation {
                replicas,
                decision: Decision::ScaleUp,
            },
        }
    }

    fn deployment(name: &str, replicas: i32, available: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some(name.into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                available_replicas: Some(available),
                updated_replicas: Some(available),
                ready_replicas: Some(available),
                ..DeploymentStatus::default()
            }),
        }
    }

    #[test]
    fn a_scaled_pool_gets_a_scale_time_and_the_rest_of_the_status() {
        let now = time("2026-11-29T10:00:00Z");
        let deployments = [
            deployment("files-gateway", 2, 2),
            deployment("files-sessions", 1, 1),
            deployment("files-uploads", 3, 1),
        ];
        let s = desired(
            &minimal(),
            vec![],
            &scaling(Some(1), 3),
            &deployments,
            1,
            &now,
        );
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(
            s.uploads,
            Some(UploadsStatus {
                replicas: 1,
                desired_replicas: 3,
                queue_depth: Some(12),
                last_scale_time: Some(now.clone()),
            })
        );
        let condition = |t: &str| s.conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(condition(crds::condition::AVAILABLE).status, "True");
        assert_eq!(condition(crds::condition::PROGRESSING).status, "True");
        assert_eq!(condition(crds::condition::DEGRADED).status, "False");
        assert_eq!(condition(crds::condition::SCALING_ACTIVE).status, "True");
    }

    #[test]
    fn an_unchanged_cluster_gets_the_status_it_has() {
        let t1 = time("2026-11-29T10:00:00Z");
        let t2 = time("2026-11-29T10:05:00Z");
        let deployments = [deployment("files-uploads", 3, 3)];
        let mut cluster = minimal();
        let first = desired(&cluster, vec![], &scaling(Some(1), 3), &deployments, 3, &t1);
        cluster.status = Some(first.clone());
        // Later, with the pool at its size: the same status, the scale time of t1 kept.
        let second = desired(&cluster, vec![], &scaling(Some(3), 3), &deployments, 3, &t2);
        assert_eq!(second, first);
    }

    #[test]
    fn an_unreadable_queue_shows_no_depth() {
        let mut s = scaling(Some(2), 2);
        s.queue = Err("connection refused".into());
        let status = desired(
            &minimal(),
            vec![],
            &s,
            &[],
            0,
            &time("2026-11-29T10:00:00Z"),
        );
        let uploads = status.uploads.unwrap();
        assert_eq!(uploads.queue_depth, None);
        assert_eq!(uploads.last_scale_time, None);
        let degraded = status
            .conditions
            .iter()
            .find(|c| c.type_ == crds::condition::DEGRADED)
            .unwrap();
        assert_eq!(degraded.reason, "QueueUnreachable");
    }
}
