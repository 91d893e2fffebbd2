//! Target mode: a user name `PROJECT:ENVIRONMENT[:APP]` asks for a shell,
//! a command or tunnels in that environment instead of git.
//!
//! - What the client may ask for before a shell or command starts is
//!   bounded ([`Pending`]): a pty of sane size and terminal name, a few
//!   `LANG`/`LC_*` variables, at most [`MAX_PENDING_REQUESTS`] requests. The
//!   rest is refused without reaching the daemon.
//! - The process is the daemon's ([`Gate::start`]); this side only moves
//!   bytes, window changes and signals, and drops the [`Process`] (which
//!   kills it) as soon as the client is gone: a closed channel, a lost
//!   connection or a write that fails.
//! - A tunnel (`direct-tcpip`) names a relationship of the app as host
//!   (`database`, or `database.internal`); the daemon decides and dials,
//!   this side copies bytes both ways until either end closes or the
//!   tunnel has been idle for [`TUNNEL_IDLE`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use russh::server::Msg;
use russh::{Channel, ChannelMsg, Sig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::{Gate, Target};

/// Requests and messages a channel may send before its shell or command
/// (below russh's per-channel queue of 100, which would stall the whole
/// connection once full).
pub(crate) const MAX_PENDING_REQUESTS: u32 = 64;
/// Client input a process has not taken yet, at most: more ends the
/// session (the channel is drained at once, so the connection never
/// waits for a process that does not read).
pub(crate) const MAX_STDIN_BUFFER: usize = 64 << 20;
/// Shells and commands one connection may run at once (OpenSSH's `MaxSessions`).
pub(crate) const MAX_SESSIONS: usize = 10;
/// Tunnels one connection may hold open at once.
pub(crate) const MAX_TUNNELS: usize = 32;
/// A tunnel with no traffic either way this long is closed.
pub(crate) const TUNNEL_IDLE: Duration = Duration::from_secs(3600);
/// The longest command line accepted.
pub(crate) const MAX_COMMAND: usize = 32 * 1024;
/// Terminal sizes outside 1..=MAX_PTY_SIDE are refused (or ignored on a change).
pub(crate) const MAX_PTY_SIDE: u32 = 1000;

/// The terminal a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pty {
    /// `TERM` (`xterm-256color`).
    pub term: String,
    pub cols: u16,
    pub rows: u16,
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// An interactive login shell.
    Shell,
    /// One command line, for the app's shell to run.
    Exec(String),
}

/// A shell or command a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessRequest {
    pub command: Command,
    pub pty: Option<Pty>,
    /// `LANG` and `LC_*` the client sent.
    pub env: Vec<(String, String)>,
}

/// What the client asks of a running process, besides its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessControl {
    Resize {
        cols: u16,
        rows: u16,
    },
    /// A signal number.
    Signal(i32),
}

/// What a running process sends back; `Exit` comes last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(u32),
}

/// A process the daemon started for a channel.
#[derive(Debug)]
pub struct Process {
    /// Its input; dropped at the client's end of input (not with a pty:
    /// there, as with OpenSSH's sshd, EOF does not hang the terminal up).
    pub stdin: mpsc::Sender<Vec<u8>>,
    pub control: mpsc::Sender<ProcessControl>,
    pub output: mpsc::Receiver<ProcessOutput>,
    /// Dropped when the client is gone: the daemon then ends the process.
    pub guard: tokio_util::sync::DropGuard,
}

/// What a channel asked for before its shell or command.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) pty: Option<Pty>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) requests: u32,
}

impl Pending {
    /// Counts one more request; false past the limit.
    pub(crate) fn count(&mut self) -> bool {
        self.requests += 1;
        self.requests <= MAX_PENDING_REQUESTS
    }
}

