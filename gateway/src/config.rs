//! Gateway configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use lfusys_core::env::{ConfigError, Env};
use stores::StorageConfig;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_SESSIONS_URL: &str = "http://127.0.0.1:50051";
pub const DEFAULT_WEB_DIR: &str = "frontend/dist";
/// File name of the public key the gateway writes next to its private key.
pub const PUBLIC_KEY_FILE_NAME: &str = "signing-key.pub.pem";

/// Whether the auth cookies carry the `Secure` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CookieSecure {
    /// `Secure` when the request came over HTTPS (directly, or per `X-Forwarded-Proto` from a
    /// trusted proxy).
    #[default]
    Auto,
    Always,
    Never,
}

impl FromStr for CookieSecure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "always" | "true" | "yes" => Ok(Self::Always),
            "never" | "false" | "no" => Ok(Self::Never),
            other => Err(format!("expected auto, always or never, got {other:?}")),
        }
    }
}

/// Long polls one user may have open at once (each is a parked task and a gRPC stream).
pub const DEFAULT_MAX_WAITS_PER_USER: u32 = 64;

/// Settings of the gateway. Built in code (tests, `lfusys up`) with [`Config::new`] or from
/// the environment with [`Config::from_environment`]:
///
/// | variable | default | field |
/// |---|---|---|
/// | `LFUSYS_GATEWAY_LISTEN` | `127.0.0.1:8080` | `listen` |
/// | `LFUSYS_SESSIONS_URL` | `http://127.0.0.1:50051` | `sessions_url` |
/// | `LFUSYS_BACKEND`, `LFUSYS_DATA_DIR`, … | embedded in `./lfusys-data` | `storage` (see `StorageConfig::from_environment`) |
/// | `LFUSYS_SIGNING_KEY_FILE` | `{data_dir}/keys/signing-key.pem` | `signing_key_file` |
/// | `LFUSYS_PUBLIC_UPLOAD_URL` | empty (same origin) | `public_upload_url` |
/// | `LFUSYS_ACCESS_TTL_SECS` | `900` | `access_ttl` |
/// | `LFUSYS_REFRESH_TTL_SECS` | `2592000` (30 days) | `refresh_ttl` |
/// | `LFUSYS_UPLOAD_TOKEN_TTL_SECS` | `21600` (6 h) | `upload_token_ttl` |
/// | `LFUSYS_LOGIN_LIMIT_PER_ACCOUNT` | `10` (per minute; 0 = off) | `login_limit_per_account` |
/// | `LFUSYS_AUTH_LIMIT_PER_CLIENT` | `30` (per minute; 0 = off) | `auth_limit_per_client` |
/// | `LFUSYS_TRUST_PROXY` | `false` | `trust_forwarded_for` |
/// | `LFUSYS_COOKIE_SECURE` | `auto` (`auto`, `always`, `never`) | `cookie_secure` |
/// | `LFUSYS_WEB_DIR` | `frontend/dist` | `web_dir` |
/// | `LFUSYS_DOWNLOAD_REDIRECT_SECS` | `0` (stream) | `download_redirect` |
/// | `LFUSYS_MAX_WAITS_PER_USER` | `64` | `max_waits_per_user` |
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// gRPC URL of the sessions service.
    pub sessions_url: String,
    /// Where users, refresh tokens (auth store) and file bytes (blob store) live.
    pub storage: StorageConfig,
    /// PKCS#8 PEM Ed25519 private key; generated when absent. The public key is written next
    /// to it as `signing-key.pub.pem` for the upload workers.
    pub signing_key_file: PathBuf,
    /// Base URL of the upload workers (e.g. `http://127.0.0.1:8081`). Empty: they share the
    /// gateway's origin and `upload_url` is the path `/api/v1/chunks/{id}`.
    pub public_upload_url: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub upload_token_ttl: Duration,
    /// Login attempts per account per `rate_limit_window` (0 disables the limit).
    pub login_limit_per_account: u32,
    /// Register, login and refresh requests per client address per `rate_limit_window`
    /// (0 disables the limit).
    pub auth_limit_per_client: u32,
    pub rate_limit_window: Duration,
    /// Take the client address from `X-Forwarded-For` and the scheme from
    /// `X-Forwarded-Proto` (only behind a proxy that sets them).
    pub trust_forwarded_for: bool,
    pub cookie_secure: CookieSecure,
    /// The built web app, served at `/` when the folder exists.
    pub web_dir: PathBuf,
    /// When set and the blob store can presign (S3), downloads answer `302` to a presigned
    /// URL valid this long instead of streaming through the gateway.
    pub download_redirect: Option<Duration>,
    /// Status requests with `?wait` (long polls) one user may have open at once.
    pub max_waits_per_user: u32,
}

