//! The builder door's service: `Register`, `Session`, `RunJob`.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::Stream;
use launchway_api::builder_door::proto::{
    BuilderEvent, DaemonEvent, JobInput, JobUpdate, RegisterReply, RegisterRequest, Welcome,
    builder_event, daemon_event, job_update,
};
use launchway_api::builder_door::{AUTHORIZATION, BuildHost, BuilderPeer};
use launchway_store::JoinRefusal;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use super::{Claimed, Live, lock};
use crate::{Daemon, now_ms};

/// How often builders send heartbeats.
pub(crate) const HEARTBEAT_SECS: u32 = 5;

type EventStream = Pin<Box<dyn Stream<Item = Result<DaemonEvent, Status>> + Send>>;
type InputStream = Pin<Box<dyn Stream<Item = Result<JobInput, Status>> + Send>>;

/// The builder door, served by the daemon.
pub(crate) struct Door {
    daemon: Arc<Daemon>,
}

/// The door's TLS settings: a self-signed certificate made once in
/// `<data>/builders/`. Returns them and the certificate's fingerprint.
pub(crate) fn door_tls(data: &Path) -> Result<(Arc<rustls::ServerConfig>, String), String> {
    let dir = data.join("builders");
    super::private_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let (cert_pem, key_pem) = match (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        (Ok(cert), Ok(key)) => (cert, key),
        _ => {
            let issue = |e: rcgen::Error| e.to_string();
            let key = rcgen::KeyPair::generate().map_err(issue)?;
            let mut params = rcgen::CertificateParams::new(vec!["launchway-daemon".to_owned()])
                .map_err(issue)?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "Launchway builder door");
            params.not_after = rcgen::date_time_ymd(2126, 1, 1);
            let cert = params.self_signed(&key).map_err(issue)?;
            let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
            crate::http_door::write_private(&key_path, &key_pem)
                .map_err(|e| format!("{}: {e}", key_path.display()))?;
            std::fs::write(&cert_path, &cert_pem)
                .map_err(|e| format!("{}: {e}", cert_path.display()))?;
            (cert_pem, key_pem)
        }
    };
    let (certified, _) =
        launchway_router::tls::certified_key(&cert_pem, &key_pem).map_err(|e| e.to_string())?;
    let fingerprint = certified
        .cert
        .first()
        .map(|der| launchway_api::builder_door::fingerprint(der))
        .ok_or("the builder door's certificate is empty")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(config), fingerprint))
}

/// Serves the door on `listener` until `shutdown`.
pub(crate) async fn serve_door(
    daemon: Arc<Daemon>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    if let Err(error) =
        launchway_api::builder_door::serve(Door { daemon }, listener, tls, shutdown).await
    {
        warn!(%error, "the builder door stopped");
    }
}

fn peer<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<BuilderPeer>()
        .map(|peer| peer.address.to_string())
        .unwrap_or_default()
}

/// Builder names: what a host name can be.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

impl Door {
    /// The builder a request's credential names.
    fn authenticate<T>(&self, request: &Request<T>) -> Result<String, Status> {
        self.authenticate_record(request).map(|record| record.name)
    }

    /// The record of the builder a request's credential names.
    fn authenticate_record<T>(
        &self,
        request: &Request<T>,
    ) -> Result<launchway_store::BuilderRecord, Status> {
        let refused = || {
            Status::unauthenticated(
                "this builder is not registered (or was removed): register it again with a new join token from `launchway builders token`",
            )
        };
        let value = request
            .metadata()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(refused)?;
        let (name, credential) = value
            .strip_prefix("Builder ")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(refused)?;
        match self.daemon.store.authenticate_builder(name, credential) {
            Ok(Some(record)) => Ok(record),
            Ok(None) => {
                warn!(builder = name, peer = %peer(request), "builder door: unknown builder or wrong credential");
                Err(refused())
            }
            Err(error) => Err(Status::internal(error.to_string())),
        }
    }
}