/// A pty request checked: `None` when it is refused.
pub(crate) fn checked_pty(term: &str, cols: u32, rows: u32) -> Option<Pty> {
    let term_ok = !term.is_empty()
        && term.len() <= 64
        && term
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if !term_ok || cols > MAX_PTY_SIDE || rows > MAX_PTY_SIDE {
        return None;
    }
    // 0 means "unknown" (RFC 4254): a usable default then.
    let side = |value: u32, default: u16| {
        if value == 0 {
            default
        } else {
            u16::try_from(value).unwrap_or(default)
        }
    };
    Some(Pty {
        term: term.to_owned(),
        cols: side(cols, 80),
        rows: side(rows, 24),
    })
}

/// Whether a client's variable may reach the process (locale only).
pub(crate) fn accepted_env(name: &str, value: &str, already: usize) -> bool {
    already < 16
        && (name == "LANG" || (name.starts_with("LC_") && name.len() <= 32))
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && value.len() <= 256
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A checked command line: UTF-8, no NUL, not too long.
pub(crate) fn checked_command(data: &[u8]) -> Result<String, String> {
    if data.len() > MAX_COMMAND {
        return Err(format!(
            "the command is {} bytes long; the limit is {MAX_COMMAND}",
            data.len()
        ));
    }
    if data.contains(&0) {
        return Err("the command contains a NUL byte".into());
    }
    String::from_utf8(data.to_vec()).map_err(|_| "the command is not UTF-8".to_owned())
}

fn signal_number(signal: &Sig) -> Option<i32> {
    Some(match signal {
        Sig::HUP => 1,
        Sig::INT => 2,
        Sig::QUIT => 3,
        Sig::ILL => 4,
        Sig::ABRT => 6,
        Sig::FPE => 8,
        Sig::KILL => 9,
        Sig::USR1 => 10,
        Sig::SEGV => 11,
        Sig::PIPE => 13,
        Sig::ALRM => 14,
        Sig::TERM => 15,
        Sig::Custom(_) => return None,
    })
}

/// A slot counted against a per-connection limit, given back when dropped.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Slot {
    pub(crate) fn take(count: &Arc<AtomicUsize>, limit: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Moves bytes, window changes and signals between the channel and the
/// process until the process ends (then EOF, exit status, close) or the
/// client goes (then the process is dropped, which ends it).
///
/// The channel is always drained: client data waits in a buffer (at most
/// [`MAX_STDIN_BUFFER`]) for the process to take it, because russh's
/// session loop blocks on a full channel queue, and with it every other
/// channel, keepalive and timer of the connection.
pub(crate) async fn pump_process(channel: Channel<Msg>, process: Process, slot: Slot, pty: bool) {
    let _slot = slot;
    let Process {
        stdin,
        control,
        mut output,
        guard,
    } = process;
    let (mut reader, writer) = channel.split();
    let (gone, mut client_gone) = tokio::sync::oneshot::channel::<()>();
    let buffered = Arc::new(AtomicUsize::new(0));
    // `None`: the end of input.
    let (queue, mut queued) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    let feed = {
        let buffered = buffered.clone();
        tokio::spawn(async move {
            let mut stdin = Some(stdin);
            while let Some(item) = queued.recv().await {
                match item {
                    Some(bytes) => {
                        let len = bytes.len();
                        if let Some(sender) = &stdin
                            && sender.send(bytes).await.is_err()
                        {
                            stdin = None;
                        }
                        buffered.fetch_sub(len, Ordering::SeqCst);
                    }
                    None => stdin = None,
                }
            }
        })
    };
    let forward = tokio::spawn(async move {
        let mut warned = false;
        while let Some(message) = reader.wait().await {
            match message {
                ChannelMsg::Data { data } => {
                    let len = data.len();
                    if buffered.fetch_add(len, Ordering::SeqCst) + len > MAX_STDIN_BUFFER {
                        info!("the client sent more input than the process takes; session ended");
                        break;
                    }
                    let _ = queue.send(Some(data.to_vec()));
                }
                // With a pty, the end of input would hang the terminal up
                // and lose the output still to come (`ssh -tt … < /dev/null`).
                ChannelMsg::Eof if !pty => {
                    let _ = queue.send(None);
                }
                ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    ..
                } => match checked_pty("x", col_width, row_height) {
                    // Full: a later change supersedes this one anyway.
                    Some(size) => {
                        let _ = control.try_send(ProcessControl::Resize {
                            cols: size.cols,
                            rows: size.rows,
                        });
                    }
                    None if !warned => {
                        info!(col_width, row_height, "window change out of range ignored");
                        warned = true;
                    }
                    None => {}
                },
                ChannelMsg::Signal { signal } => {
                    if let Some(number) = signal_number(&signal) {
                        let _ = control.try_send(ProcessControl::Signal(number));
                    }
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        let _ = gone.send(());
    });

    let mut stdout = writer.make_writer();
    let mut stderr = writer.make_writer_ext(Some(1));
    let status = loop {
        let message = tokio::select! {
            message = output.recv() => message,
            _ = &mut client_gone => None,
        };
        // A write waits for the client's window, which a vanished client
        // never opens again: it gives way when the client is gone.
        let written = match message {
            Some(ProcessOutput::Stdout(bytes)) => tokio::select! {
                written = write_all(&mut stdout, &bytes) => written,
                _ = &mut client_gone => false,
            },
            Some(ProcessOutput::Stderr(bytes)) => tokio::select! {
                written = write_all(&mut stderr, &bytes) => written,
                _ = &mut client_gone => false,
            },
            Some(ProcessOutput::Exit(status)) => break Some(status),
            None => break None,
        };
        if !written {
            break None;
        }
    };
    forward.abort();
    feed.abort();
    match status {
        Some(status) => {
            debug!(status, "process ended");
            let _ = writer.eof().await;
            let _ = writer.exit_status(status).await;
            let _ = writer.close().await;
        }
        None => {
            info!("the client went away; the process is ended");
            drop(guard);
        }
    }
}

async fn write_all(writer: &mut (impl tokio::io::AsyncWrite + Unpin), bytes: &[u8]) -> bool {
    writer.write_all(bytes).await.is_ok() && writer.flush().await.is_ok()
}

/// Whether a tunnel's write went through within [`TUNNEL_IDLE`].
async fn written(write: impl std::future::Future<Output = std::io::Result<()>>) -> bool {
    matches!(tokio::time::timeout(TUNNEL_IDLE, write).await, Ok(Ok(())))
}

/// The relationship a tunnel's host names: `database` or `database.internal`.
pub(crate) fn tunnel_relationship(host: &str) -> Result<String, String> {
    let name = host.strip_suffix(".internal").unwrap_or(host);
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        let shown: String = host.chars().take(64).collect();
        return Err(format!(
            "`{}` is not a relationship name: forward to RELATIONSHIP:PORT (see the app's relationships)",
            shown.escape_debug()
        ));
    }
    Ok(name.to_owned())
}

/// A `direct-tcpip` request of a key in target mode.
pub(crate) struct TunnelRequest {
    pub(crate) fingerprint: String,
    pub(crate) target: Target,
    pub(crate) host: String,
    pub(crate) port: u32,
}

/// Answers a tunnel request: asks the gate, then copies both ways.
pub(crate) async fn open_tunnel<G: Gate>(
    gate: Arc<G>,
    request: TunnelRequest,
    channel: Channel<Msg>,
    reply: russh::server::ChannelOpenHandle,
    slot: Slot,
) {
    let _slot = slot;
    let TunnelRequest {
        fingerprint,
        target,
        host,
        port,
    } = request;
    let refused = |reason: String| russh::ChannelOpenFailure::Other {
        code: 1,
        reason: format!("launchway: {reason}"),
    };
    let upstream = match tunnel_relationship(&host) {
        Ok(relationship) => match tokio::time::timeout(
            Duration::from_secs(10),
            gate.tunnel(&fingerprint, &target, &relationship, port),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(format!("`{relationship}` did not answer in time")),
        },
        Err(reason) => Err(reason),
    };
    let upstream = match upstream {
        Ok(upstream) => upstream,
        Err(reason) => {
            info!(%reason, "tunnel refused");
            reply.reject(refused(reason)).await;
            return;
        }
    };
    reply.accept().await;
    let (mut client_read, mut client_write) = tokio::io::split(channel.into_stream());
    let (mut service_read, mut service_write) = upstream.into_split();
    let (mut up, mut down) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    let (mut client_open, mut service_open) = (true, true);
    while client_open || service_open {
        // The sleep starts again at each pass: the tunnel closes after
        // TUNNEL_IDLE without a byte either way.
        tokio::select! {
            read = client_read.read(&mut up), if client_open => match read {
                Ok(0) | Err(_) => {
                    client_open = false;
                    let _ = service_write.shutdown().await;
                }
                Ok(n) => {
                    if !written(service_write.write_all(&up[..n])).await {
                        break;
                    }
                }
            },
            read = service_read.read(&mut down), if service_open => match read {
                Ok(0) | Err(_) => {
                    service_open = false;
                    let _ = client_write.shutdown().await;
                }
                Ok(n) => {
                    // A vanished client never opens its window again.
                    if !written(client_write.write_all(&down[..n])).await {
                        break;
                    }
                }
            },
            () = tokio::time::sleep(TUNNEL_IDLE) => {
                info!("tunnel idle too long; closed");
                break;
            }
        }
    }
    debug!("tunnel closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_requests_are_bounded() {
        assert_eq!(
            checked_pty("xterm-256color", 120, 40),
            Some(Pty {
                term: "xterm-256color".into(),
                cols: 120,
                rows: 40
            })
        );
        assert_eq!(
            checked_pty("xterm", 0, 0).map(|p| (p.cols, p.rows)),
            Some((80, 24))
        );
        assert_eq!(checked_pty("xterm", 1001, 10), None);
        assert_eq!(checked_pty("xterm", 10, u32::MAX), None);
        assert_eq!(checked_pty("x;rm -rf", 80, 24), None);
        assert_eq!(checked_pty("", 80, 24), None);
    }

    #[test]
    fn only_locale_variables_pass() {
        assert!(accepted_env("LANG", "C.UTF-8", 0));
        assert!(accepted_env("LC_ALL", "en_US.UTF-8", 3));
        assert!(!accepted_env("LD_PRELOAD", "/tmp/x.so", 0));
        assert!(!accepted_env("PATH", "/tmp", 0));
        assert!(!accepted_env("LANG", "C\n", 0));
        assert!(!accepted_env("LANG", "C", 16));
    }

    #[test]
    fn commands_are_checked() {
        assert_eq!(checked_command(b"ls -l").as_deref(), Ok("ls -l"));
        assert!(checked_command(b"a\0b").is_err());
        assert!(checked_command(&[0xff, 0xfe]).is_err());
        assert!(checked_command(&vec![b'a'; MAX_COMMAND + 1]).is_err());
    }

    #[test]
    fn tunnel_hosts_name_relationships() {
        assert_eq!(tunnel_relationship("database").as_deref(), Ok("database"));
        assert_eq!(
            tunnel_relationship("redis_cache.internal").as_deref(),
            Ok("redis_cache")
        );
        assert!(tunnel_relationship("127.0.0.1").is_err());
        assert!(tunnel_relationship("localhost:22").is_err());
        assert!(tunnel_relationship("").is_err());
    }

    #[test]
    fn slots_are_given_back() {
        let count = Arc::new(AtomicUsize::new(0));
        let first = Slot::take(&count, 1).expect("a free slot");
        assert!(Slot::take(&count, 1).is_none());
        drop(first);
        assert!(Slot::take(&count, 1).is_some());
    }
}
