//! Reconciles one `LfusysCluster`: dereference → validate → build → apply → update status.
//!
//! Children are applied with server-side apply under one field manager, so an unchanged spec
//! makes no change at the API server; the status is written only when it differs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crds::{LfusysCluster, LfusysClusterStatus, UploadsStatus};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::autoscaler::{Autoscaler, Decision, Policy};
use crate::build::{self, Component, Inputs, FIELD_MANAGER, PRIVATE_KEY_ITEM, PUBLIC_KEY_ITEM};
use crate::conditions::{self, DeploymentObservation, Observations, Problem};
use crate::queue::{QueueDepth, QueueLocation, StaticCredentials};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the cluster has no namespace")]
    NoNamespace,
    #[error("cannot generate a signing key: {0}")]
    KeyGeneration(String),
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
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

/// What the dereference step found: the Secrets the pods need and their problems.
struct Dependencies {
    signing_key_secret: String,
    credentials: Option<StaticCredentials>,
    /// Versions of the Secrets the pods read at start: a change rolls the pods.
    secret_versions: Vec<String>,
    problems: Vec<Problem>,
}

/// Reconciles `cluster`.
///
/// # Errors
/// API server failures; the controller retries with backoff.
pub async fn reconcile(cluster: Arc<LfusysCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cluster.namespace().ok_or(Error::NoNamespace)?;
    let name = cluster.name_any();
    let started = Instant::now();
    let spec = &cluster.spec;

    // Dereference.
    let deps = dereference(&cluster, &ctx, &namespace).await?;

    // Read the queue and size the worker pool.
    let location = QueueLocation {
        queue_name: spec.storage.sqs.queue_name.clone(),
        // The services' region (their AWS_REGION), never left to the SDK's region chain.
        region: Some(crate::build::region(&spec.storage)),
        endpoint: spec.storage.sqs.endpoint.clone(),
        credentials: deps.credentials.clone(),
    };
    let credentials_missing =
        spec.storage.credentials_secret_ref.is_some() && deps.credentials.is_none();
    let queue = if credentials_missing {
        Err("the queue is not polled until the credentials Secret is usable".to_owned())
    } else {
        ctx.queue.depth(&location).await
    };
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let uploads_name = Component::Uploads.object_name(&cluster);
    let current = deployments
        .get_opt(&uploads_name)
        .await
        .map_err(kube_err(format!("reading Deployment {uploads_name}")))?
        .and_then(|d| d.spec.and_then(|s| s.replicas));
    let autoscaling = &spec.uploads.autoscaling;
    let policy = Policy {
        min_replicas: autoscaling.min_replicas,
        max_replicas: autoscaling.max_replicas,
        target_depth_per_replica: autoscaling.target_queue_depth_per_replica,
        stabilization: Duration::from_secs(
            autoscaling
                .scale_down_stabilization_seconds
                .unsigned_abs()
                .into(),
        ),
    };
    let previous_status = cluster.status.clone().unwrap_or_default();
    let previous_uploads = previous_status.uploads.clone().unwrap_or_default();
    let current_replicas = current.unwrap_or(policy.min_replicas);
    let desired = match &queue {
        Ok(depth) => {
            let mut scalers = ctx.scalers.lock().await;
            let key = cluster
                .uid()
                .unwrap_or_else(|| format!("{namespace}/{name}"));
            let scaler = scalers.entry(key).or_default();
            scaler.recommend(Instant::now(), *depth, current_replicas, &policy)
        }
        // Without a depth the pool keeps its size (within the spec's bounds).
        Err(_) => crate::autoscaler::Recommendation {
            replicas: current_replicas.clamp(
                policy.min_replicas,
                policy.max_replicas.max(policy.min_replicas),
            ),
            decision: Decision::Hold,
        },
    };
    let now = Time(
        Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()),
    );
    let scaled = current.is_some_and(|c| c != desired.replicas);
    let last_scale_time = if scaled {
        Some(now.clone())
    } else {
        previous_uploads.last_scale_time.clone()
    };

    // Build.
    let config = build::config_data(&cluster);
    let mut hash_extra: Vec<&str> = vec![deps.signing_key_secret.as_str()];
    hash_extra.extend(deps.secret_versions.iter().map(String::as_str));
    let inputs = Inputs {
        signing_key_secret: deps.signing_key_secret.clone(),
        uploads_replicas: desired.replicas,
        config_hash: build::config_hash(&config, &hash_extra),
    };

    // Apply.
    let client = &ctx.client;
    apply(client, &namespace, &build::service_account(&cluster)).await?;
    apply(client, &namespace, &build::config_map(&cluster)).await?;
    let mut observed = Vec::new();
    for component in Component::ALL {
        apply(client, &namespace, &build::service(&cluster, component)).await?;
        apply(
            client,
            &namespace,
            &build::pod_disruption_budget(&cluster, component),
        )
        .await?;
        let applied = apply(
            client,
            &namespace,
            &build::deployment(&cluster, component, &inputs),
        )
        .await?;
        observed.push(observe(&applied));
    }
    match build::ingress(&cluster) {
        Some(ingress) => {
            apply(client, &namespace, &ingress).await?;
        }
        None => delete_owned::<Ingress>(client, &namespace, &name, &cluster).await?,
    }
    if scaled {
        let (reason, verb) = if desired.replicas > current_replicas {
            ("ScaledUp", "up")
        } else {
            ("ScaledDown", "down")
        };
        let depth = queue
            .as_ref()
            .map_or_else(|_| "unknown".to_owned(), ToString::to_string);
        ctx.publish(
            &cluster,
            EventType::Normal,
            reason,
            format!(
                "scaled upload workers {verb} from {current_replicas} to {} (queue depth {depth})",
                desired.replicas
            ),
        )
        .await;
        tracing::info!(cluster = %name, from = current_replicas, to = desired.replicas, "scaled upload workers");
    }
    metrics::gauge!("lfusys_operator_uploads_desired_replicas", "cluster" => format!("{namespace}/{name}"))
        .set(f64::from(desired.replicas));
    if let Ok(depth) = &queue {
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!("lfusys_operator_queue_depth", "cluster" => format!("{namespace}/{name}"))
            .set(*depth as f64);
    }

    // Update status.
    let obs = Observations {
        generation: cluster.metadata.generation,
        deployments: observed,
        problems: deps.problems,
        queue: Some(queue.clone()),
    };
    let conditions = conditions::compute(&obs, &previous_status.conditions, &now);
    let ready_workers = deployments_ready(client, &namespace, &uploads_name).await?;
    let status = LfusysClusterStatus {
        observed_generation: cluster.metadata.generation,
        conditions,
        uploads: Some(UploadsStatus {
            replicas: ready_workers,
            desired_replicas: desired.replicas,
            queue_depth: queue
                .as_ref()
                .ok()
                .map(|d| i64::try_from(*d).unwrap_or(i64::MAX)),
            last_scale_time,
        }),
    };
    report_transitions(&ctx, &cluster, &previous_status, &status).await;
    if cluster.status.as_ref() != Some(&status) {
        let api: Api<LfusysCluster> = Api::namespaced(client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map_err(kube_err(format!("updating the status of {name}")))?;
    }
    metrics::counter!("lfusys_operator_reconciliations_total", "result" => "ok").increment(1);
    metrics::histogram!("lfusys_operator_reconcile_seconds")
        .record(started.elapsed().as_secs_f64());
    Ok(Action::requeue(Duration::from_secs(
        autoscaling.poll_interval_seconds.unsigned_abs().into(),
    )))
}

