use crds::LfusysCluster;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_meta, selector_labels, Component};

/// `{name}-{component}`: a ClusterIP Service in front of the component's pods.
#[must_use]
pub fn service(cluster: &LfusysCluster, component: Component) -> Service {
    Service {
        metadata: child_meta(cluster, component.object_name(cluster), Some(component)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(cluster, Some(component))),
            ports: Some(vec![ServicePort {
                name: Some(component.port_name().into()),
                port: component.port(),
                target_port: Some(IntOrString::String(component.port_name().into())),
                protocol: Some("TCP".into()),
                app_protocol: (component == Component::Sessions)
                    .then(|| "kubernetes.io/h2c".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::minimal;
    use super::*;

    #[test]
    fn each_component_gets_its_port_and_selector() {
        let c = minimal();
        for (component, port) in [
            (Component::Gateway, 8080),
            (Component::Sessions, 50051),
            (Component::Uploads, 8081),
        ] {
            let s = service(&c, component);
            assert_eq!(
                s.metadata.name.as_deref(),
                Some(format!("files-{}", component.as_str()).as_str())
            );
            let spec = s.spec.unwrap();
            assert_eq!(spec.ports.as_ref().unwrap()[0].port, port);
            assert_eq!(
                spec.selector.unwrap()["app.kubernetes.io/component"],
                component.as_str()
            );
        }
    }
}
