//! Named network namespaces: the hub of each active environment and each of
//! its members.
//!
//! A namespace is made on a throw-away thread (`unshare(CLONE_NEWNET)` only
//! moves the calling thread) and pinned by bind-mounting the thread's
//! `/proc/thread-self/ns/net` onto a file, as `ip netns add` does; containers
//! join it by that path, and it outlives them. Its `lo` is brought up over
//! rtnetlink from inside; its other links are the environment network's
//! ([`crate::link`]), so nothing in it can reach the host, the outside or
//! another environment.
//!
//! The router reaches members from their hub with sockets
//! created on a dedicated thread that joined it ([`SocketFactory`]): a
//! socket belongs to the namespace it was created in, wherever it connects
//! from. `setns` is never called on a runtime thread.

use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    socket,
};

fn errno(error: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(error as i32)
}

/// Creates the namespace pinned at `path` (its directory must exist) with
/// `lo` up. An existing one at `path` is kept.
pub fn create(path: &Path) -> io::Result<()> {
    if is_namespace(path) {
        return Ok(());
    }
    let target = path.to_path_buf();
    std::thread::Builder::new()
        .name("lw-netns".into())
        .spawn(move || -> io::Result<()> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(errno)?;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&target)?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(errno)?;
            loopback_up()
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Whether `path` is a pinned network namespace.
pub fn is_namespace(path: &Path) -> bool {
    // An nsfs bind mount shows a different device than its directory.
    let Ok(file) = std::fs::metadata(path) else {
        return false;
    };
    let Some(parent) = path.parent().and_then(|p| std::fs::metadata(p).ok()) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt as _;
    file.dev() != parent.dev()
}

/// Unpins and deletes the namespace at `path`; it ends when the last
/// process in it does. A missing one is not an error.
pub fn remove(path: &Path) -> io::Result<()> {
    if is_namespace(path) {
        nix::mount::umount2(path, MntFlags::MNT_DETACH).map_err(errno)?;
    }
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// `ip link set lo up` in the calling thread's namespace: one RTM_NEWLINK
/// for interface 1 (the loopback is always the first) with IFF_UP, acked.
fn loopback_up() -> io::Result<()> {
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_ACK: u16 = 4;
    const NLMSG_ERROR: u16 = 2;
    const IFF_UP: u32 = 1;
    const LOOPBACK_INDEX: i32 = 1;

    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(errno)?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(errno)?;
    let mut message = Vec::with_capacity(32);
    message.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    message.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    message.extend_from_slice(&1u32.to_ne_bytes()); // seq
    message.extend_from_slice(&0u32.to_ne_bytes()); // pid
    message.push(0); // ifi_family AF_UNSPEC
    message.push(0);
    message.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    message.extend_from_slice(&LOOPBACK_INDEX.to_ne_bytes());
    message.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    message.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    send(fd.as_raw_fd(), &message, MsgFlags::empty()).map_err(errno)?;
    let mut reply = [0u8; 256];
    let read = recv(fd.as_raw_fd(), &mut reply, MsgFlags::empty()).map_err(errno)?;
    if read < 20 {
        return Err(io::Error::other("short netlink reply"));
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    let code = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    if kind != NLMSG_ERROR {
        return Err(io::Error::other("unexpected netlink reply"));
    }
    if code != 0 {
        return Err(io::Error::from_raw_os_error(-code));
    }
    Ok(())
}

type SocketRequest = tokio::sync::oneshot::Sender<io::Result<tokio::net::TcpSocket>>;

/// A thread that joined a namespace and makes TCP sockets in it on request.
#[derive(Debug)]
pub struct SocketFactory {
    requests: mpsc::Sender<SocketRequest>,
    path: PathBuf,
}

impl SocketFactory {
    /// Starts the thread; fails when `path` cannot be joined.
    pub fn start(path: &Path) -> io::Result<SocketFactory> {
        let (requests, incoming) = mpsc::channel::<SocketRequest>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let target = path.to_path_buf();
        std::thread::Builder::new()
            .name("lw-netns-dial".into())
            .spawn(move || {
                let joined = std::fs::File::open(&target).and_then(|file| {
                    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(errno)
                });
                let ok = joined.is_ok();
                let _ = ready_tx.send(joined);
                if !ok {
                    return;
                }
                // Ends when every sender is gone.
                while let Ok(reply) = incoming.recv() {
                    let _ = reply.send(tokio::net::TcpSocket::new_v4());
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("the namespace thread ended"))??;
        Ok(SocketFactory {
            requests,
            path: path.to_path_buf(),
        })
    }

    /// A fresh, unconnected IPv4 socket inside the namespace.
    pub async fn socket(&self) -> io::Result<tokio::net::TcpSocket> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.requests
            .send(reply)
            .map_err(|_| io::Error::other("the namespace thread ended"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the namespace thread ended"))?
    }

    /// The namespace's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
