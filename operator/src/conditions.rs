//! The status conditions, computed from what was applied and observed (pure).
//!
//! `lastTransitionTime` changes only when a condition's status flips, so a steady cluster's
//! status is byte-for-byte stable and the operator writes nothing.

use crds::condition::{AVAILABLE, DEGRADED, PROGRESSING, SCALING_ACTIVE};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// What one owned Deployment reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentObservation {
    pub name: String,
    pub desired: i32,
    pub available: i32,
    pub updated: i32,
    /// The Deployment controller has seen the latest spec.
    pub observed_latest: bool,
}

impl DeploymentObservation {
    fn rolled_out(&self) -> bool {
        self.observed_latest && self.updated >= self.desired && self.available >= self.desired
    }
}

/// A dependency the cluster cannot work without that is missing or broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// PascalCase, e.g. `CredentialsSecretMissing`.
    pub reason: String,
    pub message: String,
}

/// Everything the conditions are computed from.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    pub generation: Option<i64>,
    pub deployments: Vec<DeploymentObservation>,
    pub problems: Vec<Problem>,
    /// `Ok(depth)` when the queue was read, `Err(message)` when not.
    pub queue: Option<Result<u64, String>>,
}

/// The four conditions for `obs`, keeping the transition times of `previous` where the status
/// did not change.
#[must_use]
pub fn compute(obs: &Observations, previous: &[Condition], now: &Time) -> Vec<Condition> {
    let maker = Maker {
        previous,
        now,
        generation: obs.generation,
    };
    vec![
        available(obs, &maker),
        progressing(obs, &maker),
        degraded(obs, &maker),
        scaling_active(obs, &maker),
    ]
}

/// Makes the conditions of one computation: `observedGeneration` of the observations, and the
/// transition time of the previous condition of the same type and status, else now.
struct Maker<'a> {
    previous: &'a [Condition],
    now: &'a Time,
    generation: Option<i64>,
}

impl Maker<'_> {
    fn make(&self, type_: &str, ok: bool, reason: &str, message: String) -> Condition {
        let status = if ok { "True" } else { "False" };
        let last = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| self.now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: last,
            observed_generation: self.generation,
        }
    }
}

fn available(obs: &Observations, maker: &Maker) -> Condition {
    let unavailable: Vec<&str> = obs
        .deployments
        .iter()
        .filter(|d| d.desired > 0 && d.available < 1)
        .map(|d| d.name.as_str())
        .collect();
    if obs.deployments.is_empty() {
        maker.make(
            AVAILABLE,
            false,
            "NotCreated",
            "the services are not created yet".into(),
        )
    } else if unavailable.is_empty() {
        maker.make(
            AVAILABLE,
            true,
            "ServicesAvailable",
            "gateway, sessions and upload workers have available pods".into(),
        )
    } else {
        maker.make(
            AVAILABLE,
            false,
            "PodsUnavailable",
            format!("no available pods in {}", unavailable.join(", ")),
        )
    }
}

fn progressing(obs: &Observations, maker: &Maker) -> Condition {
    let rolling: Vec<String> = obs
        .deployments
        .iter()
        .filter(|d| !d.rolled_out())
        .map(|d| {
            format!(
                "{} ({}/{} updated and available)",
                d.name,
                d.available.min(d.updated),
                d.desired
            )
        })
        .collect();
    if rolling.is_empty() {
        maker.make(
            PROGRESSING,
            false,
            "RolloutComplete",
            "every Deployment runs the current spec".into(),
        )
    } else {
        maker.make(
            PROGRESSING,
            true,
            "RollingOut",
            format!("rolling out: {}", rolling.join(", ")),
        )
    }
}

