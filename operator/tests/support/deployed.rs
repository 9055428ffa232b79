//! The deployed system of tests/pods.rs and benches/pods.rs: one `LfusysCluster` on real Pods,
//! installed as a cluster admin does (helm install of the chart, the storage resources,
//! `kubectl apply`), and its users: the `lfusys` CLI and a plain HTTP API client, both through
//! the Ingress. `scripts/test-k8s-pods.sh` starts the cluster and the storage servers and sets,
//! besides what the rest of this module reads:
//! - `LFUSYS_INGRESS_URL`: Traefik, the Ingress controller;
//! - `LFUSYS_CLI_BIN`: the `lfusys` client (release build);
//! - `LFUSYS_TEST_S3_URL`, `LFUSYS_TEST_MOTO_DYNAMODB_URL`, `LFUSYS_TEST_MOTO_SQS_URL`: MinIO and
//!   moto, on the bridge's address so that Pods reach them;
//! - `LFUSYS_TEST_ROLLED_TAG`: a second tag of the services image, for the rolling update.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::Client;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::{available, eventually, kubectl, kubectl_apply, note, Install};

pub const NAMESPACE: &str = "lfusys-pods";
pub const CLUSTER: &str = "files";
const CREDENTIALS: &str = "storage-credentials";
/// MinIO's keys (scripts/aws-servers.sh); moto accepts any.
const ACCESS_KEY: &str = "lfusystest";
const SECRET_KEY: &str = "lfusystest-secret-key";
const PASSWORD: &str = "correct horse battery staple";
pub const MIB: usize = 1 << 20;
/// Deadlines for a loaded 2-core machine; the timeline each test prints has the real figures.
pub const READY: Duration = Duration::from_secs(240);
pub const UPLOAD: Duration = Duration::from_secs(600);

pub fn need(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the suite with scripts/test-k8s-pods.sh"))
}

/// The cluster every test uses, deployed once.
pub struct Deployed {
    pub client: Client,
    pub ingress: String,
    pub started: Instant,
    /// `kubectl apply` of the cluster → `Available=True`, and → every Deployment rolled out
    /// (all Pods Ready through their probes).
    pub apply_to_available: Duration,
    pub apply_to_ready: Duration,
}

impl Deployed {
    pub async fn get() -> &'static Deployed {
        static DEPLOYED: OnceCell<Deployed> = OnceCell::const_new();
        DEPLOYED.get_or_init(deploy).await
    }

    pub fn note(&self, test: &str, what: impl std::fmt::Display) {
        note(
            test,
            format!("{:7.2} s  {what}", self.started.elapsed().as_secs_f64()),
        );
    }

    pub async fn cluster(&self) -> crds::LfusysCluster {
        Api::<crds::LfusysCluster>::namespaced(self.client.clone(), NAMESPACE)
            .get(CLUSTER)
            .await
            .unwrap()
    }

    /// Ready, running, not terminating Pods of a component.
    pub async fn ready_pods(&self, component: &str) -> Vec<Pod> {
        let selector =
            format!("app.kubernetes.io/instance={CLUSTER},app.kubernetes.io/component={component}");
        super::ready_pods(&self.client, NAMESPACE, &selector).await
    }

    pub async fn deployment(&self, component: &str) -> Deployment {
        Api::<Deployment>::namespaced(self.client.clone(), NAMESPACE)
            .get(&format!("{CLUSTER}-{component}"))
            .await
            .unwrap()
    }

    /// Every component's Deployment rolled out: all replicas updated, ready and available.
    pub async fn wait_rolled_out(&self, what: &str, timeout: Duration) {
        eventually(what, timeout, || async {
            for component in ["gateway", "sessions", "uploads"] {
                let d = self.deployment(component).await;
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let s = d.status.clone().unwrap_or_default();
                let generation = d.metadata.generation.unwrap_or_default();
                if s.observed_generation.unwrap_or_default() < generation
                    || s.updated_replicas.unwrap_or_default() != want
                    || s.ready_replicas.unwrap_or_default() != want
                    || s.replicas.unwrap_or_default() != want
                {
                    return Err(format!("{component}: want {want}, status {s:?}"));
                }
            }
            Ok(())
        })
        .await;
    }
}

