//! Environment networks. Each environment has a hub namespace with a bridge
//! (`169.254.0.1/16`); each of its members (an app process, a service) has a
//! namespace of its own, linked to the bridge by a veth pair, with an
//! address and nftables rules (both decided by `launchway_deploy::network`)
//! that let it open connections only to what its relationships name. The router dials members from the hub. Nothing else is in
//! the hub: environments never reach each other, the host or the outside.
//!
//! Layout under the daemon's `netns/` directory: the hub is pinned at
//! `<id>`, members at `<id>.members/<a>x<b>` (their address).

pub mod egress;
pub mod link;
pub mod netns;
pub mod upstream;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub use link::NetError;
pub use netns::SocketFactory;

/// Removes every environment network under `dir` (hubs and members)
/// whose id is not in `keep`; what cannot be removed is logged and left.
pub fn remove_networks_except(dir: &Path, keep: &BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let ids: BTreeSet<String> = entries
        .flatten()
        .map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".members")
                .map_or(name.clone(), str::to_owned)
        })
        .collect();
    for id in ids.difference(keep) {
        if let Err(error) = EnvironmentNetwork::new(dir, id).remove() {
            tracing::warn!(%error, network = %id, "cannot remove an environment network");
        }
    }
}

/// The name of the pinned namespace file of the member at `address`.
fn member_file(address: Ipv4Addr) -> String {
    let [_, _, a, b] = address.octets();
    format!("{a}x{b}")
}

/// The files of one environment's network.
#[derive(Clone, Debug)]
pub struct EnvironmentNetwork {
    hub: PathBuf,
    members: PathBuf,
}

impl EnvironmentNetwork {
    /// The network of environment `id` under `dir`.
    pub fn new(dir: &Path, id: &str) -> EnvironmentNetwork {
        EnvironmentNetwork {
            hub: dir.join(id),
            members: dir.join(format!("{id}.members")),
        }
    }

    /// The hub namespace (the router's socket factory joins it).
    pub fn hub(&self) -> &Path {
        &self.hub
    }

    /// The namespace of the member at `address`.
    pub fn member(&self, address: Ipv4Addr) -> PathBuf {
        self.members.join(member_file(address))
    }

    /// Makes the hub and the member at `address` if they are missing (a
    /// member already up keeps its namespace, so what runs in it keeps
    /// running) and loads the member's rules. Blocks.
    pub fn ensure_member(
        &self,
        address: Ipv4Addr,
        prefix_len: u8,
        hub_address: Ipv4Addr,
        rules: &str,
    ) -> Result<PathBuf, NetError> {
        link::ensure_hub(&self.hub, hub_address, prefix_len)?;
        let member = self.member(address);
        if !link::member_ready(&member, address) {
            link::attach_member(&self.hub, &member, address, prefix_len)?;
        }
        link::load_rules(&member, rules)?;
        Ok(member)
    }

    /// Removes every member namespace but those at `keep`. Blocks.
    pub fn retain_members(&self, keep: &BTreeSet<Ipv4Addr>) -> Result<(), NetError> {
        let kept: BTreeSet<String> = keep.iter().map(|a| member_file(*a)).collect();
        let entries = match std::fs::read_dir(&self.members) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(NetError::Io {
                    what: format!("listing {}", self.members.display()),
                    source,
                });
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !kept.contains(&name) {
                netns::remove(&entry.path()).map_err(|source| NetError::Io {
                    what: format!("removing {}", entry.path().display()),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Removes the members and the hub. Blocks.
    pub fn remove(&self) -> Result<(), NetError> {
        self.retain_members(&BTreeSet::new())?;
        match std::fs::remove_dir(&self.members) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(%error, dir = %self.members.display(), "removing the members directory");
            }
            _ => {}
        }
        netns::remove(&self.hub).map_err(|source| NetError::Io {
            what: format!("removing {}", self.hub.display()),
            source,
        })
    }
}
