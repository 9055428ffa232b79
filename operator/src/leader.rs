//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas are safe:
//! only the holder reconciles; the other waits and takes over when the lease runs out.
//!
//! Every write is a compare-and-swap on the Lease's `resourceVersion`, so two candidates can
//! never both believe they won.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;

/// Whether this candidate holds the lease after a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

/// Pure decision: may `identity` take or keep `lease` at `now`?
#[must_use]
pub fn may_hold(lease: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    match lease.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == identity => true,
        Some(_) => {
            let duration =
                SignedDuration::from_secs(i64::from(lease.lease_duration_seconds.unwrap_or(0)));
            lease
                .renew_time
                .as_ref()
                .or(lease.acquire_time.as_ref())
                .is_none_or(|renewed| renewed.0 + duration < now)
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElector {
    #[must_use]
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often the leader renews: a third of the lease, as client-go does.
    #[must_use]
    pub fn renew_interval(&self) -> Duration {
        self.duration / 3
    }

    fn spec(&self, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let ours = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(&self.identity));
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..LeaseSpec::default()
        }
    }

    /// One election round: create, renew or take over the lease when allowed.
    ///
    /// # Errors
    /// When the API server cannot be reached (the caller retries).
    pub async fn try_acquire_or_renew(&self) -> Result<Role, kube::Error> {
        let now = Timestamp::now();
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(now, None)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Role::Leader),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Role::Follower),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let current = lease.spec.clone().unwrap_or_default();
                if !may_hold(&current, &self.identity, now) {
                    return Ok(Role::Follower);
                }
                lease.spec = Some(self.spec(now, Some(&current)));
                // `replace` carries the resourceVersion we read: a concurrent writer makes it fail.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(Role::Leader),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(Role::Follower),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gives the lease up (on shutdown) so another replica takes over at once.
    ///
    /// # Errors
    /// When the API server cannot be reached; the lease then simply runs out.
    pub async fn release(&self) -> Result<(), kube::Error> {
        if let Some(mut lease) = self.api.get_opt(&self.name).await? {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(&self.identity) {
                spec.holder_identity = None;
                spec.renew_time = None;
                spec.acquire_time = None;
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: &str, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: Some(secs),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn who_may_hold_the_lease() {
        let now: Timestamp = "2026-11-29T10:00:20Z".parse().unwrap();
        // (holder, renewed at, duration) -> may "b" hold it?
        let table = [
            (None, "2026-11-29T10:00:19Z", 15, true),       // free
            (Some(""), "2026-11-29T10:00:19Z", 15, true),   // released
            (Some("b"), "2026-11-29T10:00:19Z", 15, true),  // ours: renew
            (Some("a"), "2026-11-29T10:00:19Z", 15, false), // a's, fresh
            (Some("a"), "2026-11-29T10:00:05Z", 15, false), // a's, exactly at expiry
            (Some("a"), "2026-11-29T10:00:04Z", 15, true),  // a's, expired
        ];
        for (holder, renewed, secs, want) in table {
            assert_eq!(
                may_hold(&lease(holder, renewed, secs), "b", now),
                want,
                "{holder:?} {renewed}"
            );
        }
    }
}
