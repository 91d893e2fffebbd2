//! HTTPS termination: certificates chosen by SNI, per-host TLS policy.
//!
//! - [`Certificates`] holds the operator's and obtained certificates, by
//!   exact host or `*.` wildcard (one label), checked when added: the key
//!   matches the certificate, it has not expired, and it names the host. A
//!   host with none gets one from the fallback issuer: a locally generated
//!   CA (development: its root is printed so a browser can trust it) or a
//!   self-signed certificate per host; issued ones are cached.
//! - [`HostTls`] is a host's policy from its routes' `tls` settings: the
//!   lowest TLS version and the CAs a client certificate must chain to. The
//!   acceptor reads the ClientHello first (SNI), then builds the server
//!   config for that host's policy, so each host gets its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

/// Why a certificate is refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The PEM holds no certificate, or it cannot be parsed.
    #[error("no certificate could be read: {0}")]
    Certificate(String),
    /// The PEM holds no private key, or an unsupported one.
    #[error("no usable private key could be read: {0}")]
    Key(String),
    /// The key is not the certificate's.
    #[error("the private key does not match the certificate")]
    Mismatch,
    /// The certificate is no longer (or not yet) valid.
    #[error("the certificate is not valid now: valid from {not_before} to {not_after} (UNIX time)")]
    NotValidNow { not_before: i64, not_after: i64 },
    /// The certificate does not name the host.
    #[error("the certificate names {names:?}, not {host}")]
    WrongHost { host: String, names: Vec<String> },
    /// Generating a certificate failed.
    #[error("cannot issue a certificate: {0}")]
    Issue(String),
}

/// A certificate's facts, for listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Host names (DNS SANs).
    pub names: Vec<String>,
    /// Its issuer's distinguished name.
    pub issuer: String,
    /// Expiry, UNIX seconds.
    pub not_after: i64,
}

/// A host's TLS policy (from its routes' `tls` settings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostTls {
    /// Only TLS 1.3 (`min_version: TLSv1.3`).
    pub tls13_only: bool,
    /// DER certificates of the CAs a client certificate must chain to;
    /// empty: no client certificate asked.
    pub client_cas: Vec<Vec<u8>>,
    /// A client without a certificate is served too (one it gives is
    /// still checked): Upsun's `client_authentication: request`.
    pub client_certificate_optional: bool,
    /// Its settings could not be applied (client CAs rustls cannot use):
    /// every handshake is refused rather than served without the
    /// authentication the route asks for.
    pub refused: Option<String>,
}

impl HostTls {
    /// A policy from a route's settings; the CAs are PEM texts.
    pub fn new(
        tls13_only: bool,
        client_cas_pem: &[String],
        client_certificate_optional: bool,
    ) -> Result<HostTls, TlsError> {
        use rustls::pki_types::pem::PemObject as _;
        let mut client_cas = Vec::new();
        for pem in client_cas_pem {
            for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let der = der.map_err(|e| TlsError::Certificate(e.to_string()))?;
                client_cas.push(der.to_vec());
            }
        }
        Ok(HostTls {
            tls13_only,
            client_cas,
            client_certificate_optional,
            refused: None,
        })
    }
}

/// Reads a PEM chain and key into a certified key, checking that they
/// match and that the certificate is valid now; returns its facts too.
pub fn certified_key(
    chain_pem: &str,
    key_pem: &str,
) -> Result<(CertifiedKey, CertificateInfo), TlsError> {
    use rustls::pki_types::pem::PemObject as _;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::Certificate("the PEM holds no CERTIFICATE block".into()))?;
    let info = certificate_info(leaf)?;
    let now = UnixTime::now().as_secs() as i64;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let not_before = parsed.validity().not_before.timestamp();
    if now < not_before || now > info.not_after {
        return Err(TlsError::NotValidNow {
            not_before,
            not_after: info.not_after,
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| TlsError::Key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| TlsError::Mismatch)?;
    Ok((certified, info))
}

/// The names, issuer and expiry of a DER certificate.
pub fn certificate_info(der: &[u8]) -> Result<CertificateInfo, TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    Ok(CertificateInfo {
        names,
        issuer: parsed.issuer().to_string(),
        not_after: parsed.validity().not_after.timestamp(),
    })
}

