//! Certificate records: the operator's (`launchway certificate add`) and
//! the ones ACME issued, with their keys, and the ACME account. The router
//! loads them at start and whenever one changes; a record is written whole
//! (one sled insert, flushed), so a kill leaves the old certificate or the
//! new one.

use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

/// The sled tree of certificate records (key: `custom\0<pattern>` or
/// `acme\0<host>`) and ACME accounts (`account\0<directory URL>`).
pub(crate) const CERTIFICATES: &str = "certificates";

/// Where a certificate comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateSource {
    /// Added by an operator; wins over ACME for the hosts it covers.
    Custom,
    /// Issued by the configured ACME server.
    Acme,
}

impl CertificateSource {
    fn prefix(self) -> &'static str {
        match self {
            CertificateSource::Custom => "custom",
            CertificateSource::Acme => "acme",
        }
    }
}

/// A certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    /// A host or `*.domain` (custom); the host it was issued for (ACME).
    pub pattern: String,
    pub source: CertificateSource,
    /// The PEM chain, leaf first.
    pub chain_pem: String,
    /// The PEM private key.
    pub key_pem: String,
    /// The DNS names it covers.
    pub names: Vec<String>,
    /// Its issuer's distinguished name.
    pub issuer: String,
    /// Expiry, UNIX seconds.
    pub not_after: i64,
    /// When it was added or issued, UNIX seconds.
    pub added_at: u64,
}

/// An ACME account's credentials (instant-acme's JSON), per directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeAccount {
    pub directory: String,
    pub credentials_json: String,
}

fn key(source: CertificateSource, pattern: &str) -> Vec<u8> {
    crate::pair_key(source.prefix(), pattern)
}

impl Store {
    /// Records a certificate, replacing the one of the same source and
    /// pattern.
    pub fn put_certificate(&self, record: &CertificateRecord) -> Result<(), StoreError> {
        self.certificates
            .insert(key(record.source, &record.pattern), crate::encode(record))?;
        self.flush()
    }

    /// Every certificate of `source`, by pattern.
    pub fn certificates(
        &self,
        source: CertificateSource,
    ) -> Result<Vec<CertificateRecord>, StoreError> {
        Self::scan(
            &self.certificates,
            CERTIFICATES,
            &crate::prefix_key(source.prefix()),
        )
    }

    /// Forgets a certificate; whether there was one.
    pub fn delete_certificate(
        &self,
        source: CertificateSource,
        pattern: &str,
    ) -> Result<bool, StoreError> {
        let existed = self.certificates.remove(key(source, pattern))?.is_some();
        self.flush()?;
        Ok(existed)
    }

    /// The ACME account registered with `directory`.
    pub fn acme_account(&self, directory: &str) -> Result<Option<AcmeAccount>, StoreError> {
        Self::get(
            &self.certificates,
            CERTIFICATES,
            &crate::pair_key("account", directory),
        )
    }

    /// Records the ACME account of a directory.
    pub fn put_acme_account(&self, account: &AcmeAccount) -> Result<(), StoreError> {
        self.certificates.insert(
            crate::pair_key("account", &account.directory),
            crate::encode(account),
        )?;
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(source: CertificateSource, pattern: &str, not_after: i64) -> CertificateRecord {
        CertificateRecord {
            pattern: pattern.into(),
            source,
            chain_pem: "chain".into(),
            key_pem: "key".into(),
            names: vec![pattern.into()],
            issuer: "CN=test".into(),
            not_after,
            added_at: 1,
        }
    }

    #[test]
    fn certificates_are_kept_per_source_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        {
            let store = Store::open(&path).unwrap();
            store
                .put_certificate(&record(CertificateSource::Custom, "*.example.com", 10))
                .unwrap();
            store
                .put_certificate(&record(CertificateSource::Acme, "a.example.com", 10))
                .unwrap();
            store
                .put_certificate(&record(CertificateSource::Acme, "a.example.com", 20))
                .unwrap();
            store
                .put_acme_account(&AcmeAccount {
                    directory: "https://acme/dir".into(),
                    credentials_json: "{}".into(),
                })
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let custom = store.certificates(CertificateSource::Custom).unwrap();
        assert_eq!(
            custom,
            [record(CertificateSource::Custom, "*.example.com", 10)]
        );
        let acme = store.certificates(CertificateSource::Acme).unwrap();
        assert_eq!(acme, [record(CertificateSource::Acme, "a.example.com", 20)]);
        assert!(store.acme_account("https://acme/dir").unwrap().is_some());
        assert!(store.acme_account("https://other/dir").unwrap().is_none());
        assert!(
            store
                .delete_certificate(CertificateSource::Custom, "*.example.com")
                .unwrap()
        );
        assert!(
            !store
                .delete_certificate(CertificateSource::Custom, "*.example.com")
                .unwrap()
        );
    }
}
