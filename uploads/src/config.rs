//! Worker configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lfusys_core::env::Env;
use stores::StorageConfig;

use crate::Error;

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
/// | `LFUSYS_ASSEMBLERS` | `1` | assembler tasks in this process; `0` = chunk ingest only |
/// | `LFUSYS_ASSEMBLY_VISIBILITY_SECS` | `30` | how long a received assembly job stays invisible; renewed every third of it while the job runs |
/// | `LFUSYS_ASSEMBLY_MAX_ATTEMPTS` | `5` | deliveries of one job before the upload is failed (dead letter) |
/// | `LFUSYS_CORS_ORIGINS` | `*` | comma-separated origins allowed to `PUT` chunks from a browser; `*` = any |
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
            assemblers: 1,
            assembly_visibility: Duration::from_secs(30),
            assembly_max_attempts: 5,
            cors_allowed_origins: vec!["*".to_owned()],
        }
    }

    /// Reads the `LFUSYS_*` variables of the table above.
    pub fn from_environment() -> Result<Self, Error> {
        let storage =
            StorageConfig::from_environment().map_err(|e| Error::Config(e.to_string()))?;
        let public_key_file = std::env::var_os("LFUSYS_TOKEN_PUBLIC_KEY_FILE").map_or_else(
            || default_public_key_file(storage.data_dir()),
            PathBuf::from,
        );
        let listen = var("LFUSYS_UPLOADS_LISTEN")
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned())
            .parse()
            .map_err(|e| config_error("LFUSYS_UPLOADS_LISTEN", e))?;
        let cors_allowed_origins =
            parse_origins(&var("LFUSYS_CORS_ORIGINS").unwrap_or_else(|| "*".to_owned()));
        Ok(Self {
            listen,
            sessions_url: var("LFUSYS_SESSIONS_URL")
                .unwrap_or_else(|| DEFAULT_SESSIONS_URL.to_owned()),
            public_key_file,
            storage,
            assemblers: parse_var("LFUSYS_ASSEMBLERS", 1)?,
            assembly_visibility: Duration::from_secs(
                parse_var("LFUSYS_ASSEMBLY_VISIBILITY_SECS", 30)?.max(1),
            ),
            // One rule with the AWS queue's redrive policy (a positive whole number).
            assembly_max_attempts: stores::assembly_max_attempts(&Env::process())
                .map_err(|e| Error::Config(e.to_string()))?,
            cors_allowed_origins,
        })
    }
}

fn default_public_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("signing-key.pub.pem")
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_var<T>(name: &str, default: T) -> Result<T, Error>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    var(name).map_or(Ok(default), |v| {
        v.trim().parse().map_err(|e| config_error(name, e))
    })
}

fn config_error(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Config(format!("{name}: {e}"))
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
        assert_eq!(c.assemblers, 1);
        assert_eq!(c.assembly_visibility, Duration::from_secs(30));
        assert_eq!(c.assembly_max_attempts, 5);
        assert_eq!(c.cors_allowed_origins, vec!["*"]);
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