/// Whether a certificate name (`example.com`, `*.example.com`) covers `host`.
pub fn name_covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == host,
    }
}

/// What gives a certificate to a host that has none.
enum Fallback {
    SelfSigned,
    LocalCa(Box<rcgen::Issuer<'static, rcgen::KeyPair>>),
}

/// Every certificate the router serves (see the module doc).
pub struct Certificates {
    /// By pattern (`host` or `*.domain`).
    installed: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    issued: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    fallback: Fallback,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").finish_non_exhaustive()
    }
}

/// A new local CA: its certificate and key, PEM.
pub fn new_local_ca(name: &str) -> Result<(String, String), TlsError> {
    let issue = |e: rcgen::Error| TlsError::Issue(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(issue)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(issue)?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let now = std::time::SystemTime::now();
    params.not_before = now.into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 86_400)).into();
    let cert = params.self_signed(&key).map_err(issue)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl Certificates {
    /// Hosts without a certificate get a self-signed one each.
    pub fn self_signed() -> Certificates {
        Certificates {
            installed: RwLock::default(),
            issued: Mutex::default(),
            fallback: Fallback::SelfSigned,
        }
    }

    /// Hosts without a certificate get one from the CA (PEM certificate
    /// and key, from [`new_local_ca`]).
    pub fn with_local_ca(ca_pem: &str, key_pem: &str) -> Result<Certificates, TlsError> {
        let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(ca_pem, key)
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        Ok(Certificates {
            installed: RwLock::default(),
            issued: Mutex::default(),
            fallback: Fallback::LocalCa(Box::new(issuer)),
        })
    }

    /// Installs `key` for `pattern` (a host or `*.domain`), which its
    /// certificate must name; replaces what was there (a renewal).
    pub fn install(&self, pattern: &str, key: CertifiedKey) -> Result<(), TlsError> {
        let pattern = pattern.to_ascii_lowercase();
        let leaf = key
            .cert
            .first()
            .ok_or_else(|| TlsError::Certificate("empty chain".into()))?;
        let info = certificate_info(leaf)?;
        let probe = pattern.replacen("*.", "x.", 1);
        if !info.names.iter().any(|name| name_covers(name, &probe)) {
            return Err(TlsError::WrongHost {
                host: pattern,
                names: info.names,
            });
        }
        let mut installed = match self.installed.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        installed.insert(pattern, Arc::new(key));
        Ok(())
    }

    /// Removes what was installed for `pattern`; whether there was one.
    pub fn uninstall(&self, pattern: &str) -> bool {
        let mut installed = match self.installed.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        installed.remove(&pattern.to_ascii_lowercase()).is_some()
    }

    /// The certificate for `host`: installed exact, installed wildcard,
    /// else issued by the fallback (cached).
    pub fn for_host(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = host.to_ascii_lowercase();
        {
            let installed = match self.installed.read() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some(key) = installed.get(&host) {
                return Some(key.clone());
            }
            if let Some((_, rest)) = host.split_once('.')
                && let Some(key) = installed.get(&format!("*.{rest}"))
            {
                return Some(key.clone());
            }
        }
        let mut issued = match self.issued.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(key) = issued.get(&host) {
            return Some(key.clone());
        }
        let key = Arc::new(self.issue(&host).ok()?);
        issued.insert(host, key.clone());
        Some(key)
    }

    fn issue(&self, host: &str) -> Result<CertifiedKey, TlsError> {
        let issue = |e: rcgen::Error| TlsError::Issue(e.to_string());
        let key = rcgen::KeyPair::generate().map_err(issue)?;
        let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).map_err(issue)?;
        let now = std::time::SystemTime::now();
        params.not_before = (now - std::time::Duration::from_secs(3600)).into();
        params.not_after = (now + std::time::Duration::from_secs(90 * 86_400)).into();
        let cert = match &self.fallback {
            Fallback::SelfSigned => params.self_signed(&key).map_err(issue)?,
            Fallback::LocalCa(issuer) => params.signed_by(&key, &**issuer).map_err(issue)?,
        };
        let der = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| TlsError::Key(e.to_string()))?;
        let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&der)
            .map_err(|e| TlsError::Key(e.to_string()))?;
        Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
    }
}

