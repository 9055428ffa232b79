//! The long poll of an upload's status (`GET /api/v1/uploads/{id}?wait=N`, DESIGN §3.5):
//! how long a request may wait, and how many may wait at once per user.
//!
//! A waiting request costs a parked task here and one open gRPC stream to the sessions
//! service, which wakes it when the upload changes. So that one user cannot hold an unbounded
//! number of them, each user may have [`Config::max_waits_per_user`](crate::Config) waits
//! open; one more is answered `429` with `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lfusys_core::ids::UserId;
use service_kit::problem::Problem;
use tokio_util::sync::CancellationToken;

/// The longest wait a request may ask for; a longer one is cut to this.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Parses the query of a status request: `wait` in whole seconds (0 to 60; more is cut to 60).
/// Other parameters are ignored.
pub fn parse_wait(query: Option<&str>) -> Result<Duration, Problem> {
    let Some(value) = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find_map(|(k, v)| (k == "wait").then_some(v))
    else {
        return Ok(Duration::ZERO);
    };
    let secs: u64 = value.parse().map_err(|_| {
        Problem::bad_request(
            "invalid-wait",
            format!("wait must be a whole number of seconds from 0 to 60, not {value:?}"),
        )
    })?;
    Ok(Duration::from_secs(secs).min(MAX_WAIT))
}

/// Open waits per user, and the signal that ends them all when the gateway stops.
#[derive(Debug)]
pub struct Waits {
    per_user: u32,
    open: Arc<Mutex<HashMap<UserId, u32>>>,
    stopping: CancellationToken,
}

/// One open wait; dropping it closes it.
#[derive(Debug)]
pub struct WaitSlot {
    user: UserId,
    open: Arc<Mutex<HashMap<UserId, u32>>>,
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

impl Waits {
    pub fn new(per_user: u32) -> Self {
        Self {
            per_user,
            open: Arc::default(),
            stopping: CancellationToken::new(),
        }
    }

    /// A slot for one more wait of `user`, or the `429` that says to come back later.
    pub fn open(&self, user: &UserId) -> Result<WaitSlot, Problem> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(user.clone()).or_default();
        if *n >= self.per_user {
            return Err(Problem::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "too-many-waits",
                format!(
                    "{} status requests of this account are waiting already; wait for one to answer, or ask without ?wait",
                    self.per_user
                ),
            )
            .with_retry_after(1));
        }
        *n += 1;
        Ok(WaitSlot {
            user: user.clone(),
            open: Arc::clone(&self.open),
        })
    }

    /// Waits open now, of all users.
    pub fn open_now(&self) -> u32 {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }

    /// Ends every wait with the status as it is: the gateway is stopping.
    pub fn stop(&self) {
        self.stopping.cancel();
    }

    pub async fn stopped(&self) {
        self.stopping.cancelled().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wait_is_whole_seconds_capped_at_a_minute() {
        assert_eq!(parse_wait(None).unwrap(), Duration::ZERO);
        assert_eq!(parse_wait(Some("x=1")).unwrap(), Duration::ZERO);
        assert_eq!(
            parse_wait(Some("wait=30")).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(parse_wait(Some("a=b&wait=0")).unwrap(), Duration::ZERO);
        assert_eq!(parse_wait(Some("wait=3600")).unwrap(), MAX_WAIT);
        for bad in [
            "wait=",
            "wait",
            "wait=-1",
            "wait=1.5",
            "wait=abc",
            "wait=99999999999999999999",
        ] {
            let p = parse_wait(Some(bad)).unwrap_err();
            assert_eq!(p.status, 400, "{bad}");
        }
    }

    #[test]
    fn each_user_has_a_bounded_number_of_waits() {
        let waits = Waits::new(2);
        let (a, b) = (UserId::from("a".to_owned()), UserId::from("b".to_owned()));
        let first = waits.open(&a).unwrap();
        let _second = waits.open(&a).unwrap();
        let refused = waits.open(&a).unwrap_err();
        assert_eq!(refused.status, 429);
        // Another user is not affected; a closed wait makes room.
        let _other = waits.open(&b).unwrap();
        drop(first);
        let _third = waits.open(&a).unwrap();
        assert_eq!(waits.open_now(), 3);
    }
}