#[tonic::async_trait]
impl BuildHost for Door {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let address = peer(&request);
        let request = request.into_inner();
        if !valid_name(&request.name) {
            return Err(Status::invalid_argument(
                "a builder's name is 1 to 63 letters, digits, '-', '.' or '_' (`[builder] name`)",
            ));
        }
        let Some(plane) = &self.daemon.plane else {
            return Err(Status::failed_precondition(
                "this daemon has no image registry (`[registry] url`): it cannot take builders",
            ));
        };
        let redeemed = self
            .daemon
            .store
            .redeem_join_token(&request.token_id, &request.secret, now_ms())
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Err(refusal) = redeemed {
            let why = match refusal {
                JoinRefusal::Unknown => "unknown or used up",
                JoinRefusal::WrongSecret => "wrong secret",
                JoinRefusal::Expired => "expired",
            };
            warn!(builder = %request.name, %address, token = %request.token_id, why, "builder door: join refused");
            return Err(Status::unauthenticated(
                "the join token is unknown, expired or used up; make one with `launchway builders token`",
            ));
        }
        let credential = self
            .daemon
            .store
            .register_builder(
                &request.name,
                request.slots,
                &request.version,
                &address,
                now_ms(),
            )
            .map_err(|e| Status::internal(e.to_string()))?;
        let (instance, _) = self
            .daemon
            .store
            .instance_id()
            .map_err(|e| Status::internal(e.to_string()))?;
        info!(builder = %request.name, %address, slots = request.slots, "builder registered");
        Ok(Response::new(RegisterReply {
            credential,
            daemon_instance: instance,
            registry_url: plane.registry().url().to_owned(),
            repository: plane.registry().repository().to_owned(),
            heartbeat_secs: HEARTBEAT_SECS,
        }))
    }

    type SessionStream = EventStream;

    async fn session(
        &self,
        request: Request<Streaming<BuilderEvent>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let record = self.authenticate_record(&request)?;
        let name = record.name.clone();
        let address = peer(&request);
        let mut events = request.into_inner();
        let (offers, outgoing) = mpsc::channel(16);
        let hosts = &self.daemon.build_hosts;
        let session = hosts
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if let Some(plane) = &self.daemon.plane {
            let _ = offers
                .send(Ok(DaemonEvent {
                    kind: Some(daemon_event::Kind::Welcome(Welcome {
                        registry_url: plane.registry().url().to_owned(),
                        repository: plane.registry().repository().to_owned(),
                    })),
                }))
                .await;
        }
        let daemon = self.daemon.clone();
        tokio::spawn(async move {
            let hosts = &daemon.build_hosts;
            // Three heartbeats missed, at least: a session is not a job.
            let lease = std::time::Duration::from_secs(
                daemon
                    .settings
                    .builders
                    .lease_secs
                    .max(3 * u64::from(HEARTBEAT_SECS)),
            );
            loop {
                let event = match tokio::time::timeout(lease, events.next()).await {
                    Ok(Some(Ok(event))) => event,
                    Ok(Some(Err(error))) => {
                        info!(builder = %name, %error, "builder session broke");
                        break;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        warn!(builder = %name, "builder silent for the lease: disconnected");
                        break;
                    }
                };
                let beat = match event.kind {
                    Some(builder_event::Kind::Heartbeat(beat)) => beat,
                    Some(builder_event::Kind::Decline(decline)) => {
                        // Dropping the offer's claim sender tells its dispatcher at once.
                        let mut offered = lock(&hosts.offered);
                        if offered.get(&decline.job).is_some_and(|offer| {
                            offer.builder == name && offer.epoch == decline.epoch
                        }) {
                            offered.remove(&decline.job);
                        }
                        drop(offered);
                        if let Some(builder) = lock(&hosts.live).get_mut(&name) {
                            builder.free = 0;
                        }
                        continue;
                    }
                    None => continue,
                };
                // Removed, or registered again since: this session is over.
                let current = daemon
                    .store
                    .builders()
                    .ok()
                    .and_then(|all| all.into_iter().find(|other| other.name == name));
                if current.is_none_or(|current| current.credential_hash != record.credential_hash) {
                    info!(builder = %name, "builder removed or registered again: its session ends");
                    break;
                }
                let now = Instant::now();
                let mut write_seen = false;
                {
                    let mut live = lock(&hosts.live);
                    let fresh = || Live {
                        session,
                        offers: offers.clone(),
                        address: address.clone(),
                        slots: beat.slots,
                        free: beat.free_slots,
                        running: Vec::new(),
                        last_seen: now,
                        stored_seen: now,
                    };
                    let entry = match live.entry(name.clone()) {
                        std::collections::hash_map::Entry::Vacant(vacant) => {
                            info!(builder = %name, %address, slots = beat.slots, "builder connected");
                            write_seen = true;
                            vacant.insert(fresh())
                        }
                        std::collections::hash_map::Entry::Occupied(occupied) => {
                            let entry = occupied.into_mut();
                            if entry.session > session {
                                // A newer session of this builder took over.
                                break;
                            }
                            if entry.session < session {
                                *entry = fresh();
                                write_seen = true;
                            }
                            entry
                        }
                    };
                    entry.slots = beat.slots;
                    entry.free = beat.free_slots;
                    entry.running = beat.running;
                    entry.last_seen = now;
                    if now.duration_since(entry.stored_seen).as_secs() >= 60 {
                        entry.stored_seen = now;
                        write_seen = true;
                    }
                }
                if write_seen
                    && let Err(error) = daemon.store.touch_builder(&name, now_ms(), &address)
                {
                    warn!(%error, "cannot record when a builder was seen");
                }
                hosts.changed.notify_waiters();
            }
            let mut live = lock(&hosts.live);
            if live
                .get(&name)
                .is_some_and(|entry| entry.session == session)
            {
                live.remove(&name);
                info!(builder = %name, "builder disconnected");
            }
            drop(live);
            let _ = daemon.store.touch_builder(&name, now_ms(), &address);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(outgoing))))
    }

    type RunJobStream = InputStream;

    async fn run_job(
        &self,
        request: Request<Streaming<JobUpdate>>,
    ) -> Result<Response<Self::RunJobStream>, Status> {
        let name = self.authenticate(&request)?;
        let mut updates = request.into_inner();
        let first = tokio::time::timeout(std::time::Duration::from_secs(10), updates.next())
            .await
            .map_err(|_| Status::deadline_exceeded("no claim came"))?;
        let Some(Ok(JobUpdate {
            kind: Some(job_update::Kind::Claim(claim)),
        })) = first
        else {
            return Err(Status::invalid_argument("a job starts with its claim"));
        };
        let offered = {
            let mut offered = lock(&self.daemon.build_hosts.offered);
            match offered.get(&claim.job) {
                Some(offer) if offer.builder == name && offer.epoch == claim.epoch => {
                    offered.remove(&claim.job)
                }
                _ => None,
            }
        };
        let Some(offer) = offered else {
            warn!(builder = %name, job = %claim.job, epoch = claim.epoch, "builder door: a claim for a job not offered to it (or offered again since) refused");
            return Err(Status::failed_precondition(
                "this job is not yours (any more): it was withdrawn or given to another builder",
            ));
        };
        let (inputs, outgoing) = mpsc::channel(4);
        if offer.claim.send(Claimed { updates, inputs }).is_err() {
            return Err(Status::cancelled("the build gave up on this job"));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(outgoing))))
    }
}