/// `kubectl -n {NAMESPACE} args`, which must succeed; its stdout.
pub fn kubectl_ns(args: &[&str]) -> String {
    let mut all = vec!["-n", NAMESPACE];
    all.extend_from_slice(args);
    kubectl(&all)
}

/// `kubectl patch lfc {CLUSTER} --type merge` with `{"spec": spec}`.
pub fn patch_cluster(spec: &Value) {
    kubectl_ns(&[
        "patch",
        "lfc",
        CLUSTER,
        "--type",
        "merge",
        "-p",
        &json!({ "spec": spec }).to_string(),
    ]);
}

/// `kubectl apply` of the cluster under test, on the given S3, DynamoDB and SQS endpoints.
fn apply_cluster(s3: &str, dynamodb: &str, sqs: &str) {
    kubectl_apply(&json!({
        "apiVersion": "lfusys.io/v1alpha1",
        "kind": "LfusysCluster",
        "metadata": {"name": CLUSTER, "namespace": NAMESPACE},
        "spec": {
            "gateway": {"replicas": 1},
            "sessions": {"replicas": 1},
            "uploads": {"autoscaling": {
                "minReplicas": 2, "maxReplicas": 4, "targetQueueDepthPerReplica": 2,
                "pollIntervalSeconds": 1, "scaleDownStabilizationSeconds": 20
            }},
            "storage": {
                "s3": {"bucket": "pods-uploads", "region": "us-east-1", "endpoint": s3},
                "dynamodb": {"tablePrefix": "pods-", "region": "us-east-1", "endpoint": dynamodb},
                "sqs": {"queueName": "pods-assembly", "region": "us-east-1", "endpoint": sqs},
                "credentialsSecretRef": {"name": CREDENTIALS}
            },
            "ingress": {"enabled": true, "className": "traefik"}
        }
    }));
}

/// Traefik has the Ingress: the web app from the gateway, chunks to the workers (a chunk PUT
/// without a token is the workers' 401 problem; the gateway has no such route).
async fn wait_ingress_routes(base: &str) {
    let http = reqwest::Client::new();
    let base = base.to_owned();
    eventually(
        "the Ingress routes to the gateway and the workers",
        READY,
        || {
            let http = http.clone();
            let base = base.clone();
            async move {
                let page = http
                    .get(format!("{base}/"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let page_status = page.status().as_u16();
                let body = page.text().await.map_err(|e| e.to_string())?;
                if page_status != 200 || !body.contains("<div id=\"root\">") {
                    return Err(format!("GET / → {page_status}"));
                }
                let chunk = http
                    .put(format!(
                        "{base}/api/v1/chunks/00000000-0000-0000-0000-000000000000/0"
                    ))
                    .body("x")
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = chunk.status().as_u16();
                let problem: Value = chunk.json().await.unwrap_or_default();
                if status != 401 || problem["status"] != 401 {
                    return Err(format!("PUT chunk → {status} {problem}"));
                }
                Ok(())
            }
        },
    )
    .await;
}

/// `helm install` (the operator's Pod), the storage resources, `kubectl apply` of the cluster,
/// and the wait until everything is Ready and the Ingress routes to it.
async fn deploy() -> Deployed {
    let started = Instant::now();
    let ingress = need("LFUSYS_INGRESS_URL");
    let client = super::admin().await;
    let mut deployed = Deployed {
        client,
        ingress,
        started,
        apply_to_available: Duration::ZERO,
        apply_to_ready: Duration::ZERO,
    };
    // The chart, with the operator as its Pod (the default image, loaded into containerd).
    let install = Install::get();
    deployed.note(
        "setup",
        format!("helm install: operator Pod Ready in {}", install.namespace),
    );
    // Applied, not created: a rerun against the same cluster finds them.
    kubectl_apply(&json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}
    }));
    kubectl_apply(&json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": CREDENTIALS, "namespace": NAMESPACE},
        "stringData": {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    }));
    let s3 = need("LFUSYS_TEST_S3_URL");
    let dynamodb = need("LFUSYS_TEST_MOTO_DYNAMODB_URL");
    let sqs = need("LFUSYS_TEST_MOTO_SQS_URL");
    create_storage(&s3, &dynamodb, &sqs).await;
    let applied = Instant::now();
    apply_cluster(&s3, &dynamodb, &sqs);
    eventually("the cluster Available=True", READY, || async {
        available(&deployed.cluster().await)
    })
    .await;
    deployed.apply_to_available = applied.elapsed();
    deployed
        .wait_rolled_out("every Deployment rolled out", READY)
        .await;
    deployed.apply_to_ready = applied.elapsed();
    deployed.note(
        "setup",
        format!(
            "LfusysCluster Available {:.1} s and every Pod Ready {:.1} s after kubectl apply",
            deployed.apply_to_available.as_secs_f64(),
            deployed.apply_to_ready.as_secs_f64()
        ),
    );
    wait_ingress_routes(&deployed.ingress).await;
    deployed.note(
        "setup",
        format!("the Ingress routes ({})", deployed.ingress),
    );
    deployed
}

