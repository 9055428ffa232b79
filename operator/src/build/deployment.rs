use std::collections::BTreeMap;

use crds::{ComponentSpec, LfusysCluster};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretEnvSource, SecretVolumeSource, SecurityContext, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::config_map::{config_map_name, DATA_DIR, KEYS_DIR};
use super::{child_meta, labels, selector_labels, Component, Inputs, CONFIG_HASH_ANNOTATION};

/// The images run as this non-root user (distroless `nonroot`).
const RUN_AS: i64 = 65_532;

/// Seconds a stopping Pod goes on serving before it is sent SIGTERM. A Pod leaves its
/// Services' endpoints when it starts terminating, but the Ingress controller and kube-proxy
/// learn it a moment later: a process that stopped accepting at once would have the requests
/// routed to it meanwhile refused (a 502 from the Ingress during every rolling update).
pub const DRAIN_SECONDS: i64 = 5;

/// Seconds from the start of termination to SIGKILL: the drain, then time for a worker to
/// finish the chunks it is streaming.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;

/// `{name}-{component}`: the component's pods. The workers' replica count comes from the
/// autoscaler, the others' from the spec.
#[must_use]
pub fn deployment(cluster: &LfusysCluster, component: Component, inputs: &Inputs) -> Deployment {
    let spec = &cluster.spec;
    let (replicas, resources) = match component {
        Component::Gateway => component_settings(&spec.gateway),
        Component::Sessions => component_settings(&spec.sessions),
        Component::Uploads => (inputs.uploads_replicas, spec.uploads.resources.clone()),
    };
    let pod_labels = labels(cluster, Some(component));
    Deployment {
        metadata: child_meta(cluster, component.object_name(cluster), Some(component)),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(cluster, Some(component))),
                match_expressions: None,
            },
            // Never below the current capacity while rolling: uploads in flight keep a worker.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        inputs.config_hash.clone(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(cluster, component, inputs, resources)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn component_settings(c: &ComponentSpec) -> (i32, Option<ResourceRequirements>) {
    (c.replicas, c.resources.clone())
}

fn pod_spec(
    cluster: &LfusysCluster,
    component: Component,
    inputs: &Inputs,
    resources: Option<ResourceRequirements>,
) -> PodSpec {
    let image = &cluster.spec.image;
    let listen_var = match component {
        Component::Gateway => "LFUSYS_GATEWAY_LISTEN",
        Component::Sessions => "LFUSYS_SESSIONS_LISTEN",
        Component::Uploads => "LFUSYS_UPLOADS_LISTEN",
    };
    let (mounts, volumes) = volumes(component, inputs);
    PodSpec {
        service_account_name: Some(cluster.name_any()),
        automount_service_account_token: Some(false),
        security_context: Some(pod_security_context()),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        containers: vec![Container {
            name: component.as_str().into(),
            image: Some(image.reference()),
            image_pull_policy: Some(image.pull_policy.as_str().into()),
            command: Some(vec![format!("/usr/local/bin/{}", component.as_str())]),
            env_from: Some(env_from(cluster)),
            env: Some(vec![EnvVar {
                name: listen_var.into(),
                value: Some(format!("0.0.0.0:{}", component.port())),
                value_from: None,
            }]),
            ports: Some(vec![ContainerPort {
                name: Some(component.port_name().into()),
                container_port: component.port(),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            }]),
            // The kubelet's own sleep: the distroless images have no shell to run one.
            lifecycle: Some(Lifecycle {
                pre_stop: Some(LifecycleHandler {
                    sleep: Some(SleepAction {
                        seconds: DRAIN_SECONDS,
                    }),
                    ..LifecycleHandler::default()
                }),
                ..Lifecycle::default()
            }),
            readiness_probe: Some(probe(component, "/readyz", 5)),
            liveness_probe: Some(probe(component, "/healthz", 10)),
            resources,
            security_context: Some(container_security_context()),
            volume_mounts: Some(mounts),
            ..Container::default()
        }],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

/// The services' settings: the ConfigMap, and the credentials Secret when the spec names one.
fn env_from(cluster: &LfusysCluster) -> Vec<EnvFromSource> {
    let mut env_from = vec![EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: config_map_name(cluster),
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    }];
    if let Some(creds) = &cluster.spec.storage.credentials_secret_ref {
        env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: creds.name.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        });
    }
    env_from
}

/// The container's mounts and the pod's volumes: scratch space, and the signing key items the
/// component needs.
fn volumes(component: Component, inputs: &Inputs) -> (Vec<VolumeMount>, Vec<Volume>) {
    let mut mounts = vec![VolumeMount {
        name: "data".into(),
        mount_path: DATA_DIR.into(),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "data".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    // The gateway signs tokens (private + public key); workers only verify (public key only).
    let key_items = match component {
        Component::Gateway => Some(vec![super::PRIVATE_KEY_ITEM, super::PUBLIC_KEY_ITEM]),
        Component::Uploads => Some(vec![super::PUBLIC_KEY_ITEM]),
        Component::Sessions => None,
    };
    if let Some(items) = key_items {
        mounts.push(VolumeMount {
            name: "signing-key".into(),
            mount_path: KEYS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "signing-key".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(inputs.signing_key_secret.clone()),
                items: Some(
                    items
                        .into_iter()
                        .map(|k| KeyToPath {
                            key: k.into(),
                            path: k.into(),
                            mode: None,
                        })
                        .collect(),
                ),
                default_mode: Some(0o440),
                optional: Some(false),
            }),
            ..Volume::default()
        });
    }
    (mounts, volumes)
}

