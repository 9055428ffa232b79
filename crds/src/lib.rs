//! The `LfusysCluster` custom resource (group `lfusys.io`, version `v1alpha1`): its Rust types,
//! defaults and CEL validation rules. `crdgen` turns them into the CRD YAML the Helm chart ships.
//!
//! Every spec field but `storage` is optional; the defaults below are also written into the CRD
//! schema, so the API server fills them in and the stored object shows what runs.

// `printcolumn(...)` repeats `type_ = ...` by design; clippy reads that as a duplicate.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every LFUSYS resource.
pub const GROUP: &str = "lfusys.io";
/// Image repository of the LFUSYS services (one image holds `gateway`, `sessions` and `uploads`).
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/lfusys/lfusys";
/// Image tag of the services: the release this operator belongs to.
pub const DEFAULT_IMAGE_TAG: &str = env!("CARGO_PKG_VERSION");

/// Desired state of one LFUSYS installation: the gateway, the sessions service and the upload
/// workers on AWS storage (S3, DynamoDB, SQS).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lfusys.io",
    version = "v1alpha1",
    kind = "LfusysCluster",
    plural = "lfusysclusters",
    shortname = "lfc",
    namespaced,
    status = "LfusysClusterStatus",
    derive = "PartialEq",
    doc = "An LFUSYS installation: gateway, sessions service and autoscaled upload workers",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(
        name = "Workers",
        type_ = "integer",
        json_path = ".status.uploads.replicas"
    ),
    printcolumn(
        name = "Queue",
        type_ = "integer",
        description = "visible + in-flight assembly jobs",
        json_path = ".status.uploads.queueDepth"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LfusysClusterSpec {
    /// The services' container image.
    #[serde(default)]
    pub image: ImageSpec,
    /// The public HTTP API and web app.
    #[serde(default = "ComponentSpec::gateway")]
    pub gateway: ComponentSpec,
    /// The metadata authority (gRPC).
    #[serde(default = "ComponentSpec::sessions")]
    pub sessions: ComponentSpec,
    /// The upload workers; their replica count is set by the operator's autoscaler.
    #[serde(default)]
    pub uploads: UploadsSpec,
    /// Where uploads and metadata live.
    pub storage: StorageSpec,
    /// Token signing.
    #[serde(default)]
    pub auth: AuthSpec,
    /// The Ingress routing `/api/v1/chunks` and `/api/v1/tus` to the workers and everything else to the gateway.
    #[serde(default)]
    pub ingress: IngressSpec,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    #[serde(default = "default_repository")]
    #[schemars(length(min = 1))]
    pub repository: String,
    #[serde(default = "default_tag")]
    #[schemars(length(min = 1))]
    pub tag: String,
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: default_repository(),
            tag: default_tag(),
            pull_policy: PullPolicy::default(),
        }
    }
}

impl ImageSpec {
    /// `repository:tag`, as a container's `image`.
    #[must_use]
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

fn default_repository() -> String {
    DEFAULT_IMAGE_REPOSITORY.to_owned()
}

fn default_tag() -> String {
    DEFAULT_IMAGE_TAG.to_owned()
}

#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// A fixed-size service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl ComponentSpec {
    fn gateway() -> Self {
        Self {
            replicas: 2,
            resources: None,
        }
    }

    fn sessions() -> Self {
        Self {
            replicas: 1,
            resources: None,
        }
    }
}

fn one() -> i32 {
    1
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UploadsSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
}

/// How the operator sizes the worker pool from the assembly queue's depth:
/// `desired = clamp(ceil(depth / targetQueueDepthPerReplica), minReplicas, maxReplicas)`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("self.minReplicas <= self.maxReplicas")
        .message("minReplicas must not be greater than maxReplicas")
        .reason(Reason::FieldValueInvalid)
)]
pub struct AutoscalingSpec {
    /// Workers also take chunks over HTTP, so there is always at least one.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    #[serde(default = "default_target_depth")]
    #[schemars(range(min = 1))]
    pub target_queue_depth_per_replica: i32,
    #[serde(default = "default_poll_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub poll_interval_seconds: i32,
    #[serde(default = "default_stabilization")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_stabilization_seconds: i32,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            min_replicas: 1,
            max_replicas: default_max_replicas(),
            target_queue_depth_per_replica: default_target_depth(),
            poll_interval_seconds: default_poll_interval(),
            scale_down_stabilization_seconds: default_stabilization(),
        }
    }
}

fn default_max_replicas() -> i32 {
    20
}
fn default_target_depth() -> i32 {
    5
}
fn default_poll_interval() -> i32 {
    15
}
fn default_stabilization() -> i32 {
    300
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    pub s3: S3Spec,
    pub dynamodb: DynamoDbSpec,
    pub sqs: SqsSpec,
    /// A Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and optionally
    /// `AWS_SESSION_TOKEN`). Absent: the pods' own identity (IRSA, instance role).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// S3 bucket names: 3–63 lowercase letters, digits, dots and hyphens.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"))]
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint override for S3-compatible servers (path-style addressing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DynamoDbSpec {
    /// Prefix of the table names (`{prefix}uploads`, …).
    #[schemars(regex(pattern = r"^[a-zA-Z0-9_.-]{1,200}$"))]
    pub table_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SqsSpec {
    /// The FIFO assembly queue (`.fifo` is added when missing).
    #[schemars(regex(pattern = r"^[a-zA-Z0-9_-]{1,75}(\.fifo)?$"))]
    pub queue_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
        .message("endpoint must be an http:// or https:// URL"))]
    pub endpoint: Option<String>,
}

/// A Secret in the cluster's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretReference {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// A Secret with `signing-key.pem` (Ed25519, PKCS#8) and `signing-key.pub.pem` (SPKI).
    /// Absent: the operator generates a key pair Secret `{name}-signing-key` and keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret_ref: Option<SecretReference>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    cel,
    validation = Rule::new("!has(self.tlsSecretName) || has(self.host)")
        .message("tlsSecretName needs a host")
        .reason(Reason::FieldValueRequired)
)]
pub struct IngressSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

