//! What every LFUSYS server shares over HTTP: problem+json errors (RFC 9457, DESIGN §3.6), the
//! ops endpoints (`/healthz`, `/readyz`, `/metrics`), tracing, request metrics, graceful
//! shutdown, and who a request comes from (the user's access token, [`access`]).

pub mod access;
pub mod observability;
pub mod problem;
pub mod server;
