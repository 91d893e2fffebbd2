//! The builder role: `launchway serve` with `[builder] join`.
//!
//! It opens no listening socket at all (no SSH, router, admin socket or HTTP
//! door) and keeps no state but its registrations
//! (`<data>/builder/daemons/*.json`, 0600: the daemon's address, its pinned
//! certificate, this builder's credential): it dials each daemon its join
//! tokens name, registers once, then keeps a session open, reconnecting with
//! a backoff of 1 to 30 s. Offers are taken while a build slot
//! (`[build] concurrency`, shared by every daemon) is free. Images go
//! through the registry the daemon names (its URL unless `[registry] url`
//! says another way to reach it, with this host's `[registry]` credentials
//! and CA); frozen builds are deleted here once pushed: images on a builder
//! are only a cache. Wiping its data directory and joining again with a new
//! token loses nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use launchway_api::builder_door::proto::{
    BuilderEvent, Built, Claim, Decline, Failed, Heartbeat, JobResult, JobUpdate, Offer,
    RegisterRequest, builder_event, daemon_event, job_input, job_result, job_update,
};
use launchway_api::builder_door::{AUTHORIZATION, BuildHostClient};
use launchway_build::plane::Plane;
use launchway_build::{BuildError, Builder, RECIPE_VERSION, Recipe};
use launchway_registry::{Registry, RegistryConfig};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{error, info, warn};

use super::JoinToken;
use crate::settings::Settings;
use crate::{DaemonError, failpoint};

/// A daemon this builder is registered with.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Registration {
    /// The join token it was made with: another token registers again.
    #[serde(default)]
    token_id: String,
    address: String,
    pin: String,
    name: String,
    credential: String,
    registry_url: String,
    repository: String,
    heartbeat_secs: u32,
}

