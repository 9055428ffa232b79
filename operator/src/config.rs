//! The operator's own settings.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

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

impl OperatorConfig {
    /// # Errors
    /// A variable with a value that does not parse.
    pub fn from_environment() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// # Errors
    /// A variable with a value that does not parse.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let listen_var = "LFUSYS_OPERATOR_LISTEN";
        let listen = get(listen_var).unwrap_or_else(|| "0.0.0.0:8080".into());
        let listen = listen
            .parse()
            .map_err(|e: std::net::AddrParseError| ConfigError {
                var: listen_var,
                value: listen.clone(),
                reason: e.to_string(),
            })?;
        let lease_var = "LFUSYS_OPERATOR_LEASE_SECS";
        let lease_secs = match get(lease_var) {
            None => 15,
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (2..=3600).contains(&n) => n,
                _ => {
                    return Err(ConfigError {
                        var: lease_var,
                        value: v,
                        reason: "expected whole seconds between 2 and 3600".into(),
                    })
                }
            },
        };
        let identity = get("POD_NAME")
            .or_else(|| get("HOSTNAME"))
            .unwrap_or_else(|| format!("lfusys-operator-{}", std::process::id()));
        Ok(Self {
            listen,
            watch_namespace: get("LFUSYS_OPERATOR_WATCH_NAMESPACE"),
            lease_name: get("LFUSYS_OPERATOR_LEASE_NAME")
                .unwrap_or_else(|| "lfusys-operator".into()),
            lease_namespace: get("LFUSYS_OPERATOR_LEASE_NAMESPACE")
                .or_else(|| get("POD_NAMESPACE"))
                .unwrap_or_else(|| "default".into()),
            lease_duration: Duration::from_secs(lease_secs),
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn defaults() {
        let c = OperatorConfig::from_lookup(lookup(&[("POD_NAME", "op-0")])).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.watch_namespace, None);
        assert_eq!(c.lease_name, "lfusys-operator");
        assert_eq!(c.lease_namespace, "default");
        assert_eq!(c.lease_duration, Duration::from_secs(15));
        assert_eq!(c.identity, "op-0");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = OperatorConfig::from_lookup(lookup(&[("LFUSYS_OPERATOR_LISTEN", "nowhere")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("LFUSYS_OPERATOR_LISTEN=\"nowhere\""),
            "{err}"
        );
        let err = OperatorConfig::from_lookup(lookup(&[("LFUSYS_OPERATOR_LEASE_SECS", "1")]))
            .unwrap_err();
        assert!(
            err.to_string().contains("LFUSYS_OPERATOR_LEASE_SECS"),
            "{err}"
        );
    }
}
