use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crds::LfusysCluster;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::build::MANAGED_BY;
use crate::config::OperatorConfig;
use crate::leader::{LeaderElector, Role};
use crate::queue::SqsQueueDepth;
use crate::reconcile::{self, Context};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot reach the Kubernetes API server: {0}")]
    Client(#[source] kube::Error),
    #[error("cannot serve the ops endpoints on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the leader lease {0}; exiting so that another replica takes over cleanly")]
    LostLeadership(String),
}

/// Runs the operator until `shutdown` resolves: serves the ops endpoints, waits to become the
/// leader, then reconciles every `LfusysCluster` it watches.
///
/// # Errors
/// No API server, the ops port taken, or the lease lost while leading.
pub async fn run(
    config: OperatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Client)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.listen,
            source,
        })?;
    let ready_client = client.clone();
    let readiness: service_kit::observability::ReadinessCheck = Arc::new(move || {
        let client = ready_client.clone();
        Box::pin(async move {
            client
                .apiserver_version()
                .await
                .map(|_| ())
                .map_err(|e| format!("the Kubernetes API server does not answer: {e}"))
        })
    });
    let ops = service_kit::observability::ops_router(readiness);
    let mut ops_stop = stop_rx.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, ops)
            .with_graceful_shutdown(async move {
                let _ = ops_stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(err) = served {
            tracing::error!(%err, "the ops server failed");
        }
    });
    tracing::info!(listen = %config.listen, identity = %config.identity, "operator started");

    let elector = Arc::new(LeaderElector::new(
        client.clone(),
        &config.lease_namespace,
        &config.lease_name,
        &config.identity,
        config.lease_duration,
    ));
    metrics::gauge!("lfusys_operator_leader").set(0.0);
    if !wait_for_leadership(&elector, stop_rx.clone()).await {
        return Ok(());
    }
    metrics::gauge!("lfusys_operator_leader").set(1.0);
    tracing::info!(lease = %config.lease_name, "became the leader");

    let (lost_tx, mut lost_rx) = watch::channel(false);
    let renewer = {
        let elector = elector.clone();
        let mut stop = stop_rx.clone();
        let duration = config.lease_duration;
        tokio::spawn(async move {
            let mut last_renewed = Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(elector.renew_interval()) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                match elector.try_acquire_or_renew().await {
                    Ok(Role::Leader) => last_renewed = Instant::now(),
                    Ok(Role::Follower) => break,
                    Err(err) => {
                        tracing::warn!(%err, "cannot renew the leader lease");
                        // Stop before the lease can run out under us: never two leaders.
                        if last_renewed.elapsed() > duration.mul_f64(0.66) {
                            break;
                        }
                    }
                }
            }
            let _ = lost_tx.send(true);
        })
    };

    let mut stop = stop_rx.clone();
    let mut lost = lost_rx.clone();
    let controller_stop = async move {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = lost.wait_for(|l| *l) => {}
        }
    };
    run_controller(client.clone(), &config, controller_stop).await;

    renewer.abort();
    metrics::gauge!("lfusys_operator_leader").set(0.0);
    if *lost_rx.borrow_and_update() {
        return Err(RunError::LostLeadership(config.lease_name));
    }
    if let Err(err) = elector.release().await {
        tracing::warn!(%err, "cannot release the leader lease; it runs out by itself");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Polls the lease until this replica holds it; `false` when asked to stop first.
async fn wait_for_leadership(elector: &LeaderElector, mut stop: watch::Receiver<bool>) -> bool {
    let mut waiting_logged = false;
    loop {
        match elector.try_acquire_or_renew().await {
            Ok(Role::Leader) => return true,
            Ok(Role::Follower) if !waiting_logged => {
                tracing::info!(
                    identity = elector.identity(),
                    "another replica leads; standing by"
                );
                waiting_logged = true;
            }
            Ok(Role::Follower) => {}
            Err(err) => tracing::warn!(%err, "leader election round failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(elector.renew_interval()) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_controller(
    client: Client,
    config: &OperatorConfig,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = config.watch_namespace.as_deref();
    let owned = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let controller = Controller::new(
        api::<LfusysCluster>(&client, ns),
        watcher::Config::default(),
    );
    let clusters = controller.store();
    let context = Arc::new(Context::new(
        client.clone(),
        Arc::new(SqsQueueDepth::default()),
        reconcile::reporter(&config.identity),
    ));
    controller
        .owns(api::<Deployment>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<ServiceAccount>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned.clone())
        .owns(api::<Ingress>(&client, ns), owned)
        // Secrets: the generated signing key (owned) and the ones a spec refers to by name, so
        // creating a missing Secret clears `Degraded` at once.
        .watches(
            api::<Secret>(&client, ns),
            watcher::Config::default(),
            move |secret: Secret| {
                let namespace = secret.namespace();
                let name = secret.name_any();
                clusters
                    .state()
                    .into_iter()
                    .filter(|c| c.namespace() == namespace && refers_to(c, &name))
                    .map(|c| ObjectRef::from_obj(&*c))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stop)
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object.name, "reconciled"),
                // A deleted cluster's children, garbage-collected after it, still trigger
                // reconciles of it: nothing to do, nothing failed.
                Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                    tracing::debug!(cluster = %object.name, "cluster gone; not reconciled");
                }
                Err(err) => tracing::warn!(%err, "reconcile failed"),
            }
        })
        .await;
}

fn refers_to(cluster: &LfusysCluster, secret: &str) -> bool {
    let spec = &cluster.spec;
    spec.storage
        .credentials_secret_ref
        .as_ref()
        .is_some_and(|r| r.name == secret)
        || spec
            .auth
            .signing_key_secret_ref
            .as_ref()
            .is_some_and(|r| r.name == secret)
        || (spec.auth.signing_key_secret_ref.is_none()
            && crate::build::generated_signing_key_name(cluster) == secret)
}