/// Retries a failed reconcile after a short pause (the controller adds its own backoff).
#[must_use]
#[allow(clippy::needless_pass_by_value)] // the signature kube-runtime calls
pub fn error_policy(cluster: Arc<LfusysCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), %error, "reconcile failed");
    metrics::counter!("lfusys_operator_reconciliations_total", "result" => "error").increment(1);
    Action::requeue(Duration::from_secs(5))
}

async fn dereference(
    cluster: &LfusysCluster,
    ctx: &Context,
    namespace: &str,
) -> Result<Dependencies, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let mut problems = Vec::new();
    let mut secret_versions = Vec::new();
    let mut credentials = None;
    if let Some(reference) = &cluster.spec.storage.credentials_secret_ref {
        match secrets
            .get_opt(&reference.name)
            .await
            .map_err(kube_err(format!("reading Secret {}", reference.name)))?
        {
            None => problems.push(Problem {
                reason: "CredentialsSecretMissing".into(),
                message: format!(
                    "Secret {} (spec.storage.credentialsSecretRef) not found",
                    reference.name
                ),
            }),
            Some(secret) => {
                secret_versions.push(secret.resource_version().unwrap_or_default());
                let get = |key: &str| secret_string(&secret, key);
                match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
                    (Some(access_key_id), Some(secret_access_key)) => {
                        credentials = Some(StaticCredentials {
                            access_key_id,
                            secret_access_key,
                            session_token: get("AWS_SESSION_TOKEN"),
                        });
                    }
                    _ => problems.push(Problem {
                        reason: "CredentialsSecretInvalid".into(),
                        message: format!(
                            "Secret {} needs the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                            reference.name
                        ),
                    }),
                }
            }
        }
    }
    let signing_key_secret = if let Some(reference) = &cluster.spec.auth.signing_key_secret_ref {
        match secrets
            .get_opt(&reference.name)
            .await
            .map_err(kube_err(format!("reading Secret {}", reference.name)))?
        {
            None => problems.push(Problem {
                reason: "SigningKeySecretMissing".into(),
                message: format!(
                    "Secret {} (spec.auth.signingKeySecretRef) not found",
                    reference.name
                ),
            }),
            Some(secret) => {
                secret_versions.push(secret.resource_version().unwrap_or_default());
                if let Some(problem) = signing_key_problem(&secret, &reference.name) {
                    problems.push(problem);
                }
            }
        }
        reference.name.clone()
    } else {
        let name = build::generated_signing_key_name(cluster);
        let existing = secrets
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading Secret {name}")))?;
        if let Some(secret) = existing {
            secret_versions.push(secret.resource_version().unwrap_or_default());
            if let Some(problem) = signing_key_problem(&secret, &name) {
                problems.push(problem);
            }
        } else {
            {
                let (private_pem, public_pem) = lfusys_core::tokens::generate_key_pair_pem()
                    .map_err(|e| Error::KeyGeneration(e.to_string()))?;
                let secret = build::signing_key_secret(cluster, &private_pem, &public_pem);
                // Created once, never re-applied: a new key would sign every user out.
                match secrets
                    .create(
                        &PostParams {
                            field_manager: Some(FIELD_MANAGER.into()),
                            ..PostParams::default()
                        },
                        &secret,
                    )
                    .await
                {
                    Ok(created) => {
                        secret_versions.push(created.resource_version().unwrap_or_default());
                        ctx.publish(
                            cluster,
                            EventType::Normal,
                            "SigningKeyCreated",
                            format!("generated the token signing key pair in Secret {name}"),
                        )
                        .await;
                    }
                    // Another reconcile created it meanwhile: the next one reads it.
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(kube_err(format!("creating Secret {name}"))(e)),
                }
            }
        }
        name
    };
    Ok(Dependencies {
        signing_key_secret,
        credentials,
        secret_versions,
        problems,
    })
}

