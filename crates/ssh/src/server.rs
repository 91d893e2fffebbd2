//! The russh server and the per-connection handler.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use launchway_git::Git;
use russh::keys::PrivateKey;
use russh::server::ChannelOpenHandle;
use russh::server::{Auth, Handler, Msg, Server, Session};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure, MethodKind, MethodSet};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tracing::{Instrument as _, debug, info, warn};

use crate::session::{
    Command, MAX_SESSIONS, MAX_TUNNELS, Pending, ProcessRequest, Slot, TunnelRequest, accepted_env,
    checked_command, checked_pty, open_tunnel, pump_process,
};
use crate::{Gate, Grant, Target, TargetError, exec, parse_target};

/// How long a session channel may wait for its shell or command.
const PENDING_TIMEOUT: Duration = Duration::from_secs(30);

/// Tunables of the SSH server.
#[derive(Clone, Debug)]
pub struct SshSettings {
    /// Close connections idle this long.
    pub inactivity_timeout: Duration,
    /// Delay before answering a failed authentication.
    pub auth_rejection_time: Duration,
    /// A connection not authenticated this long after it was accepted is
    /// closed (OpenSSH's `LoginGraceTime`).
    pub auth_timeout: Duration,
    /// Connections one IP address may hold at once; more are closed at once.
    pub max_connections_per_ip: usize,
    /// Keepalives to a quiet client this often; three unanswered close the
    /// connection. (Server output resets the inactivity timer, so a shell
    /// printing to a vanished client would otherwise keep it open.)
    pub keepalive_interval: Duration,
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            inactivity_timeout: Duration::from_secs(3600),
            auth_rejection_time: Duration::from_millis(300),
            auth_timeout: Duration::from_secs(30),
            max_connections_per_ip: 64,
            keepalive_interval: Duration::from_secs(30),
        }
    }
}

/// The SSH server.
#[derive(Debug)]
pub struct SshServer<G> {
    gate: Arc<G>,
    git: Arc<Git>,
    config: Arc<russh::server::Config>,
    auth_timeout: Duration,
    max_connections_per_ip: usize,
}

/// The open connections of each peer address.
type PeerCounts = Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>>;

/// One connection's place in its peer's count, given back when dropped.
struct PeerSlot {
    counts: PeerCounts,
    ip: std::net::IpAddr,
}

impl PeerSlot {
    fn take(counts: &PeerCounts, ip: std::net::IpAddr, limit: usize) -> Option<PeerSlot> {
        let mut map = match counts.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let count = map.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = match self.counts.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(count) = map.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl<G: Gate> SshServer<G> {
    /// A server with `host_key`, asking `gate`, running `git`.
    pub fn new(gate: Arc<G>, git: Arc<Git>, host_key: PrivateKey, settings: &SshSettings) -> Self {
        let config = russh::server::Config {
            server_id: russh::SshId::Standard(
                format!("SSH-2.0-Launchway_{}", env!("CARGO_PKG_VERSION")).into(),
            ),
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: settings.auth_rejection_time,
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key],
            inactivity_timeout: Some(settings.inactivity_timeout),
            keepalive_interval: Some(settings.keepalive_interval),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        };
        SshServer {
            gate,
            git,
            config: Arc::new(config),
            auth_timeout: settings.auth_timeout,
            max_connections_per_ip: settings.max_connections_per_ip.max(1),
        }
    }

    /// Serves `listener` until `shutdown` resolves; open sessions are then
    /// disconnected. Each peer address may hold `max_connections_per_ip`
    /// connections; one that has not authenticated within `auth_timeout`
    /// (a slow or silent client included) is closed.
    pub async fn run(
        mut self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let counts: PeerCounts = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let sessions = tokio_util::task::TaskTracker::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: let some close.
                    warn!(%error, "cannot accept an SSH connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = PeerSlot::take(&counts, peer.ip(), self.max_connections_per_ip) else {
                info!(%peer, "too many connections from this address; closed");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = self.new_client(Some(peer));
            let authenticated = handler.authenticated.clone();
            let config = self.config.clone();
            let deadline = tokio::time::Instant::now() + self.auth_timeout;
            let stop = stop.clone();
            sessions.spawn(async move {
                let _slot = slot;
                let started = tokio::time::timeout_at(
                    deadline,
                    russh::server::run_stream(config, stream, handler),
                )
                .await;
                let session = match started {
                    Ok(Ok(session)) => session,
                    Ok(Err(error)) => {
                        debug!(%error, %peer, "ssh handshake failed");
                        return;
                    }
                    Err(_) => {
                        info!(%peer, "no SSH handshake in time; closed");
                        return;
                    }
                };
                let handle = session.handle();
                tokio::pin!(session);
                let mut checked = false;
                loop {
                    tokio::select! {
                        result = &mut session => {
                            if let Err(error) = result {
                                debug!(%error, %peer, "ssh session ended with an error");
                            }
                            return;
                        }
                        () = tokio::time::sleep_until(deadline), if !checked => {
                            checked = true;
                            if !authenticated.load(std::sync::atomic::Ordering::SeqCst) {
                                info!(%peer, "not authenticated in time; closed");
                                return;
                            }
                        }
                        () = stop.cancelled() => {
                            let _ = handle
                                .disconnect(
                                    russh::Disconnect::ByApplication,
                                    "the server is shutting down".into(),
                                    String::new(),
                                )
                                .await;
                            return;
                        }
                    }
                }
            });
        }
        stop.cancel();
        sessions.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), sessions.wait()).await;
        Ok(())
    }
}

