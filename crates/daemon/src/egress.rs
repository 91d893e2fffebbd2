//! The build hook's way out: each hook runs in a namespace of its own,
//! pinned at `<data>/netns-build/<build>.<app index>`, where the egress
//! proxy of [`launchway_net::egress`] listens for the hook.
//!
//! - A project with `build.egress=none` (the default) gets a proxy that
//!   refuses everything: the hook has no network, and a refusal (or output
//!   that says the network was out of reach) makes a failed hook end with
//!   a message naming the setting.
//! - A project with `build.egress=registries` gets the destinations of
//!   `[build] egress_allow`.
//!
//! Every destination asked for, with its connections, refusals and bytes,
//! goes to the build log after the hook and into the build record.

use std::path::PathBuf;

use launchway_build::{BuildError, HookNetwork};
use launchway_net::egress::{AllowList, EgressPolicy, EgressProxy, EgressReport};
use launchway_store::{BuildEgress, EgressTraffic};
use tokio::sync::mpsc;
use tracing::warn;

use crate::Daemon;

/// The proxy of one hook, with what the hook is given to reach it.
pub(crate) struct HookEgress {
    proxy: EgressProxy,
    network: HookNetwork,
    mode: BuildEgress,
}

impl HookEgress {
    /// What the builder runs the hook in.
    pub(crate) fn network(&self) -> &HookNetwork {
        &self.network
    }

    /// Stops the proxy; says and returns what went through.
    pub(crate) async fn finish(self, log: &mpsc::Sender<String>) -> FinishedEgress {
        let report = self.proxy.finish().await;
        for line in summary(&report) {
            let _ = log.send(line).await;
        }
        FinishedEgress {
            report,
            mode: self.mode,
        }
    }
}

/// What a hook's proxy saw.
pub(crate) struct FinishedEgress {
    report: EgressReport,
    mode: BuildEgress,
}

impl FinishedEgress {
    /// For the build record.
    pub(crate) fn records(&self) -> Vec<EgressTraffic> {
        self.report
            .hosts
            .iter()
            .map(|host| EgressTraffic {
                destination: host.destination.clone(),
                connections: host.connections,
                refused: host.refused,
                sent: host.sent,
                received: host.received,
            })
            .collect()
    }

