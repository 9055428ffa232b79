//! The whole pipeline against a mocked API server (`tower-test`, as kube's `controller-rs`
//! example does): each scenario lists, in order, the requests one reconcile must make, asserts
//! each one's method, path, query and body, and answers it. A request the scenario does not
//! expect fails the test, and so does one it expects but does not get.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crds::{LfusysCluster, LfusysClusterStatus};
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use serde::Serialize;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle, SendResponse};

use super::{reconcile, reporter, Context, Error};
use crate::build::{self, fixtures, Children, Inputs, PRIVATE_KEY_ITEM, PUBLIC_KEY_ITEM};
use crate::queue::{QueueDepth, QueueLocation};

const WAIT: Duration = Duration::from_secs(10);
const CORE: &str = "/api/v1/namespaces/media";
const APPS: &str = "/apis/apps/v1/namespaces/media";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/media/events";
const STATUS: &str = "/apis/lfusys.io/v1alpha1/namespaces/media/lfusysclusters/files/status";
/// The resourceVersion the mock gives the generated signing key Secret.
const KEY_VERSION: &str = "101";

/// A queue of a fixed depth that counts its polls.
struct FakeQueue {
    depth: Result<u64, String>,
    polls: AtomicUsize,
}

#[async_trait]
impl QueueDepth for FakeQueue {
    async fn depth(&self, _queue: &QueueLocation) -> Result<u64, String> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.depth.clone()
    }
}

impl FakeQueue {
    fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
}

/// The mocked API server: the other end of the reconciler's client.
struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// One request received, to assert and answer.
struct Call {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    content_type: Option<String>,
    body: Value,
    reply: SendResponse<Response<Body>>,
}

impl ApiServer {
    /// The next request, which must be `method path`.
    async fn expect(&mut self, method: Method, path: &str) -> Call {
        let Ok(next) = tokio::time::timeout(WAIT, self.0.next_request()).await else {
            panic!("no request came; expected {method} {path}");
        };
        let (request, reply) = next.unwrap_or_else(|| panic!("expected {method} {path}"));
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let call = Call {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query: parts
                .uri
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned()),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            },
            reply,
        };
        assert_eq!(
            (&call.method, call.path.as_str()),
            (&method, path),
            "unexpected request (query {:?})",
            call.query
        );
        call
    }

    /// The reconciler made no other request: its client is gone without another call.
    async fn no_more(mut self) {
        let next = tokio::time::timeout(WAIT, self.0.next_request())
            .await
            .expect("the reconciler's client is still alive");
        if let Some((request, _)) = next {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }

    /// A server-side apply of `object` under the operator's field manager, answered with it.
    async fn expect_apply(&mut self, path: &str, object: &impl Serialize) -> Value {
        let call = self.expect(Method::PATCH, path).await;
        assert_eq!(
            call.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{path}"
        );
        assert_eq!(call.query["fieldManager"], build::FIELD_MANAGER, "{path}");
        assert_eq!(call.query["force"], "true", "{path}");
        assert_eq!(call.body, serde_json::to_value(object).unwrap(), "{path}");
        let applied = call.body.clone();
        call.ok(&applied);
        applied
    }

    /// Every child of `children`, applied in order. Returns the applied workers' Deployment.
    async fn expect_children(&mut self, children: &Children) -> Value {
        let name = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            meta.name.clone().unwrap()
        };
        let sa = &children.service_account;
        self.expect_apply(
            &format!("{CORE}/serviceaccounts/{}", name(&sa.metadata)),
            sa,
        )
        .await;
        let cm = &children.config_map;
        self.expect_apply(&format!("{CORE}/configmaps/{}", name(&cm.metadata)), cm)
            .await;
        let mut workers = Value::Null;
        for c in &children.components {
            let n = name(&c.deployment.metadata);
            self.expect_apply(&format!("{CORE}/services/{n}"), &c.service)
                .await;
            let pdb = format!("/apis/policy/v1/namespaces/media/poddisruptionbudgets/{n}");
            self.expect_apply(&pdb, &c.pod_disruption_budget).await;
            workers = self
                .expect_apply(&format!("{APPS}/deployments/{n}"), &c.deployment)
                .await;
        }
        let ingress = children.ingress.as_ref().unwrap();
        let path = "/apis/networking.k8s.io/v1/namespaces/media/ingresses/files";
        self.expect_apply(path, ingress).await;
        workers
    }

    /// An Event about the cluster; returns its body.
    async fn expect_event(&mut self, type_: &str, reason: &str) -> Value {
        let call = self.expect(Method::POST, EVENTS).await;
        let event = call.body.clone();
        assert_eq!(event["type"], type_, "{event}");
        assert_eq!(event["reason"], reason, "{event}");
        assert_eq!(event["regarding"]["kind"], "LfusysCluster", "{event}");
        assert_eq!(event["regarding"]["name"], "files", "{event}");
        call.respond(StatusCode::CREATED, &event);
        event
    }

    /// The status patch; returns the status written.
    async fn expect_status(&mut self, cluster: &LfusysCluster) -> LfusysClusterStatus {
        let call = self.expect(Method::PATCH, STATUS).await;
        assert_eq!(
            call.content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        let status: LfusysClusterStatus =
            serde_json::from_value(call.body["status"].clone()).unwrap();
        let mut stored = cluster.clone();
        stored.status = Some(status.clone());
        call.ok(&stored);
        status
    }
}

