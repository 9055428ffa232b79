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

/// Readiness probe: whether the sessions service answers at all. Any answer but
/// "unavailable" (a not-found for a made-up id included) means it is up.
pub async fn probe(client: &SessionsClient<Channel>) -> Result<(), String> {
    let mut client = client.clone();
    let req = crate::proto::GetUploadRequest {
        owner_id: "readiness-probe".to_owned(),
        upload_id: "00000000-0000-0000-0000-000000000000".to_owned(),
        ..Default::default()
    };
    match tokio::time::timeout(Duration::from_secs(3), client.get_upload(req)).await {
        Err(_) => Err("sessions service: no answer within 3 s".to_owned()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
                Err(format!("sessions service: {}", status.message()))
            }
            _ => Ok(()),
        },
    }
}
