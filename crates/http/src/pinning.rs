//! The API's certificate pinned on first use, like SSH's known_hosts: the
//! first connection to `host:port` records its certificate's SHA-256; later
//! ones must present the same certificate or are refused with a message
//! that says which file to edit if the change is expected.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest as _;

/// Checks a server's certificate against the pin file.
#[derive(Debug)]
pub(crate) struct Pinned {
    /// `host:port`, as the pin file names it.
    pub(crate) name: String,
    pub(crate) file: PathBuf,
    pub(crate) provider: Arc<CryptoProvider>,
    /// Why the last handshake was refused, said to the user as is.
    pub(crate) refusal: Mutex<Option<String>>,
    /// Told when a certificate is pinned for the first time.
    pub(crate) notice: fn(&str),
}

/// `SHA256:<hex>` of a certificate.
pub(crate) fn fingerprint(der: &[u8]) -> String {
    format!("SHA256:{}", hex::encode(sha2::Sha256::digest(der)))
}

impl Pinned {
    fn pinned(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        text.lines().find_map(|line| {
            let (name, print) = line.split_once(' ')?;
            (name == self.name).then(|| print.trim().to_owned())
        })
    }

    fn pin(&self, print: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)?;
        writeln!(file, "{} {print}", self.name)?;
        file.sync_all()
    }

    fn refuse(&self, message: String) -> rustls::Error {
        if let Ok(mut refusal) = self.refusal.lock() {
            *refusal = Some(message.clone());
        }
        rustls::Error::General(message)
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let print = fingerprint(end_entity);
        match self.pinned() {
            Some(pinned) if pinned == print => Ok(ServerCertVerified::assertion()),
            Some(pinned) => Err(self.refuse(format!(
                "the certificate of {} changed: pinned {pinned}, now {print}. If the server's certificate was replaced on purpose, remove its line from {}; otherwise someone may be in between",
                self.name,
                self.file.display()
            ))),
            None => {
                self.pin(&print).map_err(|error| {
                    self.refuse(format!(
                        "cannot record the certificate of {} in {}: {error}",
                        self.name,
                        self.file.display()
                    ))
                })?;
                (self.notice)(&format!(
                    "first connection to {}: pinned its certificate {print} in {}",
                    self.name,
                    self.file.display()
                ));
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
