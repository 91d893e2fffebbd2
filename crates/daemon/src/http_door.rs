//! The HTTP API's side in the daemon: its certificate and the tokens it
//! accepts. The door itself (routes, JSON, events) is `launchway-http`; it
//! calls the same service the admin socket serves, so authorization stays
//! in `admission.rs`.
//!
//! Without a configured certificate, a self-signed one is made on first
//! start in `<data_dir>/http/` (key 0600, written before the certificate)
//! for `localhost`, the host's name and the listen address; remote CLIs pin
//! it on first use, like SSH's known_hosts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use launchway_ops::{Access, Principal};
use launchway_store::secret_is_well_formed;
use tracing::{info, warn};

use crate::settings::HttpSettings;
use crate::{Daemon, now_ms};

/// Bearer secrets → principals, from the tokens tree.
pub(crate) struct TokenAuthenticator {
    pub(crate) daemon: Arc<Daemon>,
}

impl launchway_http::Authenticate for TokenAuthenticator {
    fn authenticate(&self, secret: &str) -> Result<Principal, String> {
        if !secret_is_well_formed(secret) {
            return Err(
                "this is not a Launchway token (lw_api_… or lw_deploy_…): check it was copied whole"
                    .into(),
            );
        }
        let record = match self.daemon.store.token_by_secret(secret) {
            Ok(Some(record)) => record,
            Ok(None) => return Err("this token is unknown or was revoked".into()),
            Err(error) => {
                warn!(%error, "cannot read the tokens");
                return Err("the daemon cannot read its tokens; try again".into());
            }
        };
        if record.expires_at.is_some_and(|at| at <= now_ms()) {
            return Err(format!(
                "token {} has expired: ask for a new one (launchway token create)",
                record.id
            ));
        }
        Ok(Principal::Token {
            id: record.id,
            access: Access {
                project: record.project,
                role: record.role,
                environment: record.environment,
                deploy_only: record.deploy_only,
                expires_at: record.expires_at,
            },
        })
    }

    fn redeem_login(&self, code: &str) -> Result<String, String> {
        self.daemon.redeem_console_login(code)
    }

    fn login_owner(&self, code: &str) -> Option<String> {
        self.daemon.console_login_owner(code)
    }

    fn member(&self, fingerprint: &str) -> Result<Principal, String> {
        self.daemon.console_member(fingerprint)
    }
}

/// Why the HTTP API cannot start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpDoorError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the HTTP API's certificate: {0}")]
    Certificate(String),
}

fn read(path: &Path) -> Result<String, HttpDoorError> {
    std::fs::read_to_string(path).map_err(|source| HttpDoorError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificate and key (PEM) the API serves: configured, or made once.
fn certificate_pem(
    settings: &HttpSettings,
    data_dir: &Path,
) -> Result<(String, String), HttpDoorError> {
    if !settings.certificate.as_os_str().is_empty() {
        return Ok((read(&settings.certificate)?, read(&settings.key)?));
    }
    let dir = data_dir.join("http");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((read(&cert_path)?, read(&key_path)?));
    }
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| HttpDoorError::Write { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(write_error(&dir))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
    {
        names.push(host.to_owned());
    }
    if let Some(address) = settings.listen
        && !address.ip().is_unspecified()
    {
        names.push(address.ip().to_string());
    }
    names.dedup();
    let issue = |e: rcgen::Error| HttpDoorError::Certificate(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(issue)?;
    let mut params = rcgen::CertificateParams::new(names).map_err(issue)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Launchway API");
    params.not_after = rcgen::date_time_ymd(2126, 1, 1);
    let cert = params.self_signed(&key).map_err(issue)?;
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    // The key first and private: a kill between the two writes leaves a key
    // alone, which the next start replaces.
    write_private(&key_path, &key_pem).map_err(write_error(&key_path))?;
    std::fs::write(&cert_path, &cert_pem).map_err(write_error(&cert_path))?;
    info!(path = %cert_path.display(), "made a self-signed certificate for the HTTP API");
    Ok((cert_pem, key_pem))
}

/// Writes `text` to `path`, readable by the daemon's user only, and syncs it.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The TLS settings of the API's listener.
pub(crate) fn tls_config(
    settings: &HttpSettings,
    data_dir: &Path,
) -> Result<Arc<rustls::ServerConfig>, HttpDoorError> {
    let (chain, key) = certificate_pem(settings, data_dir)?;
    let (certified, _) = launchway_router::tls::certified_key(&chain, &key)
        .map_err(|e| HttpDoorError::Certificate(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpDoorError::Certificate(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
