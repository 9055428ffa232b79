use crds::LfusysCluster;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt;

use super::child_meta;

/// `{name}`: the identity of the cluster's pods (annotate it for IRSA).
#[must_use]
pub fn service_account(cluster: &LfusysCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(cluster, cluster.name_any(), None),
        // The services never call the Kubernetes API.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::minimal;
    use super::*;

    #[test]
    fn named_after_the_cluster_without_an_api_token() {
        let sa = service_account(&minimal());
        assert_eq!(sa.metadata.name.as_deref(), Some("files"));
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
}