impl Call {
    fn respond(self, status: StatusCode, body: &impl Serialize) {
        let body = serde_json::to_vec(body).unwrap();
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        self.reply.send_response(response);
    }

    fn ok(self, body: &impl Serialize) {
        self.respond(StatusCode::OK, body);
    }

    /// A failure as the API server reports it: a `Status` object.
    fn fail(self, code: StatusCode, reason: &str) {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("mocked {reason}"), "reason": reason, "code": code.as_u16(),
        });
        self.respond(code, &status);
    }

    fn not_found(self) {
        self.fail(StatusCode::NOT_FOUND, "NotFound");
    }
}

/// A reconciler context on a mocked API server and a queue of `depth` messages.
fn setup(depth: Result<u64, String>) -> (Arc<Context>, Arc<FakeQueue>, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let queue = Arc::new(FakeQueue {
        depth,
        polls: AtomicUsize::new(0),
    });
    let client = Client::new(service, "default");
    let ctx = Arc::new(Context::new(client, queue.clone(), reporter("test")));
    (ctx, queue, ApiServer(handle))
}

/// Runs one reconcile of `cluster` while `scenario` plays the API server; returns the result
/// and the server for what comes next. A failed assertion of the scenario fails the test, and
/// so does a request the reconcile makes after the scenario's last one.
async fn run<F, Fut>(
    cluster: &LfusysCluster,
    ctx: &Arc<Context>,
    server: ApiServer,
    scenario: F,
) -> (Result<Action, Error>, ApiServer)
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: std::future::Future<Output = ApiServer> + Send + 'static,
{
    let scenario = tokio::spawn(scenario(server));
    let reconciling = tokio::spawn(reconcile(Arc::new(cluster.clone()), ctx.clone()));
    let Ok(played) = tokio::time::timeout(WAIT, scenario).await else {
        panic!("the scenario did not finish");
    };
    let mut server = played.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let finished = async {
        tokio::select! {
            result = reconciling => result.unwrap(),
            Some((request, _)) = server.0.next_request() => {
                panic!("unexpected request {} {}", request.method(), request.uri())
            }
        }
    };
    let result = tokio::time::timeout(WAIT, finished)
        .await
        .expect("the reconcile did not finish");
    (result, server)
}

fn secret(name: &str, version: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = Secret {
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some("media".into());
    s.metadata.resource_version = Some(version.into());
    s
}

fn signing_key_secret() -> Secret {
    secret(
        "files-signing-key",
        KEY_VERSION,
        &[(PRIVATE_KEY_ITEM, "PRIV"), (PUBLIC_KEY_ITEM, "PUB")],
    )
}

/// The children a reconcile of `cluster` must apply.
fn children(cluster: &LfusysCluster, versions: &[&str], workers: i32) -> Children {
    let versions: Vec<String> = versions.iter().map(|v| (*v).to_owned()).collect();
    let inputs = Inputs::new(cluster, "files-signing-key", &versions, workers);
    build::children(cluster, &inputs)
}

fn condition<'a>(
    status: &'a LfusysClusterStatus,
    type_: &str,
) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

fn poll_interval() -> Action {
    Action::requeue(Duration::from_secs(15))
}

