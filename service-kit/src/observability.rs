//! Logs, metrics and the operational endpoints every service serves:
//! `GET /healthz` (the process is alive), `GET /readyz` (its dependencies answer) and
//! `GET /metrics` (Prometheus text format).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::problem::Problem;

/// Initialises `tracing` once per process. `RUST_LOG` filters (default `info`);
/// `LFUSYS_LOG_FORMAT=json` switches to JSON lines.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let json = std::env::var("LFUSYS_LOG_FORMAT").is_ok_and(|v| v == "json");
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = if json {
            builder.json().try_init()
        } else {
            builder.try_init()
        };
        let armed = lfusys_core::failpoint::armed();
        if !armed.is_empty() {
            tracing::warn!(
                failpoints = ?armed,
                "test failpoints are armed (LFUSYS_FAILPOINTS): this process aborts when it reaches one"
            );
        }
    });
}

/// How often recorded histogram samples are folded into their buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder (installed on first use).
///
/// The recorder keeps every histogram sample until upkeep folds it into the buckets; upkeep
/// otherwise runs only when `/metrics` is scraped, so a process nobody scrapes grew by every
/// request it served. A thread of the recorder's own runs it every [`METRICS_UPKEEP`].
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (tests): render through a private one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(METRICS_UPKEEP);
                    upkeep.run_upkeep();
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no metrics upkeep thread: histograms are folded on scrapes only");
            }
            handle
        })
        .clone()
}

/// A readiness probe: `Ok` when the service can do its work, `Err(reason)` otherwise.
pub type ReadinessCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// A probe that is always ready.
pub fn always_ready() -> ReadinessCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn ops_router(ready: ReadinessCheck) -> Router {
    let handle = metrics_handle();
    Router::new()
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz).with_state(ready))
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    record_process_memory();
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                }
            }),
        )
}

async fn readyz(State(check): State<ReadinessCheck>) -> Response {
    match check().await {
        Ok(()) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(reason) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", reason).into_response()
        }
    }
}

/// Counts requests and their latency by method, matched route and status
/// (`lfusys_http_requests_total`, `lfusys_http_request_duration_seconds`).
pub async fn track_http(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("lfusys_http_requests_total", &labels).increment(1);
    metrics::histogram!("lfusys_http_request_duration_seconds", &labels)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Reads this process's current and peak resident set size (Linux) into gauges
/// `lfusys_process_resident_memory_bytes` and `lfusys_process_peak_resident_memory_bytes`.
pub fn record_process_memory() {
    if let Some((rss, hwm)) = read_rss() {
        metrics::gauge!("lfusys_process_resident_memory_bytes").set(rss as f64);
        metrics::gauge!("lfusys_process_peak_resident_memory_bytes").set(hwm as f64);
    }
}

fn read_rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resolves on Ctrl-C or SIGTERM, for graceful shutdown.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
