use crds::LfusysCluster;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_meta, selector_labels, Component};

/// `{name}-{component}`: voluntary evictions (node drains) take one pod of a component at a
/// time, so a drain never takes the whole gateway or worker pool down at once.
#[must_use]
pub fn pod_disruption_budget(cluster: &LfusysCluster, component: Component) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: child_meta(cluster, component.object_name(cluster), Some(component)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cluster, Some(component))),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::minimal;
    use super::*;

    #[test]
    fn one_pod_at_a_time() {
        let pdb = pod_disruption_budget(&minimal(), Component::Uploads);
        assert_eq!(pdb.metadata.name.as_deref(), Some("files-uploads"));
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            spec.selector.unwrap().match_labels.unwrap()["app.kubernetes.io/component"],
            "uploads"
        );
    }
}
