//! The operator's own settings.

use std::net::SocketAddr;
use std::time::Duration;

pub use lfusys_core::env::ConfigError;
use lfusys_core::env::Env;

/// Settings from the environment:
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `LFUSYS_OPERATOR_LISTEN` | `0.0.0.0:8080` | `/healthz`, `/readyz`, `/metrics` |
/// | `LFUSYS_OPERATOR_WATCH_NAMESPACE` | empty (all) | reconcile only the clusters of this namespace |
/// | `LFUSYS_OPERATOR_LEASE_NAME` | `lfusys-operator` | the leader-election Lease |
/// | `LFUSYS_OPERATOR_LEASE_NAMESPACE` | `POD_NAMESPACE`, else `default` | its namespace |
/// | `LFUSYS_OPERATOR_LEASE_SECS` | `15` | lease duration; the leader renews every third of it |
/// | `POD_NAME` | host name | this replica's identity in the Lease and in Events |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorConfig {
    pub listen: SocketAddr,
    pub watch_namespace: Option<String>,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration: Duration,
    pub identity: String,
}

/// The lease is renewed every third of its duration: below 2 s that is busy-looping the API
/// server, above an hour a dead leader blocks reconciling for too long.
const LEASE_SECS: std::ops::RangeInclusive<u64> = 2..=3600;

impl OperatorConfig {
    /// # Errors
    /// A variable with a value that does not parse.
    pub fn from_environment() -> Result<Self, ConfigError> {
        Self::from_env(&Env::process())
    }

    /// Like [`OperatorConfig::from_environment`] with the variables coming from `env`.
    ///
    /// # Errors
    /// A variable with a value that does not parse.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let listen = env.parse(
            "LFUSYS_OPERATOR_LISTEN",
            SocketAddr::from(([0, 0, 0, 0], 8080)),
        )?;
        let lease_secs = env.parse_with("LFUSYS_OPERATOR_LEASE_SECS", 15, |v| match v.parse() {
            Ok(n) if LEASE_SECS.contains(&n) => Ok(n),
            _ => Err(format!(
                "expected whole seconds between {} and {}",
                LEASE_SECS.start(),
                LEASE_SECS.end()
            )),
        })?;
        Ok(Self {
            listen,
            watch_namespace: env.get("LFUSYS_OPERATOR_WATCH_NAMESPACE"),
            lease_name: env
                .get("LFUSYS_OPERATOR_LEASE_NAME")
                .unwrap_or_else(|| "lfusys-operator".into()),
            lease_namespace: env
                .get("LFUSYS_OPERATOR_LEASE_NAMESPACE")
                .or_else(|| env.get("POD_NAMESPACE"))
                .unwrap_or_else(|| "default".into()),
            lease_duration: Duration::from_secs(lease_secs),
            identity: env
                .get("POD_NAME")
                .or_else(|| env.get("HOSTNAME"))
                .unwrap_or_else(|| format!("lfusys-operator-{}", std::process::id())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<OperatorConfig, ConfigError> {
        OperatorConfig::from_env(&Env::from_pairs(vars))
    }

    #[test]
    fn defaults() {
        let c = config(&[("POD_NAME", "op-0")]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.watch_namespace, None);
        assert_eq!(c.lease_name, "lfusys-operator");
        assert_eq!(c.lease_namespace, "default");
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.identity, "op-0");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = config(&[("LFUSYS_OPERATOR_LISTEN", "nowhere")]).unwrap_err();
        assert_eq!(
            (err.var, err.value.as_str()),
            ("LFUSYS_OPERATOR_LISTEN", "nowhere")
        );
        assert!(
            err.to_string()
                .contains("LFUSYS_OPERATOR_LISTEN=\"nowhere\""),
            "{err}"
        );
        for secs in ["1", "3601", "soon"] {
            let err = config(&[("LFUSYS_OPERATOR_LEASE_SECS", secs)]).unwrap_err();
            assert_eq!(err.var, "LFUSYS_OPERATOR_LEASE_SECS", "{err}");
        }
        assert_eq!(
            config(&[("LFUSYS_OPERATOR_LEASE_SECS", "3600")])
                .unwrap()
                .lease_duration,
            Duration::from_secs(3600)
        );
    }
}
