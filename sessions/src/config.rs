//! Configuration of the sessions service.

use std::net::SocketAddr;
use std::time::Duration;

use lfusys_core::plan::PlanPolicy;
use stores::StorageConfig;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const TIB: u64 = 1024 * 1024 * MIB;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_CHUNK_SIZE: u64 = 16 * MIB;
pub const DEFAULT_MAX_UPLOAD_SIZE: u64 = 5 * TIB;
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(86_400);
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_CHUNK_LEASE: Duration = Duration::from_secs(20);
pub const DEFAULT_ASSEMBLY_STALE_AFTER: Duration = Duration::from_secs(600);

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

/// Settings of the sessions service.
///
/// Environment (see [`Config::from_environment`]):
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `LFUSYS_SESSIONS_LISTEN` | `127.0.0.1:50051` | address of the gRPC + ops port |
/// | `LFUSYS_DATA_DIR` | `./lfusys-data` | embedded storage directory |
/// | `LFUSYS_CHUNK_SIZE` | `16MiB` | preferred chunk size |
/// | `LFUSYS_MAX_UPLOAD_SIZE` | `5TiB` | largest accepted upload |
/// | `LFUSYS_UPLOAD_TTL_SECS` | `86400` | an unfinished upload expires this long after creation |
/// | `LFUSYS_SWEEP_INTERVAL_SECS` | `30` | how often expired and stuck uploads are swept |
/// | `LFUSYS_CHUNK_LEASE_SECS` | `20` | how long a worker's claim on a chunk lasts |
/// | `LFUSYS_ASSEMBLY_STALE_SECS` | `600` | an upload assembling longer than this gets its job re-enqueued |
///
/// Sizes are plain bytes or a number with a unit: `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB`
/// are powers of 1024; `KB`, `MB`, `GB`, `TB` are powers of 1000 (case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub storage: StorageConfig,
    pub preferred_chunk_size: u64,
    pub max_upload_size: u64,
    pub upload_ttl: Duration,
    pub sweep_interval: Duration,
    pub chunk_lease: Duration,
    pub assembly_stale_after: Duration,
}

impl Config {
    /// The defaults, on the given storage.
    pub fn new(storage: StorageConfig) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            storage,
            preferred_chunk_size: DEFAULT_CHUNK_SIZE,
            max_upload_size: DEFAULT_MAX_UPLOAD_SIZE,
            upload_ttl: DEFAULT_UPLOAD_TTL,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            chunk_lease: DEFAULT_CHUNK_LEASE,
            assembly_stale_after: DEFAULT_ASSEMBLY_STALE_AFTER,
        }
    }

    /// Reads the `LFUSYS_*` variables of the table above.
    pub fn from_environment() -> Result<Self, ConfigError> {
        let storage = StorageConfig::from_environment().map_err(|e| ConfigError {
            var: e.var,
            value: e.value,
            reason: e.reason,
        })?;
        Self::from_lookup(|name| std::env::var(name).ok(), storage)
    }

    /// Like [`Config::from_environment`] with the variables coming from `lookup`.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        storage: StorageConfig,
    ) -> Result<Self, ConfigError> {
        let get = |var: &'static str| {
            lookup(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(|v| (var, v))
        };
        let mut config = Self::new(storage);
        if let Some((var, v)) = get("LFUSYS_SESSIONS_LISTEN") {
            config.listen = v.parse().map_err(|_| ConfigError {
                var,
                value: v.clone(),
                reason: format!("expected a socket address such as {DEFAULT_LISTEN}"),
            })?;
        }
        if let Some((var, v)) = get("LFUSYS_CHUNK_SIZE") {
            config.preferred_chunk_size = positive_size(var, &v)?;
        }
        if let Some((var, v)) = get("LFUSYS_MAX_UPLOAD_SIZE") {
            config.max_upload_size = positive_size(var, &v)?;
        }
        let secs = |var: &'static str, target: &mut Duration| -> Result<(), ConfigError> {
            if let Some((var, v)) = get(var) {
                *target = positive_secs(var, &v)?;
            }
            Ok(())
        };
        secs("LFUSYS_UPLOAD_TTL_SECS", &mut config.upload_ttl)?;
        secs("LFUSYS_SWEEP_INTERVAL_SECS", &mut config.sweep_interval)?;
        secs("LFUSYS_CHUNK_LEASE_SECS", &mut config.chunk_lease)?;
        secs(
            "LFUSYS_ASSEMBLY_STALE_SECS",
            &mut config.assembly_stale_after,
        )?;
        Ok(config)
    }

    /// The chunk-planning rules this configuration implies on its storage.
    pub fn plan_policy(&self) -> PlanPolicy {
        PlanPolicy {
            preferred_chunk_size: self.preferred_chunk_size,
            min_chunk_size: self.storage.min_chunk_size(),
            max_upload_size: self.max_upload_size,
        }
    }
}