/// The first reconcile of a new cluster, as the API server sees it; returns the status written
/// and the workers' Deployment applied.
async fn first_reconcile(mut server: ApiServer, cluster: &LfusysCluster) -> (ApiServer, Value) {
    // Dereference reads the generated key Secret: none yet.
    server
        .expect(Method::GET, &format!("{CORE}/secrets/files-signing-key"))
        .await
        .not_found();
    // Scale reads the workers' count: no Deployment yet.
    server
        .expect(Method::GET, &format!("{APPS}/deployments/files-uploads"))
        .await
        .not_found();
    // Apply creates the key Secret once, owned by the cluster.
    let call = server
        .expect(Method::POST, &format!("{CORE}/secrets"))
        .await;
    assert_eq!(call.query["fieldManager"], build::FIELD_MANAGER);
    let mut created: Secret = serde_json::from_value(call.body.clone()).unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("files-signing-key"));
    assert_eq!(
        created.metadata.owner_references.as_ref().unwrap()[0].name,
        "files"
    );
    let data = created.string_data.as_ref().unwrap();
    assert!(data[PRIVATE_KEY_ITEM].contains("BEGIN PRIVATE KEY"));
    assert!(data[PUBLIC_KEY_ITEM].contains("BEGIN PUBLIC KEY"));
    created.metadata.resource_version = Some(KEY_VERSION.into());
    call.respond(StatusCode::CREATED, &created);
    let event = server.expect_event("Normal", "SigningKeyCreated").await;
    assert_eq!(
        event["note"],
        "generated the token signing key pair in Secret files-signing-key"
    );
    // Every child, the key's version in the pods' config hash; the pool at its minimum.
    let workers = server
        .expect_children(&children(cluster, &[KEY_VERSION], 1))
        .await;
    // Status: the workers' readiness, then the status (no pod is available yet).
    server
        .expect(Method::GET, &format!("{APPS}/deployments/files-uploads"))
        .await
        .ok(&workers);
    let status = server.expect_status(cluster).await;
    assert_eq!(status.observed_generation, Some(3));
    let uploads = status.uploads.clone().unwrap();
    assert_eq!(
        (
            uploads.replicas,
            uploads.desired_replicas,
            uploads.queue_depth
        ),
        (0, 1, Some(0))
    );
    assert_eq!(uploads.last_scale_time, None);
    let available = condition(&status, crds::condition::AVAILABLE);
    assert_eq!(
        (available.status.as_str(), available.reason.as_str()),
        ("False", "PodsUnavailable")
    );
    let degraded = condition(&status, crds::condition::DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("False", "AsExpected")
    );
    let scaling = condition(&status, crds::condition::SCALING_ACTIVE);
    assert_eq!(
        (scaling.status.as_str(), scaling.reason.as_str()),
        ("True", "QueueDepthRead")
    );
    (server, json!({"status": status, "workers": workers}))
}

#[tokio::test]
async fn a_new_cluster_gets_its_key_every_child_and_a_status() {
    let (ctx, queue, server) = setup(Ok(0));
    let cluster = fixtures::minimal();
    let scenario_cluster = cluster.clone();
    let (result, server) = run(&cluster, &ctx, server, |server| async move {
        first_reconcile(server, &scenario_cluster).await.0
    })
    .await;
    assert_eq!(result.unwrap(), poll_interval());
    assert_eq!(queue.polls(), 1);
    drop(ctx);
    server.no_more().await;
}

#[tokio::test]
async fn an_unchanged_cluster_is_applied_again_without_a_status_write() {
    let (ctx, queue, server) = setup(Ok(0));
    let mut cluster = fixtures::minimal();
    let scenario_cluster = cluster.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (result, server) = run(&cluster, &ctx, server, |server| async move {
        let (server, written) = first_reconcile(server, &scenario_cluster).await;
        tx.send(written).unwrap();
        server
    })
    .await;
    result.unwrap();
    let written = rx.await.unwrap();
    cluster.status = Some(serde_json::from_value(written["status"].clone()).unwrap());
    let workers = written["workers"].clone();

    let scenario_cluster = cluster.clone();
    let (result, server) = run(&cluster, &ctx, server, |mut server| async move {
        server
            .expect(Method::GET, &format!("{CORE}/secrets/files-signing-key"))
            .await
            .ok(&signing_key_secret());
        server
            .expect(Method::GET, &format!("{APPS}/deployments/files-uploads"))
            .await
            .ok(&workers);
        // The same children as the first time, config hash included: no second rollout.
        server
            .expect_children(&children(&scenario_cluster, &[KEY_VERSION], 1))
            .await;
        server
            .expect(Method::GET, &format!("{APPS}/deployments/files-uploads"))
            .await
            .ok(&workers);
        // No Secret created, no Event, no status write.
        server
    })
    .await;
    assert_eq!(result.unwrap(), poll_interval());
    assert_eq!(queue.polls(), 2);
    drop(ctx);
    server.no_more().await;
}

