//! The workers' autoscaler: pure logic, no Kubernetes or AWS types.
//!
//! `desired = clamp(ceil(depth / targetQueueDepthPerReplica), min, max)`; scaling up happens at
//! once, scaling down only to the highest recommendation of the last stabilization window (as the
//! HorizontalPodAutoscaler does), so a queue that drains for a moment does not flap the pool.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Depths within this percentage of the current pool's target capacity leave the pool as it is
/// (HPA's default tolerance), so a depth hovering around a replica boundary does not resize the
/// pool back and forth.
pub const TOLERANCE_PERCENT: u64 = 10;

/// The spec's autoscaling settings, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub target_depth_per_replica: i32,
    pub stabilization: Duration,
}

/// Why the autoscaler chose what it chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Keep the current count.
    Hold,
    ScaleUp,
    ScaleDown,
    /// A lower count is recommended, but the stabilization window has not passed.
    HoldForStabilization,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    pub replicas: i32,
    pub decision: Decision,
}

/// What the queue asks for, ignoring history: ceil(depth / target), clamped, with the tolerance
/// band around the current count.
#[must_use]
pub fn raw_recommendation(depth: u64, current: i32, policy: &Policy) -> i32 {
    let target = u64::try_from(policy.target_depth_per_replica.max(1)).unwrap_or(1);
    let wanted = i32::try_from(depth.div_ceil(target)).unwrap_or(i32::MAX);
    let clamped = wanted.clamp(
        policy.min_replicas,
        policy.max_replicas.max(policy.min_replicas),
    );
    if current > 0 && clamped != current && within_tolerance(depth, current, target) {
        return current.clamp(
            policy.min_replicas,
            policy.max_replicas.max(policy.min_replicas),
        );
    }
    clamped
}

fn within_tolerance(depth: u64, current: i32, target: u64) -> bool {
    // Integer arithmetic: 22 against a capacity of 20 is exactly 10 %.
    let capacity = u128::from(current.unsigned_abs()) * u128::from(target);
    u128::from(depth).abs_diff(capacity) * 100 <= capacity * u128::from(TOLERANCE_PERCENT)
}

/// Recommendation history of one cluster's worker pool.
#[derive(Debug, Default)]
pub struct Autoscaler {
    history: VecDeque<(Instant, i32)>,
}

