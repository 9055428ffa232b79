//! Loopback ports.

/// A free loopback port (bound, then released), for a server that has to be started on a port
/// known in advance, or restarted on the same URL.
///
/// # Panics
/// When the machine has no loopback port left.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or_else(|e| panic!("no free loopback port: {e}"), |a| a.port())
}
