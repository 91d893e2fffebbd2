//! What networked build steps trust and go through: the operator's CA
//! bundle and upstream proxy (`[build] ca_bundle`, `https_proxy`,
//! `no_proxy`).
//!
//! Networks that intercept TLS (corporate proxies, this project's own test
//! machines) present certificates signed by a CA that only the host trusts;
//! runtime images carry Debian's stock bundle, so pip, npm, composer … fail
//! with `CERTIFICATE_VERIFY_FAILED`. The dependency and flavor steps, and
//! build hooks that have registry egress, get the bundle bind-mounted
//! read-only at [`CA_FILE`] (on the step's `/tmp` tmpfs, so nothing of it
//! reaches a frozen image) and the variables TLS clients read pointed at it
//! ([`ca_env`]). Neither is part of a step's cache key: which CA vouches
//! for a registry does not change what it serves.
//!
//! `ca_bundle = "system"` (the default) is the host's own bundle, the first
//! of [`SYSTEM_BUNDLES`] that exists: a superset of Debian's on a Debian
//! host, so giving it always costs nothing and needs no detection. It is
//! copied (world-readable, as steps run unprivileged) when a build starts,
//! so `update-ca-certificates` on the host takes effect with the next build.

use std::io;
use std::path::{Path, PathBuf};

/// Where the bundle's directory is mounted in a step.
pub const CA_DIR: &str = "/tmp/.launchway-ca";
/// The bundle, in a step.
pub const CA_FILE: &str = "/tmp/.launchway-ca/ca-certificates.crt";
/// Where hosts keep their bundle: Debian and Ubuntu, Fedora and RHEL,
/// Alpine and the BSDs.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];
/// What tools print when a certificate is not trusted, lowercased.
const TLS_FAILURES: &[&str] = &[
    "certificate verify failed",
    "certificate_verify_failed",
    "self-signed certificate in certificate chain",
    "self signed certificate in certificate chain",
    "self_signed_cert_in_chain",
    "unable to get local issuer certificate",
    "unable_to_get_issuer_cert_locally",
    "certificate signed by unknown authority",
    "ssl certificate problem",
    "server certificate verification failed",
    "pkix path building failed",
];

/// Whether `line` of a step's output says a TLS certificate was not trusted.
pub fn says_tls_untrusted(line: &str) -> bool {
    let line = line.to_ascii_lowercase();
    TLS_FAILURES.iter().any(|pattern| line.contains(pattern))
}

/// Where a `ca_bundle` setting takes certificates from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// The host's bundle.
    System,
    /// None: steps trust what their image does.
    Off,
    /// A PEM file.
    File(PathBuf),
}

impl CaSource {
    /// Parses a `ca_bundle` setting: `system`, `off` or an absolute path.
    pub fn parse(setting: &str) -> Result<CaSource, String> {
        match setting.trim() {
            "system" => Ok(CaSource::System),
            "off" | "" => Ok(CaSource::Off),
            path if path.starts_with('/') => Ok(CaSource::File(PathBuf::from(path))),
            other => Err(format!(
                "'{other}' is no CA bundle: say \"system\" (the host's), \"off\" or the absolute path of a PEM file"
            )),
        }
    }

    /// The file to read, if any (`System`: the first that exists).
    pub fn file(&self) -> Option<PathBuf> {
        match self {
            CaSource::Off => None,
            CaSource::File(path) => Some(path.clone()),
            CaSource::System => SYSTEM_BUNDLES
                .iter()
                .map(PathBuf::from)
                .find(|path| path.is_file()),
        }
    }
}

/// How many certificates a PEM text holds.
pub fn count_certificates(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// The certificates of a PEM text, each as its base64 body (whitespace
/// removed), to compare bundles by content.
pub fn certificate_bodies(pem: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut current: Option<String> = None;
    for line in pem.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(body) = current.take() {
                bodies.push(body);
            }
        } else if let Some(body) = current.as_mut() {
            body.push_str(line);
        }
    }
    bodies
}

