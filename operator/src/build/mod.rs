//! Pure builders: one function per child object of an `LfusysCluster`, from the cluster and the
//! inputs the reconciler resolved (no API calls here, so each is unit-tested without a cluster).

pub mod config_map;
mod deployment;
mod ingress;
mod pdb;
mod secret;
mod service;
mod service_account;

use std::collections::BTreeMap;

use crds::LfusysCluster;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

pub use config_map::{config_data, config_map, config_map_name, region};
pub use deployment::deployment;
pub use ingress::ingress;
pub use pdb::pod_disruption_budget;
pub use secret::{
    generated_signing_key_name, signing_key_secret, PRIVATE_KEY_ITEM, PUBLIC_KEY_ITEM,
};
pub use service::service;
pub use service_account::service_account;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "lfusys-operator";
/// Label selecting everything the operator manages.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "lfusys-operator");
/// The pod template annotation that rolls the pods when their configuration changes.
pub const CONFIG_HASH_ANNOTATION: &str = "lfusys.io/config-hash";

/// The three services of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Component {
    Gateway,
    Sessions,
    Uploads,
}

impl Component {
    pub const ALL: [Component; 3] = [Component::Gateway, Component::Sessions, Component::Uploads];

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Sessions => "sessions",
            Self::Uploads => "uploads",
        }
    }

    /// The port the service listens on (the ops endpoints share it).
    #[must_use]
    pub fn port(self) -> i32 {
        match self {
            Self::Gateway => 8080,
            Self::Sessions => 50051,
            Self::Uploads => 8081,
        }
    }

    /// Name of the port: Ingress controllers and meshes read `grpc`/`http` prefixes.
    #[must_use]
    pub fn port_name(self) -> &'static str {
        match self {
            Self::Sessions => "grpc",
            Self::Gateway | Self::Uploads => "http",
        }
    }

    /// `{cluster}-{component}`: the Deployment, Service and PodDisruptionBudget of it.
    #[must_use]
    pub fn object_name(self, cluster: &LfusysCluster) -> String {
        format!("{}-{}", cluster.name_any(), self.as_str())
    }
}

/// What the reconciler resolved before building: everything that is not in the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// The Secret holding the signing key pair (given in the spec, or the generated one).
    pub signing_key_secret: String,
    /// The workers' replica count chosen by the autoscaler.
    pub uploads_replicas: i32,
    /// Hash of the configuration the pods read at start, see [`config_hash`].
    pub config_hash: String,
}

/// The recommended labels of every child.
#[must_use]
pub fn labels(cluster: &LfusysCluster, component: Option<Component>) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster, component);
    labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    labels.insert("app.kubernetes.io/part-of".into(), "lfusys".into());
    labels.insert(
        "app.kubernetes.io/version".into(),
        cluster.spec.image.tag.clone(),
    );
    labels
}

/// The labels a Deployment selects its pods by (never changes over a cluster's life).
#[must_use]
pub fn selector_labels(
    cluster: &LfusysCluster,
    component: Option<Component>,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "lfusys".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), cluster.name_any()),
    ]);
    if let Some(c) = component {
        labels.insert("app.kubernetes.io/component".into(), c.as_str().into());
    }
    labels
}

/// Metadata of a child named `name`: namespace, labels and the controller owner reference that
/// makes Kubernetes garbage-collect it with the cluster.
#[must_use]
pub fn child_meta(
    cluster: &LfusysCluster,
    name: String,
    component: Option<Component>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(labels(cluster, component)),
        owner_references: owner_reference(cluster).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The cluster as controller, blocking its foreground deletion until the child is gone (as the
/// built-in controllers do; kube's `controller_owner_ref` leaves `blockOwnerDeletion` unset).
fn owner_reference(cluster: &LfusysCluster) -> Option<OwnerReference> {
    cluster.controller_owner_ref(&()).map(|o| OwnerReference {
        block_owner_deletion: Some(true),
        ..o
    })
}

/// A short stable hash (hex SHA-256 prefix) of the pods' configuration.
#[must_use]
pub fn config_hash(config: &BTreeMap<String, String>, extra: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (k, v) in config {
        hasher.update(k.as_bytes());
        hasher.update([0]);
        hasher.update(v.as_bytes());
        hasher.update([0]);
    }
    for e in extra {
        hasher.update(e.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crds::{LfusysCluster, LfusysClusterSpec};

    use super::Inputs;

    /// A cluster as the API server returns it: defaults filled in, uid set.
    pub fn cluster(spec: serde_json::Value) -> LfusysCluster {
        let spec: LfusysClusterSpec = serde_json::from_value(spec).unwrap();
        let mut c = LfusysCluster::new("files", spec);
        c.metadata.namespace = Some("media".into());
        c.metadata.uid = Some("0b6d3c3e-1111-2222-3333-444455556666".into());
        c.metadata.generation = Some(3);
        c
    }

    pub fn minimal() -> LfusysCluster {
        cluster(serde_json::json!({
            "storage": {
                "s3": {"bucket": "uploads", "region": "eu-west-1"},
                "dynamodb": {"tablePrefix": "files-"},
                "sqs": {"queueName": "files-assembly"}
            }
        }))
    }

    pub fn inputs() -> Inputs {
        Inputs {
            signing_key_secret: "files-signing-key".into(),
            uploads_replicas: 4,
            config_hash: "abc123".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::minimal;
    use super::*;

    #[test]
    fn children_carry_the_design_labels_and_an_owner_reference() {
        let c = minimal();
        let meta = child_meta(&c, "files-gateway".into(), Some(Component::Gateway));
        let labels = meta.labels.unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "lfusys");
        assert_eq!(labels["app.kubernetes.io/instance"], "files");
        assert_eq!(labels["app.kubernetes.io/component"], "gateway");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "lfusys-operator");
        assert_eq!(meta.namespace.as_deref(), Some("media"));
        let owner = &meta.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "LfusysCluster");
        assert_eq!(owner.api_version, "lfusys.io/v1alpha1");
        assert_eq!(owner.name, "files");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
    }

    #[test]
    fn the_config_hash_changes_with_any_value() {
        let a = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        let b = BTreeMap::from([("A".to_owned(), "2".to_owned())]);
        assert_eq!(config_hash(&a, &["s"]), config_hash(&a, &["s"]));
        assert_ne!(config_hash(&a, &["s"]), config_hash(&b, &["s"]));
        assert_ne!(config_hash(&a, &["s"]), config_hash(&a, &["t"]));
        assert_eq!(config_hash(&a, &[]).len(), 16);
    }
}