#[tokio::test]
async fn a_broken_credentials_secret_is_reported_and_the_children_are_applied_all_the_same() {
    let (ctx, queue, server) = setup(Ok(0));
    let cluster = fixtures::cluster(json!({
        "storage": {
            "s3": {"bucket": "uploads", "region": "eu-west-1"},
            "dynamodb": {"tablePrefix": "files-"},
            "sqs": {"queueName": "files-assembly"},
            "credentialsSecretRef": {"name": "aws-creds"}
        }
    }));
    let scenario_cluster = cluster.clone();
    let (result, server) = run(&cluster, &ctx, server, |mut server| async move {
        let cluster = scenario_cluster;
        server
            .expect(Method::GET, &format!("{CORE}/secrets/aws-creds"))
            .await
            .ok(&secret("aws-creds", "7", &[("AWS_ACCESS_KEY_ID", "AKID")]));
        server
            .expect(Method::GET, &format!("{CORE}/secrets/files-signing-key"))
            .await
            .ok(&signing_key_secret());
        server
            .expect(Method::GET, &format!("{APPS}/deployments/files-uploads"))
            .await
            .not_found();
        // Not an error of the reconcile: every child is applied (DESIGN §5).
        let workers = server
            .expect_children(&children(&cluster, &["7", KEY_VERSION], 1))
            .await;
        server
            .expect(Method::GET, &format!("{APPS}/deployments/files-uploads"))
            .await
            .ok(&workers);
        let event = server
            .expect_event("Warning", "CredentialsSecretInvalid")
            .await;
        assert!(
            event["note"].as_str().unwrap().contains("aws-creds"),
            "{event}"
        );
        let status = server.expect_status(&cluster).await;
        let degraded = condition(&status, crds::condition::DEGRADED);
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "CredentialsSecretInvalid");
        assert_eq!(
            degraded.message,
            "Secret aws-creds needs the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; \
             the queue is not polled until the credentials Secret is usable"
        );
        let scaling = condition(&status, crds::condition::SCALING_ACTIVE);
        assert_eq!(
            (scaling.status.as_str(), scaling.reason.as_str()),
            ("False", "QueueUnreachable")
        );
        assert_eq!(status.uploads.unwrap().queue_depth, None);
        server
    })
    .await;
    assert_eq!(result.unwrap(), poll_interval());
    assert_eq!(
        queue.polls(),
        0,
        "the queue was polled without usable credentials"
    );
    drop(ctx);
    server.no_more().await;
}

#[tokio::test]
async fn an_api_error_in_apply_fails_the_apply_step() {
    let (ctx, _queue, server) = setup(Ok(0));
    let cluster = fixtures::minimal();
    let (result, server) = run(&cluster, &ctx, server, |mut server| async move {
        server
            .expect(Method::GET, &format!("{CORE}/secrets/files-signing-key"))
            .await
            .ok(&signing_key_secret());
        server
            .expect(Method::GET, &format!("{APPS}/deployments/files-uploads"))
            .await
            .not_found();
        server
            .expect(Method::PATCH, &format!("{CORE}/serviceaccounts/files"))
            .await
            .fail(StatusCode::FORBIDDEN, "Forbidden");
        // Nothing after the failed call: no other child, no status.
        server
    })
    .await;
    let err = result.unwrap_err();
    assert_eq!(err.step(), "apply");
    assert!(
        err.to_string()
            .starts_with("applying ServiceAccount files: ApiError: mocked Forbidden"),
        "{err}"
    );
    match &err {
        Error::Apply {
            what,
            source: kube::Error::Api(status),
        } => {
            assert_eq!(what, "applying ServiceAccount files");
            assert_eq!(status.code, 403);
        }
        other => panic!("not the apply step's error: {other:?}"),
    }
    assert!(std::error::Error::source(&err).is_some());
    drop(ctx);
    server.no_more().await;
}

#[tokio::test]
async fn a_failed_secret_read_fails_the_dereference_step() {
    let (ctx, queue, server) = setup(Ok(0));
    let cluster = fixtures::minimal();
    let (result, server) = run(&cluster, &ctx, server, |mut server| async move {
        server
            .expect(Method::GET, &format!("{CORE}/secrets/files-signing-key"))
            .await
            .fail(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
        server
    })
    .await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, Error::Dereference { what, .. } if what == "reading Secret files-signing-key"),
        "{err:?}"
    );
    assert_eq!(queue.polls(), 0);
    drop(ctx);
    server.no_more().await;
}

