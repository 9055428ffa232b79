//! Helpers of the AWS test suites: clients for the servers `scripts/aws-servers.sh` runs
//! (moto for S3/DynamoDB/SQS, MinIO for S3), stores on fresh resources, and a loopback fault
//! proxy.
//!
//! The servers' addresses and credentials come from the environment that
//! `scripts/aws-servers.sh env` prints; a helper panics, saying so, when it is not set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_config::SdkConfig;
use storage_aws::{
    dynamodb, sqs, DynamoAuthStore, DynamoMetadataStore, S3BlobStore, SqsJobQueue, TableNames,
};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: start the servers with `eval \"$(scripts/aws-servers.sh start && scripts/aws-servers.sh env)\"` (scripts/test.sh does)")
    })
}

/// moto's S3.
pub fn moto_url() -> String {
    var("LFUSYS_TEST_MOTO_URL")
}

/// moto's DynamoDB.
pub fn moto_dynamodb_url() -> String {
    var("LFUSYS_TEST_MOTO_DYNAMODB_URL")
}

/// The real S3 server (MinIO, or s3s-fs).
pub fn s3_url() -> String {
    var("LFUSYS_TEST_S3_URL")
}

/// The SDK's standard configuration, as `lfusys up` gets it: moto's services at the
/// `AWS_ENDPOINT_URL_*` that `scripts/aws-servers.sh env` prints.
pub async fn moto() -> SdkConfig {
    var("AWS_ENDPOINT_URL_DYNAMODB");
    storage_aws::load_sdk_config().await
}

/// The SDK configuration of the real S3 server, with its own credentials.
pub async fn real_s3() -> SdkConfig {
    storage_aws::sdk_config_for(
        &s3_url(),
        &var("LFUSYS_TEST_S3_ACCESS_KEY"),
        &var("LFUSYS_TEST_S3_SECRET_KEY"),
    )
    .await
}

/// A name no other test uses (lowercase letters, digits and dashes).
pub fn unique(kind: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "lfusys-{kind}-{:x}-{n}-{}",
        t & 0xff_ffff_ffff,
        std::process::id()
    )
}

/// A metadata store on moto's tables `{prefix}…`, created when missing.
pub async fn metadata_store(prefix: &str) -> DynamoMetadataStore {
    let sdk = moto().await;
    dynamodb::create_tables(&sdk, &TableNames::new(prefix))
        .await
        .unwrap();
    DynamoMetadataStore::new(&sdk, prefix)
}

/// An auth store on moto's tables `{prefix}…`, created when missing.
pub async fn auth_store(prefix: &str) -> DynamoAuthStore {
    let sdk = moto().await;
    dynamodb::create_tables(&sdk, &TableNames::new(prefix))
        .await
        .unwrap();
    DynamoAuthStore::new(&sdk, prefix)
}

/// A queue (and its dead-letter queue after `max_receives`) on moto, created when missing.
pub async fn queue(name: &str, max_receives: u32) -> SqsJobQueue {
    let sdk = moto().await;
    sqs::create_queues(&sdk, name, max_receives).await.unwrap();
    SqsJobQueue::new(&sdk, name)
}

/// A bucket on `sdk`'s S3 server, created when missing.
pub async fn bucket(sdk: &SdkConfig, name: &str) -> S3BlobStore {
    storage_aws::s3::create_bucket(sdk, name).await.unwrap();
    S3BlobStore::new(sdk, name)
}

/// A loopback HTTP proxy in front of an AWS endpoint that injects faults: `fault` sees each
/// request (method, path and query, `x-amz-target`) and may answer it itself.
pub struct FaultProxy {
    pub url: String,
    pub faults: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A request as the fault rule sees it.
pub struct Seen<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub target: &'a str,
    /// The request's `Range` header ("" when none).
    pub range: &'a str,
    /// How many requests the proxy had seen before this one.
    pub n: u64,
}