/// Resolves the one host's certificate a per-host config serves.
#[derive(Debug)]
struct OneHost(Arc<CertifiedKey>);

impl ResolvesServerCert for OneHost {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The server config for a host: its certificate and policy; HTTP/1.1.
pub fn server_config(
    key: Arc<CertifiedKey>,
    policy: &HostTls,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    if let Some(reason) = &policy.refused {
        return Err(TlsError::Certificate(reason.clone()));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if policy.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        rustls::ALL_VERSIONS
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Issue(e.to_string()))?;
    let builder = if policy.client_cas.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for der in &policy.client_cas {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| TlsError::Certificate(e.to_string()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let verifier = if policy.client_certificate_optional {
            verifier.allow_unauthenticated()
        } else {
            verifier
        };
        let verifier = verifier
            .build()
            .map_err(|e| TlsError::Certificate(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_cert_resolver(Arc::new(OneHost(key)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_cert(host: &str, days: i64) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
        let now = std::time::SystemTime::now();
        if days < 0 {
            params.not_before = (now - std::time::Duration::from_secs(10 * 86_400)).into();
            params.not_after = (now - std::time::Duration::from_secs(86_400)).into();
        } else {
            params.not_after = (now + std::time::Duration::from_secs(days as u64 * 86_400)).into();
        }
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_valid_certificate_is_installed_and_chosen_over_the_fallback() {
        let certificates = Certificates::self_signed();
        let (cert, key) = host_cert("*.example.com", 30);
        let (certified, info) = certified_key(&cert, &key).unwrap();
        assert_eq!(info.names, ["*.example.com"]);
        certificates.install("*.example.com", certified).unwrap();
        let chosen = certificates.for_host("shop.example.com").unwrap();
        let chosen_info = certificate_info(&chosen.cert[0]).unwrap();
        assert_eq!(chosen_info.names, ["*.example.com"]);
        // Another host gets an issued one naming it.
        let other = certificates.for_host("main.shop.localhost").unwrap();
        assert_eq!(
            certificate_info(&other.cert[0]).unwrap().names,
            ["main.shop.localhost"]
        );
    }

    #[test]
    fn mismatched_expired_and_foreign_certificates_are_refused() {
        let (cert, _) = host_cert("a.example.com", 30);
        let (_, other_key) = host_cert("a.example.com", 30);
        assert!(matches!(
            certified_key(&cert, &other_key),
            Err(TlsError::Mismatch)
        ));
        let (expired, expired_key) = host_cert("a.example.com", -1);
        assert!(matches!(
            certified_key(&expired, &expired_key),
            Err(TlsError::NotValidNow { .. })
        ));
        assert!(matches!(
            certified_key("not a pem", "nor this"),
            Err(TlsError::Certificate(_))
        ));
        let (cert, key) = host_cert("a.example.com", 30);
        let (certified, _) = certified_key(&cert, &key).unwrap();
        let certificates = Certificates::self_signed();
        assert!(matches!(
            certificates.install("b.example.com", certified),
            Err(TlsError::WrongHost { .. })
        ));
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(name_covers("*.example.com", "a.example.com"));
        assert!(!name_covers("*.example.com", "a.b.example.com"));
        assert!(!name_covers("*.example.com", "example.com"));
        assert!(name_covers("example.com", "example.com"));
    }

    #[test]
    fn the_local_ca_issues_certificates_that_chain_to_it() {
        let (ca, ca_key) = new_local_ca("Launchway local CA").unwrap();
        let certificates = Certificates::with_local_ca(&ca, &ca_key).unwrap();
        let key = certificates.for_host("main.shop.localhost").unwrap();
        let info = certificate_info(&key.cert[0]).unwrap();
        assert!(
            info.issuer.contains("Launchway local CA"),
            "{}",
            info.issuer
        );
        // A rustls client trusting only the CA accepts the chain.
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        let name = rustls::pki_types::ServerName::try_from("main.shop.localhost").unwrap();
        verifier
            .verify_server_cert(&key.cert[0], &[], &name, &[], UnixTime::now())
            .unwrap();
        let _ = server_config(key, &HostTls::default()).unwrap();
    }
}