impl<G: Gate> Server for SshServer<G> {
    type Handler = Connection<G>;

    fn new_client(&mut self, peer: Option<SocketAddr>) -> Connection<G> {
        Connection {
            gate: self.gate.clone(),
            git: self.git.clone(),
            peer,
            fingerprint: None,
            user: None,
            authenticated: Arc::default(),
            channels: HashMap::new(),
            parked: Arc::default(),
            git_protocol: HashMap::new(),
            pending: HashMap::new(),
            sessions: Arc::default(),
            tunnels: Arc::default(),
        }
    }

    fn handle_session_error(&mut self, error: russh::Error) {
        debug!(%error, "ssh session ended with an error");
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Connection<G> {
    gate: Arc<G>,
    git: Arc<Git>,
    peer: Option<SocketAddr>,
    fingerprint: Option<String>,
    /// Set once a key is accepted (the accept loop's deadline reads it).
    authenticated: Arc<std::sync::atomic::AtomicBool>,
    /// The user name of the accepted key (clients may change it between
    /// attempts: only the one that succeeded counts).
    user: Option<String>,
    /// Session channels opened but not yet running anything.
    channels: HashMap<ChannelId, Channel<Msg>>,
    /// The ids in `channels`, for the timers that close channels left
    /// without a command ([`PENDING_TIMEOUT`]).
    parked: Arc<std::sync::Mutex<std::collections::HashSet<ChannelId>>>,
    git_protocol: HashMap<ChannelId, String>,
    /// What parked channels asked for (target mode), and how much.
    pending: HashMap<ChannelId, Pending>,
    /// Shells and commands running, tunnels open (per-connection limits).
    sessions: Arc<std::sync::atomic::AtomicUsize>,
    tunnels: Arc<std::sync::atomic::AtomicUsize>,
}

/// `GIT_PROTOCOL` values git sends: `version=2`, colon-separated keys.
fn is_git_protocol(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=:._-".contains(&b))
}

impl<G: Gate> Connection<G> {
    /// Takes a parked channel to run something on it (or drop it).
    fn take_channel(&mut self, id: &ChannelId) -> Option<Channel<Msg>> {
        if let Ok(mut parked) = self.parked.lock() {
            parked.remove(id);
        }
        self.channels.remove(id)
    }

    /// The target the user name names (`None`: git mode).
    fn target(&self) -> Option<Result<Target, TargetError>> {
        self.user.as_deref().and_then(parse_target)
    }

    /// Counts a request or data message on a parked channel; past the
    /// limit the channel is dropped and closed (its queue would otherwise
    /// fill and stall the whole connection). False when it was.
    fn count_pending(&mut self, channel: ChannelId, session: &mut Session) -> bool {
        if !self.channels.contains_key(&channel) {
            return true;
        }
        if self.pending.entry(channel).or_default().count() {
            return true;
        }
        info!(peer = ?self.peer, "too many requests before a command; channel closed");
        self.take_channel(&channel);
        self.pending.remove(&channel);
        let _ = session.close(channel);
        false
    }

    /// Starts `command` in the target's app for the channel.
    async fn start_process(
        &mut self,
        channel_id: ChannelId,
        command: Command,
        session: &mut Session,
    ) {
        let target = match self.target() {
            Some(Ok(target)) => target,
            Some(Err(error)) => return self.refuse(channel_id, session, error.to_string()),
            None => return self.refuse(channel_id, session, "no target".into()),
        };
        let Some(fingerprint) = self.fingerprint.clone() else {
            return self.refuse(channel_id, session, "not authenticated".into());
        };
        let Some(slot) = Slot::take(&self.sessions, MAX_SESSIONS) else {
            return self.refuse(
                channel_id,
                session,
                format!("this connection already runs {MAX_SESSIONS} sessions"),
            );
        };
        let pending = self.pending.remove(&channel_id).unwrap_or_default();
        let pty = pending.pty.is_some();
        let request = ProcessRequest {
            command,
            pty: pending.pty,
            env: pending.env,
        };
        let shown = match &request.command {
            Command::Shell => "shell".to_owned(),
            Command::Exec(line) => line.chars().take(80).collect(),
        };
        let process = match self.gate.start(&fingerprint, &target, request).await {
            Ok(process) => process,
            Err(reason) => return self.refuse(channel_id, session, reason),
        };
        let Some(channel) = self.take_channel(&channel_id) else {
            return;
        };
        let _ = session.channel_success(channel_id);
        let span = tracing::info_span!(
            "ssh",
            project = %target.project,
            environment = %target.environment,
            peer = ?self.peer
        );
        info!(parent: &span, %fingerprint, command = %shown, "started");
        tokio::spawn(pump_process(channel, process, slot, pty).instrument(span));
    }

    /// Prints a console sign-in link and ends the channel.
    async fn login(&mut self, channel_id: ChannelId, session: &mut Session) {
        let Some(fingerprint) = self.fingerprint.clone() else {
            self.refuse(channel_id, session, "not authenticated".into());
            return;
        };
        let link = match self.gate.login(&fingerprint).await {
            Ok(link) => link,
            Err(reason) => {
                self.refuse(channel_id, session, reason);
                return;
            }
        };
        info!(peer = ?self.peer, %fingerprint, "console login link made");
        let _ = session.channel_success(channel_id);
        let Some(channel) = self.take_channel(&channel_id) else {
            let _ = session.close(channel_id);
            return;
        };
        tokio::spawn(async move {
            let _ = channel.data(format!("{link}\n").as_bytes()).await;
            let _ = channel.exit_status(0).await;
            let _ = channel.eof().await;
            let _ = channel.close().await;
        });
    }

    /// Refuses what the channel asked for: one line on stderr, exit status 1.
    fn refuse(&mut self, channel: ChannelId, session: &mut Session, reason: String) {
        if !self.channels.contains_key(&channel) {
            // Already running something (a second request): only this
            // request fails, the channel goes on.
            let _ = session.channel_failure(channel);
            return;
        }
        self.pending.remove(&channel);
        info!(peer = ?self.peer, %reason, "refused");
        let _ = session.channel_success(channel);
        let Some(channel) = self.take_channel(&channel) else {
            let _ = session.close(channel);
            return;
        };
        tokio::spawn(async move {
            let line = format!("launchway: {reason}\n");
            let _ = channel.extended_data(1, line.as_bytes()).await;
            let _ = channel.exit_status(1).await;
            let _ = channel.eof().await;
            let _ = channel.close().await;
        });
    }
}

impl<G: Gate> Handler for Connection<G> {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        let fingerprint = crate::fingerprint(offer.public_key);
        Ok(if self.gate.authenticate(&fingerprint).await {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let fingerprint = crate::fingerprint(key.public_key);
        if self.gate.authenticate(&fingerprint).await {
            info!(peer = ?self.peer, %fingerprint, "authenticated");
            self.fingerprint = Some(fingerprint);
            self.user = Some(user.to_owned());
            self.authenticated
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(Auth::Accept)
        } else {
            info!(peer = ?self.peer, %fingerprint, "unknown key");
            Ok(Auth::reject())
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= 2 * MAX_SESSIONS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        let id = channel.id();
        self.channels.insert(id, channel);
        if let Ok(mut parked) = self.parked.lock() {
            parked.insert(id);
        }
        reply.accept().await;
        // A channel that never asks for a command holds a slot and a
        // queue: it is closed after a while.
        let (parked, handle) = (self.parked.clone(), session.handle());
        tokio::spawn(async move {
            tokio::time::sleep(PENDING_TIMEOUT).await;
            let still = parked.lock().map(|mut p| p.remove(&id)).unwrap_or(false);
            if still {
                info!("no command on a channel in time; closed");
                let _ = handle.close(id).await;
            }
        });
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let target = match self.target() {
            Some(Ok(target)) => target,
            Some(Err(error)) => {
                reply
                    .reject(ChannelOpenFailure::Other {
                        code: 1,
                        reason: format!("launchway: {error}"),
                    })
                    .await;
                return Ok(());
            }
            None => {
                reply.reject(forwarding_refused()).await;
                return Ok(());
            }
        };
        let (Some(fingerprint), Some(slot)) = (
            self.fingerprint.clone(),
            Slot::take(&self.tunnels, MAX_TUNNELS),
        ) else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        };
        let span = tracing::info_span!("tunnel", project = %target.project, environment = %target.environment, peer = ?self.peer);
        // Dialing may take a while: the connection goes on meanwhile.
        tokio::spawn(
            open_tunnel(
                self.gate.clone(),
                TunnelRequest {
                    fingerprint,
                    target,
                    host: host.to_owned(),
                    port,
                },
                channel,
                reply,
                slot,
            )
            .instrument(span),
        );
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        _socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(forwarding_refused()).await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _originator: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(forwarding_refused()).await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        _address: &str,
        _port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        _socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.count_pending(channel, session);
        Ok(false)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _protocol: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.count_pending(channel, session) {
            return Ok(());
        }
        session.channel_failure(channel)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.count_pending(channel, session) {
            return Ok(());
        }
        // Terminal modes are left to the container's terminal defaults.
        match (self.target(), checked_pty(term, cols, rows)) {
            (Some(Ok(_)), Some(pty)) => {
                self.pending.entry(channel).or_default().pty = Some(pty);
                session.channel_success(channel)
            }
            _ => session.channel_failure(channel),
        }
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.count_pending(channel, session) {
            return Ok(());
        }
        if name == "GIT_PROTOCOL" && is_git_protocol(value) {
            self.git_protocol.insert(channel, value.to_owned());
        } else if matches!(self.target(), Some(Ok(_))) {
            let pending = self.pending.entry(channel).or_default();
            if accepted_env(name, value, pending.env.len()) {
                pending.env.push((name.to_owned(), value.to_owned()));
            }
        }
        Ok(())
    }

    async fn extended_data(
        &mut self,
        channel: ChannelId,
        _code: u32,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.count_pending(channel, session);
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.count_pending(channel, session);
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.count_pending(channel, session);
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        _signal: russh::Sig,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.count_pending(channel, session);
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.count_pending(channel, session);
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.take_channel(&channel);
        self.pending.remove(&channel);
        self.git_protocol.remove(&channel);
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.channels.contains_key(&channel) {
            // One command per channel (RFC 4254 §6.5).
            return session.channel_failure(channel);
        }
        if self.target().is_some() {
            self.start_process(channel, Command::Shell, session).await;
            return Ok(());
        }
        self.refuse(
            channel,
            session,
            "there is no shell here; use git push and git clone with this remote".into(),
        );
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.channels.contains_key(&channel) {
            // One command per channel (RFC 4254 §6.5).
            return session.channel_failure(channel);
        }
        let name: String = name.chars().take(40).collect();
        self.refuse(
            channel,
            session,
            format!("the `{name}` subsystem is not available"),
        );
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel_id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.channels.contains_key(&channel_id) {
            // One command per channel (RFC 4254 §6.5).
            return session.channel_failure(channel_id);
        }
        if self.target().is_some() {
            match checked_command(data) {
                Ok(line) => {
                    self.start_process(channel_id, Command::Exec(line), session)
                        .await;
                }
                Err(reason) => self.refuse(channel_id, session, reason),
            }
            return Ok(());
        }
        if exec::is_login(data) {
            self.login(channel_id, session).await;
            return Ok(());
        }
        let (service, project) = match exec::parse_exec(data) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.refuse(channel_id, session, error.to_string());
                return Ok(());
            }
        };
        let Some(fingerprint) = self.fingerprint.clone() else {
            self.refuse(channel_id, session, "not authenticated".into());
            return Ok(());
        };
        let mut grant = match self.gate.open(&fingerprint, &project, service).await {
            Ok(grant) => grant,
            Err(reason) => {
                self.refuse(channel_id, session, reason);
                return Ok(());
            }
        };
        if let Some(protocol) = self.git_protocol.remove(&channel_id) {
            grant.env.push(("GIT_PROTOCOL".into(), protocol));
        }
        let child = match self.git.service(service, &grant.repo, &grant.env).spawn() {
            Ok(child) => child,
            Err(error) => {
                warn!(%error, "cannot start git");
                if let Some(token) = &grant.session {
                    self.gate.finish(token, 1).await;
                }
                self.refuse(
                    channel_id,
                    session,
                    "the server cannot run git right now".into(),
                );
                return Ok(());
            }
        };
        let Some(channel) = self.take_channel(&channel_id) else {
            return Ok(());
        };
        session.channel_success(channel_id)?;
        let span =
            tracing::info_span!("git", %project, service = service.subcommand(), peer = ?self.peer);
        info!(parent: &span, %fingerprint, "started");
        tokio::spawn(pump(channel, child, grant, self.gate.clone()).instrument(span));
        Ok(())
    }
}

fn forwarding_refused() -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 1,
        reason: "launchway: forwarding is not available".into(),
    }
}

