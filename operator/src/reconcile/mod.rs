//! Reconciles one `LfusysCluster` (DESIGN §5; docs/kubernetes.md, "One reconciliation") as a
//! pipeline of steps, one module each:
//!
//! 1. [`dereference`] — reads the Secrets the cluster needs and what is wrong with them (reads
//!    only);
//! 2. [`scale`] — reads the assembly queue's depth and the workers' count, and asks the
//!    autoscaler for the count to run;
//! 3. build — [`crate::build::children`], pure: every child object from the cluster and the
//!    resolved [`Inputs`];
//! 4. [`apply`] — the only step that writes children: creates the generated signing key Secret
//!    once, then server-side applies every child under one field manager, so an unchanged spec
//!    makes no change at the API server;
//! 5. [`status`] — computes the conditions and writes the status only when it differs.
//!
//! The generated key Secret is written (apply) before the build: its resourceVersion is hashed
//! into the pods' template, so a new cluster's first rollout already carries the version every
//! later reconcile reads. Each step fails with its own [`Error`] variant; a missing or broken
//! dependency is not an error but a problem reported in the `Degraded` condition, and the
//! children are applied all the same.

pub mod apply;
pub mod dereference;
pub mod scale;
pub mod status;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crds::LfusysCluster;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Mutex;

use crate::autoscaler::Autoscaler;
use crate::build::{self, Inputs};
use crate::queue::QueueDepth;

/// Why a reconcile failed: one variant per step of the pipeline (none for the pure build).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cluster object has no namespace (never so for one from the API server).
    #[error("the cluster has no namespace")]
    NoNamespace,
    /// Dereference: a Secret the cluster names (or its generated key Secret) could not be read.
    #[error("{what}: {source}")]
    Dereference {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Scale: the workers' Deployment could not be read.
    #[error("{what}: {source}")]
    Scale {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Apply: no key pair could be generated for the signing key Secret.
    #[error("cannot generate a signing key: {source}")]
    ApplyKeyGeneration {
        #[source]
        source: lfusys_core::tokens::KeyError,
    },
    /// Apply: creating the signing key Secret, applying or deleting a child failed.
    #[error("{what}: {source}")]
    Apply {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Status: the workers' readiness could not be read, or the status not written.
    #[error("{what}: {source}")]
    Status {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The step that failed, for logs.
    #[must_use]
    pub fn step(&self) -> &'static str {
        match self {
            Self::NoNamespace => "start",
            Self::Dereference { .. } => "dereference",
            Self::Scale { .. } => "scale",
            Self::ApplyKeyGeneration { .. } | Self::Apply { .. } => "apply",
            Self::Status { .. } => "status",
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    pub queue: Arc<dyn QueueDepth>,
    pub recorder: Recorder,
    /// Autoscaler history per cluster uid: a cluster recreated under the same name starts afresh.
    scalers: Mutex<HashMap<String, Autoscaler>>,
}

impl Context {
    #[must_use]
    pub fn new(client: Client, queue: Arc<dyn QueueDepth>, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            queue,
            scalers: Mutex::new(HashMap::new()),
        }
    }

    /// Records an Event about `cluster`; a failure is logged, never fails the reconcile.
    async fn publish(&self, cluster: &LfusysCluster, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = self
            .recorder
            .publish(&event, &cluster.object_ref(&()))
            .await
        {
            tracing::warn!(%err, reason, "cannot record an event");
        }
    }
}

/// Reconciles `cluster`: dereference → scale → build → apply → status.
///
/// # Errors
/// API server failures, as the variant of the step that met them; the controller retries with
/// backoff.
pub async fn reconcile(cluster: Arc<LfusysCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = cluster.namespace().ok_or(Error::NoNamespace)?;

    let deps = dereference::dereference(&ctx.client, &cluster, &namespace).await?;
    let scaling = scale::scale(&ctx, &cluster, &namespace, &deps).await?;
    let created_key = apply::signing_key(&ctx, &cluster, &namespace, &deps.signing_key).await?;
    let mut secret_versions = deps.secret_versions.clone();
    secret_versions.extend(created_key);
    let inputs = Inputs::new(
        &cluster,
        deps.signing_key.secret_name(),
        &secret_versions,
        scaling.replicas(),
    );
    let children = build::children(&cluster, &inputs);
    let applied = apply::children(&ctx.client, &cluster, &namespace, &children).await?;
    scale::record(&ctx, &cluster, &namespace, &scaling).await;
    status::update(
        &ctx,
        &cluster,
        &namespace,
        deps.problems,
        &scaling,
        &applied,
    )
    .await?;

    metrics::counter!("lfusys_operator_reconciliations_total", "result" => "ok").increment(1);
    metrics::histogram!("lfusys_operator_reconcile_seconds")
        .record(started.elapsed().as_secs_f64());
    Ok(requeue(&cluster))
}

/// The next reconcile comes at the latest after the spec's poll interval: the queue's depth is
/// read at that pace.
fn requeue(cluster: &LfusysCluster) -> Action {
    let interval = cluster.spec.uploads.autoscaling.poll_interval_seconds;
    Action::requeue(Duration::from_secs(interval.unsigned_abs().into()))
}

/// Retries a failed reconcile after a short pause (the controller adds its own backoff).
#[must_use]
#[allow(clippy::needless_pass_by_value)] // the signature kube-runtime calls
pub fn error_policy(cluster: Arc<LfusysCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), step = error.step(), %error, "reconcile failed");
    metrics::counter!("lfusys_operator_reconciliations_total", "result" => "error").increment(1);
    Action::requeue(Duration::from_secs(5))
}

/// The reporter of this operator's Events.
#[must_use]
pub fn reporter(instance: &str) -> Reporter {
    Reporter {
        controller: "lfusys-operator".into(),
        instance: Some(instance.into()),
    }
}
