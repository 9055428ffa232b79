//! The scale step: reads the assembly queue's depth and the workers' current count, and asks the
//! cluster's autoscaler for the count to run (DESIGN §5: `desired = clamp(ceil(depth /
//! targetQueueDepthPerReplica), min, max)`, up at once, down only after the stabilization
//! window). It writes nothing: the apply step sets the count on the workers' Deployment, and
//! [`record`] then reports a change as an Event (and in metrics); the status step records it.

use std::time::{Duration, Instant};

use crds::{AutoscalingSpec, LfusysCluster};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::dereference::Dependencies;
use super::{Context, Error};
use crate::autoscaler::{Decision, Policy, Recommendation};
use crate::build::{self, Component};
use crate::queue::QueueLocation;

/// What the scale step decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scaling {
    /// The queue's depth, or why it was not read.
    pub queue: Result<u64, String>,
    /// The replicas the workers' Deployment asks for now; `None` before it exists.
    pub current: Option<i32>,
    /// The count the decision started from: `current`, else `minReplicas`.
    pub from: i32,
    pub recommendation: Recommendation,
}

impl Scaling {
    /// The workers' count to apply.
    #[must_use]
    pub fn replicas(&self) -> i32 {
        self.recommendation.replicas
    }

    /// The existing workers' Deployment gets a new count.
    #[must_use]
    pub fn scaled(&self) -> bool {
        self.current
            .is_some_and(|c| c != self.recommendation.replicas)
    }
}

/// Decides the workers' count of `cluster`.
///
/// # Errors
/// [`Error::Scale`] when the workers' Deployment cannot be read. An unreadable queue is not an
/// error: the pool keeps its size and the status says why.
pub async fn scale(
    ctx: &Context,
    cluster: &LfusysCluster,
    namespace: &str,
    deps: &Dependencies,
) -> Result<Scaling, Error> {
    let queue = if deps.credentials_missing(cluster) {
        Err("the queue is not polled until the credentials Secret is usable".to_owned())
    } else {
        ctx.queue.depth(&queue_location(cluster, deps)).await
    };
    let current = current_replicas(ctx, cluster, namespace).await?;
    let policy = policy(&cluster.spec.uploads.autoscaling);
    let from = current.unwrap_or(policy.min_replicas);
    let recommendation = match &queue {
        Ok(depth) => {
            let mut scalers = ctx.scalers.lock().await;
            let key = cluster
                .uid()
                .unwrap_or_else(|| format!("{namespace}/{}", cluster.name_any()));
            let scaler = scalers.entry(key).or_default();
            scaler.recommend(Instant::now(), *depth, from, &policy)
        }
        Err(_) => hold(from, &policy),
    };
    Ok(Scaling {
        queue,
        current,
        from,
        recommendation,
    })
}

/// Where the cluster's queue is, reached with the credentials dereference found.
fn queue_location(cluster: &LfusysCluster, deps: &Dependencies) -> QueueLocation {
    let storage = &cluster.spec.storage;
    QueueLocation {
        queue_name: storage.sqs.queue_name.clone(),
        // The services' region (their AWS_REGION), never left to the SDK's region chain.
        region: Some(build::region(storage)),
        endpoint: storage.sqs.endpoint.clone(),
        credentials: deps.credentials.clone(),
    }
}

async fn current_replicas(
    ctx: &Context,
    cluster: &LfusysCluster,
    namespace: &str,
) -> Result<Option<i32>, Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    let name = Component::Uploads.object_name(cluster);
    let current = deployments
        .get_opt(&name)
        .await
        .map_err(|source| Error::Scale {
            what: format!("reading Deployment {name}"),
            source,
        })?;
    Ok(current.and_then(|d| d.spec.and_then(|s| s.replicas)))
}

