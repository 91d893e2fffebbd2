//! The links of an environment network, over rtnetlink: the hub's bridge,
//! one veth pair per member (the hub end on the bridge, the other end
//! `eth0` in the member's namespace) and their addresses; and the member's
//! nftables rules, loaded by the real `nft` run inside its namespace.
//!
//! Each operation runs on a thread of its own that joined the namespace it
//! works in (`setns` moves only the calling thread, and a netlink socket
//! belongs to the namespace it was opened in); `setns` never runs on a
//! runtime thread. These calls block: async callers use `spawn_blocking`.

use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt as _;
use nix::sched::CloneFlags;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkFlags};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth};

use crate::netns;

/// The bridge in an environment's hub namespace.
pub const BRIDGE: &str = "lwbr";
/// A member's interface, in its own namespace.
pub const MEMBER_INTERFACE: &str = "eth0";

/// What setting up an environment network can fail with.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A namespace or a thread.
    #[error("{what}: {source}")]
    Io {
        /// What was done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a netlink request.
    #[error("{what}: {message}")]
    Netlink {
        /// What was asked.
        what: String,
        /// The kernel's answer.
        message: String,
    },
    /// `nft` refused the rules, or could not run.
    #[error("loading the network rules of {namespace}: {message}")]
    Filter {
        /// The member's namespace.
        namespace: String,
        /// What nft said.
        message: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Io { what, source }
}

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |error| NetError::Netlink {
        what,
        message: error.to_string(),
    }
}

/// The hub-side interface name of the member at `address` (unique on the
/// hub, at most 15 bytes as the kernel wants): `lw<a>x<b>`.
fn hub_interface(address: Ipv4Addr) -> String {
    let [_, _, a, b] = address.octets();
    format!("lw{a}x{b}")
}

/// Whether a netlink error is "no such device".
fn no_device(error: &rtnetlink::Error) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(message)
        if message.code.is_some_and(|code| code.get() == -(nix::errno::Errno::ENODEV as i32)))
}

/// Runs `work` on a thread that joined the namespace at `path`, with an
/// rtnetlink handle opened there.
fn in_namespace<T, F, Fut>(path: &Path, work: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetError>>,
{
    let target = path.to_path_buf();
    let shown = path.display().to_string();
    std::thread::Builder::new()
        .name("lw-netlink".into())
        .spawn(move || {
            let file = std::fs::File::open(&target).map_err(io(format!("opening {shown}")))?;
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
                .map_err(io(format!("joining {shown}")))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(io("a netlink runtime"))?;
            runtime.block_on(async move {
                let (connection, handle, _) =
                    rtnetlink::new_connection().map_err(io("a netlink socket"))?;
                tokio::spawn(connection);
                work(handle).await
            })
        })
        .map_err(io("a netlink thread"))?
        .join()
        .map_err(|_| NetError::Io {
            what: "a netlink thread".into(),
            source: std::io::Error::other("it panicked"),
        })?
}

/// The index of link `name`, if it exists.
async fn link_index(handle: &rtnetlink::Handle, name: &str) -> Result<Option<u32>, NetError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(error) if no_device(&error) => Ok(None),
        Err(error) => Err(netlink(format!("looking up {name}"))(error)),
    }
}

/// The environment's hub at `hub`: its namespace (made if needed, `lo` up)
/// with a bridge holding `address/prefix_len`.
pub fn ensure_hub(hub: &Path, address: Ipv4Addr, prefix_len: u8) -> Result<(), NetError> {
    if let Some(parent) = hub.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    netns::create(hub).map_err(io(format!("creating the namespace {}", hub.display())))?;
    in_namespace(hub, move |handle| async move {
        let index = match link_index(&handle, BRIDGE).await? {
            Some(index) => index,
            None => {
                handle
                    .link()
                    .add(LinkBridge::new(BRIDGE).build())
                    .execute()
                    .await
                    .map_err(netlink("creating the bridge"))?;
                link_index(&handle, BRIDGE)
                    .await?
                    .ok_or_else(|| NetError::Netlink {
                        what: "creating the bridge".into(),
                        message: "it does not show".into(),
                    })?
            }
        };
        handle
            .address()
            .add(index, IpAddr::V4(address), prefix_len)
            .replace()
            .execute()
            .await
            .map_err(netlink("addressing the bridge"))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink("bringing the bridge up"))
    })
}

