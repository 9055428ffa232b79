//! What every LFUSYS server shares over HTTP: problem+json errors (RFC 9457, DESIGN §3.6), the
//! ops endpoints (`/healthz`, `/readyz`, `/metrics`), tracing, request metrics and graceful
//! shutdown.

pub mod observability;
pub mod problem;
pub mod server;
