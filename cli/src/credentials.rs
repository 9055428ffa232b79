//! The client's login, kept in the user's config directory (`$LFUSYS_CONFIG_DIR`, else
//! `~/.config/lfusys`) as `credentials.json`, readable by the user only.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

pub fn config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LFUSYS_CONFIG_DIR") {
        return PathBuf::from(dir);
    }
    dirs::config_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("lfusys")
}

fn path() -> PathBuf {
    config_dir().join("credentials.json")
}

pub fn load() -> Option<Credentials> {
    let text = std::fs::read_to_string(path()).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn save(creds: &Credentials) -> std::io::Result<()> {
    let path = path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(creds).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    write_private(&tmp, text.as_bytes())?;
    std::fs::rename(tmp, path)
}

pub fn clear() -> std::io::Result<()> {
    match std::fs::remove_file(path()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(unix)]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
