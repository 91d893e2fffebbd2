//! HTTPS certificates: which one the router serves for a host, where it
//! comes from, and keeping ACME ones fresh.
//!
//! - Precedence per host: an operator's certificate (`launchway
//!   certificate add`, exact host before `*.` wildcard), then one ACME
//!   issued for the host, then the fallback: a certificate from the local
//!   CA (`<data>/tls/local-ca.pem`, generated once; trust it for
//!   development) or a self-signed one, made on demand.
//! - [`Daemon::load_certificates`] builds the router's whole set from the
//!   store at start and after every change and swaps it in at once: a
//!   handshake sees the old set or the new one, never a request dropped.
//! - ACME ([`Daemon::renew_certificates_forever`]): every few seconds, each
//!   host of an active `https://` route that no operator certificate
//!   covers gets a certificate when it has none or when it is within
//!   `renew_before_days` (a third of its lifetime at most) of expiry. One
//!   attempt at a time; a failure is kept with its reason (`launchway
//!   certificates`), logged, and retried after `acme_retry_secs`, doubling
//!   per failure up to a day: never a retry storm. The host meanwhile keeps
//!   its old certificate, or the fallback.
//! - Operators' certificates are refused when they do not parse, the key
//!   is not theirs, they are not valid now, or no routed host is covered:
//!   nothing is stored then.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use launchway_api::proto;
use launchway_router::tls::{self, TlsError};
use launchway_store::{AcmeAccount, CertificateRecord, CertificateSource};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

use crate::api::internal;
use crate::settings::TlsFallback;
use crate::{Daemon, DaemonError, now_ms};

/// ACME's state in memory: per host, the last outcome.
#[derive(Default)]
pub(crate) struct AcmeState {
    hosts: std::sync::Mutex<HashMap<String, HostAcme>>,
    account: tokio::sync::Mutex<Option<instant_acme::Account>>,
    wake: tokio::sync::Notify,
}

impl std::fmt::Debug for AcmeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeState").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, Default)]
struct HostAcme {
    failures: u32,
    last_error: Option<String>,
    /// No attempt before this (UNIX ms).
    retry_at_ms: u64,
    /// An operator asked for a new certificate now.
    forced: bool,
    attempting: bool,
}

/// How often the renewal loop looks at the routes.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The longest wait between attempts.
const MAX_BACK_OFF_SECS: u64 = 86_400;

fn now_secs() -> i64 {
    (now_ms() / 1000) as i64
}

fn date(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

/// A certificate error as an operator reads it.
fn explain(error: &TlsError) -> String {
    match error {
        TlsError::NotValidNow {
            not_before,
            not_after,
        } if *not_after < now_secs() => format!("the certificate expired on {}", date(*not_after)),
        TlsError::NotValidNow { not_before, .. } => {
            format!("the certificate is not valid before {}", date(*not_before))
        }
        other => other.to_string(),
    }
}

/// `example.com` or `*.example.com`: lowercase DNS labels.
fn valid_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    name.contains('.') && launchway_net::egress::is_host_name(name)
}

/// Whether a certificate valid until `not_after`, issued at `issued_at`,
/// is due for renewal at `now`: within `renew_before` seconds of expiry, or
/// within a third of its lifetime for short-lived ones (so a 6-day
/// certificate is renewed with 2 days left, not at once).
fn renewal_due(not_after: i64, issued_at: i64, now: i64, renew_before: i64) -> bool {
    let lifetime = (not_after - issued_at).max(0);
    not_after - now <= renew_before.min(lifetime / 3)
}

