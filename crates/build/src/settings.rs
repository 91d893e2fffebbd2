//! `[build]` in the daemon's settings.
//!
//! ```toml
//! [build]
//! concurrency = 1          # builds at a time; the rest wait in line
//! timeout_secs = 3600      # one build, every app and step included
//! memory_mib = 4096        # per build container (0: no limit)
//! cpu_shares = 512         # half the default weight: running apps come first
//! pids = 4096              # processes per build container (0: no limit)
//! tmp_mib = 4096           # the /tmp tmpfs of a build container
//! max_source_mib = 2048    # the largest app tree a build unpacks
//! keep_builds = 10         # per environment, the newest builds whose images `gc` keeps
//! dependency_network = "host"  # "host" or "none": the network of dependency and flavor steps
//! egress_allow = ["pypi.org", …]  # what hooks of `build.egress=registries` projects reach
//! ca_bundle = "system"     # CAs networked steps trust: "system", "off" or a PEM file
//! https_proxy = ""         # an upstream http:// proxy for networked steps ("": none)
//! no_proxy = ""            # hosts reached around it, comma-separated
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The network of the dependencies and flavor steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DependencyNetwork {
    /// The host's network (so a package registry, or a proxy on the host's
    /// loopback, is reachable).
    #[default]
    Host,
    /// No network: dependencies must come from the build cache.
    None,
}

/// `[build]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildSettings {
    /// Builds at a time.
    pub concurrency: usize,
    /// The time one build may take.
    pub timeout_secs: u64,
    /// Memory per build container, MiB (0: none).
    pub memory_mib: u64,
    /// CPU weight per build container (0: the default).
    pub cpu_shares: u64,
    /// Processes per build container (0: no limit).
    pub pids: u64,
    /// Size of `/tmp` in a build container, MiB.
    pub tmp_mib: u64,
    /// The largest app tree a build unpacks, MiB.
    pub max_source_mib: u64,
    /// Builds kept per environment by garbage collection.
    pub keep_builds: usize,
    /// The network of the dependencies and flavor steps.
    pub dependency_network: DependencyNetwork,
    /// The destinations the build hooks of projects with
    /// `build.egress=registries` may reach through the egress proxy
    /// (`host`, `*.domain` or an IPv4 address, optionally `:port`).
    #[serde(deserialize_with = "egress_destinations")]
    pub egress_allow: Vec<String>,
    /// The CA certificates the networked steps trust (see [`crate::trust`]).
    #[serde(deserialize_with = "ca_bundle")]
    pub ca_bundle: String,
    /// An upstream proxy for the networked steps (`http://host:port`).
    #[serde(deserialize_with = "proxy_url")]
    pub https_proxy: String,
    /// Hosts the networked steps reach around `https_proxy`.
    pub no_proxy: String,
}

fn ca_bundle<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let setting = String::deserialize(deserializer)?;
    crate::trust::CaSource::parse(&setting).map_err(serde::de::Error::custom)?;
    Ok(setting)
}

fn proxy_url<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let url = String::deserialize(deserializer)?;
    if !url.trim().is_empty() {
        launchway_net::upstream::UpstreamProxy::parse(&url, "")
            .map_err(serde::de::Error::custom)?;
    }
    Ok(url)
}

/// `egress_allow`, each entry checked (a bad one is an error at its line).
fn egress_destinations<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(deserializer)?;
    launchway_net::egress::AllowList::parse(&list).map_err(serde::de::Error::custom)?;
    Ok(list)
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            concurrency: 1,
            timeout_secs: 3600,
            memory_mib: 4096,
            cpu_shares: 512,
            pids: 4096,
            tmp_mib: 4096,
            max_source_mib: 2048,
            keep_builds: 10,
            dependency_network: DependencyNetwork::Host,
            egress_allow: launchway_net::egress::DEFAULT_ALLOW
                .iter()
                .map(|d| (*d).to_owned())
                .collect(),
            ca_bundle: "system".to_owned(),
            https_proxy: String::new(),
            no_proxy: String::new(),
        }
    }
}

impl BuildSettings {
    /// The time one build may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// `ca_bundle`, parsed (it was checked when the settings were read).
    pub fn ca_source(&self) -> crate::trust::CaSource {
        crate::trust::CaSource::parse(&self.ca_bundle).unwrap_or(crate::trust::CaSource::Off)
    }

    /// `https_proxy` and `no_proxy`, parsed; `None` without a proxy.
    pub fn upstream_proxy(&self) -> Option<launchway_net::upstream::UpstreamProxy> {
        if self.https_proxy.trim().is_empty() {
            return None;
        }
        launchway_net::upstream::UpstreamProxy::parse(&self.https_proxy, &self.no_proxy).ok()
    }

    /// `egress_allow`, parsed (it was checked when the settings were read).
    pub fn egress_allow_list(&self) -> launchway_net::egress::AllowList {
        launchway_net::egress::AllowList::parse(&self.egress_allow).unwrap_or_default()
    }
}