/// Moves bytes between the SSH channel and git until git exits, then sends
/// EOF, the exit status and closes the channel (OpenSSH's order).
async fn pump<G: Gate>(
    channel: Channel<Msg>,
    mut child: tokio::process::Child,
    grant: Grant,
    gate: Arc<G>,
) {
    let (mut reader, writer) = channel.split();
    let mut stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let input = tokio::spawn(async move {
        while let Some(message) = reader.wait().await {
            match message {
                ChannelMsg::Data { data } => {
                    if let Some(pipe) = stdin.as_mut()
                        && pipe.write_all(&data).await.is_err()
                    {
                        stdin = None;
                    }
                }
                ChannelMsg::Eof => stdin = None,
                ChannelMsg::Close => break,
                _ => {}
            }
        }
    });

    let mut out = writer.make_writer();
    let copy_stdout = async {
        if let Some(mut stdout) = stdout {
            let _ = tokio::io::copy(&mut stdout, &mut out).await;
            let _ = out.flush().await;
        }
    };

    let mut err = writer.make_writer_ext(Some(1));
    let mut messages = grant.messages;
    let copy_stderr = async {
        let mut stderr = stderr;
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                read = async {
                    match stderr.as_mut() {
                        Some(pipe) => pipe.read(&mut buffer).await,
                        None => std::future::pending().await,
                    }
                } => match read {
                    Ok(0) | Err(_) => stderr = None,
                    Ok(n) => { let _ = err.write_all(&buffer[..n]).await; }
                },
                message = async {
                    match messages.as_mut() {
                        Some(receiver) => receiver.recv().await,
                        None => std::future::pending().await,
                    }
                } => match message {
                    Some(bytes) => { let _ = err.write_all(&bytes).await; }
                    None => messages = None,
                },
            }
            if stderr.is_none() && messages.is_none() {
                break;
            }
        }
        let _ = err.flush().await;
    };

    let session = grant.session;
    let wait = async {
        let status = match child.wait().await {
            Ok(status) => status.code().map_or(1, |code| code as u32),
            Err(_) => 1,
        };
        match &session {
            Some(session) => gate.finish(session, status).await,
            None => status,
        }
    };

    let ((), (), status) = tokio::join!(copy_stdout, copy_stderr, wait);
    input.abort();
    debug!(status, "git finished");
    let _ = writer.eof().await;
    let _ = writer.exit_status(status).await;
    let _ = writer.close().await;
}
