//! The end-to-end environment of the operator: a real control plane (`scripts/k8s-cluster.sh`)
//! with the Helm chart installed, moto's SQS (`scripts/aws-servers.sh`), and the real
//! `lfusys-operator` binary as a host process authenticated as the chart's ServiceAccount.
//! Shared by `tests/e2e.rs` and `benches/k8s.rs`; `scripts/test-k8s.sh` and
//! `scripts/bench-k8s.sh` start the servers and set the environment:
//! - `KUBECONFIG`: an admin kubeconfig of the control plane (the tests act as its user);
//! - `PATH` with `kubectl` and `helm`;
//! - `LFUSYS_TEST_MOTO_SQS_URL`: moto's SQS endpoint;
//! - `LFUSYS_E2E_DIR` (optional): where operator logs and the ServiceAccount kubeconfig go.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod deployed;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use crds::LfusysCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStatus, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::{Client, Resource};
use serde_json::{json, Value};

pub const OPERATOR_BIN: &str = env!("CARGO_BIN_EXE_lfusys-operator");
/// The Helm release every test shares, and its namespace.
pub const RELEASE: &str = "lfusys";
pub const RELEASE_NAMESPACE: &str = "lfusys-e2e";
/// Name of the credentials Secret each test namespace gets (moto's dummy keys).
pub const CREDENTIALS_SECRET: &str = "aws-credentials";
/// moto accepts any key; these are the ones scripts/aws-servers.sh hands out.
pub const MOTO_KEY: &str = "testing";

/// Prints a line of the suite's own timeline (run with `--nocapture` to see it).
pub fn note(test: &str, what: impl std::fmt::Display) {
    println!("[e2e {test}] {what}");
}

// --- the environment ------------------------------------------------------------------------

pub struct Env {
    pub sqs_url: String,
    pub chart: PathBuf,
    pub dir: PathBuf,
}

impl Env {
    pub fn get() -> &'static Env {
        static ENV: OnceLock<Env> = OnceLock::new();
        ENV.get_or_init(|| {
            let need = |var: &str| {
                std::env::var(var).unwrap_or_else(|_| {
                    panic!("{var} is not set: run the suite with scripts/test-k8s.sh (or bench-k8s.sh)")
                })
            };
            need("KUBECONFIG");
            let sqs_url = need("LFUSYS_TEST_MOTO_SQS_URL");
            let dir = std::env::var_os("LFUSYS_E2E_DIR").map_or_else(
                || std::env::temp_dir().join(format!("lfusys-e2e-{}", std::process::id())),
                PathBuf::from,
            );
            std::fs::create_dir_all(&dir).unwrap();
            Env {
                sqs_url,
                chart: Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/lfusys-operator"),
                dir,
            }
        })
    }
}