    /// What to add to the message of a failed build: why the hook could
    /// not reach what it asked for, and what would change that.
    pub(crate) fn hint(&self, project: &str, error: &BuildError) -> Option<String> {
        let network_failure = matches!(
            error,
            BuildError::StepFailed {
                network_failure: true,
                ..
            }
        );
        let refused: Vec<&str> = self
            .report
            .hosts
            .iter()
            .filter(|h| h.refused > 0)
            .map(|h| h.destination.as_str())
            .collect();
        match self.mode {
            BuildEgress::None if network_failure || !refused.is_empty() => Some(format!(
                "\nThe build hook has no network access (this project's build.egress is none). \
                 To let it download packages from the registries of the daemon's allow-list, run: \
                 launchway project set -p {project} build.egress=registries"
            )),
            BuildEgress::Registries if !refused.is_empty() => Some(format!(
                "\nThe build hook asked for {} which the daemon's build egress allow-list does not name \
                 (`[build] egress_allow` in the daemon's settings).",
                refused.join(", ")
            )),
            BuildEgress::Registries if network_failure => Some(
                "\nThe build hook reaches the network only through the egress proxy \
                 (HTTP_PROXY/HTTPS_PROXY, http://127.0.0.1:3128): a tool that ignores those \
                 variables cannot connect."
                    .to_owned(),
            ),
            _ => None,
        }
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// One line per destination, for the build log.
fn summary(report: &EgressReport) -> Vec<String> {
    report
        .hosts
        .iter()
        .map(|host| {
            let mut parts = Vec::new();
            if host.connections > 0 {
                parts.push(format!(
                    "{} connection{}, {} received, {} sent",
                    host.connections,
                    if host.connections == 1 { "" } else { "s" },
                    human(host.received),
                    human(host.sent)
                ));
            }
            if host.refused > 0 {
                parts.push(format!("{} refused", host.refused));
            }
            format!(
                "      Build egress: {}: {}",
                host.destination,
                parts.join(", ")
            )
        })
        .collect()
}

impl Daemon {
    fn hook_namespaces(&self) -> PathBuf {
        self.settings.data_dir.join("netns-build")
    }

    /// Starts the proxy of the hook of app `index` of build `build_id`.
    pub(crate) async fn start_hook_egress(
        &self,
        project: &str,
        build_id: &str,
        index: usize,
        log: &mpsc::Sender<String>,
    ) -> Result<HookEgress, BuildError> {
        let mode = self
            .store
            .project(project)
            .map_err(|e| BuildError::Config(format!("the project cannot be read: {e}")))?
            .map(|p| p.build_egress)
            .unwrap_or_default();
        let policy = match mode {
            BuildEgress::None => EgressPolicy {
                upstream: None,
                allow: AllowList::default(),
                refusal_hint: format!(
                    "build hooks have no network; `launchway project set -p {project} build.egress=registries` lets them reach package registries"
                ),
            },
            BuildEgress::Registries => EgressPolicy {
                upstream: self.settings.build.upstream_proxy(),
                allow: self.settings.build.egress_allow_list(),
                refusal_hint: "not in the build egress allow-list (`[build] egress_allow` in the daemon's settings)".to_owned(),
            },
        };
        if mode == BuildEgress::Registries {
            let _ = log
                .send("      Build egress: package registries, through a proxy".to_owned())
                .await;
        }
        let dir = self.hook_namespaces();
        std::fs::create_dir_all(&dir).map_err(|error| BuildError::Io {
            path: dir.display().to_string(),
            message: error.to_string(),
        })?;
        let path = dir.join(format!("{build_id}.{index}"));
        let proxy = EgressProxy::start(&path, policy, log.clone())
            .await
            .map_err(|error| BuildError::Io {
                path: path.display().to_string(),
                message: format!("cannot prepare the build hook's network: {error}"),
            })?;
        let network = HookNetwork {
            netns: path,
            env: proxy.env(),
        };
        Ok(HookEgress {
            proxy,
            network,
            mode,
        })
    }

    /// Removes the hook namespaces a daemon that stopped mid-build left.
    pub(crate) fn remove_stale_hook_namespaces(&self) {
        let Ok(entries) = std::fs::read_dir(self.hook_namespaces()) else {
            return;
        };
        for entry in entries.flatten() {
            if let Err(error) = launchway_net::netns::remove(&entry.path()) {
                warn!(%error, path = %entry.path().display(), "cannot remove a build hook's namespace");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use launchway_net::egress::HostTraffic;

    use super::*;

    fn finished(mode: BuildEgress, hosts: Vec<HostTraffic>) -> FinishedEgress {
        FinishedEgress {
            report: EgressReport { hosts },
            mode,
        }
    }

    fn failed(network_failure: bool) -> BuildError {
        BuildError::StepFailed {
            step: "the build hook".into(),
            how: "exited with status 1".into(),
            network_failure,
        }
    }

    #[test]
    fn a_failed_hook_is_told_why_it_could_not_reach_the_network() {
        let refused = HostTraffic {
            destination: "evil.example:443".into(),
            refused: 2,
            ..HostTraffic::default()
        };
        let hint = finished(BuildEgress::None, vec![])
            .hint("shop", &failed(true))
            .unwrap();
        assert!(
            hint.contains("launchway project set -p shop build.egress=registries"),
            "{hint}"
        );
        let hint = finished(BuildEgress::None, vec![refused.clone()])
            .hint("shop", &failed(false))
            .unwrap();
        assert!(hint.contains("build.egress=registries"), "{hint}");
        assert!(
            finished(BuildEgress::None, vec![])
                .hint("shop", &failed(false))
                .is_none()
        );
        let hint = finished(BuildEgress::Registries, vec![refused])
            .hint("shop", &failed(true))
            .unwrap();
        assert!(
            hint.contains("evil.example:443") && hint.contains("egress_allow"),
            "{hint}"
        );
        let hint = finished(BuildEgress::Registries, vec![])
            .hint("shop", &failed(true))
            .unwrap();
        assert!(hint.contains("HTTP_PROXY"), "{hint}");
        assert!(
            finished(BuildEgress::Registries, vec![])
                .hint("shop", &failed(false))
                .is_none()
        );
    }

    #[test]
    fn the_summary_has_a_line_per_destination() {
        let lines = summary(&EgressReport {
            hosts: vec![
                HostTraffic {
                    destination: "registry.npmjs.org:443".into(),
                    connections: 3,
                    refused: 0,
                    sent: 2048,
                    received: 3 * 1_048_576,
                },
                HostTraffic {
                    destination: "evil.example:443".into(),
                    connections: 0,
                    refused: 1,
                    sent: 0,
                    received: 0,
                },
            ],
        });
        assert_eq!(
            lines,
            [
                "      Build egress: registry.npmjs.org:443: 3 connections, 3.0 MiB received, 2.0 KiB sent",
                "      Build egress: evil.example:443: 1 refused",
            ]
        );
    }
}
