//! The environment network of a deploy, pure: each member's address, and
//! what each member may reach.
//!
//! Addresses. The network is `169.254.0.0/16` (link-local, as on Upsun, and never
//! routed outside the environment): the hub holds [`HUB_ADDRESS`], every
//! member (an app process, a service) gets `169.254.a.b` with `a` and `b`
//! in 1..=254, taken from a hash of its name. The same set of names always
//! gives the same addresses, and a member keeps its address when others
//! come and go unless a newcomer that sorts before it hashes to the same
//! address (about one chance in 60 000 per pair), so the services a deploy
//! leaves running keep theirs.
//!
//! Rules. An nftables ruleset for each member's own namespace, where its
//! processes (no capabilities) cannot change it. Outgoing packets may go to loopback, answer a connection made to the
//! member (the router's requests, a relationship's clients), or open a TCP
//! connection to an address and port its relationships name; anything else
//! is refused at once (an ICMP "administratively prohibited", so a client
//! gets an error rather than a timeout). IPv6 is refused alike, so nothing
//! bypasses the rules over link-local v6. Connections arriving for an
//! app's port, or for port 80 (`http://<relationship>.internal`, as on
//! Upsun), go to the app on `127.0.0.1:PORT`, where Upsun's own web server
//! would hand them over: apps that listen on localhost only work as well.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The hub's address (the router dials members from the hub).
pub const HUB_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
/// The prefix length of the environment network.
pub const PREFIX_LEN: u8 = 16;

/// The candidate address of `name` at probe `attempt`.
fn candidate(name: &str, attempt: u32) -> Ipv4Addr {
    let digest = Sha256::digest(format!("{attempt}\0{name}").as_bytes());
    let a = 1 + digest[0] % 254;
    let b = 1 + digest[1] % 254;
    Ipv4Addr::new(169, 254, a, b)
}

/// The address of each member: names in order, each taking its first
/// candidate no earlier name took.
pub fn addresses<'a>(members: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Ipv4Addr> {
    let names: BTreeSet<&str> = members.into_iter().collect();
    let mut taken = BTreeSet::new();
    let mut out = BTreeMap::new();
    for name in names {
        let address = (0..)
            .map(|attempt| candidate(name, attempt))
            .find(|address| !taken.contains(address))
            .unwrap_or(HUB_ADDRESS);
        taken.insert(address);
        out.insert(name.to_owned(), address);
    }
    out
}

/// The nftables table Launchway owns in a member's namespace.
pub const TABLE: &str = "launchway";

/// The rules of one member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// The addresses and TCP ports it may connect to.
    pub allowed: BTreeSet<(Ipv4Addr, u16)>,
    /// Connections arriving for port 80 or this one go to `127.0.0.1` on
    /// this port (an app's web port).
    pub web_port: Option<u16>,
    /// Other ports whose connections go to `127.0.0.1` on the same port
    /// (the app behind an app's web server, whose readiness the daemon
    /// checks from outside).
    #[serde(default)]
    pub forwarded: BTreeSet<u16>,
}

/// The ruleset for `filter`, replacing whatever the namespace had (the
/// member's namespace holds nothing else).
pub fn ruleset(filter: &Filter) -> String {
    let mut text = format!("flush ruleset\ntable inet {TABLE} {{\n");
    text.push_str("  chain output {\n    type filter hook output priority filter; policy drop;\n");
    text.push_str("    oifname \"lo\" accept\n");
    text.push_str("    ct state established,related accept\n");
    if !filter.allowed.is_empty() {
        let elements: Vec<String> = filter
            .allowed
            .iter()
            .map(|(address, port)| format!("{address} . {port}"))
            .collect();
        text.push_str(&format!(
            "    ip daddr . tcp dport {{ {} }} ct state new accept\n",
            elements.join(", ")
        ));
    }
    text.push_str("    reject with icmpx type admin-prohibited\n  }\n");
    if let Some(port) = filter.web_port {
        text.push_str(&format!(
            "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    iifname != \"lo\" tcp dport {{ 80, {port} }} dnat ip to 127.0.0.1:{port}\n"
        ));
        for other in &filter.forwarded {
            text.push_str(&format!(
                "    iifname != \"lo\" tcp dport {other} dnat ip to 127.0.0.1:{other}\n"
            ));
        }
        text.push_str("  }\n");
    }
    text.push_str("}\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_stable_and_link_local() {
        let names: Vec<String> = (0..500).map(|i| format!("app:web{i}:web")).collect();
        let first = addresses(names.iter().map(String::as_str));
        let unique: BTreeSet<&Ipv4Addr> = first.values().collect();
        assert_eq!(unique.len(), 500);
        for address in first.values() {
            let [x, y, a, b] = address.octets();
            assert_eq!((x, y), (169, 254));
            assert!((1..=254).contains(&a) && (1..=254).contains(&b));
            assert_ne!(*address, HUB_ADDRESS);
        }
        // Same set, same addresses, whatever the order.
        let again = addresses(names.iter().rev().map(String::as_str));
        assert_eq!(first, again);
        // Most members keep their address when one leaves and another comes.
        let changed = addresses(
            names
                .iter()
                .skip(1)
                .map(String::as_str)
                .chain(["service:zz"]),
        );
        let moved = changed
            .iter()
            .filter(|(name, address)| first.get(*name).is_some_and(|a| a != *address))
            .count();
        assert!(moved <= 1, "{moved} members moved");
    }

    #[test]
    fn a_member_reaches_only_what_it_names() {
        let filter = Filter {
            allowed: BTreeSet::from([
                (Ipv4Addr::new(169, 254, 3, 4), 5432),
                (Ipv4Addr::new(169, 254, 9, 1), 80),
            ]),
            web_port: None,
            forwarded: BTreeSet::new(),
        };
        let text = ruleset(&filter);
        assert!(text.starts_with("flush ruleset\n"), "{text}");
        assert!(text.contains("policy drop;"), "{text}");
        assert!(
            text.contains(
                "ip daddr . tcp dport { 169.254.3.4 . 5432, 169.254.9.1 . 80 } ct state new accept"
            ),
            "{text}"
        );
        assert!(!text.contains("prerouting"), "{text}");
    }

    #[test]
    fn nothing_named_means_nothing_reachable_and_port_80_maps_to_the_app() {
        let text = ruleset(&Filter {
            allowed: BTreeSet::new(),
            web_port: Some(8888),
            forwarded: BTreeSet::new(),
        });
        assert!(!text.contains("daddr"), "{text}");
        assert!(text.contains("reject with icmpx type admin-prohibited"));
        assert!(
            text.contains("tcp dport { 80, 8888 } dnat ip to 127.0.0.1:8888"),
            "{text}"
        );
    }
}
