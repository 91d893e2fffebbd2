//! `launchway certificates` and `launchway certificate …`: the HTTPS
//! certificates the router serves, operators' own, and ACME renewals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use launchway_api::proto;

use crate::admin::{print_table, time, with_client};

#[derive(Debug, Subcommand)]
pub(crate) enum CertificateCommand {
    /// Serve your own certificate for a host or `*.domain` (it wins over
    /// ACME); refused when the key is not the certificate's, it is not
    /// valid now, or no route names a host it covers.
    Add {
        /// A host, or `*.example.com` (quote it in the shell).
        #[arg(long)]
        host: String,
        /// The PEM certificate chain, leaf first.
        certificate: PathBuf,
        /// The PEM private key.
        key: PathBuf,
    },
    /// Stop serving an operator's certificate (ACME or the fallback take
    /// over).
    Remove {
        /// The host or `*.domain` it was added for.
        #[arg(long)]
        host: String,
    },
    /// Ask ACME for a new certificate for a host now.
    Renew {
        /// The host.
        #[arg(long)]
        host: String,
    },
}

/// `launchway certificates [-p P] [-e E]`.
pub(crate) fn list(
    settings_path: Option<&Path>,
    project: Option<String>,
    environment: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let list = with_client(settings_path, async |client| {
        Ok(client
            .list_certificates(proto::ListCertificatesRequest {
                project: project.clone().unwrap_or_default(),
                environment: environment.clone().unwrap_or_default(),
            })
            .await?
            .into_inner())
    })?;
    if json {
        let rows: Vec<serde_json::Value> = list
            .certificates
            .iter()
            .map(|c| {
                serde_json::json!({
                    "host": c.host,
                    "environment": c.environment,
                    "source": c.source,
                    "issuer": c.issuer,
                    "not_after": c.not_after,
                    "status": c.status,
                    "pattern": c.pattern,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .certificates
        .iter()
        .map(|c| {
            vec![
                c.host.clone(),
                if c.environment.is_empty() {
                    "-".into()
                } else {
                    c.environment.clone()
                },
                format!("{} ({})", c.issuer, c.source),
                if c.not_after > 0 {
                    time(c.not_after as u64 * 1000)
                } else {
                    "on demand".into()
                },
                c.status.clone(),
            ]
        })
        .collect();
    print_table(
        &["HOST", "ENVIRONMENT", "ISSUER", "EXPIRES", "STATUS"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// `launchway certificate add|remove|renew`.
pub(crate) fn certificate(
    settings_path: Option<&Path>,
    command: CertificateCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        CertificateCommand::Add {
            host,
            certificate,
            key,
        } => {
            let chain_pem = std::fs::read_to_string(&certificate)
                .with_context(|| format!("cannot read {}", certificate.display()))?;
            let key_pem = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            let info = with_client(settings_path, async |client| {
                Ok(client
                    .add_certificate(proto::AddCertificateRequest {
                        pattern: host.clone(),
                        chain_pem: chain_pem.clone(),
                        key_pem: key_pem.clone(),
                    })
                    .await?
                    .into_inner())
            })?;
            println!(
                "Serving the certificate for {} (issuer {}, expires {})",
                info.pattern,
                info.issuer,
                time(info.not_after as u64 * 1000)
            );
        }
        CertificateCommand::Remove { host } => {
            with_client(settings_path, async |client| {
                client
                    .remove_certificate(proto::RemoveCertificateRequest {
                        pattern: host.clone(),
                    })
                    .await?;
                Ok(())
            })?;
            println!("Removed the certificate for {host}");
        }
        CertificateCommand::Renew { host } => {
            with_client(settings_path, async |client| {
                client
                    .renew_certificate(proto::RenewCertificateRequest { host: host.clone() })
                    .await?;
                Ok(())
            })?;
            println!(
                "Asked ACME for a new certificate for {host}; `launchway certificates` shows the outcome"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
