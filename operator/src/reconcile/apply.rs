//! The apply step, the only one that writes children (DESIGN §5). It creates the generated
//! signing key Secret once — never re-applied, since a new key would sign every user out — and
//! server-side applies every child the build step returned under the operator's one field
//! manager, forced (the operator owns these fields), so an unchanged child is an apply that
//! changes nothing. An Ingress the spec no longer asks for is deleted if the cluster owns it.

use crds::LfusysCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::dereference::SigningKey;
use super::{Context, Error};
use crate::build::{self, Children, FIELD_MANAGER};

/// Creates the generated signing key Secret when dereference found none (Event
/// `SigningKeyCreated`); returns the created Secret's resourceVersion, which the pods' config
/// hash includes. `None` when nothing was created, also when another reconcile created it
/// meanwhile (the next one reads it).
///
/// # Errors
/// [`Error::ApplyKeyGeneration`] or [`Error::Apply`].
pub async fn signing_key(
    ctx: &Context,
    cluster: &LfusysCluster,
    namespace: &str,
    key: &SigningKey,
) -> Result<Option<String>, Error> {
    let SigningKey::Generate(name) = key else {
        return Ok(None);
    };
    let (private_pem, public_pem) = lfusys_core::tokens::generate_key_pair_pem()
        .map_err(|source| Error::ApplyKeyGeneration { source })?;
    let secret = build::signing_key_secret(cluster, &private_pem, &public_pem);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match secrets.create(&params, &secret).await {
        Ok(created) => {
            ctx.publish(
                cluster,
                EventType::Normal,
                "SigningKeyCreated",
                format!("generated the token signing key pair in Secret {name}"),
            )
            .await;
            Ok(Some(created.resource_version().unwrap_or_default()))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(source) => Err(Error::Apply {
            what: format!("creating Secret {name}"),
            source,
        }),
    }
}

/// Applies `children` in their order: ServiceAccount, ConfigMap, per component its Service,
/// PodDisruptionBudget and Deployment, then the Ingress (or deletes the owned one). Returns the
/// Deployments as the API server returned them, with their status.
///
/// # Errors
/// [`Error::Apply`] on the first failed call; the rest is not applied.
pub async fn children(
    client: &Client,
    cluster: &LfusysCluster,
    namespace: &str,
    children: &Children,
) -> Result<Vec<Deployment>, Error> {
    apply(client, namespace, &children.service_account).await?;
    apply(client, namespace, &children.config_map).await?;
    let mut deployments = Vec::with_capacity(children.components.len());
    for component in &children.components {
        apply(client, namespace, &component.service).await?;
        apply(client, namespace, &component.pod_disruption_budget).await?;
        deployments.push(apply(client, namespace, &component.deployment).await?);
    }
    match &children.ingress {
        Some(ingress) => {
            apply(client, namespace, ingress).await?;
        }
        None => delete_owned::<Ingress>(client, namespace, &cluster.name_any(), cluster).await?,
    }
    Ok(deployments)
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
    .map_err(|source| Error::Apply {
        what: format!("applying {} {name}", K::kind(&())),
        source,
    })
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
    let failed = |verb: &str| {
        let what = format!("{verb} {} {name}", K::kind(&()));
        move |source| Error::Apply { what, source }
    };
    let Some(existing) = api.get_opt(name).await.map_err(failed("reading"))? else {
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
            Err(e) => return Err(failed("deleting")(e)),
        }
    }
    Ok(())
}
