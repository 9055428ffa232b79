use std::collections::BTreeMap;

use crds::{LfusysCluster, StorageSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::{child_meta, Component};

/// Where the signing key Secret is mounted in the gateway and worker pods.
pub const KEYS_DIR: &str = "/etc/lfusys/keys";
/// Writable scratch space (the root filesystem is read-only).
pub const DATA_DIR: &str = "/var/lib/lfusys";

/// The region the services use when the spec names none.
const DEFAULT_REGION: &str = "us-east-1";

/// The environment every service of the cluster reads (`{name}-config`, see
/// docs/configuration.md), from the spec's storage settings.
#[must_use]
pub fn config_data(cluster: &LfusysCluster) -> BTreeMap<String, String> {
    let StorageSpec {
        s3, dynamodb, sqs, ..
    } = &cluster.spec.storage;
    let mut data = BTreeMap::from([
        ("LFUSYS_BACKEND".to_owned(), "aws".to_owned()),
        ("LFUSYS_S3_BUCKET".to_owned(), s3.bucket.clone()),
        (
            "LFUSYS_TABLE_PREFIX".to_owned(),
            dynamodb.table_prefix.clone(),
        ),
        ("LFUSYS_QUEUE_NAME".to_owned(), sqs.queue_name.clone()),
        ("LFUSYS_DATA_DIR".to_owned(), DATA_DIR.to_owned()),
        (
            "LFUSYS_SESSIONS_URL".to_owned(),
            format!(
                "http://{}:{}",
                Component::Sessions.object_name(cluster),
                Component::Sessions.port()
            ),
        ),
        (
            "LFUSYS_SIGNING_KEY_FILE".to_owned(),
            format!("{KEYS_DIR}/{}", super::PRIVATE_KEY_ITEM),
        ),
        (
            "LFUSYS_TOKEN_PUBLIC_KEY_FILE".to_owned(),
            format!("{KEYS_DIR}/{}", super::PUBLIC_KEY_ITEM),
        ),
        // Behind the Ingress the client address is in X-Forwarded-For.
        (
            "LFUSYS_TRUST_PROXY".to_owned(),
            cluster.spec.ingress.enabled.to_string(),
        ),
        ("LFUSYS_LOG_FORMAT".to_owned(), "json".to_owned()),
    ]);
    data.insert("AWS_REGION".into(), region(&cluster.spec.storage));
    for (var, endpoint) in [
        ("AWS_ENDPOINT_URL_S3", &s3.endpoint),
        ("AWS_ENDPOINT_URL_DYNAMODB", &dynamodb.endpoint),
        ("AWS_ENDPOINT_URL_SQS", &sqs.endpoint),
    ] {
        if let Some(url) = endpoint {
            data.insert(var.into(), url.clone());
        }
    }
    data
}

/// The one region the services' SDK reads (`AWS_REGION`): the first one the spec names, of
/// S3, DynamoDB and SQS in that order, else us-east-1 (see docs/kubernetes.md). The operator
/// reads the queue's depth in the same region.
#[must_use]
pub fn region(storage: &StorageSpec) -> String {
    [
        &storage.s3.region,
        &storage.dynamodb.region,
        &storage.sqs.region,
    ]
    .into_iter()
    .find_map(Option::clone)
    .unwrap_or_else(|| DEFAULT_REGION.to_owned())
}

/// `{name}-config`.
#[must_use]
pub fn config_map(cluster: &LfusysCluster) -> ConfigMap {
    ConfigMap {
        metadata: child_meta(cluster, config_map_name(cluster), None),
        data: Some(config_data(cluster)),
        ..ConfigMap::default()
    }
}

#[must_use]
pub fn config_map_name(cluster: &LfusysCluster) -> String {
    format!("{}-config", cluster.name_any())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{cluster, minimal};
    use super::*;

    #[test]
    fn carries_the_storage_settings() {
        let cm = config_map(&minimal());
        assert_eq!(cm.metadata.name.as_deref(), Some("files-config"));
        let data = cm.data.unwrap();
        assert_eq!(data["LFUSYS_BACKEND"], "aws");
        assert_eq!(data["LFUSYS_S3_BUCKET"], "uploads");
        assert_eq!(data["LFUSYS_TABLE_PREFIX"], "files-");
        assert_eq!(data["LFUSYS_QUEUE_NAME"], "files-assembly");
        assert_eq!(data["AWS_REGION"], "eu-west-1");
        assert_eq!(data["LFUSYS_SESSIONS_URL"], "http://files-sessions:50051");
        assert!(!data.contains_key("AWS_ENDPOINT_URL_S3"));
    }

    #[test]
    fn endpoint_overrides_and_the_default_region() {
        let c = cluster(serde_json::json!({
            "storage": {
                "s3": {"bucket": "b", "endpoint": "http://minio:9000"},
                "dynamodb": {"tablePrefix": "p-", "endpoint": "http://moto:5000"},
                "sqs": {"queueName": "q", "endpoint": "http://moto:5000"}
            },
            "ingress": {"enabled": false}
        }));
        let data = config_data(&c);
        assert_eq!(data["AWS_REGION"], "us-east-1");
        assert_eq!(data["AWS_ENDPOINT_URL_S3"], "http://minio:9000");
        assert_eq!(data["AWS_ENDPOINT_URL_DYNAMODB"], "http://moto:5000");
        assert_eq!(data["AWS_ENDPOINT_URL_SQS"], "http://moto:5000");
        assert_eq!(data["LFUSYS_TRUST_PROXY"], "false");
    }
}