/// Whether the member namespace at `member` is up with `address` on its
/// interface (so a deploy can keep it, and a running service in it).
pub fn member_ready(member: &Path, address: Ipv4Addr) -> bool {
    if !netns::is_namespace(member) {
        return false;
    }
    in_namespace(member, move |handle| async move {
        let Some(index) = link_index(&handle, MEMBER_INTERFACE).await? else {
            return Ok(false);
        };
        let mut links = handle.link().get().match_index(index).execute();
        let up = matches!(links.try_next().await, Ok(Some(link)) if link.header.flags.contains(LinkFlags::Up));
        let mut addresses = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut found = false;
        while let Ok(Some(message)) = addresses.try_next().await {
            found |= message.attributes.iter().any(
                |attribute| matches!(attribute, AddressAttribute::Address(IpAddr::V4(a)) if *a == address),
            );
        }
        Ok(up && found)
    })
    .unwrap_or(false)
}

/// Makes the member namespace at `member` (replacing a stale one) with a
/// veth pair to the hub's bridge and `address` on its end.
pub fn attach_member(
    hub: &Path,
    member: &Path,
    address: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), NetError> {
    if let Some(parent) = member.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    netns::remove(member).map_err(io(format!("removing {}", member.display())))?;
    netns::create(member).map_err(io(format!("creating {}", member.display())))?;
    let member_file =
        std::fs::File::open(member).map_err(io(format!("opening {}", member.display())))?;
    let hub_end = hub_interface(address);
    in_namespace(hub, move |handle| async move {
        let bridge = link_index(&handle, BRIDGE)
            .await?
            .ok_or_else(|| NetError::Netlink {
                what: "attaching a member".into(),
                message: "the hub has no bridge".into(),
            })?;
        // A pair left by a member namespace that was unpinned but not
        // yet gone.
        if let Some(stale) = link_index(&handle, &hub_end).await? {
            let _ = handle.link().del(stale).execute().await;
        }
        let peer = LinkUnspec::new_with_name(MEMBER_INTERFACE)
            .setns_by_fd(member_file.as_raw_fd())
            .build();
        let pair = LinkVeth::new(&hub_end, MEMBER_INTERFACE)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        handle
            .link()
            .add(pair)
            .execute()
            .await
            .map_err(netlink(format!("creating the veth pair {hub_end}")))?;
        let index = link_index(&handle, &hub_end)
            .await?
            .ok_or_else(|| NetError::Netlink {
                what: format!("creating the veth pair {hub_end}"),
                message: "it does not show".into(),
            })?;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("attaching {hub_end} to the bridge")))?;
        drop(member_file);
        Ok(())
    })?;
    in_namespace(member, move |handle| async move {
        let index = link_index(&handle, MEMBER_INTERFACE)
            .await?
            .ok_or_else(|| NetError::Netlink {
                what: "configuring a member".into(),
                message: format!("no {MEMBER_INTERFACE} in its namespace"),
            })?;
        handle
            .address()
            .add(index, IpAddr::V4(address), prefix_len)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!("addressing {address}")))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink(format!("bringing {MEMBER_INTERFACE} up")))?;
        // The member's rules may send what arrives to its loopback (an app
        // listening on 127.0.0.1); /proc/sys/net is this thread's namespace's.
        let sysctl = format!("/proc/sys/net/ipv4/conf/{MEMBER_INTERFACE}/route_localnet");
        std::fs::write(&sysctl, b"1").map_err(io(format!("setting {sysctl}")))
    })
}

/// Loads `rules` (an nftables script) in the namespace at `member`, with
/// the real `nft` started from a thread that joined it.
pub fn load_rules(member: &Path, rules: &str) -> Result<(), NetError> {
    let target = member.to_path_buf();
    let rules = rules.to_owned();
    let namespace = member.display().to_string();
    let failed = |message: String| NetError::Filter {
        namespace: namespace.clone(),
        message,
    };
    let outcome = std::thread::Builder::new()
        .name("lw-nft".into())
        .spawn(move || -> Result<std::process::Output, String> {
            let file = std::fs::File::open(&target).map_err(|e| e.to_string())?;
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string())?;
            // The child is forked from this thread: it starts in the
            // namespace the thread joined.
            let mut child = std::process::Command::new(nft_program())
                .args(["-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("running nft (apt-get install nftables): {e}"))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(rules.as_bytes())
                    .map_err(|e| e.to_string())?;
            }
            child.wait_with_output().map_err(|e| e.to_string())
        })
        .map_err(|e| failed(e.to_string()))?
        .join()
        .map_err(|_| failed("the nft thread panicked".into()))?
        .map_err(&failed)?;
    if outcome.status.success() {
        Ok(())
    } else {
        Err(failed(
            String::from_utf8_lossy(&outcome.stderr).trim().to_owned(),
        ))
    }
}

/// `nft`: on `PATH`, else where Debian puts it.
fn nft_program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("nft"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("nft"))
}