fn secret_string(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key).cloned())
        })
        .filter(|v| !v.is_empty())
}

fn signing_key_problem(secret: &Secret, name: &str) -> Option<Problem> {
    let missing: Vec<&str> = [PRIVATE_KEY_ITEM, PUBLIC_KEY_ITEM]
        .into_iter()
        .filter(|k| secret_string(secret, k).is_none())
        .collect();
    (!missing.is_empty()).then(|| Problem {
        reason: "SigningKeySecretInvalid".into(),
        message: format!("Secret {name} lacks {}", missing.join(" and ")),
    })
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

async fn deployments_ready(client: &Client, namespace: &str, name: &str) -> Result<i32, Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading Deployment {name}")))?
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

/// Server-side apply of a namespaced child under the operator's field manager.
async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(kube_err(format!("applying {} {name}", K::kind(&()))))
}

/// Deletes a child the spec no longer asks for, if this cluster owns it.
async fn delete_owned<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    cluster: &LfusysCluster,
) -> Result<(), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading {} {name}", K::kind(&()))))?
    else {
        return Ok(());
    };
    let ours = existing
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == cluster.metadata.uid.as_ref());
    if ours {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(kube_err(format!("deleting {} {name}", K::kind(&())))(e)),
        }
    }
    Ok(())
}

/// The reporter of this operator's Events.
#[must_use]
pub fn reporter(instance: &str) -> Reporter {
    Reporter {
        controller: "lfusys-operator".into(),
        instance: Some(instance.into()),
    }
}