fn positive_size(var: &'static str, value: &str) -> Result<u64, ConfigError> {
    match parse_size(value) {
        Ok(0) => Err(ConfigError {
            var,
            value: value.to_owned(),
            reason: "must be greater than zero".into(),
        }),
        Ok(n) => Ok(n),
        Err(reason) => Err(ConfigError {
            var,
            value: value.to_owned(),
            reason,
        }),
    }
}

fn positive_secs(var: &'static str, value: &str) -> Result<Duration, ConfigError> {
    match value.parse::<u64>() {
        Ok(0) => Err(ConfigError {
            var,
            value: value.to_owned(),
            reason: "must be at least 1 second".into(),
        }),
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(_) => Err(ConfigError {
            var,
            value: value.to_owned(),
            reason: "expected a whole number of seconds".into(),
        }),
    }
}

pub use lfusys_core::units::parse_size;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn storage() -> StorageConfig {
        StorageConfig::embedded("/tmp/x")
    }

    #[test]
    fn defaults() {
        let c = Config::from_lookup(lookup(&[]), storage()).unwrap();
        assert_eq!(c, Config::new(storage()));
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.preferred_chunk_size, 16 * MIB);
        assert_eq!(c.max_upload_size, 5 * TIB);
        assert_eq!(c.upload_ttl, Duration::from_secs(86_400));
        assert_eq!(c.plan_policy().min_chunk_size, storage().min_chunk_size());
    }

    #[test]
    fn reads_every_variable() {
        let c = Config::from_lookup(
            lookup(&[
                ("LFUSYS_SESSIONS_LISTEN", "0.0.0.0:9000"),
                ("LFUSYS_CHUNK_SIZE", "8M"),
                ("LFUSYS_MAX_UPLOAD_SIZE", "1GiB"),
                ("LFUSYS_UPLOAD_TTL_SECS", "60"),
                ("LFUSYS_SWEEP_INTERVAL_SECS", "5"),
                ("LFUSYS_CHUNK_LEASE_SECS", "7"),
                ("LFUSYS_ASSEMBLY_STALE_SECS", "120"),
            ]),
            storage(),
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.preferred_chunk_size, 8 * MIB);
        assert_eq!(c.max_upload_size, 1024 * MIB);
        assert_eq!(c.upload_ttl, Duration::from_secs(60));
        assert_eq!(c.sweep_interval, Duration::from_secs(5));
        assert_eq!(c.chunk_lease, Duration::from_secs(7));
        assert_eq!(c.assembly_stale_after, Duration::from_secs(120));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (var, value) in [
            ("LFUSYS_SESSIONS_LISTEN", "nowhere"),
            ("LFUSYS_CHUNK_SIZE", "0"),
            ("LFUSYS_CHUNK_SIZE", "lots"),
            ("LFUSYS_MAX_UPLOAD_SIZE", "5 XB"),
            ("LFUSYS_UPLOAD_TTL_SECS", "1d"),
            ("LFUSYS_SWEEP_INTERVAL_SECS", "0"),
            ("LFUSYS_CHUNK_LEASE_SECS", "-1"),
            ("LFUSYS_ASSEMBLY_STALE_SECS", "soon"),
        ] {
            let err = Config::from_lookup(lookup(&[(var, value)]), storage()).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var), "{err}");
        }
    }
}
