//! A real sessions service (`sessions::serve`) on a loopback listener, for the suites of the
//! sessions service itself and of the services that call it (gateway, upload workers).

use std::net::SocketAddr;
use std::time::Duration;

use sessions::SessionsState;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running sessions service; it stops when dropped.
pub struct SessionsServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, what the gateway's and workers' `sessions_url` take.
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), sessions::Error>>>,
}

impl SessionsServer {
    /// Serves `state` on a fresh loopback port.
    ///
    /// # Panics
    /// When no loopback listener can be bound.
    pub async fn start(state: SessionsState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind a loopback listener: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local address: {e}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(sessions::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            url: format!("http://{addr}"),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the service and waits (at most 10 s) for `serve` to return; returns what it
    /// returned.
    ///
    /// # Panics
    /// When called twice, or when `serve` does not return in time.
    pub async fn shutdown(&mut self) -> Result<(), sessions::Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self
            .task
            .take()
            .unwrap_or_else(|| panic!("already shut down"));
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => panic!("serve panicked: {e}"),
            Err(elapsed) => panic!("serve did not return after shutdown: {elapsed}"),
        }
    }
}

impl Drop for SessionsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