/// Copies the bundle at `source` to `dir/ca-certificates.crt`, readable by
/// all, replacing it atomically when it changed; returns `dir`. A source
/// with no certificate is refused: trusting nothing is never meant.
pub fn stage_bundle(source: &Path, dir: &Path) -> io::Result<PathBuf> {
    let pem = std::fs::read_to_string(source).map_err(|error| {
        io::Error::new(
            error.kind(),
            format!(
                "the CA bundle {} (`[build] ca_bundle`): {error}",
                source.display()
            ),
        )
    })?;
    if count_certificates(&pem) == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the CA bundle {} (`[build] ca_bundle`) holds no PEM certificate",
                source.display()
            ),
        ));
    }
    std::fs::create_dir_all(dir)?;
    let target = dir.join("ca-certificates.crt");
    if std::fs::read_to_string(&target).is_ok_and(|current| current == pem) {
        return Ok(dir.to_path_buf());
    }
    let staged = tempfile::NamedTempFile::new_in(dir)?;
    std::fs::write(staged.path(), pem.as_bytes())?;
    std::fs::set_permissions(
        staged.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    staged.persist(&target).map_err(|error| error.error)?;
    // The directory is mounted for an unprivileged step.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(dir.to_path_buf())
}

/// The variables that make TLS clients trust the bundle at `file`:
/// OpenSSL (Python's `ssl`, Ruby, PHP, curl), Go, requests and pip, Node
/// and npm, git, composer, bundler, cargo.
pub fn ca_env(file: &str) -> Vec<(String, String)> {
    [
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "PIP_CERT",
        "NODE_EXTRA_CA_CERTS",
        "NPM_CONFIG_CAFILE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
        "COMPOSER_CAFILE",
        "BUNDLE_SSL_CA_CERT",
        "CARGO_HTTP_CAINFO",
    ]
    .iter()
    .map(|name| ((*name).to_owned(), file.to_owned()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "-----BEGIN CERTIFICATE-----\nAAAA\nBBBB\n-----END CERTIFICATE-----\n";

    #[test]
    fn settings_parse_and_bad_ones_say_what_is_accepted() {
        assert_eq!(CaSource::parse("system"), Ok(CaSource::System));
        assert_eq!(CaSource::parse("off"), Ok(CaSource::Off));
        assert_eq!(
            CaSource::parse("/etc/corp/ca.pem"),
            Ok(CaSource::File("/etc/corp/ca.pem".into()))
        );
        let error = CaSource::parse("corp.pem").unwrap_err();
        assert!(error.contains("absolute path"), "{error}");
        assert_eq!(CaSource::Off.file(), None);
    }

    #[test]
    fn bundles_are_read_by_certificate() {
        let two = format!("{ONE}junk\n{ONE}");
        assert_eq!(count_certificates(&two), 2);
        assert_eq!(certificate_bodies(&two), vec!["AAAABBBB", "AAAABBBB"]);
        assert!(says_tls_untrusted(
            "pip._vendor.urllib3.exceptions.SSLError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
        ));
        assert!(says_tls_untrusted(
            "npm error code SELF_SIGNED_CERT_IN_CHAIN"
        ));
        assert!(!says_tls_untrusted("Collecting six"));
        let env = ca_env(CA_FILE);
        assert!(env.contains(&("SSL_CERT_FILE".into(), CA_FILE.into())));
    }

    #[test]
    fn staging_copies_readable_and_refuses_empty_bundles() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("host.pem");
        std::fs::write(&source, ONE).unwrap();
        let staged = stage_bundle(&source, &dir.path().join("ca")).unwrap();
        let file = staged.join("ca-certificates.crt");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), ONE);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o644);
        std::fs::write(&source, "no certificates\n").unwrap();
        let error = stage_bundle(&source, &dir.path().join("ca")).unwrap_err();
        assert!(
            error.to_string().contains("holds no PEM certificate"),
            "{error}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            ONE,
            "a bad source replaced the bundle"
        );
        let error =
            stage_bundle(&dir.path().join("missing.pem"), &dir.path().join("ca")).unwrap_err();
        assert!(error.to_string().contains("`[build] ca_bundle`"), "{error}");
    }
}
