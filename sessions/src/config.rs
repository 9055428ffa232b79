//! Configuration of the sessions service.

use std::net::SocketAddr;
use std::time::Duration;

pub use lfusys_core::env::ConfigError;
use lfusys_core::env::Env;
use lfusys_core::plan::PlanPolicy;
use stores::StorageConfig;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
#[cfg(test)]
const TIB: u64 = 1024 * 1024 * MIB;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_CHUNK_SIZE: u64 = 16 * MIB;
pub use lfusys_core::plan::DEFAULT_MAX_UPLOAD_SIZE;
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(86_400);
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_CHUNK_LEASE: Duration = Duration::from_secs(20);
pub const DEFAULT_ASSEMBLY_STALE_AFTER: Duration = Duration::from_secs(600);
pub const DEFAULT_OUTBOX_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(600);
pub const DEFAULT_WAIT_RECHECK: Duration = Duration::from_secs(1);

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
/// | `LFUSYS_OUTBOX_INTERVAL_MS` | `1000` | how often assembly jobs not yet sent (a crash, a queue error) are sent |
/// | `LFUSYS_ORPHAN_GRACE_SECS` | `600` | a blob upload in progress that no upload owns, untouched this long, is released |
/// | `LFUSYS_WAIT_RECHECK_MS` | `1000` | a long poll of an upload's status reads it again this often (changes made by other replicas) |
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
    pub outbox_interval: Duration,
    /// Blob storage prepared for an upload that was never recorded (a crash in between) is
    /// released once it is this old; longer than any create takes.
    pub orphan_grace: Duration,
    /// A waiting status read (long poll) reads the upload again this often: this process
    /// wakes it at once for its own changes, not for those of other replicas.
    pub wait_recheck: Duration,
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
            outbox_interval: DEFAULT_OUTBOX_INTERVAL,
            orphan_grace: DEFAULT_ORPHAN_GRACE,
            wait_recheck: DEFAULT_WAIT_RECHECK,
        }
    }

    /// Reads the `LFUSYS_*` variables of the table above.
    pub fn from_environment() -> Result<Self, ConfigError> {
        Self::from_env(&Env::process())
    }

    /// Like [`Config::from_environment`] with the variables coming from `env`.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let mut c = Self::new(StorageConfig::from_env(env)?);
        c.listen = env.parse_with("LFUSYS_SESSIONS_LISTEN", c.listen, |v| {
            v.parse()
                .map_err(|_| format!("expected a socket address such as {DEFAULT_LISTEN}"))
        })?;
        c.preferred_chunk_size = env.positive_size("LFUSYS_CHUNK_SIZE", c.preferred_chunk_size)?;
        c.max_upload_size = env.positive_size("LFUSYS_MAX_UPLOAD_SIZE", c.max_upload_size)?;
        c.upload_ttl = env.positive_secs("LFUSYS_UPLOAD_TTL_SECS", c.upload_ttl)?;
        c.sweep_interval = env.positive_secs("LFUSYS_SWEEP_INTERVAL_SECS", c.sweep_interval)?;
        c.chunk_lease = env.positive_secs("LFUSYS_CHUNK_LEASE_SECS", c.chunk_lease)?;
        c.assembly_stale_after =
            env.positive_secs("LFUSYS_ASSEMBLY_STALE_SECS", c.assembly_stale_after)?;
        c.outbox_interval = env.positive_millis("LFUSYS_OUTBOX_INTERVAL_MS", c.outbox_interval)?;
        c.orphan_grace = env.positive_secs("LFUSYS_ORPHAN_GRACE_SECS", c.orphan_grace)?;
        c.wait_recheck = env.positive_millis("LFUSYS_WAIT_RECHECK_MS", c.wait_recheck)?;
        Ok(c)
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

pub use lfusys_core::units::parse_size;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_env(&Env::from_pairs(vars))
    }

    fn storage() -> StorageConfig {
        StorageConfig::embedded(stores::DEFAULT_DATA_DIR)
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c, Config::new(storage()));
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.preferred_chunk_size, 16 * MIB);
        assert_eq!(c.max_upload_size, 5 * TIB);
        assert_eq!(c.upload_ttl, Duration::from_secs(86_400));
        assert_eq!(c.plan_policy().min_chunk_size, storage().min_chunk_size());
    }

    #[test]
    fn reads_every_variable() {
        let c = config(&[
            ("LFUSYS_SESSIONS_LISTEN", "0.0.0.0:9000"),
            ("LFUSYS_CHUNK_SIZE", "8M"),
            ("LFUSYS_MAX_UPLOAD_SIZE", "1GiB"),
            ("LFUSYS_UPLOAD_TTL_SECS", "60"),
            ("LFUSYS_SWEEP_INTERVAL_SECS", "5"),
            ("LFUSYS_CHUNK_LEASE_SECS", "7"),
            ("LFUSYS_ASSEMBLY_STALE_SECS", "120"),
            ("LFUSYS_OUTBOX_INTERVAL_MS", "250"),
            ("LFUSYS_WAIT_RECHECK_MS", "300"),
        ])
        .unwrap();
        assert_eq!(c.wait_recheck, Duration::from_millis(300));
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.preferred_chunk_size, 8 * MIB);
        assert_eq!(c.max_upload_size, 1024 * MIB);
        assert_eq!(c.upload_ttl, Duration::from_secs(60));
        assert_eq!(c.sweep_interval, Duration::from_secs(5));
        assert_eq!(c.chunk_lease, Duration::from_secs(7));
        assert_eq!(c.assembly_stale_after, Duration::from_secs(120));
        assert_eq!(c.outbox_interval, Duration::from_millis(250));
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
            ("LFUSYS_OUTBOX_INTERVAL_MS", "0"),
            ("LFUSYS_OUTBOX_INTERVAL_MS", "1s"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var), "{err}");
        }
    }
}