/// Runs `program args` with `stdin`, returning its output (never panics on a failed exit).
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it on PATH?): {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// `kubectl args`, which must succeed; its stdout.
pub fn kubectl(args: &[&str]) -> String {
    checked("kubectl", args, None)
}

/// `kubectl apply -f -` of `object` (JSON), which must succeed.
pub fn kubectl_apply(object: &Value) -> String {
    checked("kubectl", &["apply", "-f", "-"], Some(&object.to_string()))
}

fn checked(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = run(program, args, stdin);
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub use test_support::wait::eventually;

/// Running with its Ready condition True (what kwok sets, and a real kubelet after the probe).
pub fn pod_ready(p: &Pod) -> bool {
    let status = p.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The status of a Pod's first (here: only) container.
/// The Pods in `namespace` matching the label `selector` that are Ready and not going away.
pub async fn ready_pods(client: &Client, namespace: &str, selector: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p))
        .collect()
}

pub fn container_status(p: &Pod) -> &ContainerStatus {
    &p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .expect("the Pod reports its containers")[0]
}

/// A client with the admin kubeconfig (the tests' own view of the cluster).
pub async fn admin() -> Client {
    Client::try_default().await.unwrap()
}

// --- the Helm release -----------------------------------------------------------------------

/// The chart installed once per test process, and what the operator needs to run as it would
/// in its Pod.
pub struct Install {
    pub namespace: String,
    pub service_account: String,
    pub lease_name: String,
    /// A kubeconfig authenticating as the chart's ServiceAccount (a token from
    /// `kubectl create token`), so the chart's RBAC is what the operator gets.
    pub kubeconfig: PathBuf,
}

impl Install {
    /// `helm upgrade --install` of the chart (once per process).
    pub fn get() -> &'static Install {
        static INSTALL: OnceLock<Install> = OnceLock::new();
        INSTALL.get_or_init(|| {
            let env = Env::get();
            let started = Instant::now();
            let chart = env.chart.to_str().unwrap();
            checked(
                "helm",
                &[
                    "upgrade",
                    "--install",
                    RELEASE,
                    chart,
                    "--namespace",
                    RELEASE_NAMESPACE,
                    "--create-namespace",
                    "--wait",
                    "--timeout",
                    "180s",
                ],
                None,
            );
            // The operator's Deployment as the chart rendered it: its ServiceAccount and the
            // Lease its leader-election Role allows.
            let deployments: Value = serde_json::from_str(&kubectl(&[
                "-n",
                RELEASE_NAMESPACE,
                "get",
                "deployments",
                "-l",
                &format!("app.kubernetes.io/instance={RELEASE}"),
                "-o",
                "json",
            ]))
            .unwrap();
            let pod = &deployments["items"][0]["spec"]["template"]["spec"];
            let service_account = pod["serviceAccountName"].as_str().unwrap().to_owned();
            let lease_name = pod["containers"][0]["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "LFUSYS_OPERATOR_LEASE_NAME")
                .and_then(|e| e["value"].as_str())
                .unwrap()
                .to_owned();
            let token = kubectl(&[
                "-n",
                RELEASE_NAMESPACE,
                "create",
                "token",
                &service_account,
                "--duration",
                "3h",
            ]);
            let admin: Value = serde_json::from_str(&kubectl(&[
                "config", "view", "--raw", "--minify", "-o", "json",
            ]))
            .unwrap();
            let cluster = &admin["clusters"][0]["cluster"];
            let ca = match cluster["certificate-authority-data"].as_str() {
                Some(data) => format!("certificate-authority-data: {data}"),
                None => format!(
                    "certificate-authority: {}",
                    cluster["certificate-authority"].as_str().unwrap()
                ),
            };
            let kubeconfig = env.dir.join("operator.kubeconfig");
            std::fs::write(
                &kubeconfig,
                format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {}\n    {ca}\n\
                     users:\n- name: {service_account}\n  user:\n    token: {}\n\
                     contexts:\n- name: e2e\n  context: {{cluster: e2e, user: {service_account}}}\n\
                     current-context: e2e\n",
                    cluster["server"].as_str().unwrap(),
                    token.trim()
                ),
            )
            .unwrap();
            note(
                "setup",
                format!(
                    "helm install {RELEASE} and a token for {service_account}: {:.2} s",
                    started.elapsed().as_secs_f64()
                ),
            );
            Install {
                namespace: RELEASE_NAMESPACE.into(),
                service_account,
                lease_name,
                kubeconfig,
            }
        })
    }

    pub async fn lease_holder(&self, client: &Client) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        leases
            .get_opt(&self.lease_name)
            .await
            .unwrap()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())
    }
}

/// Serializes the tests that run an operator: every operator watches every namespace and
/// competes for the chart's one Lease.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

// --- the operator process -------------------------------------------------------------------