/// The autoscaler's policy from the spec.
#[must_use]
pub fn policy(autoscaling: &AutoscalingSpec) -> Policy {
    Policy {
        min_replicas: autoscaling.min_replicas,
        max_replicas: autoscaling.max_replicas,
        target_depth_per_replica: autoscaling.target_queue_depth_per_replica,
        stabilization: Duration::from_secs(
            autoscaling
                .scale_down_stabilization_seconds
                .unsigned_abs()
                .into(),
        ),
    }
}

/// Without a depth the pool keeps its size (within the spec's bounds).
fn hold(current: i32, policy: &Policy) -> Recommendation {
    Recommendation {
        replicas: current.clamp(
            policy.min_replicas,
            policy.max_replicas.max(policy.min_replicas),
        ),
        decision: Decision::Hold,
    }
}

/// Reports the applied decision: an Event `ScaledUp`/`ScaledDown` when the count changed, and
/// the gauges of the desired count and the queue's depth.
pub async fn record(ctx: &Context, cluster: &LfusysCluster, namespace: &str, scaling: &Scaling) {
    let name = cluster.name_any();
    let (from, to) = (scaling.from, scaling.replicas());
    if scaling.scaled() {
        let (reason, verb) = if to > from {
            ("ScaledUp", "up")
        } else {
            ("ScaledDown", "down")
        };
        let depth = scaling
            .queue
            .as_ref()
            .map_or_else(|_| "unknown".to_owned(), ToString::to_string);
        ctx.publish(
            cluster,
            EventType::Normal,
            reason,
            format!("scaled upload workers {verb} from {from} to {to} (queue depth {depth})"),
        )
        .await;
        tracing::info!(cluster = %name, from, to, "scaled upload workers");
    }
    metrics::gauge!("lfusys_operator_uploads_desired_replicas", "cluster" => format!("{namespace}/{name}"))
        .set(f64::from(to));
    if let Ok(depth) = &scaling.queue {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("lfusys_operator_queue_depth", "cluster" => format!("{namespace}/{name}"))
            .set(*depth as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::minimal;

    #[test]
    fn the_policy_comes_from_the_spec() {
        let p = policy(&minimal().spec.uploads.autoscaling);
        assert_eq!(
            p,
            Policy {
                min_replicas: 1,
                max_replicas: 20,
                target_depth_per_replica: 5,
                stabilization: Duration::from_secs(300),
            }
        );
    }

    #[test]
    fn without_a_depth_the_pool_keeps_its_size_within_the_bounds() {
        let p = Policy {
            min_replicas: 2,
            max_replicas: 4,
            target_depth_per_replica: 5,
            stabilization: Duration::ZERO,
        };
        assert_eq!(hold(3, &p).replicas, 3);
        assert_eq!(hold(9, &p).replicas, 4);
        assert_eq!(hold(1, &p).replicas, 2);
        assert_eq!(hold(3, &p).decision, Decision::Hold);
    }

    #[test]
    fn only_a_change_of_an_existing_deployment_counts_as_scaling() {
        let scaling = |current, replicas| Scaling {
            queue: Ok(0),
            current,
            from: current.unwrap_or(1),
            recommendation: Recommendation {
                replicas,
                decision: Decision::Hold,
            },
        };
        assert!(!scaling(None, 3).scaled());
        assert!(!scaling(Some(3), 3).scaled());
        assert!(scaling(Some(1), 3).scaled());
    }

    #[test]
    fn the_queue_is_read_in_the_services_region_with_the_secrets_credentials() {
        let c = minimal();
        let deps = Dependencies {
            signing_key: super::super::dereference::SigningKey::Use("k".into()),
            credentials: None,
            secret_versions: vec![],
            problems: vec![],
        };
        let location = queue_location(&c, &deps);
        assert_eq!(location.queue_name, "files-assembly");
        assert_eq!(location.region.as_deref(), Some("eu-west-1"));
        assert_eq!(location.endpoint, None);
        assert_eq!(location.credentials, None);
    }
}