fn degraded(obs: &Observations, maker: &Maker) -> Condition {
    let mut problems = obs.problems.clone();
    if let Some(Err(message)) = &obs.queue {
        problems.push(Problem {
            reason: "QueueUnreachable".into(),
            message: message.clone(),
        });
    }
    match problems.as_slice() {
        [] => maker.make(
            DEGRADED,
            false,
            "AsExpected",
            "all dependencies are in place".into(),
        ),
        [first, ..] => maker.make(
            DEGRADED,
            true,
            &first.reason,
            problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

fn scaling_active(obs: &Observations, maker: &Maker) -> Condition {
    match &obs.queue {
        Some(Ok(depth)) => maker.make(
            SCALING_ACTIVE,
            true,
            "QueueDepthRead",
            format!("the assembly queue holds {depth} messages"),
        ),
        Some(Err(message)) => {
            maker.make(SCALING_ACTIVE, false, "QueueUnreachable", message.clone())
        }
        None => maker.make(
            SCALING_ACTIVE,
            false,
            "NotStarted",
            "the autoscaler has not read the queue yet".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn deployment(name: &str, desired: i32, available: i32) -> DeploymentObservation {
        DeploymentObservation {
            name: name.into(),
            desired,
            available,
            updated: desired,
            observed_latest: true,
        }
    }

    fn healthy() -> Observations {
        Observations {
            generation: Some(4),
            deployments: vec![
                deployment("c-gateway", 2, 2),
                deployment("c-sessions", 1, 1),
                deployment("c-uploads", 1, 1),
            ],
            problems: vec![],
            queue: Some(Ok(0)),
        }
    }

    fn get<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_healthy_cluster() {
        let now = time("2026-11-29T10:00:00Z");
        let c = compute(&healthy(), &[], &now);
        assert_eq!(get(&c, AVAILABLE).status, "True");
        assert_eq!(get(&c, PROGRESSING).status, "False");
        assert_eq!(get(&c, DEGRADED).status, "False");
        assert_eq!(get(&c, SCALING_ACTIVE).status, "True");
        assert!(c.iter().all(|c| c.observed_generation == Some(4)));
        assert!(c.iter().all(|c| c.last_transition_time == now));
    }

    #[test]
    fn transition_times_change_only_when_the_status_flips() {
        let t1 = time("2026-11-29T10:00:00Z");
        let t2 = time("2026-11-29T10:05:00Z");
        let first = compute(&healthy(), &[], &t1);
        // Same status later: the times stay, so the status is unchanged and not rewritten.
        assert_eq!(compute(&healthy(), &first, &t2), first);
        // The queue becomes unreachable: Degraded and ScalingActive flip at t2, the others keep t1.
        let mut broken = healthy();
        broken.queue = Some(Err("connection refused".into()));
        let second = compute(&broken, &first, &t2);
        assert_eq!(get(&second, DEGRADED).status, "True");
        assert_eq!(get(&second, DEGRADED).reason, "QueueUnreachable");
        assert_eq!(get(&second, DEGRADED).last_transition_time, t2);
        assert_eq!(get(&second, SCALING_ACTIVE).status, "False");
        assert_eq!(get(&second, AVAILABLE).last_transition_time, t1);
    }

    #[test]
    fn a_missing_secret_degrades_with_its_reason() {
        let mut obs = healthy();
        obs.problems.push(Problem {
            reason: "CredentialsSecretMissing".into(),
            message: "Secret aws-creds not found".into(),
        });
        let c = compute(&obs, &[], &time("2026-11-29T10:00:00Z"));
        let degraded = get(&c, DEGRADED);
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "CredentialsSecretMissing");
        assert!(degraded.message.contains("aws-creds"));
    }

    #[test]
    fn rollouts_and_unavailable_pods() {
        let mut obs = healthy();
        obs.deployments[2] = DeploymentObservation {
            name: "c-uploads".into(),
            desired: 3,
            available: 1,
            updated: 1,
            observed_latest: true,
        };
        obs.deployments[0].available = 0;
        let c = compute(&obs, &[], &time("2026-11-29T10:00:00Z"));
        assert_eq!(get(&c, PROGRESSING).status, "True");
        assert!(get(&c, PROGRESSING).message.contains("c-uploads"));
        assert_eq!(get(&c, AVAILABLE).status, "False");
        assert_eq!(get(&c, AVAILABLE).reason, "PodsUnavailable");
        assert!(get(&c, AVAILABLE).message.contains("c-gateway"));
    }

    #[test]
    fn nothing_created_yet() {
        let obs = Observations {
            generation: Some(1),
            ..Observations::default()
        };
        let c = compute(&obs, &[], &time("2026-11-29T10:00:00Z"));
        assert_eq!(get(&c, AVAILABLE).reason, "NotCreated");
        assert_eq!(get(&c, SCALING_ACTIVE).reason, "NotStarted");
    }
}