impl Autoscaler {
    /// Decides the replica count at `now` for a queue of `depth` messages while `current`
    /// workers are asked for.
    pub fn recommend(
        &mut self,
        now: Instant,
        depth: u64,
        current: i32,
        policy: &Policy,
    ) -> Recommendation {
        if self.history.is_empty() {
            // No history (new cluster or restarted operator): count the current size as
            // recommended now, so a restart never shortens the window.
            self.history.push_back((now, current));
        }
        let raw = raw_recommendation(depth, current, policy);
        self.history.push_back((now, raw));
        while let Some(&(at, _)) = self.history.front() {
            if now.duration_since(at) > policy.stabilization && self.history.len() > 1 {
                self.history.pop_front();
            } else {
                break;
            }
        }
        let bounds = |n: i32| {
            n.clamp(
                policy.min_replicas,
                policy.max_replicas.max(policy.min_replicas),
            )
        };
        if raw > current {
            return Recommendation {
                replicas: raw,
                decision: Decision::ScaleUp,
            };
        }
        // The highest recommendation within the window decides how far down it may go.
        let stabilized = self
            .history
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= policy.stabilization)
            .map(|&(_, n)| n)
            .max()
            .unwrap_or(raw);
        let target = bounds(stabilized.min(current.max(raw)));
        if target < current {
            Recommendation {
                replicas: target,
                decision: Decision::ScaleDown,
            }
        } else if raw < current {
            Recommendation {
                replicas: bounds(current),
                decision: if bounds(current) == current {
                    Decision::HoldForStabilization
                } else {
                    Decision::ScaleDown
                },
            }
        } else {
            Recommendation {
                replicas: bounds(current),
                decision: Decision::Hold,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: i32, max: i32, target: i32, window_secs: u64) -> Policy {
        Policy {
            min_replicas: min,
            max_replicas: max,
            target_depth_per_replica: target,
            stabilization: Duration::from_secs(window_secs),
        }
    }

    #[test]
    fn raw_recommendations() {
        // (depth, current, min, max, target) -> replicas
        let table = [
            (0, 1, 1, 20, 5, 1),     // idle stays at the minimum
            (0, 5, 1, 20, 5, 1),     // empty queue asks for the minimum
            (1, 1, 1, 20, 5, 1),     // below one replica's target
            (6, 1, 1, 20, 5, 2),     // ceil(6 / 5)
            (50, 1, 1, 20, 5, 10),   // ceil(50 / 5)
            (51, 1, 1, 20, 5, 11),   // rounds up
            (1000, 3, 1, 20, 5, 20), // capped at max
            (0, 0, 2, 4, 5, 2),      // raised to min
            (10, 2, 3, 3, 5, 3),     // min == max pins the count
            (21, 4, 1, 20, 5, 4),    // 21 / 20 = 1.05: inside the 10 % tolerance
            (22, 4, 1, 20, 5, 4),    // 1.10: still inside
            (23, 4, 1, 20, 5, 5),    // 1.15: outside, scale to ceil(23 / 5)
            (19, 4, 1, 20, 5, 4),    // 0.95: inside
            (17, 4, 1, 20, 5, 4),    // 0.85: outside, but ceil(17 / 5) = 4 anyway
            (15, 4, 1, 20, 5, 3),    // 0.75: outside
            (u64::MAX, 1, 1, 20, 1, 20),
        ];
        for (depth, current, min, max, target, want) in table {
            assert_eq!(
                raw_recommendation(depth, current, &policy(min, max, target, 300)),
                want,
                "depth {depth}, current {current}, min {min}, max {max}, target {target}"
            );
        }
    }

    #[test]
    fn scales_up_at_once_and_down_only_after_the_window() {
        let p = policy(1, 20, 5, 300);
        let mut scaler = Autoscaler::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // (seconds, depth, current) -> (replicas, decision)
        let steps = [
            (0, 0, 1, 1, Decision::Hold),
            (15, 40, 1, 8, Decision::ScaleUp),
            (30, 100, 8, 20, Decision::ScaleUp),
            (45, 0, 20, 20, Decision::HoldForStabilization),
            (300, 0, 20, 20, Decision::HoldForStabilization), // the 20 of t=30 is in the window
            (331, 0, 20, 1, Decision::ScaleDown),             // window passed
            (346, 0, 1, 1, Decision::Hold),
        ];
        for (s, depth, current, want, decision) in steps {
            let r = scaler.recommend(at(s), depth, current, &p);
            assert_eq!((r.replicas, r.decision), (want, decision), "at t={s}s");
        }
    }

    #[test]
    fn scales_down_step_by_step_to_the_window_maximum() {
        let p = policy(1, 20, 5, 60);
        let mut scaler = Autoscaler::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(scaler.recommend(at(0), 50, 10, &p).replicas, 10);
        assert_eq!(scaler.recommend(at(30), 25, 10, &p).replicas, 10);
        // At 61 s the 10 of t=0 left the window; the 5 of t=30 is the highest left.
        let r = scaler.recommend(at(61), 0, 10, &p);
        assert_eq!((r.replicas, r.decision), (5, Decision::ScaleDown));
        assert_eq!(scaler.recommend(at(91), 0, 5, &p).replicas, 1);
    }

    #[test]
    fn a_restarted_autoscaler_waits_a_whole_window_before_scaling_down() {
        let p = policy(1, 20, 5, 300);
        let mut scaler = Autoscaler::default();
        let t0 = Instant::now();
        let r = scaler.recommend(t0, 0, 6, &p);
        assert_eq!(
            (r.replicas, r.decision),
            (6, Decision::HoldForStabilization)
        );
        let r = scaler.recommend(t0 + Duration::from_secs(301), 0, 6, &p);
        assert_eq!((r.replicas, r.decision), (1, Decision::ScaleDown));
    }

    #[test]
    fn a_zero_window_scales_down_immediately() {
        let p = policy(2, 20, 5, 0);
        let mut scaler = Autoscaler::default();
        let t0 = Instant::now();
        assert_eq!(scaler.recommend(t0, 100, 2, &p).replicas, 20);
        let r = scaler.recommend(t0 + Duration::from_secs(1), 0, 20, &p);
        assert_eq!((r.replicas, r.decision), (2, Decision::ScaleDown));
    }

    #[test]
    fn bounds_changed_in_the_spec_apply_at_once() {
        let mut scaler = Autoscaler::default();
        let t0 = Instant::now();
        // max lowered below the current count: down at once, the window does not hold it.
        let r = scaler.recommend(t0, 100, 20, &policy(1, 5, 5, 300));
        assert_eq!((r.replicas, r.decision), (5, Decision::ScaleDown));
        // min raised above the current count: up at once.
        let r = scaler.recommend(t0, 0, 1, &policy(3, 5, 5, 300));
        assert_eq!((r.replicas, r.decision), (3, Decision::ScaleUp));
    }
}
