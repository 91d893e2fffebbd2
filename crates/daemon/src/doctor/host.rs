//! What `launchway doctor` reads off the host, parsed without touching it:
//! cgroup controllers (`/proc/self/mountinfo`, `/proc/cgroups`, the unified
//! hierarchy's `cgroup.controllers`), listening sockets (`/proc/net/tcp`),
//! filesystem names and the Debian mirror a runtime build uses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The cgroup controllers Launchway's containers need: `memory` and `pids`
/// for the limits, `cpu` for build weights, and (cgroup v1) `freezer` to
/// pause a parent environment during a clone (v2 freezes natively).
pub(crate) const NEEDED_V1: [&str; 4] = ["memory", "pids", "cpu", "freezer"];
/// The same on the unified hierarchy, where freezing is built in.
pub(crate) const NEEDED_V2: [&str; 3] = ["memory", "pids", "cpu"];

/// The cgroup setup containers will get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cgroups {
    /// 1 or 2 (a hybrid host counts as 1: runc uses the v1 controllers).
    pub(crate) version: u8,
    /// Needed controllers that are not available.
    pub(crate) missing: Vec<&'static str>,
}

/// Reads the cgroup version and missing controllers. `unified_controllers`
/// is the content of `/sys/fs/cgroup/cgroup.controllers` when that file
/// exists.
pub(crate) fn cgroups(
    mountinfo: &str,
    proc_cgroups: &str,
    unified_controllers: Option<&str>,
) -> Cgroups {
    let mounts: Vec<(&str, &str, &str)> = mountinfo.lines().filter_map(mount_entry).collect();
    let unified_root = mounts
        .iter()
        .any(|(point, fstype, _)| *fstype == "cgroup2" && *point == "/sys/fs/cgroup");
    if unified_root {
        let available: Vec<&str> = unified_controllers
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        return Cgroups {
            version: 2,
            missing: NEEDED_V2
                .into_iter()
                .filter(|needed| !available.contains(needed))
                .collect(),
        };
    }
    let enabled: Vec<&str> = proc_cgroups
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() >= 4 && fields[3] == "1").then(|| fields[0])
        })
        .collect();
    let mounted = |controller: &str| {
        mounts.iter().any(|(_, fstype, options)| {
            *fstype == "cgroup" && options.split(',').any(|option| option == controller)
        })
    };
    Cgroups {
        version: 1,
        missing: NEEDED_V1
            .into_iter()
            .filter(|needed| !(enabled.contains(needed) && mounted(needed)))
            .collect(),
    }
}

/// `(mount point, filesystem type, super options)` of a mountinfo line.
fn mount_entry(line: &str) -> Option<(&str, &str, &str)> {
    let (before, after) = line.split_once(" - ")?;
    let point = before.split_whitespace().nth(4)?;
    let mut rest = after.split_whitespace();
    let fstype = rest.next()?;
    let _source = rest.next()?;
    let options = rest.next().unwrap_or_default();
    Some((point, fstype, options))
}

/// The socket inodes listening on `addr` in a `/proc/net/tcp` or
/// `/proc/net/tcp6` table. An unspecified address (`0.0.0.0`, `::`) on the
/// same port also holds `addr`.
pub(crate) fn listening_inodes(table: &str, addr: SocketAddr) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode
            if fields.len() < 10 || fields[3] != "0A" {
                return None;
            }
            let local = parse_proc_addr(fields[1])?;
            let holds = local.port() == addr.port()
                && (local.ip() == addr.ip() || local.ip().is_unspecified());
            holds.then(|| fields[9].parse().ok()).flatten()
        })
        .collect()
}

/// `0100007F:08AE` (IPv4) or 32 hex digits plus port (IPv6), as the kernel
/// prints them: each 32-bit word in host (little-endian) order.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::swap_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut octets = [0_u8; 16];
            for (i, chunk) in octets.chunks_mut(4).enumerate() {
                let value = word(ip.get(i * 8..i * 8 + 8)?)?;
                chunk.copy_from_slice(&value.to_be_bytes());
            }
            let v6 = Ipv6Addr::from(octets);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The name of a filesystem by its `statfs` magic number.
pub(crate) fn filesystem_name(magic: i64) -> &'static str {
    match magic {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlay",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0xF2F5_2010 => "f2fs",
        _ => "another filesystem",
    }
}

/// Where runtime builds fetch packages from, as far as a probe can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mirror {
    /// A plain HTTP mirror: `InRelease` of bookworm is fetched from here.
    Http {
        /// `host[:port]`.
        authority: String,
        /// The mirror's path, without a trailing slash (`/debian`).
        path: String,
    },
    /// An HTTPS mirror: only a TCP connection is tried.
    Https {
        /// `host[:port]`.
        authority: String,
    },
    /// A local directory or file (`file://…` or a path).
    Local(String),
    /// Nothing the probe understands.
    Unknown(String),
}

