//! Connecting to the sessions service (used by the gateway and the upload workers).

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::proto::sessions_client::SessionsClient;

/// A client of the sessions service at `url` (e.g. `http://127.0.0.1:50051`). The connection
/// is made on first use and re-made after failures, so a service that starts later (or
/// restarts) is picked up. Must be called inside a Tokio runtime.
pub fn connect_lazy(url: &str) -> Result<SessionsClient<Channel>, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        // Every call is a small metadata operation; none should hang a request.
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(SessionsClient::new(endpoint.connect_lazy()))
}