/// The bucket (MinIO), tables and queues (moto) the cluster points at, as a cluster admin
/// creates them before applying it.
async fn create_storage(s3: &str, dynamodb: &str, sqs: &str) {
    // The SDK's standard configuration, as the services read it.
    std::env::set_var("AWS_ACCESS_KEY_ID", ACCESS_KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ENDPOINT_URL_S3", s3);
    std::env::set_var("AWS_ENDPOINT_URL_DYNAMODB", dynamodb);
    std::env::set_var("AWS_ENDPOINT_URL_SQS", sqs);
    let sdk = aws_connect::shared_sdk_config().await;
    storage_aws::create_resources(
        &sdk,
        &storage_aws::AwsResources {
            bucket: "pods-uploads".into(),
            table_prefix: "pods-".into(),
            queue_name: "pods-assembly".into(),
            max_receives: 5,
        },
    )
    .await
    .unwrap();
}

// --- the CLI ----------------------------------------------------------------------------------

/// The `lfusys` client of one user, logged in through the Ingress, with its own config dir.
pub struct Cli {
    pub bin: String,
    pub server: String,
    pub config: tempfile::TempDir,
}

impl Cli {
    /// A new account `{user}-{unique}@example.com` (unique: reruns on one cluster work).
    pub fn signup(server: &str, user: &str) -> Cli {
        let email = unique_email(user);
        let email = email.as_str();
        let cli = Cli {
            bin: need("LFUSYS_CLI_BIN"),
            server: server.to_owned(),
            config: tempfile::tempdir().unwrap(),
        };
        cli.ok(&["register", "--email", email]);
        cli.ok(&["login", "--email", email]);
        cli
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .arg("--server")
            .arg(&self.server)
            .env("LFUSYS_CONFIG_DIR", self.config.path())
            .env("LFUSYS_PASSWORD", PASSWORD)
            .stdin(Stdio::null());
        c
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(
            out.status.success(),
            "lfusys {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `lfusys upload FILE --json` in the background.
    pub fn spawn_upload(&self, file: &Path) -> Child {
        self.command(&["upload", file.to_str().unwrap(), "-j", "8", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits for a background upload; its report (`file_id`, `sha256`, …).
    pub fn finish_upload(child: Child) -> Value {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "lfusys upload failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
    }

    /// Downloads a file (the CLI verifies the SHA-256 itself) and compares it with `sha256`.
    pub fn download_matches(&self, file_id: &str, sha256: &str, dir: &Path) {
        let copy = dir.join(format!("{file_id}.copy"));
        self.ok(&["download", file_id, "-o", copy.to_str().unwrap(), "--quiet"]);
        assert_eq!(sha256_file(&copy), sha256, "the downloaded bytes");
        std::fs::remove_file(copy).unwrap();
    }
}

/// Waits until the user's unfinished upload has at least `n` chunks on the server.
pub async fn wait_chunks(cli: &Cli, n: usize) {
    eventually("chunks arriving", UPLOAD, || async {
        let have = received_chunks(cli).await;
        if have >= n {
            Ok(())
        } else {
            Err(format!("{have} chunks"))
        }
    })
    .await;
}

fn unique_email(user: &str) -> String {
    format!(
        "{user}-{}-{}@example.com",
        std::process::id(),
        super::unique()
    )
}

use test_support::data::sha256_file;

/// The user's unfinished upload's received chunk count, from the API through the Ingress.
pub async fn received_chunks(cli: &Cli) -> usize {
    let creds: Value =
        serde_json::from_slice(&std::fs::read(cli.config.path().join("credentials.json")).unwrap())
            .unwrap();
    let user = ApiUser {
        http: reqwest::Client::new(),
        base: cli.server.clone(),
        token: creds["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    let list = user.get("/api/v1/uploads").await;
    let Some(id) = list["items"][0]["upload_id"].as_str() else {
        return 0;
    };
    let status = user.get(&format!("/api/v1/uploads/{id}")).await;
    status["received_chunks"].as_array().map_or(0, Vec::len)
}

pub fn scratch() -> PathBuf {
    let dir = std::env::var_os("LFUSYS_E2E_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = dir.join(format!("pods-{}", super::unique()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A user of the HTTP API through the Ingress (for the many small uploads of the autoscaling
/// test, whose jobs must land together: every upload created first, then all chunks at once).
pub struct ApiUser {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl ApiUser {
    pub async fn signup(base: &str, user: &str) -> ApiUser {
        let email = unique_email(user);
        let http = reqwest::Client::new();
        let body = json!({"email": email, "password": PASSWORD});
        let r = http
            .post(format!("{base}/api/v1/auth/register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
        let login: Value = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ApiUser {
            http,
            base: base.to_owned(),
            token: login["access_token"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Creates an upload of `size` bytes, with its SHA-256 declared when given.
    pub async fn create(&self, name: &str, size: usize, sha256: Option<&str>) -> Value {
        let mut body = json!({"name": name, "size": size});
        if let Some(sha) = sha256 {
            body["sha256"] = sha.into();
        }
        let r = self
            .http
            .post(format!("{}/api/v1/uploads", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        r.json().await.unwrap()
    }

    /// PUTs chunk `index` of a created upload to `origin` (the Ingress, or a worker's own
    /// address); the answer's status. As every client does, a gateway error of the Ingress
    /// (502/503/504: a worker Pod that just went away is still among its endpoints) is retried
    /// a few times with backoff; any other answer is returned as it is.
    pub async fn put_chunk(
        &self,
        created: &Value,
        index: usize,
        data: Vec<u8>,
        origin: &str,
    ) -> u16 {
        use base64::Engine as _;
        let url = created["upload_url"].as_str().unwrap();
        // A relative upload_url (workers behind the same origin) or an absolute one.
        let path = url.find("/api/").map_or(url, |i| &url[i..]);
        let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&data));
        let mut status = 0;
        for attempt in 0..5 {
            status = self
                .http
                .put(format!("{origin}{path}/{index}"))
                .bearer_auth(created["upload_token"].as_str().unwrap())
                .header("content-digest", format!("sha-256=:{digest}:"))
                .body(data.clone())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if !matches!(status, 502..=504) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        status
    }
}

impl ApiUser {
    /// One-chunk uploads of `files` (their SHA-256 declared), all created first, then every
    /// chunk sent at once through `origin`: their assembly jobs land together. The created
    /// uploads, in order.
    pub async fn complete_at_once(
        &self,
        prefix: &str,
        files: Vec<Vec<u8>>,
        origin: &str,
    ) -> Vec<Value> {
        let mut created = Vec::new();
        for (i, bytes) in files.iter().enumerate() {
            let sha = test_support::data::sha256_hex(bytes);
            let c = self
                .create(&format!("{prefix}-{i}.bin"), bytes.len(), Some(&sha))
                .await;
            assert_eq!(c["total_chunks"], 1, "{c}");
            created.push(c);
        }
        let statuses = futures::future::join_all(
            created
                .iter()
                .zip(files)
                .map(|(c, bytes)| self.put_chunk(c, 0, bytes, origin)),
        )
        .await;
        assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
        created
    }
}

/// `lfusys_assemblies_total{outcome="completed"}` of one worker Pod, read at its Pod IP.
pub async fn assemblies(pod: &Pod) -> f64 {
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let body = reqwest::get(format!("http://{ip}:8081/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    super::parse_metric(&body, r#"lfusys_assemblies_total{outcome="completed"}"#).unwrap_or(0.0)
}