/// What the builder shares between its sessions and jobs.
struct Host {
    settings: Settings,
    name: String,
    builder: Builder,
    scratch: PathBuf,
    running: std::sync::Mutex<Vec<String>>,
    /// Woken when a slot is taken or freed: the daemons hear of it at once,
    /// not at the next heartbeat.
    slots_changed: tokio::sync::Notify,
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the builder role until `shutdown`.
pub(crate) async fn serve_builder(
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    let data = settings.data_dir.clone();
    let dir = data.join("builder").join("daemons");
    super::private_dir(&dir).map_err(|source| DaemonError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let name = match settings.builder.name.trim() {
        "" => nix::unistd::gethostname()
            .ok()
            .and_then(|host| host.into_string().ok())
            .unwrap_or_else(|| "builder".to_owned()),
        given => given.to_owned(),
    };
    let slots = settings.build.concurrency.max(1) as u32;
    let mut registrations = Vec::new();
    for text in &settings.builder.join {
        let token = JoinToken::parse(text)
            .map_err(|e| DaemonError::Builder(format!("[builder] join: {e}")))?;
        registrations.push(register(&dir, &token, &name, slots).await?);
    }
    let (engine, embedded) = crate::connect_containerd(&settings).await?;
    // Nothing of a builder outlives its process: what a killed one left goes.
    match engine.remove_leftovers().await {
        Ok((containers, leases)) if !containers.is_empty() || leases > 0 => {
            info!(
                containers = containers.len(),
                leases, "removed what a previous run left"
            );
        }
        Ok(_) => {}
        Err(error) => warn!(%error, "cannot remove what a previous run left"),
    }
    let builder = Builder::new(
        engine,
        settings.build.clone(),
        settings.runtimes.build_options(),
        data.join("build-cache"),
        data.join("scratch"),
    );
    let host = Arc::new(Host {
        scratch: data.join("scratch"),
        settings,
        name: name.clone(),
        builder,
        running: std::sync::Mutex::new(Vec::new()),
        slots_changed: tokio::sync::Notify::new(),
    });
    let stop = CancellationToken::new();
    let mut sessions = Vec::new();
    for registration in registrations {
        let plane = plane_for(&host.settings, &registration)?;
        info!(builder = %name, daemon = %registration.address, slots, registry = %plane.registry().url(), "registered with the daemon");
        sessions.push(tokio::spawn(keep_session(
            host.clone(),
            registration,
            plane,
            stop.clone(),
        )));
    }
    info!(builder = %name, daemons = sessions.len(), "builder is serving");
    shutdown.await;
    stop.cancel();
    for session in sessions {
        let _ = session.await;
    }
    if let Some(mut containerd) = embedded
        && let Err(error) = containerd.stop().await
    {
        warn!(%error, "stopping the embedded containerd");
    }
    Ok(())
}

/// The registration for `token`: recorded already, or made now.
async fn register(
    dir: &Path,
    token: &JoinToken,
    name: &str,
    slots: u32,
) -> Result<Registration, DaemonError> {
    let pin_hex = token.pin.trim_start_matches("SHA256:");
    let file = dir.join(format!("{}.json", &pin_hex[..16.min(pin_hex.len())]));
    if let Ok(bytes) = std::fs::read(&file)
        && let Ok(known) = serde_json::from_slice::<Registration>(&bytes)
        && known.address == token.address
        && known.name == name
        && known.token_id == token.id
    {
        return Ok(known);
    }
    let mut client = launchway_api::builder_door::connect(&token.address, &token.pin)
        .await
        .map_err(|e| DaemonError::Builder(e.to_string()))?;
    let reply = client
        .register(RegisterRequest {
            token_id: token.id.clone(),
            secret: token.secret.clone(),
            name: name.to_owned(),
            slots,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
        .await
        .map_err(|status| {
            DaemonError::Builder(format!(
                "the daemon at {} refused to register this builder: {}",
                token.address,
                status.message()
            ))
        })?
        .into_inner();
    let registration = Registration {
        token_id: token.id.clone(),
        address: token.address.clone(),
        pin: token.pin.clone(),
        name: name.to_owned(),
        credential: reply.credential,
        registry_url: reply.registry_url,
        repository: reply.repository,
        heartbeat_secs: reply.heartbeat_secs.max(1),
    };
    let text = serde_json::to_string_pretty(&registration).unwrap_or_default();
    let temporary = file.with_extension("json.tmp");
    crate::http_door::write_private(&temporary, &text)
        .and_then(|()| std::fs::rename(&temporary, &file))
        .map_err(|source| DaemonError::Io {
            path: file.display().to_string(),
            source,
        })?;
    info!(daemon = %token.address, builder = name, "registered with a daemon");
    Ok(registration)
}

/// The registry of `registration`'s daemon, reached as this host's
/// `[registry]` says.
fn plane_for(settings: &Settings, registration: &Registration) -> Result<Plane, DaemonError> {
    let own = &settings.registry;
    let read = |path: &Path| {
        std::fs::read(path).map_err(|error| {
            DaemonError::Registry(format!("[registry] {}: {error}", path.display()))
        })
    };
    let password = match own.password_file.as_os_str().is_empty() {
        true => None,
        false => Some(
            String::from_utf8_lossy(&read(&own.password_file)?)
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        ),
    };
    let ca_pem = match own.ca_file.as_os_str().is_empty() {
        true => None,
        false => Some(read(&own.ca_file)?),
    };
    let url = match own.url.trim() {
        "" => registration.registry_url.clone(),
        given => given.to_owned(),
    };
    let registry = Registry::new(RegistryConfig {
        url,
        repository: registration.repository.clone(),
        username: Some(own.username.clone()).filter(|user| !user.is_empty()),
        password,
        ca_pem,
    })
    .map_err(|error| DaemonError::Registry(error.to_string()))?;
    Ok(Plane::new(registry))
}

fn authorized<T>(message: T, registration: &Registration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Builder {}:{}", registration.name, registration.credential).parse()
    {
        request.metadata_mut().insert(AUTHORIZATION, value);
    }
    request
}

/// Keeps a session with one daemon until `stop`.
async fn keep_session(
    host: Arc<Host>,
    registration: Registration,
    plane: Plane,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let outcome = tokio::select! {
            outcome = session(&host, &registration, &plane, &stop) => outcome,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(Ended::Refused(message)) => {
                error!(daemon = %registration.address, %message, "the daemon refused this builder: register it again with a new join token");
                return;
            }
            Err(Ended::Broken(message)) => {
                warn!(daemon = %registration.address, %message, "session with the daemon ended; reconnecting");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

enum Ended {
    Refused(String),
    Broken(String),
}

fn heartbeat(host: &Host) -> BuilderEvent {
    BuilderEvent {
        kind: Some(builder_event::Kind::Heartbeat(Heartbeat {
            slots: host.settings.build.concurrency.max(1) as u32,
            free_slots: host.builder.free_slots() as u32,
            running: lock(&host.running).clone(),
        })),
    }
}

async fn session(
    host: &Arc<Host>,
    registration: &Registration,
    plane: &Plane,
    stop: &CancellationToken,
) -> Result<(), Ended> {
    let client = launchway_api::builder_door::connect(&registration.address, &registration.pin)
        .await
        .map_err(|e| Ended::Broken(e.to_string()))?;
    let (beats, outgoing) = mpsc::channel(16);
    let _ = beats.send(heartbeat(host)).await;
    let declines = beats.clone();
    let mut events = client
        .clone()
        .session(authorized(ReceiverStream::new(outgoing), registration))
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                Ended::Refused(status.message().to_owned())
            }
            _ => Ended::Broken(status.message().to_owned()),
        })?
        .into_inner();
    info!(daemon = %registration.address, "connected to the daemon");
    let interval = Duration::from_secs(u64::from(registration.heartbeat_secs));
    let beating = {
        let host = host.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = host.slots_changed.notified() => {}
                }
                if beats.send(heartbeat(&host)).await.is_err() {
                    return;
                }
            }
        })
    };
    let ended = loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = stop.cancelled() => break Ok(()),
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(status)) => break Err(Ended::Broken(status.message().to_owned())),
            None => break Err(Ended::Broken("the daemon closed the session".into())),
        };
        match event.kind {
            Some(daemon_event::Kind::Offer(offer)) => {
                let Some(slot) = host.builder.try_slot(&offer.project) else {
                    let decline = BuilderEvent {
                        kind: Some(builder_event::Kind::Decline(Decline {
                            job: offer.job,
                            epoch: offer.epoch,
                        })),
                    };
                    let _ = declines.send(decline).await;
                    continue;
                };
                tokio::spawn(run_job(
                    host.clone(),
                    client.clone(),
                    registration.clone(),
                    plane.clone(),
                    offer,
                    slot,
                    stop.clone(),
                ));
            }
            Some(daemon_event::Kind::Welcome(welcome))
                if welcome.repository != registration.repository =>
            {
                warn!(daemon = %registration.address, "the daemon's repository changed since this builder registered");
            }
            Some(daemon_event::Kind::Welcome(_)) | None => {}
        }
    };
    beating.abort();
    ended
}

