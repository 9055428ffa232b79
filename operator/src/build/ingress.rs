use crds::LfusysCluster;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use kube::ResourceExt;

use super::{child_meta, Component};

/// The path prefix of the chunk endpoints, served by the workers (DESIGN §3).
pub const CHUNKS_PREFIX: &str = "/api/v1/chunks";
/// The path prefix of the tus endpoint, served by the workers (DESIGN §3 step 7).
pub const TUS_PREFIX: &str = "/api/v1/tus";

/// `{name}`: one origin for browsers and tus clients; `/api/v1/chunks` and `/api/v1/tus` go
/// to the workers, everything else to the gateway. `None` when the spec disables it.
#[must_use]
pub fn ingress(cluster: &LfusysCluster) -> Option<Ingress> {
    let spec = &cluster.spec.ingress;
    if !spec.enabled {
        return None;
    }
    let path = |prefix: &str, component: Component| HTTPIngressPath {
        path: Some(prefix.into()),
        path_type: "Prefix".into(),
        backend: IngressBackend {
            service: Some(IngressServiceBackend {
                name: component.object_name(cluster),
                port: Some(ServiceBackendPort {
                    name: Some(component.port_name().into()),
                    number: None,
                }),
            }),
            resource: None,
        },
    };
    let mut meta = child_meta(cluster, cluster.name_any(), None);
    // Chunks are up to the configured chunk size and a tus PATCH may carry a whole file; a
    // proxy default of 1 MiB would refuse them.
    meta.annotations = Some(
        [
            ("nginx.ingress.kubernetes.io/proxy-body-size", "0"),
            ("nginx.ingress.kubernetes.io/proxy-request-buffering", "off"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    Some(Ingress {
        metadata: meta,
        spec: Some(IngressSpec {
            ingress_class_name: spec.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: spec.host.clone(),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![
                        path(CHUNKS_PREFIX, Component::Uploads),
                        path(TUS_PREFIX, Component::Uploads),
                        path("/", Component::Gateway),
                    ],
                }),
            }]),
            tls: spec.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: spec.host.clone().map(|h| vec![h]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{cluster, minimal};
    use super::*;

    fn storage() -> serde_json::Value {
        serde_json::json!({
            "s3": {"bucket": "b"}, "dynamodb": {"tablePrefix": "p"}, "sqs": {"queueName": "q"}
        })
    }

    #[test]
    fn chunks_and_tus_go_to_the_workers_and_the_rest_to_the_gateway() {
        let ing = ingress(&minimal()).unwrap();
        assert_eq!(ing.metadata.name.as_deref(), Some("files"));
        let spec = ing.spec.unwrap();
        let rules = spec.rules.unwrap();
        let paths = &rules[0].http.as_ref().unwrap().paths;
        let routes: Vec<(&str, &str)> = paths
            .iter()
            .map(|p| {
                (
                    p.path.as_deref().unwrap(),
                    p.backend.service.as_ref().unwrap().name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                ("/api/v1/chunks", "files-uploads"),
                ("/api/v1/tus", "files-uploads"),
                ("/", "files-gateway")
            ]
        );
        assert!(spec.tls.is_none());
    }

    #[test]
    fn host_class_and_tls() {
        let c = cluster(serde_json::json!({
            "storage": storage(),
            "ingress": {"host": "files.example.com", "className": "nginx", "tlsSecretName": "tls"}
        }));
        let spec = ingress(&c).unwrap().spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(
            spec.rules.unwrap()[0].host.as_deref(),
            Some("files.example.com")
        );
        let tls = &spec.tls.unwrap()[0];
        assert_eq!(tls.secret_name.as_deref(), Some("tls"));
        assert_eq!(tls.hosts.as_ref().unwrap(), &["files.example.com"]);
    }

    #[test]
    fn disabled_means_none() {
        let c = cluster(serde_json::json!({"storage": storage(), "ingress": {"enabled": false}}));
        assert!(ingress(&c).is_none());
    }
}