/// Writes `bytes` to `path` whole (temporary file, fsync, rename).
fn write_whole(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl Daemon {
    fn tls_dir(&self) -> PathBuf {
        self.settings.data_dir.join("tls")
    }

    /// Where the local CA's certificate is (trust it to browse `https://`
    /// development hosts without warnings).
    pub(crate) fn local_ca_path(&self) -> PathBuf {
        self.tls_dir().join("local-ca.pem")
    }

    /// The local CA (certificate, key), generated on first use. The key is
    /// written first: a kill leaves no certificate without its key.
    fn local_ca(&self) -> Result<(String, String), DaemonError> {
        let dir = self.tls_dir();
        let cert_path = self.local_ca_path();
        let key_path = dir.join("local-ca-key.pem");
        if let (Ok(cert), Ok(key)) = (
            std::fs::read_to_string(&cert_path),
            std::fs::read_to_string(&key_path),
        ) {
            return Ok((cert, key));
        }
        std::fs::create_dir_all(&dir).map_err(crate::io_error(&dir))?;
        let (cert, key) =
            tls::new_local_ca("Launchway local CA").map_err(|error| DaemonError::Io {
                path: cert_path.display().to_string(),
                source: std::io::Error::other(error),
            })?;
        write_whole(&key_path, key.as_bytes(), 0o600).map_err(crate::io_error(&key_path))?;
        write_whole(&cert_path, cert.as_bytes(), 0o644).map_err(crate::io_error(&cert_path))?;
        Ok((cert, key))
    }

    /// Builds the router's certificates from the store and swaps them in.
    pub(crate) fn load_certificates(&self) -> Result<(), DaemonError> {
        let certificates = match self.settings.tls.fallback {
            TlsFallback::LocalCa => {
                let (cert, key) = self.local_ca()?;
                tls::Certificates::with_local_ca(&cert, &key).map_err(|error| DaemonError::Io {
                    path: self.local_ca_path().display().to_string(),
                    source: std::io::Error::other(error),
                })?
            }
            TlsFallback::SelfSigned => tls::Certificates::self_signed(),
        };
        let custom = self.store.certificates(CertificateSource::Custom)?;
        let acme = self.store.certificates(CertificateSource::Acme)?;
        let covered_by_custom = |host: &str| {
            custom
                .iter()
                .any(|record| tls::name_covers(&record.pattern, host))
        };
        for record in custom.iter().chain(
            acme.iter()
                .filter(|record| !covered_by_custom(&record.pattern)),
        ) {
            let installed = tls::certified_key(&record.chain_pem, &record.key_pem)
                .and_then(|(key, _)| certificates.install(&record.pattern, key));
            if let Err(error) = installed {
                warn!(pattern = %record.pattern, source = ?record.source, error = %explain(&error), "certificate not served");
            }
        }
        self.router.set_certificates(certificates);
        Ok(())
    }

    fn reload_certificates(&self) -> Result<(), Status> {
        self.load_certificates().map_err(internal)
    }

    /// `launchway certificate add`.
    pub(crate) fn add_certificate(
        &self,
        request: &proto::AddCertificateRequest,
    ) -> Result<proto::CertificateInfo, Status> {
        let pattern = request.pattern.trim().to_ascii_lowercase();
        if !valid_pattern(&pattern) {
            return Err(Status::invalid_argument(format!(
                "`{}` is not a host name or a `*.domain` wildcard",
                request.pattern
            )));
        }
        let (key, info) = tls::certified_key(&request.chain_pem, &request.key_pem)
            .map_err(|error| Status::invalid_argument(explain(&error)))?;
        // The same checks the router makes, on a scratch set.
        tls::Certificates::self_signed()
            .install(&pattern, key)
            .map_err(|error| Status::invalid_argument(explain(&error)))?;
        let hosts = self.router.routed_hosts();
        if !hosts
            .iter()
            .any(|(_, host, _)| tls::name_covers(&pattern, host))
        {
            let mut known: Vec<&str> = hosts.iter().map(|(_, host, _)| host.as_str()).collect();
            known.dedup();
            return Err(Status::failed_precondition(format!(
                "no route of an active environment names a host `{pattern}` covers (routed hosts: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        let record = CertificateRecord {
            pattern: pattern.clone(),
            source: CertificateSource::Custom,
            chain_pem: request.chain_pem.clone(),
            key_pem: request.key_pem.clone(),
            names: info.names.clone(),
            issuer: info.issuer.clone(),
            not_after: info.not_after,
            added_at: now_ms(),
        };
        self.store.put_certificate(&record).map_err(internal)?;
        self.reload_certificates()?;
        info!(%pattern, expires = %date(info.not_after), "operator certificate added");
        Ok(proto::CertificateInfo {
            host: pattern.clone(),
            environment: String::new(),
            source: "custom".into(),
            issuer: info.issuer,
            not_after: info.not_after,
            status: "valid".into(),
            pattern,
        })
    }

    /// `launchway certificate remove`.
    pub(crate) fn remove_certificate(&self, pattern: &str) -> Result<(), Status> {
        let pattern = pattern.trim().to_ascii_lowercase();
        if !self
            .store
            .delete_certificate(CertificateSource::Custom, &pattern)
            .map_err(internal)?
        {
            return Err(Status::not_found(format!(
                "no operator certificate for `{pattern}`"
            )));
        }
        self.reload_certificates()?;
        self.acme.wake.notify_one();
        Ok(())
    }

    /// `launchway certificate renew --host H`: an ACME attempt now.
    pub(crate) fn renew_certificate(&self, host: &str) -> Result<(), Status> {
        if !self.settings.tls.acme || self.router_https_addr.is_none() {
            return Err(Status::failed_precondition(
                "ACME is off: set `[router] https_listen` and `[tls] acme = true` in the settings",
            ));
        }
        let host = host.trim().to_ascii_lowercase();
        if !self
            .router
            .routed_hosts()
            .iter()
            .any(|(_, routed, https)| *https && *routed == host)
        {
            return Err(Status::not_found(format!(
                "no `https://` route of an active environment names `{host}`"
            )));
        }
        let mut hosts = self.acme_hosts();
        let state = hosts.entry(host).or_default();
        state.forced = true;
        state.retry_at_ms = 0;
        drop(hosts);
        self.acme.wake.notify_one();
        Ok(())
    }

    fn acme_hosts(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostAcme>> {
        match self.acme.hosts.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// `launchway certificates [-p P] [-e E]`.
    pub(crate) fn list_certificates(
        &self,
        request: &proto::ListCertificatesRequest,
    ) -> Result<proto::CertificateList, Status> {
        let custom = self
            .store
            .certificates(CertificateSource::Custom)
            .map_err(internal)?;
        let acme: HashMap<String, CertificateRecord> = self
            .store
            .certificates(CertificateSource::Acme)
            .map_err(internal)?
            .into_iter()
            .map(|record| (record.pattern.clone(), record))
            .collect();
        let states = self.acme_hosts().clone();
        let now = now_secs();
        let validity = |not_after: i64| {
            if not_after < now {
                "EXPIRED".to_owned()
            } else {
                "valid".to_owned()
            }
        };
        let routed = self.router.routed_hosts();
        let mut rows = Vec::new();
        for (environment, host, https) in &routed {
            let (project, env) = environment.split_once('/').unwrap_or((environment, ""));
            if !https
                || (!request.project.is_empty() && request.project != project)
                || (!request.environment.is_empty() && request.environment != env)
            {
                continue;
            }
            let serving_custom = custom
                .iter()
                .filter(|record| tls::name_covers(&record.pattern, host))
                .min_by_key(|record| record.pattern.starts_with("*."));
            let state = states.get(host);
            let failure = state.and_then(|state| {
                let error = state.last_error.as_ref()?;
                Some(format!(
                    "ACME failed ({} time{}): {error}; next try at {}",
                    state.failures,
                    if state.failures == 1 { "" } else { "s" },
                    date((state.retry_at_ms / 1000) as i64)
                ))
            });
            let row = if let Some(record) = serving_custom {
                proto::CertificateInfo {
                    source: "custom".into(),
                    issuer: record.issuer.clone(),
                    not_after: record.not_after,
                    status: validity(record.not_after),
                    pattern: record.pattern.clone(),
                    ..Default::default()
                }
            } else if let Some(record) = acme.get(host).filter(|r| r.not_after > now) {
                let mut status = validity(record.not_after);
                if state.is_some_and(|s| s.attempting) {
                    status = "valid, renewing".into();
                }
                if let Some(failure) = &failure {
                    status = format!("valid; renewal: {failure}");
                }
                proto::CertificateInfo {
                    source: "acme".into(),
                    issuer: record.issuer.clone(),
                    not_after: record.not_after,
                    status,
                    ..Default::default()
                }
            } else {
                let fallback = match self.settings.tls.fallback {
                    TlsFallback::LocalCa => "local-ca",
                    TlsFallback::SelfSigned => "self-signed",
                };
                let status = if !self.settings.tls.acme {
                    format!("{fallback} (ACME is off)")
                } else if let Some(failure) = failure {
                    format!("{failure}; serving a {fallback} certificate meanwhile")
                } else {
                    format!("waiting for ACME; serving a {fallback} certificate meanwhile")
                };
                proto::CertificateInfo {
                    source: fallback.into(),
                    issuer: match self.settings.tls.fallback {
                        TlsFallback::LocalCa => "CN=Launchway local CA".into(),
                        TlsFallback::SelfSigned => "itself".into(),
                    },
                    not_after: 0,
                    status,
                    ..Default::default()
                }
            };
            rows.push(proto::CertificateInfo {
                host: host.clone(),
                environment: environment.clone(),
                ..row
            });
        }
        if request.project.is_empty() {
            for record in &custom {
                if !routed
                    .iter()
                    .any(|(_, host, _)| tls::name_covers(&record.pattern, host))
                {
                    rows.push(proto::CertificateInfo {
                        host: record.pattern.clone(),
                        environment: String::new(),
                        source: "custom".into(),
                        issuer: record.issuer.clone(),
                        not_after: record.not_after,
                        status: "unused: no active route names a host it covers".into(),
                        pattern: record.pattern.clone(),
                    });
                }
            }
        }
        Ok(proto::CertificateList { certificates: rows })
    }

    /// An environment's certificates in a word, or its first host without
    /// a valid one and why (`launchway environments`).
    pub(crate) fn https_summary(&self, project: &str, environment: &str) -> String {
        if self.router_https_addr.is_none() {
            return String::new();
        }
        let Ok(list) = self.list_certificates(&proto::ListCertificatesRequest {
            project: project.to_owned(),
            environment: environment.to_owned(),
        }) else {
            return String::new();
        };
        match list.certificates.iter().find(|row| {
            !(row.status == "valid" || (row.source == "acme" && row.status.starts_with("valid")))
        }) {
            Some(row) => format!("{} ({}): {}", row.host, row.source, row.status),
            None if list.certificates.is_empty() => String::new(),
            None => "valid".into(),
        }
    }

    /// Hosts that need an ACME certificate now.
    fn hosts_due(&self) -> Result<Vec<String>, launchway_store::StoreError> {
        let custom = self.store.certificates(CertificateSource::Custom)?;
        let acme: HashMap<String, CertificateRecord> = self
            .store
            .certificates(CertificateSource::Acme)?
            .into_iter()
            .map(|record| (record.pattern.clone(), record))
            .collect();
        let renew_before = (self.settings.tls.renew_before_days * 86_400) as i64;
        let now = now_secs();
        let states = self.acme_hosts().clone();
        let mut due: Vec<String> = Vec::new();
        for (_, host, https) in self.router.routed_hosts() {
            if !https
                || due.contains(&host)
                || custom
                    .iter()
                    .any(|record| tls::name_covers(&record.pattern, &host))
            {
                continue;
            }
            let state = states.get(&host).cloned().unwrap_or_default();
            if state.retry_at_ms > now_ms() {
                continue;
            }
            let fresh = acme.get(&host).is_some_and(|record| {
                !renewal_due(
                    record.not_after,
                    (record.added_at / 1000) as i64,
                    now,
                    renew_before,
                )
            });
            if state.forced || !fresh {
                due.push(host);
            }
        }
        Ok(due)
    }

    /// The ACME account, restored or registered once.
    async fn acme_account(&self) -> Result<instant_acme::Account, crate::acme::AcmeError> {
        let mut cached = self.acme.account.lock().await;
        if let Some(account) = cached.as_ref() {
            return Ok(account.clone());
        }
        let tls = &self.settings.tls;
        let directory = tls.directory().to_owned();
        let ca_bundle = (!tls.acme_ca_bundle.is_empty()).then(|| Path::new(&tls.acme_ca_bundle));
        let stored = self.store.acme_account(&directory).ok().flatten();
        let (account, credentials) = crate::acme::account(
            &directory,
            &tls.acme_contact,
            ca_bundle,
            stored
                .as_ref()
                .map(|account| account.credentials_json.as_str())
                .filter(|json| !json.is_empty()),
        )
        .await?;
        if let Some(credentials_json) = credentials {
            let record = AcmeAccount {
                directory,
                credentials_json,
            };
            if let Err(error) = self.store.put_acme_account(&record) {
                warn!(%error, "cannot keep the ACME account; it will be registered again");
            }
        }
        *cached = Some(account.clone());
        Ok(account)
    }

    /// One ACME attempt for `host`: stored and served on success, kept with
    /// its back-off on failure.
    async fn obtain_certificate(&self, host: &str) {
        {
            let mut hosts = self.acme_hosts();
            let state = hosts.entry(host.to_owned()).or_default();
            state.attempting = true;
        }
        info!(%host, directory = %self.settings.tls.directory(), "asking ACME for a certificate");
        let outcome = async {
            let account = self.acme_account().await.map_err(|e| e.to_string())?;
            let issued = crate::acme::issue(&account, host, &self.router).await;
            let (chain, key) = match issued {
                Ok(issued) => issued,
                Err(error) => {
                    // An ACME server that forgot the account (a test
                    // server restarted): register anew next time.
                    if error.to_string().contains("accountDoesNotExist") {
                        *self.acme.account.lock().await = None;
                        let _ = self.store.put_acme_account(&AcmeAccount {
                            directory: self.settings.tls.directory().to_owned(),
                            credentials_json: String::new(),
                        });
                    }
                    return Err(error.to_string());
                }
            };
            let (_, info) = tls::certified_key(&chain, &key).map_err(|error| explain(&error))?;
            let record = CertificateRecord {
                pattern: host.to_owned(),
                source: CertificateSource::Acme,
                chain_pem: chain,
                key_pem: key,
                names: info.names.clone(),
                issuer: info.issuer.clone(),
                not_after: info.not_after,
                added_at: now_ms(),
            };
            self.store
                .put_certificate(&record)
                .map_err(|e| e.to_string())?;
            self.load_certificates().map_err(|e| e.to_string())?;
            Ok(info)
        }
        .await;
        let mut hosts = self.acme_hosts();
        let state = hosts.entry(host.to_owned()).or_default();
        state.attempting = false;
        state.forced = false;
        match outcome {
            Ok(info) => {
                info!(%host, issuer = %info.issuer, expires = %date(info.not_after), "ACME certificate installed");
                *state = HostAcme::default();
            }
            Err(error) => {
                state.failures += 1;
                let wait = self
                    .settings
                    .tls
                    .acme_retry_secs
                    .max(1)
                    .saturating_mul(1 << (state.failures - 1).min(20))
                    .min(MAX_BACK_OFF_SECS);
                state.retry_at_ms = now_ms() + wait * 1000;
                warn!(%host, %error, retry_in_secs = wait, "ACME certificate not obtained; the host keeps its current certificate");
                state.last_error = Some(error);
            }
        }
    }

    /// Keeps ACME certificates for the routed hosts until `stop`.
    pub(crate) async fn renew_certificates_forever(self: Arc<Self>, stop: CancellationToken) {
        if !self.settings.tls.acme {
            return;
        }
        if self.router_https_addr.is_none() {
            warn!("`[tls] acme = true` does nothing without `[router] https_listen`");
            return;
        }
        loop {
            match self.hosts_due() {
                Ok(due) => {
                    for host in due {
                        if stop.is_cancelled() {
                            return;
                        }
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = self.obtain_certificate(&host) => {}
                        }
                    }
                }
                Err(error) => warn!(%error, "cannot read certificate records"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.acme.wake.notified() => {}
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_before_expiry_and_not_at_once_for_short_certificates() {
        let day = 86_400;
        // 90 days, renew 30 days before.
        assert!(!renewal_due(90 * day, 0, 59 * day, 30 * day));
        assert!(renewal_due(90 * day, 0, 60 * day, 30 * day));
        assert!(renewal_due(90 * day, 0, 91 * day, 30 * day));
        // 6 days: a third of the lifetime, not "30 days before" (at once).
        assert!(!renewal_due(6 * day, 0, day, 30 * day));
        assert!(renewal_due(6 * day, 0, 4 * day, 30 * day));
    }

    #[test]
    fn patterns_are_hosts_or_one_label_wildcards() {
        for good in ["example.com", "*.example.com", "a-b.c.localhost"] {
            assert!(valid_pattern(good), "{good}");
        }
        for bad in [
            "", "com", "*.com", "a..b", "-a.b", "a.b-", "*.*.b.c", "a b.c", "A.b",
        ] {
            assert!(!valid_pattern(bad), "{bad}");
        }
    }
}