/// The mirror the `[runtimes] mirror` setting names (mmdebstrap takes a URI,
/// a one-line `deb …` source or a path); empty is mmdebstrap's default.
pub(crate) fn mirror(setting: &str) -> Mirror {
    let setting = setting.trim();
    if setting.is_empty() {
        return Mirror::Http {
            authority: "deb.debian.org".into(),
            path: "/debian".into(),
        };
    }
    let uri = setting
        .split_whitespace()
        .find(|word| word.contains("://"))
        .unwrap_or(setting);
    if let Some(rest) = uri.strip_prefix("http://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        return Mirror::Http {
            authority: authority.to_owned(),
            path: format!("/{}", path.trim_end_matches('/'))
                .trim_end_matches('/')
                .to_owned(),
        };
    }
    if let Some(rest) = uri.strip_prefix("https://") {
        let authority = rest.split('/').next().unwrap_or(rest);
        return Mirror::Https {
            authority: authority.to_owned(),
        };
    }
    if let Some(path) = uri.strip_prefix("file://") {
        return Mirror::Local(path.to_owned());
    }
    if uri.starts_with('/') {
        return Mirror::Local(uri.to_owned());
    }
    Mirror::Unknown(setting.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTS: &str = "\
30 24 0:26 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
32 30 0:28 / /sys/fs/cgroup/pids rw,nosuid shared:11 - cgroup cgroup rw,pids
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:12 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/freezer rw,nosuid shared:13 - cgroup cgroup rw,freezer
35 30 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:14 - cgroup2 cgroup2 rw,nsdelegate
";
    const PROC_CGROUPS: &str = "\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpu\t4\t1\t1
cpuacct\t4\t1\t1
memory\t2\t90\t1
pids\t3\t80\t1
freezer\t5\t1\t1
";

    #[test]
    fn cgroup_v1_and_hybrid_need_four_mounted_enabled_controllers() {
        let found = cgroups(V1_MOUNTS, PROC_CGROUPS, None);
        assert_eq!(
            found,
            Cgroups {
                version: 1,
                missing: vec![]
            }
        );
        let disabled = PROC_CGROUPS.replace("memory\t2\t90\t1", "memory\t0\t1\t0");
        assert_eq!(cgroups(V1_MOUNTS, &disabled, None).missing, ["memory"]);
        let unmounted: String = V1_MOUNTS
            .lines()
            .filter(|line| !line.contains("freezer"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(cgroups(&unmounted, PROC_CGROUPS, None).missing, ["freezer"]);
    }

    #[test]
    fn cgroup_v2_reads_the_root_controllers() {
        let mounts =
            "25 24 0:23 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let found = cgroups(mounts, "", Some("cpuset cpu io memory hugetlb pids rdma\n"));
        assert_eq!(found.version, 2);
        assert!(found.missing.is_empty());
        assert_eq!(
            cgroups(mounts, "", Some("cpu io\n")).missing,
            ["memory", "pids"]
        );
    }

    #[test]
    fn listening_sockets_by_address() {
        let table = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0
   2: 0100007F:1F91 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 888 1 0 100 0 0 10 0
";
        let ssh: SocketAddr = "127.0.0.1:2222".parse().unwrap();
        assert_eq!(listening_inodes(table, ssh), [4242]);
        // 0.0.0.0:8080 holds 127.0.0.1:8080 too.
        let router: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(listening_inodes(table, router), [777]);
        // An established connection is not a listener.
        let other: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        assert!(listening_inodes(table, other).is_empty());
        let v6 = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:08AE 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0
";
        let loopback6: SocketAddr = "[::1]:2222".parse().unwrap();
        assert_eq!(listening_inodes(v6, loopback6), [99]);
    }

    #[test]
    fn mirrors_as_mmdebstrap_takes_them() {
        assert_eq!(
            mirror(""),
            Mirror::Http {
                authority: "deb.debian.org".into(),
                path: "/debian".into()
            }
        );
        assert_eq!(
            mirror("http://mirror.example:8080/debian/"),
            Mirror::Http {
                authority: "mirror.example:8080".into(),
                path: "/debian".into()
            }
        );
        assert_eq!(
            mirror("deb http://ftp.fr.debian.org/debian bookworm main"),
            Mirror::Http {
                authority: "ftp.fr.debian.org".into(),
                path: "/debian".into()
            }
        );
        assert_eq!(
            mirror("https://deb.example/debian"),
            Mirror::Https {
                authority: "deb.example".into()
            }
        );
        assert_eq!(
            mirror("file:///srv/mirror"),
            Mirror::Local("/srv/mirror".into())
        );
        assert!(matches!(mirror("mirror please"), Mirror::Unknown(_)));
    }
}