pub struct Operator {
    child: Child,
    pub identity: String,
    pub port: u16,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl Operator {
    /// Starts `lfusys-operator` as the chart's ServiceAccount, with the Lease of the chart and
    /// a lease of `lease_secs`; only the variables its Pod would have (no AWS_*: it reads the
    /// queue with the cluster's credentials Secret).
    pub fn start(identity: &str, lease_secs: u32) -> Operator {
        let env = Env::get();
        let install = Install::get();
        let port = test_support::net::free_port();
        let log = env.dir.join(format!("operator-{identity}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(OPERATOR_BIN)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBECONFIG", &install.kubeconfig)
            .env("RUST_LOG", "info,operator=debug")
            .env("NO_COLOR", "1")
            // No instance metadata service here: do not let the SDK look for one.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("LFUSYS_OPERATOR_LISTEN", format!("127.0.0.1:{port}"))
            .env("LFUSYS_OPERATOR_LEASE_NAME", &install.lease_name)
            .env("LFUSYS_OPERATOR_LEASE_NAMESPACE", &install.namespace)
            .env("LFUSYS_OPERATOR_LEASE_SECS", lease_secs.to_string())
            .env("POD_NAME", identity)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        // For scripts/test-k8s.sh, which stops what a killed test process left running.
        let pids = env.dir.join("pids");
        std::fs::create_dir_all(&pids).unwrap();
        std::fs::write(pids.join(child.id().to_string()), identity).unwrap();
        Operator {
            child,
            identity: identity.into(),
            port,
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET path`: status and body, or the connection error.
    pub async fn get(&self, path: &str) -> Result<(u16, String), String> {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(|e| e.to_string())?))
    }

    /// The value of the sample `series` (name with labels, as Prometheus prints it) on
    /// `/metrics`; `None` when the metric is absent.
    pub async fn metric(&self, series: &str) -> Result<Option<f64>, String> {
        let (status, body) = self.get("/metrics").await?;
        if status != 200 {
            return Err(format!("/metrics answered {status}"));
        }
        Ok(parse_metric(&body, series))
    }

    /// Successful reconciliations so far.
    pub async fn reconciliations(&self) -> Result<f64, String> {
        Ok(self
            .metric("lfusys_operator_reconciliations_total{result=\"ok\"}")
            .await?
            .unwrap_or(0.0))
    }

    /// Waits until this replica reports itself the leader on `/metrics`.
    pub async fn wait_leader(&self, timeout: Duration) {
        let what = format!("{} to lead", self.identity);
        eventually(&what, timeout, || async {
            self.assert_running();
            match self.metric("lfusys_operator_leader").await? {
                Some(v) if v > 0.5 => Ok(()),
                other => Err(format!("lfusys_operator_leader = {other:?}")),
            }
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics (with the log) when the process has exited.
    pub fn assert_running(&self) {
        // try_wait needs &mut; a kill -0 says the same without reaping.
        let alive = run("kill", &["-0", &self.pid().to_string()], None)
            .status
            .success();
        assert!(
            alive,
            "operator {} exited; log:\n{}",
            self.identity,
            self.log_tail(40)
        );
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn signal(&self, signal: &str) {
        run("kill", &[signal, &self.pid().to_string()], None);
    }

    /// Waits for the process to exit, for at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let _ =
                    std::fs::remove_file(Env::get().dir.join("pids").join(self.pid().to_string()));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the exit status (SIGKILL and a panic after 15 s).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("-TERM");
        if let Some(status) = self.wait_exit(Duration::from_secs(15)) {
            return status;
        }
        self.kill();
        panic!(
            "operator {} did not exit within 15 s of SIGTERM; log:\n{}",
            self.identity,
            self.log_tail(40)
        );
    }

    /// SIGKILL: a crash, the Lease is not released.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        self.wait_exit(Duration::from_secs(10));
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Gracefully, so the next test's operator gets the Lease at once.
            self.signal("-TERM");
            if self.wait_exit(Duration::from_secs(15)).is_none() {
                self.kill();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.log.display(),
                self.log_tail(60)
            );
        }
    }
}

pub fn parse_metric(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

// --- SQS (moto) -----------------------------------------------------------------------------

pub async fn sqs() -> aws_sdk_sqs::Client {
    let env = Env::get();
    let config = aws_connect::sdk_config_for(&env.sqs_url, MOTO_KEY, MOTO_KEY).await;
    aws_sdk_sqs::Client::new(&config)
}

pub struct Queue {
    pub client: aws_sdk_sqs::Client,
    pub url: String,
}

impl Queue {
    /// Creates the FIFO queue `name` (`.fifo` appended), as the services would.
    pub async fn create(name: &str) -> Queue {
        let client = sqs().await;
        let url = client
            .create_queue()
            .queue_name(aws_connect::fifo_name(name))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        Queue { client, url }
    }

    /// Sends `n` messages, each in its own group with its own deduplication id.
    pub async fn send(&self, n: usize) {
        let nonce = Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id());
        for start in (0..n).step_by(10) {
            let entries = (start..n.min(start + 10))
                .map(|i| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(format!("m{i}"))
                        .message_body(format!("{{\"job\":{i}}}"))
                        .message_group_id(format!("g{i}"))
                        .message_deduplication_id(format!("d{i}-{nonce}-{}", unique()))
                        .build()
                        .unwrap()
                })
                .collect::<Vec<_>>();
            let sent = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap();
            assert!(sent.failed.is_empty(), "send failed: {:?}", sent.failed);
        }
    }

    /// Receives and deletes every message, as workers would. (Not PurgeQueue: SQS, and moto,
    /// allow one purge a minute.)
    pub async fn drain(&self) {
        loop {
            let received = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .send()
                .await
                .unwrap()
                .messages
                .unwrap_or_default();
            if received.is_empty() {
                if self.depth().await == 0 {
                    return;
                }
                continue;
            }
            let entries = received
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(format!("d{i}"))
                        .receipt_handle(m.receipt_handle.clone().unwrap())
                        .build()
                        .unwrap()
                })
                .collect::<Vec<_>>();
            let deleted = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap();
            assert!(
                deleted.failed.is_empty(),
                "delete failed: {:?}",
                deleted.failed
            );
        }
    }

    /// Visible + in-flight, as the operator counts.
    pub async fn depth(&self) -> u64 {
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        attributes.values().map(|v| v.parse::<u64>().unwrap()).sum()
    }
}

/// A process-wide unique number (names, deduplication ids).
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (u64::from(nanos) << 8) ^ n
}

// --- a test namespace with one LfusysCluster ------------------------------------------------

/// A namespace of its own, with the credentials Secret and the cluster's FIFO queue in moto.
/// Dropping it deletes its clusters (so no other test's operator reconciles them) and then the
/// namespace.
pub struct Namespace {
    pub name: String,
    pub queue_name: String,
    pub queue: Queue,
}

impl Namespace {
    pub async fn create(tag: &str) -> Namespace {
        let name = format!("e2e-{tag}-{:06x}", unique() & 0x00ff_ffff);
        kubectl(&["create", "namespace", &name]);
        kubectl(&[
            "-n",
            &name,
            "create",
            "secret",
            "generic",
            CREDENTIALS_SECRET,
            &format!("--from-literal=AWS_ACCESS_KEY_ID={MOTO_KEY}"),
            &format!("--from-literal=AWS_SECRET_ACCESS_KEY={MOTO_KEY}"),
        ]);
        let queue_name = format!("{name}-jobs");
        let queue = Queue::create(&queue_name).await;
        Namespace {
            name,
            queue_name,
            queue,
        }
    }

    /// An `LfusysCluster` manifest on moto with the credentials Secret and small autoscaling
    /// numbers, `spec` merged over it.
    pub fn cluster(&self, name: &str, spec: &Value) -> Value {
        let endpoint = &Env::get().sqs_url;
        let mut base = json!({
            "apiVersion": "lfusys.io/v1alpha1",
            "kind": "LfusysCluster",
            "metadata": {"name": name, "namespace": self.name},
            "spec": {
                "storage": {
                    "s3": {"bucket": "e2e-uploads", "region": "us-east-1", "endpoint": endpoint},
                    "dynamodb": {"tablePrefix": format!("{}-", self.name), "region": "us-east-1", "endpoint": endpoint},
                    "sqs": {"queueName": self.queue_name, "region": "us-east-1", "endpoint": endpoint},
                    "credentialsSecretRef": {"name": CREDENTIALS_SECRET}
                },
                "uploads": {"autoscaling": {
                    "minReplicas": 1, "maxReplicas": 10, "targetQueueDepthPerReplica": 3,
                    "pollIntervalSeconds": 2, "scaleDownStabilizationSeconds": 10
                }},
                "ingress": {"host": "files.e2e.example"}
            }
        });
        merge(&mut base["spec"], spec);
        base
    }

    pub async fn get_cluster(&self, client: &Client, name: &str) -> Option<LfusysCluster> {
        Api::<LfusysCluster>::namespaced(client.clone(), &self.name)
            .get_opt(name)
            .await
            .unwrap()
    }

    /// Waits until the cluster's status is `Available=True` for its current generation.
    pub async fn wait_available(
        &self,
        client: &Client,
        name: &str,
        timeout: Duration,
    ) -> LfusysCluster {
        eventually(&format!("{name} Available=True"), timeout, || async {
            let cluster = self.get_cluster(client, name).await.ok_or("no cluster")?;
            available(&cluster)?;
            Ok::<_, String>(cluster)
        })
        .await
    }

    /// The Events the operator recorded about cluster `name`: (type, reason, note).
    pub async fn events(&self, client: &Client, name: &str) -> Vec<(String, String, String)> {
        let api: Api<Event> = Api::namespaced(client.clone(), &self.name);
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("LfusysCluster") && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Waits until an Event with `reason` about cluster `name` exists; returns its note.
    pub async fn wait_event(&self, client: &Client, name: &str, reason: &str) -> String {
        eventually(
            &format!("an Event {reason}"),
            Duration::from_secs(20),
            || async {
                let events = self.events(client, name).await;
                events
                    .iter()
                    .find(|(_, r, _)| r == reason)
                    .map(|(_, _, note)| note.clone())
                    .ok_or_else(|| format!("events: {events:?}"))
            },
        )
        .await
    }

    pub async fn deployment(&self, client: &Client, name: &str) -> Option<Deployment> {
        Api::<Deployment>::namespaced(client.clone(), &self.name)
            .get_opt(name)
            .await
            .unwrap()
    }

    /// The uploads Deployment's `spec.replicas`.
    pub async fn uploads_replicas(&self, client: &Client, cluster: &str) -> Option<i32> {
        self.deployment(client, &format!("{cluster}-uploads"))
            .await
            .and_then(|d| d.spec)
            .and_then(|s| s.replicas)
    }

    /// Running and ready Pods of the cluster, per component.
    pub async fn running_pods(&self, client: &Client, cluster: &str) -> BTreeMap<String, Vec<Pod>> {
        let selector = format!("app.kubernetes.io/instance={cluster}");
        let mut by_component: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
        for pod in ready_pods(client, &self.name, &selector).await {
            let component = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/component").cloned())
                .unwrap_or_default();
            by_component.entry(component).or_default().push(pod);
        }
        by_component
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // First the clusters, at once (no finalizers): the next test's operator, which watches
        // every namespace, then has nothing here to reconcile. The namespace goes in the
        // background.
        run(
            "kubectl",
            &[
                "-n",
                &self.name,
                "delete",
                "lfusysclusters",
                "--all",
                "--wait=false",
            ],
            None,
        );
        run(
            "kubectl",
            &["delete", "namespace", &self.name, "--wait=false"],
            None,
        );
    }
}

/// JSON merge of `patch` into `base` (objects merged, everything else replaced).
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

pub fn condition<'a>(cluster: &'a LfusysCluster, type_: &str) -> Option<&'a Condition> {
    cluster
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// `Ok` when `Available=True` and the status (and every condition) is of the current
/// generation.
pub fn available(cluster: &LfusysCluster) -> Result<(), String> {
    let generation = cluster.metadata.generation;
    let status = cluster.status.as_ref().ok_or("no status")?;
    if status.observed_generation != generation {
        return Err(format!(
            "observedGeneration {:?}, generation {generation:?}",
            status.observed_generation
        ));
    }
    let c = condition(cluster, crds::condition::AVAILABLE).ok_or("no Available condition")?;
    if c.status != "True" || c.observed_generation != generation {
        return Err(format!("Available: {c:?}"));
    }
    Ok(())
}

// --- children ---------------------------------------------------------------------------------

/// One child DESIGN §5 promises for a cluster.
#[derive(Clone, Debug)]
pub struct OwnedObject {
    pub kind: String,
    pub name: String,
    pub component: Option<&'static str>,
    resource: ApiResource,
}

fn child<K: Resource<DynamicType = ()>>(
    name: String,
    component: Option<&'static str>,
) -> OwnedObject {
    OwnedObject {
        kind: K::kind(&()).into_owned(),
        name,
        component,
        resource: ApiResource::erase::<K>(&()),
    }
}

/// Every child of cluster `name` (with the default `ingress.enabled` and a generated key).
pub fn children(name: &str) -> Vec<OwnedObject> {
    let mut all = Vec::new();
    for component in ["gateway", "sessions", "uploads"] {
        let object = format!("{name}-{component}");
        all.push(child::<Deployment>(object.clone(), Some(component)));
        all.push(child::<Service>(object.clone(), Some(component)));
        all.push(child::<PodDisruptionBudget>(object, Some(component)));
    }
    all.push(child::<ConfigMap>(format!("{name}-config"), None));
    all.push(child::<ServiceAccount>(name.to_owned(), None));
    all.push(child::<Ingress>(name.to_owned(), None));
    all.push(child::<Secret>(format!("{name}-signing-key"), None));
    all
}

impl OwnedObject {
    pub fn resource(&self) -> &ApiResource {
        &self.resource
    }

    pub async fn get(&self, client: &Client, namespace: &str) -> Option<DynamicObject> {
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &self.resource)
            .get_opt(&self.name)
            .await
            .unwrap()
    }

    pub async fn delete(&self, client: &Client, namespace: &str) {
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &self.resource)
            .delete(&self.name, &kube::api::DeleteParams::default())
            .await
            .unwrap();
    }

    /// What is wrong with the child's metadata: the owner reference and the labels.
    pub fn problems(&self, meta: &ObjectMeta, cluster: &LfusysCluster) -> Vec<String> {
        let mut problems = Vec::new();
        let owned = meta.owner_references.iter().flatten().any(|o| {
            o.kind == "LfusysCluster"
                && o.api_version == "lfusys.io/v1alpha1"
                && Some(&o.uid) == cluster.metadata.uid.as_ref()
                && o.controller == Some(true)
                && o.block_owner_deletion == Some(true)
        });
        if !owned {
            problems.push(format!(
                "{} {}: owner references {:?}",
                self.kind, self.name, meta.owner_references
            ));
        }
        let labels = meta.labels.clone().unwrap_or_default();
        let mut want = vec![
            ("app.kubernetes.io/name", "lfusys".to_owned()),
            (
                "app.kubernetes.io/instance",
                cluster.metadata.name.clone().unwrap_or_default(),
            ),
            ("app.kubernetes.io/managed-by", "lfusys-operator".to_owned()),
        ];
        if let Some(c) = self.component {
            want.push(("app.kubernetes.io/component", c.to_owned()));
        }
        for (k, v) in want {
            if labels.get(k) != Some(&v) {
                problems.push(format!(
                    "{} {}: label {k}={:?}, want {v}",
                    self.kind,
                    self.name,
                    labels.get(k)
                ));
            }
        }
        problems
    }
}

/// `Ok(objects)` once every child exists with its owner reference and labels.
pub async fn all_children(
    client: &Client,
    namespace: &str,
    cluster: &LfusysCluster,
) -> Result<Vec<(OwnedObject, DynamicObject)>, String> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for c in children(&name) {
        match c.get(client, namespace).await {
            None => problems.push(format!("{} {} missing", c.kind, c.name)),
            Some(object) => {
                problems.extend(c.problems(&object.metadata, cluster));
                found.push((c, object));
            }
        }
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems.join("; "))
    }
}

/// resourceVersion of the cluster and of every child.
pub async fn resource_versions(
    client: &Client,
    namespace: &str,
    cluster: &str,
) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    let lfc = Api::<LfusysCluster>::namespaced(client.clone(), namespace)
        .get(cluster)
        .await
        .unwrap();
    versions.insert(
        format!("LfusysCluster/{cluster}"),
        lfc.metadata.resource_version.unwrap_or_default(),
    );
    for c in children(cluster) {
        let object = c.get(client, namespace).await;
        versions.insert(
            format!("{}/{}", c.kind, c.name),
            object
                .and_then(|o| o.metadata.resource_version)
                .unwrap_or_else(|| "absent".into()),
        );
    }
    versions
}
