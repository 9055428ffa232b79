//! Pure builders: one function per child object of an `LfusysCluster`, from the cluster and the
//! inputs the reconciler resolved (no API calls here, so each is unit-tested without a cluster).
//! [`children`] is the build step of the reconcile pipeline (DESIGN §5): every child the
//! operator applies, from the cluster and its [`Inputs`].

pub mod config_map;
mod deployment;
mod ingress;
mod pdb;
mod secret;
mod service;
mod service_account;

use std::collections::BTreeMap;

use crds::LfusysCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
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

impl Inputs {
    /// The inputs of `cluster`'s children: the signing key Secret `signing_key_secret`, the
    /// resourceVersions of the Secrets the pods read at start (hashed with the ConfigMap's data,
    /// so a change of either rolls the pods) and the workers' count.
    #[must_use]
    pub fn new(
        cluster: &LfusysCluster,
        signing_key_secret: &str,
        secret_versions: &[String],
        uploads_replicas: i32,
    ) -> Self {
        let mut hashed: Vec<&str> = vec![signing_key_secret];
        hashed.extend(secret_versions.iter().map(String::as_str));
        Self {
            signing_key_secret: signing_key_secret.to_owned(),
            uploads_replicas,
            config_hash: config_hash(&config_data(cluster), &hashed),
        }
    }
}

/// Every child object of a cluster, in the order the reconciler applies them. (The generated
/// signing key Secret is not here: it holds a fresh random key, is created once by the apply
/// step, and never re-applied.)
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    /// One entry per component, in [`Component::ALL`] order.
    pub components: [ComponentChildren; 3],
    /// `None` when the spec disables it: the reconciler deletes the one it owns.
    pub ingress: Option<Ingress>,
}

/// The children of one component, all named `{cluster}-{component}`.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentChildren {
    pub component: Component,
    pub service: Service,
    pub pod_disruption_budget: PodDisruptionBudget,
    pub deployment: Deployment,
}

/// Every child of `cluster` for `inputs` (pure).
#[must_use]
pub fn children(cluster: &LfusysCluster, inputs: &Inputs) -> Children {
    Children {
        service_account: service_account(cluster),
        config_map: config_map(cluster),
        components: Component::ALL.map(|component| ComponentChildren {
            component,
            service: service(cluster, component),
            pod_disruption_budget: pod_disruption_budget(cluster, component),
            deployment: deployment(cluster, component, inputs),
        }),
        ingress: ingress(cluster),
    }
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
    fn children_lists_every_child_with_its_name() {
        let c = minimal();
        let all = children(&c, &fixtures::inputs());
        assert_eq!(all.service_account.metadata.name.as_deref(), Some("files"));
        assert_eq!(
            all.config_map.metadata.name.as_deref(),
            Some("files-config")
        );
        let names: Vec<_> = all
            .components
            .iter()
            .map(|c| {
                let name = c.deployment.metadata.name.clone().unwrap();
                assert_eq!(c.service.metadata.name.as_ref(), Some(&name));
                assert_eq!(c.pod_disruption_budget.metadata.name.as_ref(), Some(&name));
                (c.component, name)
            })
            .collect();
        assert_eq!(
            names,
            [
                (Component::Gateway, "files-gateway".to_owned()),
                (Component::Sessions, "files-sessions".to_owned()),
                (Component::Uploads, "files-uploads".to_owned()),
            ]
        );
        assert_eq!(all.ingress.unwrap().metadata.name.as_deref(), Some("files"));
        // Every child is owned by the cluster and in its namespace.
        let metas = [
            &all.service_account.metadata,
            &all.config_map.metadata,
            &all.components[0].deployment.metadata,
        ];
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("media"));
            assert_eq!(meta.owner_references.as_ref().unwrap()[0].name, "files");
        }
    }

    #[test]
    fn children_is_pure_and_follows_the_inputs() {
        let c = minimal();
        let inputs = fixtures::inputs();
        assert_eq!(children(&c, &inputs), children(&c, &inputs));
        let more = Inputs {
            uploads_replicas: 7,
            ..inputs.clone()
        };
        let replicas = |i: &Inputs| {
            children(&c, i)
                .components
                .map(|c| c.deployment.spec.unwrap().replicas.unwrap())
        };
        // Only the workers follow the autoscaler; the others keep the spec's counts.
        assert_eq!(replicas(&inputs), [2, 1, 4]);
        assert_eq!(replicas(&more), [2, 1, 7]);
    }

    #[test]
    fn disabling_the_ingress_leaves_it_out() {
        let c = fixtures::cluster(serde_json::json!({
            "storage": {
                "s3": {"bucket": "b"}, "dynamodb": {"tablePrefix": "p"}, "sqs": {"queueName": "q"}
            },
            "ingress": {"enabled": false}
        }));
        assert!(children(&c, &fixtures::inputs()).ingress.is_none());
    }

    #[test]
    fn inputs_hash_the_config_and_the_secret_versions() {
        let c = minimal();
        let versions = ["12".to_owned(), "40".to_owned()];
        let inputs = Inputs::new(&c, "files-signing-key", &versions, 3);
        assert_eq!(inputs.signing_key_secret, "files-signing-key");
        assert_eq!(inputs.uploads_replicas, 3);
        assert_eq!(
            inputs.config_hash,
            config_hash(&config_data(&c), &["files-signing-key", "12", "40"])
        );
        // A Secret's new version rolls the pods.
        let rotated = Inputs::new(
            &c,
            "files-signing-key",
            &["12".to_owned(), "41".to_owned()],
            3,
        );
        assert_ne!(rotated.config_hash, inputs.config_hash);
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
