//! Worker configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lfusys_core::env::{ConfigError, Env};
use stores::StorageConfig;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8081";
pub const DEFAULT_SESSIONS_URL: &str = "http://127.0.0.1:50051";

/// Settings of one upload-worker process.
///
/// `from_environment` reads:
///
/// | variable | default | meaning |
/// |---|---|---|
/// | `LFUSYS_UPLOADS_LISTEN` | `127.0.0.1:8081` | HTTP listen address |
/// | `LFUSYS_SESSIONS_URL` | `http://127.0.0.1:50051` | the sessions service (gRPC) |
/// | `LFUSYS_BACKEND`, `LFUSYS_DATA_DIR`, … | embedded in `./lfusys-data` | storage (see [`StorageConfig::from_environment`]) |
/// | `LFUSYS_TOKEN_PUBLIC_KEY_FILE` | `{data_dir}/keys/signing-key.pub.pem` (also on AWS) | the gateway's public key (SPKI PEM) that verifies upload tokens |
/// | `LFUSYS_ASSEMBLERS` | 16 per core (16 to 256) | assembler tasks in this process; `0` = chunk ingest only |
/// | `LFUSYS_ASSEMBLY_VISIBILITY_SECS` | `30` | how long a received assembly job stays invisible; renewed every third of it while the job runs |
/// | `LFUSYS_ASSEMBLY_MAX_ATTEMPTS` | `5` | deliveries of one job before the upload is failed (dead letter) |
/// | `LFUSYS_MAX_UPLOAD_SIZE` | `5TiB` | the largest upload, as the sessions service is configured (announced as tus's `Tus-Max-Size`) |
/// | `LFUSYS_CORS_ORIGINS` | `*` | comma-separated origins allowed to upload from a browser (native chunks, tus); `*` = any |
/// Assemblies per worker by default: sixteen per core, from 16 to 256. A small upload's
/// assembly mostly waits (the blob commit's syncs, the sessions service's writes), so many run
/// side by side on one core: on the 2-core benchmark machine 4 completed ~126 small uploads/s,
/// 16 ~203/s and 32 ~219/s (BENCHMARKS.md, "Under load"). A large upload's read-back holds
/// one of them, so small uploads are not queued behind it. One receiver per process takes jobs
/// from the queue as slots free up (see `assembler`); a free slot costs nothing.
pub fn default_assemblers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (16 * cores).clamp(16, 256)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: SocketAddr,
    pub sessions_url: String,
    pub public_key_file: PathBuf,
    pub storage: StorageConfig,
    pub assemblers: usize,
    pub assembly_visibility: Duration,
    pub assembly_max_attempts: u32,
    /// Allowed browser origins; a single `*` allows any origin.
    pub cors_allowed_origins: Vec<String>,
    /// The largest upload the sessions service accepts (it decides; tus clients are told).
    pub max_upload_size: u64,
}

impl Config {
    /// The defaults for an embedded deployment whose data lives in `data_dir`.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            sessions_url: DEFAULT_SESSIONS_URL.to_owned(),
            public_key_file: default_public_key_file(&data_dir),
            storage: StorageConfig::Embedded { data_dir },
            assemblers: default_assemblers(),
            assembly_visibility: Duration::from_secs(30),
            assembly_max_attempts: 5,
            cors_allowed_origins: vec!["*".to_owned()],
            max_upload_size: lfusys_core::plan::DEFAULT_MAX_UPLOAD_SIZE,
        }
    }

    /// Reads the `LFUSYS_*` variables of the table above.
    pub fn from_environment() -> Result<Self, ConfigError> {
        Self::from_env(&Env::process())
    }

    /// Like [`Config::from_environment`] with the variables coming from `env`.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let mut c = Self::embedded(PathBuf::new());
        c.storage = StorageConfig::from_env(env)?;
        c.public_key_file = env.get("LFUSYS_TOKEN_PUBLIC_KEY_FILE").map_or_else(
            || default_public_key_file(c.storage.data_dir()),
            PathBuf::from,
        );
        c.listen = env.parse("LFUSYS_UPLOADS_LISTEN", c.listen)?;
        c.max_upload_size = env.positive_size("LFUSYS_MAX_UPLOAD_SIZE", c.max_upload_size)?;
        if let Some(url) = env.get("LFUSYS_SESSIONS_URL") {
            c.sessions_url = url;
        }
        c.assemblers = env.parse("LFUSYS_ASSEMBLERS", c.assemblers)?;
        c.assembly_visibility =
            env.positive_secs("LFUSYS_ASSEMBLY_VISIBILITY_SECS", c.assembly_visibility)?;
        // One rule with the AWS queue's redrive policy (a positive whole number).
        c.assembly_max_attempts = stores::assembly_max_attempts(env)?;
        if let Some(origins) = env.get("LFUSYS_CORS_ORIGINS") {
            c.cors_allowed_origins = parse_origins(&origins);
        }
        Ok(c)
    }
}

fn default_public_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("signing-key.pub.pem")
}

/// Splits `a, b ,c` into origins; empty entries are dropped.
pub(crate) fn parse_origins(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults() {
        let c = Config::embedded("/data");
        assert_eq!(
            c.public_key_file,
            PathBuf::from("/data/keys/signing-key.pub.pem")
        );
        assert_eq!(c.assemblers, default_assemblers());
        assert!((16..=256).contains(&c.assemblers));
        assert_eq!(c.assembly_visibility, Duration::from_secs(30));
        assert_eq!(c.assembly_max_attempts, 5);
        assert_eq!(c.cors_allowed_origins, vec!["*"]);
    }

    #[test]
    fn reads_every_variable() {
        let c = Config::from_env(&Env::from_pairs(&[
            ("LFUSYS_DATA_DIR", "/srv"),
            ("LFUSYS_UPLOADS_LISTEN", "0.0.0.0:9001"),
            ("LFUSYS_SESSIONS_URL", "http://sessions:50051"),
            ("LFUSYS_ASSEMBLERS", "0"),
            ("LFUSYS_ASSEMBLY_VISIBILITY_SECS", "90"),
            ("LFUSYS_ASSEMBLY_MAX_ATTEMPTS", "3"),
            ("LFUSYS_CORS_ORIGINS", "https://a.example"),
        ]))
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9001");
        assert_eq!(c.sessions_url, "http://sessions:50051");
        assert_eq!(
            c.public_key_file,
            PathBuf::from("/srv/keys/signing-key.pub.pem")
        );
        assert_eq!(c.assemblers, 0);
        assert_eq!(c.assembly_visibility, Duration::from_secs(90));
        assert_eq!(c.assembly_max_attempts, 3);
        assert_eq!(c.cors_allowed_origins, vec!["https://a.example"]);
        assert_eq!(
            Config::from_env(&Env::from_pairs(&[])).unwrap(),
            Config::embedded(stores::DEFAULT_DATA_DIR)
        );
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (var, value) in [
            ("LFUSYS_UPLOADS_LISTEN", "nowhere"),
            ("LFUSYS_ASSEMBLERS", "-1"),
            ("LFUSYS_ASSEMBLY_VISIBILITY_SECS", "0"),
            ("LFUSYS_ASSEMBLY_MAX_ATTEMPTS", "0"),
        ] {
            let err = Config::from_env(&Env::from_pairs(&[(var, value)])).unwrap_err();
            assert_eq!((err.var, err.value.as_str()), (var, value));
        }
    }

    #[test]
    fn origins() {
        assert_eq!(
            parse_origins(" https://a.example , http://b:8080,,"),
            vec!["https://a.example", "http://b:8080"]
        );
        assert!(parse_origins(" ").is_empty());
    }
}