impl Config {
    /// Defaults for the given storage: loopback listener, keys in the data directory.
    pub fn new(storage: StorageConfig) -> Self {
        let signing_key_file = default_key_file(&storage);
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            sessions_url: DEFAULT_SESSIONS_URL.to_owned(),
            storage,
            signing_key_file,
            public_upload_url: String::new(),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            upload_token_ttl: Duration::from_secs(6 * 3600),
            login_limit_per_account: 10,
            auth_limit_per_client: 30,
            rate_limit_window: Duration::from_secs(60),
            trust_forwarded_for: false,
            cookie_secure: CookieSecure::Auto,
            web_dir: PathBuf::from(DEFAULT_WEB_DIR),
            download_redirect: None,
            max_waits_per_user: DEFAULT_MAX_WAITS_PER_USER,
        }
    }

    /// Reads the `LFUSYS_*` variables listed on [`Config`].
    pub fn from_environment() -> Result<Self, ConfigError> {
        Self::from_env(&Env::process())
    }

    /// Like [`Config::from_environment`] with the variables coming from `env`.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let mut c = Self::new(StorageConfig::from_env(env)?);
        c.listen = env.parse("LFUSYS_GATEWAY_LISTEN", c.listen)?;
        if let Some(url) = env.get("LFUSYS_SESSIONS_URL") {
            c.sessions_url = url;
        }
        if let Some(path) = env.get("LFUSYS_SIGNING_KEY_FILE") {
            c.signing_key_file = PathBuf::from(path);
        }
        if let Some(url) = env.get("LFUSYS_PUBLIC_UPLOAD_URL") {
            c.public_upload_url = url;
        }
        c.access_ttl = env.positive_secs("LFUSYS_ACCESS_TTL_SECS", c.access_ttl)?;
        c.refresh_ttl = env.positive_secs("LFUSYS_REFRESH_TTL_SECS", c.refresh_ttl)?;
        c.upload_token_ttl =
            env.positive_secs("LFUSYS_UPLOAD_TOKEN_TTL_SECS", c.upload_token_ttl)?;
        c.login_limit_per_account =
            env.parse("LFUSYS_LOGIN_LIMIT_PER_ACCOUNT", c.login_limit_per_account)?;
        c.auth_limit_per_client =
            env.parse("LFUSYS_AUTH_LIMIT_PER_CLIENT", c.auth_limit_per_client)?;
        c.trust_forwarded_for = env.flag("LFUSYS_TRUST_PROXY", c.trust_forwarded_for)?;
        c.cookie_secure = env.parse("LFUSYS_COOKIE_SECURE", c.cookie_secure)?;
        if let Some(dir) = env.get("LFUSYS_WEB_DIR") {
            c.web_dir = PathBuf::from(dir);
        }
        let redirect_secs: u64 = env.parse("LFUSYS_DOWNLOAD_REDIRECT_SECS", 0)?;
        c.download_redirect = (redirect_secs > 0).then(|| Duration::from_secs(redirect_secs));
        c.max_waits_per_user = env.parse("LFUSYS_MAX_WAITS_PER_USER", c.max_waits_per_user)?;
        Ok(c)
    }

    /// Where the public key is written: `signing-key.pub.pem` in the private key's folder.
    pub fn public_key_file(&self) -> PathBuf {
        public_key_path(&self.signing_key_file)
    }

    /// The `upload_url` of an upload: absolute on the workers, or a same-origin path.
    pub fn upload_url(&self, upload_id: &str) -> String {
        let base = self.public_upload_url.trim().trim_end_matches('/');
        format!("{base}/api/v1/chunks/{upload_id}")
    }
}

/// `{data_dir}/keys/signing-key.pem`, on either backend (on AWS set `LFUSYS_SIGNING_KEY_FILE`
/// to a mounted Secret; the default keeps the key in `./lfusys-data/keys`).
fn default_key_file(storage: &StorageConfig) -> PathBuf {
    storage.keys_dir().join("signing-key.pem")
}

pub(crate) fn public_key_path(private: &Path) -> PathBuf {
    private.parent().map_or_else(
        || PathBuf::from(PUBLIC_KEY_FILE_NAME),
        |d| d.join(PUBLIC_KEY_FILE_NAME),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_data_dir() {
        let c = Config::new(StorageConfig::embedded("/data"));
        assert_eq!(
            c.signing_key_file,
            PathBuf::from("/data/keys/signing-key.pem")
        );
        assert_eq!(
            c.public_key_file(),
            PathBuf::from("/data/keys/signing-key.pub.pem")
        );
        assert_eq!(c.upload_url("abc"), "/api/v1/chunks/abc");
    }

    #[test]
    fn upload_url_uses_the_public_base() {
        let mut c = Config::new(StorageConfig::embedded("/data"));
        c.public_upload_url = "http://127.0.0.1:8081/".into();
        assert_eq!(
            c.upload_url("abc"),
            "http://127.0.0.1:8081/api/v1/chunks/abc"
        );
    }

    #[test]
    fn reads_the_environment_and_names_a_bad_variable() {
        let c = Config::from_env(&Env::from_pairs(&[
            ("LFUSYS_DATA_DIR", "/srv"),
            ("LFUSYS_ACCESS_TTL_SECS", "60"),
            ("LFUSYS_TRUST_PROXY", "yes"),
            ("LFUSYS_COOKIE_SECURE", "never"),
            ("LFUSYS_DOWNLOAD_REDIRECT_SECS", "30"),
        ]))
        .unwrap();
        assert_eq!(
            c.signing_key_file,
            PathBuf::from("/srv/keys/signing-key.pem")
        );
        assert_eq!(c.access_ttl, Duration::from_secs(60));
        assert!(c.trust_forwarded_for);
        assert_eq!(c.cookie_secure, CookieSecure::Never);
        assert_eq!(c.download_redirect, Some(Duration::from_secs(30)));
        for (var, value) in [
            ("LFUSYS_GATEWAY_LISTEN", "nowhere"),
            ("LFUSYS_ACCESS_TTL_SECS", "0"),
            ("LFUSYS_REFRESH_TTL_SECS", "-1"),
            ("LFUSYS_TRUST_PROXY", "maybe"),
            ("LFUSYS_COOKIE_SECURE", "sometimes"),
        ] {
            let err = Config::from_env(&Env::from_pairs(&[(var, value)])).unwrap_err();
            assert_eq!((err.var, err.value.as_str()), (var, value));
        }
    }

    #[test]
    fn parses_cookie_secure() {
        assert_eq!("auto".parse(), Ok(CookieSecure::Auto));
        assert_eq!("Always".parse(), Ok(CookieSecure::Always));
        assert_eq!("never".parse(), Ok(CookieSecure::Never));
        assert!("sometimes".parse::<CookieSecure>().is_err());
    }
}
