//! The router's HTTPS side: the certificates and per-host configs, the
//! TLS listeners (the ClientHello's name picks the certificate and the
//! host's policy), and ACME HTTP-01 answers served on plain HTTP.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{Router, lock, tls};

/// HTTPS: the certificates, the per-host configs built from them, and the
/// port HTTPS is served on (0: none; plain requests are then served as
/// they are).
pub(crate) struct TlsState {
    pub(crate) certificates: RwLock<Arc<tls::Certificates>>,
    /// ACME HTTP-01 answers: token → key authorization.
    pub(crate) challenges: std::sync::Mutex<HashMap<String, String>>,
    pub(crate) configs: std::sync::Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
    pub(crate) https_port: std::sync::atomic::AtomicU16,
}

impl TlsState {
    /// Self-signed fallback, no certificates, no HTTPS port yet.
    pub(crate) fn new() -> TlsState {
        TlsState {
            certificates: RwLock::new(Arc::new(tls::Certificates::self_signed())),
            challenges: std::sync::Mutex::new(HashMap::new()),
            configs: std::sync::Mutex::new(HashMap::new()),
            https_port: std::sync::atomic::AtomicU16::new(0),
        }
    }

    /// The key authorization for an ACME token, when one is pending.
    pub(crate) fn challenge(&self, token: &str) -> Option<String> {
        lock(&self.challenges).get(token).cloned()
    }
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState").finish_non_exhaustive()
    }
}

impl Router {
    /// Answers `GET /.well-known/acme-challenge/<token>` on plain HTTP with
    /// `key_authorization` (RFC 8555 §8.3) until removed.
    pub fn set_acme_challenge(&self, token: &str, key_authorization: &str) {
        lock(&self.inner.tls.challenges).insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Stops answering an ACME challenge.
    pub fn remove_acme_challenge(&self, token: &str) {
        lock(&self.inner.tls.challenges).remove(token);
    }

    /// The port HTTPS is served on: plain requests to `https://` routes
    /// are redirected there (0: none).
    pub fn set_https_port(&self, port: u16) {
        self.inner
            .tls
            .https_port
            .store(port, std::sync::atomic::Ordering::Relaxed);
    }

    /// Uses `certificates` from now on (configs are rebuilt).
    pub fn set_certificates(&self, certificates: tls::Certificates) {
        let mut current = match self.inner.tls.certificates.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = Arc::new(certificates);
        lock(&self.inner.tls.configs).clear();
    }

    /// Installs a certificate for `pattern` (a host or `*.domain`); the
    /// next handshakes use it (a renewal swaps it without a dropped request).
    pub fn install_certificate(
        &self,
        pattern: &str,
        key: rustls::sign::CertifiedKey,
    ) -> Result<(), tls::TlsError> {
        self.certificates().install(pattern, key)?;
        lock(&self.inner.tls.configs).clear();
        Ok(())
    }

    fn certificates(&self) -> Arc<tls::Certificates> {
        match self.inner.tls.certificates.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The server config for `host` (cached until certificates or routes
    /// change).
    fn tls_config(&self, host: &str) -> Option<Arc<rustls::ServerConfig>> {
        if let Some(config) = lock(&self.inner.tls.configs).get(host) {
            return Some(config.clone());
        }
        let key = self.certificates().for_host(host)?;
        let policy = self.table().policies.get(host).cloned().unwrap_or_default();
        match tls::server_config(key, &policy) {
            Ok(config) => {
                lock(&self.inner.tls.configs).insert(host.to_owned(), config.clone());
                Some(config)
            }
            Err(error) => {
                warn!(%error, %host, "no TLS config");
                None
            }
        }
    }

    /// Serves HTTPS on `listeners` as [`Router::serve_threads`] serves
    /// HTTP; plain requests to `https://` routes are redirected to `port`.
    pub fn serve_tls_threads(
        &self,
        listeners: Vec<std::net::TcpListener>,
        port: u16,
        stop: CancellationToken,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        self.set_https_port(port);
        self.spawn_threads(listeners, true, stop)
    }

    /// Serves HTTPS on `listener` until `stop` fires: the ClientHello's
    /// name picks the certificate and the policy.
    pub async fn serve_tls(&self, listener: tokio::net::TcpListener, stop: CancellationToken) {
        // A token of this listener's own (see `Router::serve`).
        let stop = stop.child_token();
        let pool = self.pool(&stop);
        let header_timeout = self.inner.settings.header_timeout;
        self.accept_each(&listener, &stop, |router, stream, peer| {
            let (pool, stop) = (pool.clone(), stop.clone());
            tokio::spawn(async move {
                let acceptor = tokio_rustls::LazyConfigAcceptor::new(
                    rustls::server::Acceptor::default(),
                    stream,
                );
                let Ok(Ok(start)) = tokio::time::timeout(header_timeout, acceptor).await else {
                    return;
                };
                let host = start
                    .client_hello()
                    .server_name()
                    .unwrap_or("localhost")
                    .to_ascii_lowercase();
                let Some(config) = router.tls_config(&host) else {
                    return;
                };
                let Ok(Ok(tls)) =
                    tokio::time::timeout(header_timeout, start.into_stream(config)).await
                else {
                    return;
                };
                router
                    .serve_connection(TokioIo::new(tls), peer, pool, true, stop)
                    .await;
            });
        })
        .await;
    }
}
