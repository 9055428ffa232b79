//! Shared state of the gateway's handlers.

use std::path::Path;
use std::sync::Arc;

use lfusys_core::tokens::{TokenSigner, TokenVerifier};
use sessions_api::proto::sessions_client::SessionsClient;
use storage::{AuthStore, BlobStore};
use tokio::sync::OnceCell;
use tonic::transport::Channel;

use crate::config::Config;
use crate::password;
use crate::ratelimit::RateLimiter;
use crate::waits::Waits;
use crate::Error;

/// Cheap to clone: everything lives behind one `Arc`.
#[derive(Clone)]
pub struct GatewayState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    auth: Arc<dyn AuthStore>,
    blobs: Arc<dyn BlobStore>,
    sessions: SessionsClient<Channel>,
    signer: TokenSigner,
    verifier: TokenVerifier,
    client_limiter: RateLimiter,
    account_limiter: RateLimiter,
    waits: Waits,
    /// Hash verified when a login names an unknown email, so that it costs the same time as
    /// a wrong password.
    dummy_hash: OnceCell<String>,
}

impl std::fmt::Debug for GatewayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayState")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl GatewayState {
    /// Assembles a state from already opened parts.
    pub fn new(
        config: Config,
        auth: Arc<dyn AuthStore>,
        blobs: Arc<dyn BlobStore>,
        sessions: SessionsClient<Channel>,
        signer: TokenSigner,
    ) -> Self {
        let window = config.rate_limit_window;
        Self {
            inner: Arc::new(Inner {
                client_limiter: RateLimiter::new(config.auth_limit_per_client, window),
                account_limiter: RateLimiter::new(config.login_limit_per_account, window),
                waits: Waits::new(config.max_waits_per_user),
                verifier: signer.verifier(),
                config,
                auth,
                blobs,
                sessions,
                signer,
                dummy_hash: OnceCell::new(),
            }),
        }
    }

    /// Loads (or generates) the signing key and writes its public half for the workers, opens
    /// the auth and blob stores, and prepares a lazily connecting sessions client.
    pub async fn open(config: &Config) -> Result<Self, Error> {
        let signer = TokenSigner::load_or_generate(&config.signing_key_file)?;
        write_public_key(&config.public_key_file(), signer.public_pem());
        let auth = config.storage.auth_store().await?;
        let blobs = config.storage.blob_store().await?;
        let sessions = connect_sessions(&config.sessions_url)?;
        let state = Self::new(config.clone(), auth, blobs, sessions, signer);
        // Computed now so that the first login of an unknown email is not slower than others.
        state.dummy_hash().await?;
        Ok(state)
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    pub fn auth(&self) -> &Arc<dyn AuthStore> {
        &self.inner.auth
    }
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }
    /// A handle on the sessions service (clones share one connection).
    pub fn sessions(&self) -> SessionsClient<Channel> {
        self.inner.sessions.clone()
    }
    pub fn signer(&self) -> &TokenSigner {
        &self.inner.signer
    }
    pub fn verifier(&self) -> &TokenVerifier {
        &self.inner.verifier
    }
    pub(crate) fn client_limiter(&self) -> &RateLimiter {
        &self.inner.client_limiter
    }
    pub(crate) fn account_limiter(&self) -> &RateLimiter {
        &self.inner.account_limiter
    }
    /// The long polls in progress.
    pub fn waits(&self) -> &Waits {
        &self.inner.waits
    }

    pub(crate) async fn dummy_hash(&self) -> Result<String, password::PasswordError> {
        self.inner
            .dummy_hash
            .get_or_try_init(|| password::hash("lfusys-dummy-password-for-timing".to_owned()))
            .await
            .cloned()
    }
}

/// A sessions client that connects on first use (and reconnects after failures).
pub fn connect_sessions(url: &str) -> Result<SessionsClient<Channel>, Error> {
    sessions_api::client::connect_lazy(url).map_err(|e| Error::SessionsUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes the public key for the workers unless the file already holds it. Failure is only
/// logged: the key may live on a read-only mount where the public key is provided separately.
fn write_public_key(path: &Path, pem: &str) {
    if std::fs::read_to_string(path).is_ok_and(|existing| existing == pem) {
        return;
    }
    let result = (|| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Write then rename, so a worker never reads half a key.
        let tmp = path.with_extension("pem.tmp");
        std::fs::write(&tmp, pem)?;
        std::fs::rename(&tmp, path)
    })();
    match result {
        Ok(()) => tracing::info!(path = %path.display(), "wrote the token public key"),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not write the token public key");
        }
    }
}