#[tokio::test]
async fn a_deeper_queue_scales_the_workers_up_with_an_event() {
    let (ctx, _queue, server) = setup(Ok(12));
    let cluster = fixtures::minimal();
    let scenario_cluster = cluster.clone();
    let (result, server) = run(&cluster, &ctx, server, |mut server| async move {
        let cluster = scenario_cluster;
        server
            .expect(Method::GET, &format!("{CORE}/secrets/files-signing-key"))
            .await
            .ok(&signing_key_secret());
        let one_worker = serde_json::to_value(build::deployment(
            &cluster,
            build::Component::Uploads,
            &fixtures::inputs(),
        ))
        .map(|mut d| {
            d["spec"]["replicas"] = json!(1);
            d
        })
        .unwrap();
        server
            .expect(Method::GET, &format!("{APPS}/deployments/files-uploads"))
            .await
            .ok(&one_worker);
        // ceil(12 / 5) = 3 workers, at once.
        let workers = server
            .expect_children(&children(&cluster, &[KEY_VERSION], 3))
            .await;
        let event = server.expect_event("Normal", "ScaledUp").await;
        assert_eq!(
            event["note"],
            "scaled upload workers up from 1 to 3 (queue depth 12)"
        );
        server
            .expect(Method::GET, &format!("{APPS}/deployments/files-uploads"))
            .await
            .ok(&workers);
        let status = server.expect_status(&cluster).await;
        let uploads = status.uploads.unwrap();
        assert_eq!(
            (uploads.desired_replicas, uploads.queue_depth),
            (3, Some(12))
        );
        assert!(uploads.last_scale_time.is_some());
        server
    })
    .await;
    assert_eq!(result.unwrap(), poll_interval());
    drop(ctx);
    server.no_more().await;
}

#[tokio::test]
async fn a_disabled_ingress_is_deleted_when_the_cluster_owns_it() {
    let (ctx, _queue, server) = setup(Ok(0));
    let cluster = fixtures::cluster(json!({
        "storage": {
            "s3": {"bucket": "uploads", "region": "eu-west-1"},
            "dynamodb": {"tablePrefix": "files-"},
            "sqs": {"queueName": "files-assembly"}
        },
        "ingress": {"enabled": false}
    }));
    let scenario_cluster = cluster.clone();
    let (result, server) = run(&cluster, &ctx, server, |mut server| async move {
        let cluster = scenario_cluster;
        server
            .expect(Method::GET, &format!("{CORE}/secrets/files-signing-key"))
            .await
            .ok(&signing_key_secret());
        server
            .expect(Method::GET, &format!("{APPS}/deployments/files-uploads"))
            .await
            .not_found();
        let expected = children(&cluster, &[KEY_VERSION], 1);
        assert!(expected.ingress.is_none());
        server
            .expect_apply(
                &format!("{CORE}/serviceaccounts/files"),
                &expected.service_account,
            )
            .await;
        server
            .expect_apply(
                &format!("{CORE}/configmaps/files-config"),
                &expected.config_map,
            )
            .await;
        for c in &expected.components {
            let n = c.deployment.metadata.name.clone().unwrap();
            server
                .expect_apply(&format!("{CORE}/services/{n}"), &c.service)
                .await;
            server
                .expect_apply(
                    &format!("/apis/policy/v1/namespaces/media/poddisruptionbudgets/{n}"),
                    &c.pod_disruption_budget,
                )
                .await;
            server
                .expect_apply(&format!("{APPS}/deployments/{n}"), &c.deployment)
                .await;
        }
        // The Ingress of an earlier spec, owned by this cluster: deleted.
        let path = "/apis/networking.k8s.io/v1/namespaces/media/ingresses/files";
        let mut enabled = cluster.clone();
        enabled.spec.ingress.enabled = true;
        let owned = build::ingress(&enabled).unwrap();
        server.expect(Method::GET, path).await.ok(&owned);
        server
            .expect(Method::DELETE, path)
            .await
            .ok(&json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}));
        server
            .expect(Method::GET, &format!("{APPS}/deployments/files-uploads"))
            .await
            .not_found();
        server.expect_status(&cluster).await;
        server
    })
    .await;
    assert_eq!(result.unwrap(), poll_interval());
    drop(ctx);
    server.no_more().await;
}