impl Default for IngressSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            host: None,
            class_name: None,
            tls_secret_name: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// What the operator observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LfusysClusterStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Available`, `Progressing`, `Degraded` and `ScalingActive`.
    // A map list keyed by `type`, as the API conventions ask of conditions: server-side apply
    // merges one condition at a time, and two conditions of one type are refused.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploads: Option<UploadsStatus>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UploadsStatus {
    /// Ready worker pods.
    pub replicas: i32,
    /// What the autoscaler asks for.
    pub desired_replicas: i32,
    /// Visible + in-flight messages of the assembly queue at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
}

/// The condition types of [`LfusysClusterStatus::conditions`].
pub mod condition {
    pub const AVAILABLE: &str = "Available";
    pub const PROGRESSING: &str = "Progressing";
    pub const DEGRADED: &str = "Degraded";
    pub const SCALING_ACTIVE: &str = "ScalingActive";
}

/// The CRD as YAML, as the chart ships it.
///
/// # Errors
/// When the CRD cannot be serialised (never for these types).
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let yaml = serde_yaml::to_string(&LfusysCluster::crd())?;
    Ok(format!(
        "# Generated by `cargo run -p crds --bin crdgen`; do not edit.\n{yaml}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> serde_json::Value {
        json!({
            "storage": {
                "s3": {"bucket": "uploads"},
                "dynamodb": {"tablePrefix": "lfusys-"},
                "sqs": {"queueName": "lfusys-assembly.fifo"}
            }
        })
    }

    #[test]
    fn a_minimal_spec_gets_the_documented_defaults() {
        let spec: LfusysClusterSpec = serde_json::from_value(minimal()).unwrap();
        assert_eq!(spec.gateway.replicas, 2);
        assert_eq!(spec.sessions.replicas, 1);
        assert_eq!(spec.uploads.autoscaling, AutoscalingSpec::default());
        assert_eq!(spec.uploads.autoscaling.max_replicas, 20);
        assert_eq!(
            spec.image.reference(),
            format!("ghcr.io/lfusys/lfusys:{DEFAULT_IMAGE_TAG}")
        );
        assert_eq!(spec.image.pull_policy, PullPolicy::IfNotPresent);
        assert!(spec.ingress.enabled);
        assert!(spec.auth.signing_key_secret_ref.is_none());
    }

    #[test]
    fn storage_is_required() {
        let err = serde_json::from_value::<LfusysClusterSpec>(json!({})).unwrap_err();
        assert!(err.to_string().contains("storage"), "{err}");
    }

    #[test]
    fn autoscaling_rule_rejects_min_above_max() {
        let ok = json!({"minReplicas": 2, "maxReplicas": 2, "targetQueueDepthPerReplica": 5,
                        "pollIntervalSeconds": 15, "scaleDownStabilizationSeconds": 0});
        AutoscalingSpec::validate_cel(&ok, None).unwrap();
        let bad = json!({"minReplicas": 3, "maxReplicas": 2, "targetQueueDepthPerReplica": 5,
                         "pollIntervalSeconds": 15, "scaleDownStabilizationSeconds": 0});
        let err = AutoscalingSpec::validate_cel(&bad, None).unwrap_err();
        assert!(
            format!("{err:?}").contains("minReplicas must not be greater"),
            "{err:?}"
        );
    }

    #[test]
    fn ingress_rule_needs_a_host_for_tls() {
        IngressSpec::validate_cel(&json!({"enabled": true}), None).unwrap();
        IngressSpec::validate_cel(
            &json!({"enabled": true, "host": "files.example.com", "tlsSecretName": "tls"}),
            None,
        )
        .unwrap();
        let err =
            IngressSpec::validate_cel(&json!({"enabled": true, "tlsSecretName": "tls"}), None)
                .unwrap_err();
        assert!(
            format!("{err:?}").contains("tlsSecretName needs a host"),
            "{err:?}"
        );
    }

    #[test]
    fn the_crd_carries_names_columns_rules_and_bounds() {
        let crd = serde_json::to_value(LfusysCluster::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "lfusysclusters.lfusys.io");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert_eq!(crd["spec"]["names"]["shortNames"], json!(["lfc"]));
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object());
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(columns, ["Ready", "Workers", "Queue", "Age"]);
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["required"], json!(["storage"]));
        let autoscaling = &spec["properties"]["uploads"]["properties"]["autoscaling"];
        assert_eq!(
            autoscaling["x-kubernetes-validations"][0]["rule"],
            "self.minReplicas <= self.maxReplicas"
        );
        assert_eq!(
            autoscaling["properties"]["targetQueueDepthPerReplica"]["minimum"].as_f64(),
            Some(1.0)
        );
        let conditions = &version["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
        assert_eq!(
            conditions["items"]["required"]
                .as_array()
                .map(|r| r.contains(&json!("type"))),
            Some(true)
        );
    }

    /// CI fails when the chart ships a CRD that no longer matches these types.
    #[test]
    fn the_chart_ships_the_current_crd() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../charts/lfusys-operator/crds/lfusys.io_lfusysclusters.yaml");
        let committed = std::fs::read_to_string(&path).unwrap();
        assert!(
            committed == crd_yaml().unwrap(),
            "{} is stale: run `cargo run -p crds --bin crdgen > {}`",
            path.display(),
            path.display()
        );
    }
}