/// Takes job `offer`, runs it, answers its result.
async fn run_job(
    host: Arc<Host>,
    mut client: BuildHostClient<Channel>,
    registration: Registration,
    plane: Plane,
    offer: Offer,
    slot: launchway_build::Slot,
    stop: CancellationToken,
) {
    let job = offer.job.clone();
    lock(&host.running).push(job.clone());
    let (updates, outgoing) = mpsc::channel::<JobUpdate>(256);
    let update = |kind: job_update::Kind| JobUpdate { kind: Some(kind) };
    let _ = updates
        .send(update(job_update::Kind::Claim(Claim {
            job: offer.job.clone(),
            epoch: offer.epoch,
        })))
        .await;
    let outcome = match client
        .run_job(authorized(ReceiverStream::new(outgoing), &registration))
        .await
    {
        Ok(inputs) => run_claimed(&host, &plane, inputs.into_inner(), &updates, &slot, &stop).await,
        Err(status) => {
            info!(job = %job, message = %status.message(), "the daemon did not give this job");
            None
        }
    };
    if let Some(result) = outcome {
        let _ = updates.send(update(job_update::Kind::Result(result))).await;
    }
    drop(slot);
    lock(&host.running).retain(|running| *running != job);
    host.slots_changed.notify_waiters();
}

fn failed(kind: &str, message: String) -> JobResult {
    JobResult {
        kind: Some(job_result::Kind::Failed(Failed {
            kind: kind.to_owned(),
            message,
            network_failure: false,
        })),
    }
}