fn probe(component: Component, path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(component.port_name().into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

fn container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{cluster, inputs, minimal};
    use super::*;

    fn container(d: &Deployment) -> &Container {
        &d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
    }

    #[test]
    fn replicas_come_from_the_spec_and_the_autoscaler() {
        let c = minimal();
        let i = inputs();
        let replicas = |component| {
            deployment(&c, component, &i)
                .spec
                .unwrap()
                .replicas
                .unwrap()
        };
        assert_eq!(replicas(Component::Gateway), 2);
        assert_eq!(replicas(Component::Sessions), 1);
        assert_eq!(replicas(Component::Uploads), 4);
    }

    #[test]
    fn pods_run_the_component_binary_hardened() {
        let c = minimal();
        let d = deployment(&c, Component::Uploads, &inputs());
        assert_eq!(d.metadata.name.as_deref(), Some("files-uploads"));
        let ctr = container(&d);
        assert_eq!(
            ctr.image.as_deref(),
            Some(c.spec.image.reference().as_str())
        );
        assert_eq!(ctr.command.as_ref().unwrap(), &["/usr/local/bin/uploads"]);
        let sc = ctr.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
            &["ALL"]
        );
        assert_eq!(
            ctr.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
        let env = ctr.env.as_ref().unwrap();
        assert_eq!(env[0].name, "LFUSYS_UPLOADS_LISTEN");
        assert_eq!(env[0].value.as_deref(), Some("0.0.0.0:8081"));
        let template = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
        assert_eq!(
            template.annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION],
            "abc123"
        );
        assert_eq!(
            template.labels.as_ref().unwrap()["app.kubernetes.io/component"],
            "uploads"
        );
    }

    #[test]
    fn pods_drain_before_they_stop() {
        let c = minimal();
        for component in [Component::Gateway, Component::Sessions, Component::Uploads] {
            let d = deployment(&c, component, &inputs());
            let pre_stop = container(&d)
                .lifecycle
                .as_ref()
                .and_then(|l| l.pre_stop.as_ref())
                .and_then(|h| h.sleep.as_ref())
                .map(|s| s.seconds);
            assert_eq!(pre_stop, Some(DRAIN_SECONDS), "{component:?}");
            let grace = d
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .termination_grace_period_seconds
                .unwrap();
            assert!(
                grace > DRAIN_SECONDS,
                "{component:?}: the drain fits the grace period"
            );
        }
    }

    #[test]
    fn only_the_gateway_mounts_the_private_key() {
        let c = minimal();
        let items = |component| {
            let d = deployment(&c, component, &inputs());
            let pod = d.spec.unwrap().template.spec.unwrap();
            pod.volumes
                .unwrap()
                .into_iter()
                .find(|v| v.name == "signing-key")
                .map(|v| {
                    let s = v.secret.unwrap();
                    assert_eq!(s.secret_name.as_deref(), Some("files-signing-key"));
                    s.items
                        .unwrap()
                        .into_iter()
                        .map(|i| i.key)
                        .collect::<Vec<_>>()
                })
        };
        assert_eq!(
            items(Component::Gateway).unwrap(),
            ["signing-key.pem", "signing-key.pub.pem"]
        );
        assert_eq!(items(Component::Uploads).unwrap(), ["signing-key.pub.pem"]);
        assert_eq!(items(Component::Sessions), None);
    }

    #[test]
    fn credentials_and_resources_from_the_spec() {
        let c = cluster(serde_json::json!({
            "image": {"repository": "registry.local/lfusys", "tag": "9.9.9", "pullPolicy": "Always"},
            "gateway": {"replicas": 3, "resources": {"limits": {"memory": "256Mi"}}},
            "storage": {
                "s3": {"bucket": "b"}, "dynamodb": {"tablePrefix": "p"}, "sqs": {"queueName": "q"},
                "credentialsSecretRef": {"name": "aws-creds"}
            }
        }));
        let d = deployment(&c, Component::Gateway, &inputs());
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
        let ctr = container(&d);
        assert_eq!(ctr.image.as_deref(), Some("registry.local/lfusys:9.9.9"));
        assert_eq!(ctr.image_pull_policy.as_deref(), Some("Always"));
        let env_from = ctr.env_from.as_ref().unwrap();
        assert_eq!(
            env_from[0].config_map_ref.as_ref().unwrap().name,
            "files-config"
        );
        assert_eq!(env_from[1].secret_ref.as_ref().unwrap().name, "aws-creds");
        let limits = ctr.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["memory"].0, "256Mi");
    }
}
