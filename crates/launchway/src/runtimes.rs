//! `launchway runtimes list|build|import`: the runtime images types map to.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use launchway_api::proto;

use crate::admin::{print_table, with_client};

#[derive(Debug, Subcommand)]
pub(crate) enum RuntimesCommand {
    /// List runtime types (the catalog's and imported ones, built or not)
    /// and the service images this host builds on first use.
    List,
    /// Build a catalog runtime image from Debian packages (mmdebstrap).
    Build {
        /// A type such as `python:3.11`.
        #[arg(name = "TYPE")]
        type_name: String,
        /// Build again even when an image exists.
        #[arg(long)]
        rebuild: bool,
    },
    /// Register the image in an OCI archive as a runtime type.
    Import {
        /// The type it provides, such as `python:3.12`.
        #[arg(name = "TYPE")]
        type_name: String,
        /// An OCI image-layout tar (`ctr images export`, skopeo, docker save).
        archive: PathBuf,
    },
}

fn short(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .map_or_else(|| "-".to_string(), |hex| hex.chars().take(12).collect())
}

pub(crate) fn runtimes(
    settings_path: Option<&Path>,
    command: RuntimesCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        RuntimesCommand::List => {
            let list = with_client(settings_path, async |client| {
                Ok(client
                    .list_runtimes(proto::ListRuntimesRequest {})
                    .await?
                    .into_inner())
            })?;
            let mut rows: Vec<Vec<String>> = list
                .runtimes
                .iter()
                .map(|runtime| {
                    let status = if runtime.image_digest.is_empty() {
                        "not built".to_string()
                    } else if runtime.source.is_empty() {
                        "ready".to_string()
                    } else {
                        format!("ready ({})", runtime.source)
                    };
                    vec![
                        runtime.r#type.clone(),
                        status,
                        short(&runtime.image_digest),
                        if runtime.in_catalog {
                            runtime.origin.clone()
                        } else {
                            "imported".to_string()
                        },
                        runtime.tools.clone(),
                    ]
                })
                .collect();
            rows.extend(list.services.iter().map(|service| {
                vec![
                    service.r#type.clone(),
                    if service.image_digest.is_empty() {
                        "built on first use".to_string()
                    } else {
                        "ready".to_string()
                    },
                    short(&service.image_digest),
                    "service".to_string(),
                    String::new(),
                ]
            }));
            print_table(&["TYPE", "STATUS", "IMAGE", "FROM", "TOOLS"], &rows);
            eprintln!("containerd: {}", list.containerd);
            Ok(ExitCode::SUCCESS)
        }
        RuntimesCommand::Build { type_name, rebuild } => {
            let done = with_client(settings_path, async |client| {
                let mut stream = client
                    .build_runtime(proto::BuildRuntimeRequest {
                        r#type: type_name.clone(),
                        rebuild,
                    })
                    .await?
                    .into_inner();
                let mut done = None;
                while let Some(progress) = stream.message().await? {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{}", progress.line);
                    let _ = out.flush();
                    if progress.done.is_some() {
                        done = progress.done;
                    }
                }
                Ok(done)
            })?;
            match done {
                Some(runtime) => {
                    println!("{} {}", runtime.image, runtime.image_digest);
                    Ok(ExitCode::SUCCESS)
                }
                None => anyhow::bail!("the daemon ended the build without a result"),
            }
        }
        RuntimesCommand::Import { type_name, archive } => {
            let path = std::fs::canonicalize(&archive)
                .map_err(|error| anyhow::anyhow!("cannot read {}: {error}", archive.display()))?;
            let runtime = with_client(settings_path, async |client| {
                Ok(client
                    .import_runtime(proto::ImportRuntimeRequest {
                        r#type: type_name.clone(),
                        archive_path: path.display().to_string(),
                    })
                    .await?
                    .into_inner())
            })?;
            println!(
                "{} {} {}",
                runtime.r#type, runtime.image, runtime.image_digest
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