async fn run_claimed(
    host: &Arc<Host>,
    plane: &Plane,
    mut inputs: tonic::Streaming<launchway_api::builder_door::proto::JobInput>,
    updates: &mpsc::Sender<JobUpdate>,
    slot: &launchway_build::Slot,
    stop: &CancellationToken,
) -> Option<JobResult> {
    let update = |kind: job_update::Kind| JobUpdate { kind: Some(kind) };
    // The spec, then the tree.
    let spec = match inputs.next().await {
        Some(Ok(input)) => match input.kind {
            Some(job_input::Kind::Spec(spec)) => spec,
            _ => {
                return Some(failed(
                    "internal",
                    "the job did not start with its spec".into(),
                ));
            }
        },
        _ => return None,
    };
    if spec.recipe_version != RECIPE_VERSION {
        return Some(failed(
            "internal",
            format!(
                "this builder reads build recipes of version {RECIPE_VERSION}, the daemon sent {}: run the same Launchway version on both",
                spec.recipe_version
            ),
        ));
    }
    let recipe = match Recipe::from_json(&spec.recipe_json) {
        Ok(recipe) => recipe,
        Err(error) => return Some(failed("internal", error.to_string())),
    };
    if let Err(error) = std::fs::create_dir_all(&host.scratch) {
        return Some(failed(
            "internal",
            format!("{}: {error}", host.scratch.display()),
        ));
    }
    let tar = match tempfile::NamedTempFile::new_in(&host.scratch) {
        Ok(tar) => tar,
        Err(error) => {
            return Some(failed(
                "internal",
                format!("{}: {error}", host.scratch.display()),
            ));
        }
    };
    let max = host
        .settings
        .build
        .max_source_mib
        .saturating_mul(1024 * 1024);
    let mut written = 0u64;
    {
        let Ok(file) = tar.reopen() else {
            return Some(failed(
                "internal",
                "the tree's scratch file cannot be opened".into(),
            ));
        };
        let mut file = tokio::fs::File::from_std(file);
        loop {
            match inputs.next().await {
                Some(Ok(input)) => match input.kind {
                    Some(job_input::Kind::Tar(bytes)) => {
                        written += bytes.len() as u64;
                        if written > max {
                            return Some(failed(
                                "internal",
                                format!(
                                    "the tree is larger than this builder's `[build] max_source_mib` ({} MiB)",
                                    host.settings.build.max_source_mib
                                ),
                            ));
                        }
                        if let Err(error) = file.write_all(&bytes).await {
                            return Some(failed(
                                "internal",
                                format!("the tree cannot be written: {error}"),
                            ));
                        }
                    }
                    Some(job_input::Kind::TarEnd(_)) => break,
                    Some(job_input::Kind::Cancel(_)) => {
                        return Some(failed("cancelled", "cancelled".into()));
                    }
                    _ => {
                        return Some(failed(
                            "internal",
                            "unexpected message while the tree came".into(),
                        ));
                    }
                },
                _ => return None,
            }
        }
        if let Err(error) = file.flush().await {
            return Some(failed(
                "internal",
                format!("the tree cannot be written: {error}"),
            ));
        }
    }
    // Cancels and the daemon going away end the build.
    let cancel = stop.child_token();
    let watcher = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            while let Some(input) = inputs.next().await {
                match input {
                    Ok(input) if matches!(input.kind, Some(job_input::Kind::Cancel(_))) => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            cancel.cancel();
        })
    };
    let (log, mut lines) = mpsc::channel::<String>(256);
    let forward = {
        let updates = updates.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(3));
            loop {
                tokio::select! {
                    line = lines.recv() => match line {
                        Some(line) => {
                            let _ = updates.send(JobUpdate { kind: Some(job_update::Kind::Log(line)) }).await;
                        }
                        None => return,
                    },
                    _ = ticks.tick() => {
                        let _ = updates.send(JobUpdate { kind: Some(job_update::Kind::Tick(true)) }).await;
                    }
                }
            }
        })
    };
    let result = build(host, plane, &recipe, tar.path(), slot, &log, &cancel).await;
    drop(log);
    let _ = forward.await;
    drop(tar);
    let result = match result {
        Ok((digest, steps)) => JobResult {
            kind: Some(job_result::Kind::Built(Built {
                manifest_digest: digest,
                steps,
            })),
        },
        Err(BuildError::Cancelled) => failed("cancelled", "cancelled".into()),
        Err(error @ BuildError::Registry(_)) => failed("registry", error.to_string()),
        Err(error @ BuildError::TimedOut { .. }) => failed("timeout", error.to_string()),
        Err(error) => failed("step", error.to_string()),
    };
    let _ = updates.send(update(job_update::Kind::Result(result))).await;
    // A builder keeps no builds: they live in the registry. Removed once the
    // result is on its way (the removal waits for containerd's collector).
    match host.builder.engine().delete_image(&recipe.image).await {
        Ok(()) => {}
        Err(error) if error.is_not_found() => {}
        Err(error) => warn!(%error, "cannot remove a pushed build's image"),
    }
    // The daemon ends the job (its side of the stream) once it has checked
    // the result: the slot stays taken until then, as it pulls the image.
    if tokio::time::timeout(Duration::from_secs(120), watcher)
        .await
        .is_err()
    {
        warn!("the daemon did not end a finished job within 2 minutes");
    }
    None
}

/// The build itself: the base image fetched by digest when missing, the
/// recipe executed, the frozen image pushed by digest (and deleted here).
async fn build(
    host: &Host,
    plane: &Plane,
    recipe: &Recipe,
    tar: &Path,
    slot: &launchway_build::Slot,
    log: &mpsc::Sender<String>,
    cancel: &CancellationToken,
) -> Result<(String, Vec<String>), BuildError> {
    let engine = host.builder.engine();
    let have_base = match engine.image(&recipe.base).await {
        Ok(image) => image.digest() == recipe.base_digest,
        Err(error) if error.is_not_found() => false,
        Err(error) => return Err(error.into()),
    };
    if !have_base {
        let _ = log
            .send(format!(
                "      Fetching the runtime image ({})",
                recipe.base
            ))
            .await;
        plane
            .pull(engine, &recipe.base, &recipe.base_digest)
            .await?;
    }
    let built = host
        .builder
        .execute(recipe, tar, None, Some(plane), slot, log, cancel)
        .await?;
    plane.push(engine, &built.image).await?;
    let mut digest = built.image.digest().to_owned();
    if failpoint::misbehaves("builder.wrong_digest") {
        warn!("failpoint: reporting the runtime image's digest instead of the build's");
        digest = recipe.base_digest.clone();
    }
    info!(builder = %host.name, app = %recipe.app, %digest, "build pushed");
    Ok((digest, built.steps))
}