/// What the proxy does with a request.
pub enum Fault {
    Forward,
    /// Answers with this status, headers and body instead of forwarding.
    Answer(u16, Vec<(&'static str, String)>, String),
    /// Forwards, then replaces a successful answer's body (and keeps its status 200).
    ReplaceBody(String),
    /// Forwards, then sends the answer's status, headers and declared length but only its
    /// first bytes, and drops the connection: a download cut off midway.
    Truncate(usize),
}

type Rule = dyn Fn(&Seen<'_>) -> Fault + Send + Sync;

impl FaultProxy {
    /// Starts the proxy on its own thread and runtime.
    pub fn start(
        upstream: &str,
        rule: impl Fn(&Seen<'_>) -> Fault + Send + Sync + 'static,
    ) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_end_matches('/').to_owned();
        let rule: Arc<Rule> = Arc::new(rule);
        let faults = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (f, r) = (Arc::clone(&faults), Arc::clone(&requests));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let client = reqwest::Client::new();
                loop {
                    let (stream, _) = tokio::select! {
                        _ = &mut stopped => return,
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    };
                    let (client, upstream, rule, f, r) = (
                        client.clone(),
                        upstream.clone(),
                        Arc::clone(&rule),
                        Arc::clone(&f),
                        Arc::clone(&r),
                    );
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            proxy_one(
                                req,
                                client.clone(),
                                upstream.clone(),
                                Arc::clone(&rule),
                                Arc::clone(&f),
                                Arc::clone(&r),
                            )
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        FaultProxy {
            url,
            faults,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let (tx, _) = tokio::sync::oneshot::channel();
        let _ = std::mem::replace(&mut self.stop, tx).send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The proxy's answer bodies: whole, or cut off by an error (which makes hyper drop the
/// connection mid-body).
type ProxyBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

fn whole(bytes: bytes::Bytes) -> ProxyBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed()
}

/// `bytes`, then a failure: the client gets them and then a connection that breaks.
fn cut_off(bytes: bytes::Bytes) -> ProxyBody {
    use http_body_util::BodyExt;
    CutOff(Some(bytes)).boxed()
}

/// A body of some bytes that then fails.
struct CutOff(Option<bytes::Bytes>);

impl hyper::body::Body for CutOff {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
        std::task::Poll::Ready(Some(match self.0.take() {
            Some(bytes) => Ok(hyper::body::Frame::data(bytes)),
            None => Err(std::io::Error::other("cut off by the fault proxy")),
        }))
    }
}

async fn proxy_one(
    req: hyper::Request<hyper::body::Incoming>,
    client: reqwest::Client,
    upstream: String,
    rule: Arc<Rule>,
    faults: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
) -> Result<hyper::Response<ProxyBody>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let n = requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let range = parts
        .headers
        .get(hyper::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let fault = rule(&Seen {
        method: parts.method.as_str(),
        path_and_query: &path_and_query,
        target: &target,
        range: &range,
        n,
    });
    let respond = |status: u16, headers: Vec<(String, String)>, body: bytes::Bytes| {
        let mut res = hyper::Response::new(whole(body));
        *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (
                hyper::header::HeaderName::from_bytes(k.as_bytes()),
                hyper::header::HeaderValue::from_str(&v),
            ) {
                res.headers_mut().append(k, v);
            }
        }
        Ok(res)
    };
    let body = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    if let Fault::Answer(status, headers, text) = &fault {
        faults.fetch_add(1, Ordering::SeqCst);
        let headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        return respond(*status, headers, bytes::Bytes::from(text.clone()));
    }
    let mut forward = client.request(
        reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap(),
        format!("{upstream}{path_and_query}"),
    );
    for (k, v) in &parts.headers {
        if k != hyper::header::CONNECTION && k != hyper::header::TRANSFER_ENCODING {
            forward = forward.header(k.as_str(), v.as_bytes());
        }
    }
    let answer = match forward.body(body).send().await {
        Ok(a) => a,
        Err(e) => return respond(502, Vec::new(), bytes::Bytes::from(e.to_string())),
    };
    let status = answer.status().as_u16();
    // A HEAD answer has no body but the object's length: keep its Content-Length (and a
    // truncated answer declares the whole length, to be cut short).
    let head = parts.method == hyper::Method::HEAD || matches!(fault, Fault::Truncate(_));
    let headers: Vec<(String, String)> = answer
        .headers()
        .iter()
        .filter(|(k, _)| {
            (head || *k != reqwest::header::CONTENT_LENGTH)
                && *k != reqwest::header::TRANSFER_ENCODING
                && *k != reqwest::header::CONNECTION
        })
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
        .collect();
    let bytes = answer.bytes().await.unwrap_or_default();
    match fault {
        Fault::ReplaceBody(text) if status == 200 => {
            faults.fetch_add(1, Ordering::SeqCst);
            return respond(200, headers, bytes::Bytes::from(text));
        }
        Fault::Truncate(keep) if bytes.len() > keep => {
            faults.fetch_add(1, Ordering::SeqCst);
            let mut res = respond(status, headers, bytes::Bytes::new())?;
            *res.body_mut() = cut_off(bytes.slice(..keep));
            return Ok::<_, std::convert::Infallible>(res);
        }
        _ => {}
    }
    respond(status, headers, bytes)
}
