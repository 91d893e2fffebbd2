//! The typed client: one [`Engine`] per daemon, cheap to clone, bound to one
//! containerd namespace. Every request carries the namespace header; every
//! request that creates something also carries a lease header, so the garbage
//! collector can neither take a half-made resource nor keep one after the
//! lease is gone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

use containerd_client::services::v1::{
    self as api, containers_client::ContainersClient, content_client::ContentClient,
    diff_client::DiffClient, images_client::ImagesClient, leases_client::LeasesClient,
    namespaces_client::NamespacesClient, snapshots, tasks_client::TasksClient,
    version_client::VersionClient,
};
use containerd_client::types::{Descriptor, Mount};
use futures_util::StreamExt;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::transport::Channel;
use tonic::{IntoRequest, Request};

use crate::error::{EngineError, Result};

/// The snapshotter every image and step uses (the one tried on these hosts).
pub const SNAPSHOTTER: &str = "overlayfs";
/// The namespace used when the settings name none.
pub const DEFAULT_NAMESPACE: &str = "launchway";
/// Leases expire on their own after this long, so a crash between create and
/// delete leaks nothing for longer than a day.
const LEASE_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// JSON blobs (manifests, configs, indexes) larger than this are refused.
pub(crate) const MAX_JSON_BLOB: u64 = 4 * 1024 * 1024;
/// Chunk size of content writes (one request and one answer each).
pub(crate) const WRITE_CHUNK: usize = 1024 * 1024;

/// A connection to containerd, scoped to one namespace.
#[derive(Clone, Debug)]
pub struct Engine {
    channel: Channel,
    /// The instance whose namespace claim this engine holds
    /// (`ownership.rs`): what it creates carries it, what it lists is
    /// filtered by it.
    pub(crate) instance: Option<Arc<str>>,
    namespace: String,
    namespace_header: AsciiMetadataValue,
    socket: PathBuf,
    scratch: PathBuf,
    /// What steps and workspaces could not remove because containerd was
    /// not answering; [`Engine::clean_deferred`] retries it.
    pub(crate) deferred: Arc<std::sync::Mutex<Vec<crate::step::Deferred>>>,
}

/// A containerd lease: resources created while it is passed along are kept
/// alive until it is deleted (or expires).
#[derive(Clone, Debug)]
pub struct Lease {
    id: String,
    header: AsciiMetadataValue,
}

impl Lease {
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A content blob that was written or found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

/// Whether `name` is a valid containerd namespace or object identifier
/// (containerd's `identifiers.Validate`): alphanumeric runs joined by `.`, `_`
/// or `-`, at most 76 characters.
pub fn is_identifier(name: &str) -> bool {
    if name.is_empty() || name.len() > 76 {
        return false;
    }
    let mut previous_separator = true;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            previous_separator = false;
        } else if matches!(c, '.' | '_' | '-') {
            if previous_separator {
                return false;
            }
            previous_separator = true;
        } else {
            return false;
        }
    }
    !previous_separator
}

/// A random suffix for ids that must not collide (containers, snapshots, leases).
pub(crate) fn random_id(prefix: &str) -> String {
    let bytes: [u8; 8] = rand::random();
    format!("{prefix}-{}", hex::encode(bytes))
}

impl Engine {
    /// Connects to the containerd at `socket` and checks that it answers.
    /// `scratch` is a directory for the client side of stdio FIFOs.
    pub async fn connect(socket: &Path, namespace: &str, scratch: &Path) -> Result<Self> {
        if !is_identifier(namespace) {
            return Err(EngineError::Invalid {
                what: "containerd namespace",
                reason: format!(
                    "'{namespace}' must be letters and digits joined by '.', '_' or '-'"
                ),
            });
        }
        let namespace_header =
            MetadataValue::try_from(namespace).map_err(|error| EngineError::Invalid {
                what: "containerd namespace",
                reason: error.to_string(),
            })?;
        let unavailable = |reason: String| EngineError::Unavailable {
            socket: socket.to_path_buf(),
            reason,
        };
        if !socket.exists() {
            return Err(unavailable("no such socket".into()));
        }
        let channel =
            tokio::time::timeout(Duration::from_secs(5), containerd_client::connect(socket))
                .await
                .map_err(|_| unavailable("no answer within 5 s".into()))?
                .map_err(|error| unavailable(error.to_string()))?;
        std::fs::create_dir_all(scratch)
            .map_err(|error| EngineError::io(format!("creating {}", scratch.display()), error))?;
        let engine = Engine {
            channel,
            instance: None,
            namespace: namespace.to_string(),
            namespace_header,
            socket: socket.to_path_buf(),
            scratch: scratch.to_path_buf(),
            deferred: Arc::default(),
        };
        tokio::time::timeout(Duration::from_secs(5), engine.version())
            .await
            .map_err(|_| unavailable("no answer within 5 s".into()))?
            .map_err(|error| unavailable(error.to_string()))?;
        Ok(engine)
    }

    /// The same connection, scoped to another namespace.
    pub fn with_namespace(&self, namespace: &str) -> Result<Self> {
        if !is_identifier(namespace) {
            return Err(EngineError::Invalid {
                what: "containerd namespace",
                reason: format!("'{namespace}'"),
            });
        }
        let mut engine = self.clone();
        engine.deferred = Arc::default();
        engine.namespace_header =
            MetadataValue::try_from(namespace).map_err(|error| EngineError::Invalid {
                what: "containerd namespace",
                reason: error.to_string(),
            })?;
        engine.namespace = namespace.to_string();
        Ok(engine)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub(crate) fn scratch(&self) -> &Path {
        &self.scratch
    }

    /// containerd's version string.
    pub async fn version(&self) -> Result<String> {
        let response = VersionClient::new(self.channel.clone())
            .version(())
            .await
            .map_err(|status| EngineError::rpc("version", || "version".into(), status))?;
        Ok(response.into_inner().version)
    }

    /// Waits (up to `limit`, or until `cancel`) for containerd to answer.
    pub async fn await_answer(&self, limit: Duration, cancel: &CancellationToken) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.answers(Duration::from_secs(3)).await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                () = cancel.cancelled() => return false,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Whether containerd answers within `limit` (the outage watch's probe).
    pub async fn answers(&self, limit: Duration) -> bool {
        matches!(tokio::time::timeout(limit, self.version()).await, Ok(Ok(_)))
    }

    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = message.into_request();
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace_header.clone());
        request
    }

    pub(crate) fn leased<T>(&self, message: T, lease: &Lease) -> Request<T> {
        let mut request = self.request(message);
        request
            .metadata_mut()
            .insert("containerd-lease", lease.header.clone());
        request
    }

    pub(crate) fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }
    pub(crate) fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }
    pub(crate) fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
    }
    pub(crate) fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }
    pub(crate) fn snapshots(&self) -> snapshots::snapshots_client::SnapshotsClient<Channel> {
        snapshots::snapshots_client::SnapshotsClient::new(self.channel.clone())
    }
    pub(crate) fn differ(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }
    // ---- namespaces ----

    /// Deletes this engine's namespace; containerd refuses while it holds anything.
    pub async fn delete_namespace(&self) -> Result<()> {
        let name = self.namespace.clone();
        NamespacesClient::new(self.channel.clone())
            .delete(api::DeleteNamespaceRequest { name: name.clone() })
            .await
            .map_err(|status| {
                EngineError::rpc("namespace delete", || format!("namespace {name}"), status)
            })?;
        Ok(())
    }

    // ---- leases ----

    /// Creates a lease that expires by itself after a day.
    pub async fn create_lease(&self, purpose: &str) -> Result<Lease> {
        let id = random_id(purpose);
        let expire = humantime::format_rfc3339_seconds(SystemTime::now() + LEASE_EXPIRY);
        let mut labels = HashMap::new();
        labels.insert("containerd.io/gc.expire".to_string(), expire.to_string());
        self.label_instance(&mut labels);
        LeasesClient::new(self.channel.clone())
            .create(self.request(api::CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|status| EngineError::rpc("lease create", || format!("lease {id}"), status))?;
        let header =
            MetadataValue::try_from(id.as_str()).map_err(|error| EngineError::Invalid {
                what: "lease id",
                reason: error.to_string(),
            })?;
        Ok(Lease { id, header })
    }

    /// Adds blob `digest` to `lease`, so it outlives whichever lease or image
    /// holds it now. Needed before relying on a blob found present: another
    /// build's lease may be all that keeps it, and may go at any moment.
    pub async fn hold_content(&self, lease: &Lease, digest: &str) -> Result<()> {
        LeasesClient::new(self.channel.clone())
            .add_resource(self.request(api::AddResourceRequest {
                id: lease.id.clone(),
                resource: Some(api::Resource {
                    id: digest.to_string(),
                    r#type: "content".to_string(),
                }),
            }))
            .await
            .map_err(|status| EngineError::rpc("lease add", || format!("blob {digest}"), status))?;
        Ok(())
    }

    /// Deletes a lease; with `sync` the garbage collector runs before this
    /// returns, so what only the lease held is gone (space freed at once).
    pub async fn delete_lease(&self, lease: &Lease, sync: bool) -> Result<()> {
        self.delete_lease_id(&lease.id, sync).await
    }

    /// [`Engine::delete_lease`] by the lease's id.
    pub async fn delete_lease_id(&self, id: &str, sync: bool) -> Result<()> {
        match LeasesClient::new(self.channel.clone())
            .delete(self.request(api::DeleteRequest {
                id: id.to_string(),
                sync,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(EngineError::rpc(
                "lease delete",
                || format!("lease {id}"),
                status,
            )),
        }
    }

    /// The ids of the leases in this namespace: once claimed, this
    /// instance's and unlabelled ones (from before ownership), never the
    /// owner lease nor another instance's.
    pub async fn list_leases(&self) -> Result<Vec<String>> {
        let response = LeasesClient::new(self.channel.clone())
            .list(self.request(api::ListRequest { filters: vec![] }))
            .await
            .map_err(|status| EngineError::rpc("lease list", || "leases".into(), status))?;
        let mine = |lease: &api::Lease| match (
            self.instance.as_deref(),
            lease.labels.get(crate::ownership::INSTANCE_LABEL),
        ) {
            (Some(ours), Some(theirs)) => ours == theirs.as_str(),
            _ => true,
        };
        Ok(response
            .into_inner()
            .leases
            .into_iter()
            .filter(|l| l.id != crate::ownership::OWNER_LEASE && mine(l))
            .map(|l| l.id)
            .collect())
    }

    // ---- content ----

    /// The size and labels of a blob, or `NotFound`.
    pub async fn content_info(&self, digest: &str) -> Result<api::Info> {
        let response = self
            .content()
            .info(self.request(api::InfoRequest {
                digest: digest.to_string(),
            }))
            .await
            .map_err(|status| {
                EngineError::rpc("content info", || format!("blob {digest}"), status)
            })?;
        response
            .into_inner()
            .info
            .ok_or_else(|| EngineError::NotFound {
                what: format!("blob {digest}"),
            })
    }

    /// All blob digests in this namespace.
    pub async fn list_content(&self) -> Result<Vec<String>> {
        let mut stream = self
            .content()
            .list(self.request(api::ListContentRequest { filters: vec![] }))
            .await
            .map_err(|status| EngineError::rpc("content list", || "content".into(), status))?
            .into_inner();
        let mut digests = Vec::new();
        while let Some(message) = stream.next().await {
            let message = message
                .map_err(|status| EngineError::rpc("content list", || "content".into(), status))?;
            digests.extend(message.info.into_iter().map(|info| info.digest));
        }
        digests.sort();
        Ok(digests)
    }

    /// Refs of unfinished content writes in this namespace.
    pub async fn list_ingests(&self) -> Result<Vec<String>> {
        let response = self
            .content()
            .list_statuses(self.request(api::ListStatusesRequest { filters: vec![] }))
            .await
            .map_err(|status| EngineError::rpc("content statuses", || "ingests".into(), status))?;
        Ok(response
            .into_inner()
            .statuses
            .into_iter()
            .map(|s| s.r#ref)
            .collect())
    }

    /// Sets labels on an existing blob (merged with those it has).
    pub async fn label_content(
        &self,
        digest: &str,
        labels: &HashMap<String, String>,
    ) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.content()
            .update(self.request(api::UpdateRequest {
                info: Some(api::Info {
                    digest: digest.to_string(),
                    labels: labels.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|status| {
                EngineError::rpc("content update", || format!("blob {digest}"), status)
            })?;
        Ok(())
    }

    /// Streams a blob's bytes in the order they are stored.
    pub async fn read_content(
        &self,
        digest: &str,
    ) -> Result<impl futures_util::Stream<Item = Result<Vec<u8>>> + use<>> {
        let owned = digest.to_string();
        let stream = self
            .content()
            .read(self.request(api::ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|status| {
                EngineError::rpc("content read", || format!("blob {digest}"), status)
            })?
            .into_inner();
        Ok(stream.map(move |message| {
            message.map(|m| m.data).map_err(|status| {
                EngineError::rpc("content read", || format!("blob {owned}"), status)
            })
        }))
    }

    /// Reads a small blob (a manifest, config or index) whole.
    pub async fn read_small_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let info = self.content_info(digest).await?;
        if info.size < 0 || info.size as u64 > MAX_JSON_BLOB {
            return Err(EngineError::Invalid {
                what: "metadata blob",
                reason: format!(
                    "{digest} is {} bytes, more than a manifest can be",
                    info.size
                ),
            });
        }
        let mut stream = self.read_content(digest).await?;
        let mut bytes = Vec::with_capacity(info.size as usize);
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(bytes)
    }

    /// Writes a blob held in memory (metadata) under `lease`, with `labels`.
    pub async fn write_small_blob(
        &self,
        lease: &Lease,
        bytes: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<Blob> {
        let digest = crate::digest::sha256_of(&bytes);
        let size = bytes.len() as u64;
        let stream = futures_util::stream::iter(std::iter::once(Ok(bytes)));
        self.write_content(lease, &digest, size, stream, labels)
            .await
    }

    /// Writes a blob from a stream of chunks under `lease`. The bytes must
    /// hash to `digest` and add up to `size`; otherwise the write is aborted,
    /// nothing is committed, and the error says which blob was wrong. A blob
    /// that already exists is still read through (to verify it) and gets
    /// `labels` merged in.
    pub async fn write_content<S>(
        &self,
        lease: &Lease,
        digest: &str,
        size: u64,
        chunks: S,
        labels: HashMap<String, String>,
    ) -> Result<Blob>
    where
        S: futures_util::Stream<Item = Result<Vec<u8>>> + Unpin,
    {
        crate::content::write(self, lease, digest, size, chunks, labels).await
    }

    // ---- images ----

    /// The image record, or `NotFound`.
    pub async fn get_image(&self, name: &str) -> Result<api::Image> {
        let response = self
            .images()
            .get(self.request(api::GetImageRequest {
                name: name.to_string(),
            }))
            .await
            .map_err(|status| EngineError::rpc("image get", || format!("image {name}"), status))?;
        response
            .into_inner()
            .image
            .ok_or_else(|| EngineError::NotFound {
                what: format!("image {name}"),
            })
    }

    /// All image records in this namespace, by name.
    pub async fn list_images(&self) -> Result<Vec<api::Image>> {
        let filters = self.instance_filter().into_iter().collect();
        let response = self
            .images()
            .list(self.request(api::ListImagesRequest { filters }))
            .await
            .map_err(|status| EngineError::rpc("image list", || "images".into(), status))?;
        let mut images = response.into_inner().images;
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// Every image of the namespace, whoever made it.
    pub(crate) async fn list_all_images(&self) -> Result<Vec<api::Image>> {
        let response = self
            .images()
            .list(self.request(api::ListImagesRequest { filters: vec![] }))
            .await
            .map_err(|status| EngineError::rpc("image list", || "images".into(), status))?;
        let mut images = response.into_inner().images;
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// Points image `name` at `target` (creating or replacing the record).
    pub async fn put_image(
        &self,
        lease: &Lease,
        name: &str,
        target: Descriptor,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let mut labels = labels;
        self.label_instance(&mut labels);
        let image = api::Image {
            name: name.to_string(),
            labels,
            target: Some(target),
            created_at: None,
            updated_at: None,
        };
        let created = self
            .images()
            .create(self.leased(
                api::CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                },
                lease,
            ))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::AlreadyExists => {
                self.images()
                    .update(self.leased(
                        api::UpdateImageRequest {
                            image: Some(image),
                            update_mask: None,
                            source_date_epoch: None,
                        },
                        lease,
                    ))
                    .await
                    .map_err(|status| {
                        EngineError::rpc("image update", || format!("image {name}"), status)
                    })?;
                Ok(())
            }
            Err(status) => Err(EngineError::rpc(
                "image create",
                || format!("image {name}"),
                status,
            )),
        }
    }

    /// Deletes an image record and, synchronously, whatever only it kept
    /// (blobs, snapshots), so the space is free when this returns.
    pub async fn delete_image(&self, name: &str) -> Result<()> {
        self.images()
            .delete(self.request(api::DeleteImageRequest {
                name: name.to_string(),
                sync: true,
                target: None,
            }))
            .await
            .map_err(|status| {
                EngineError::rpc("image delete", || format!("image {name}"), status)
            })?;
        Ok(())
    }

    // ---- snapshots ----

    /// A writable snapshot on top of `parent` (a committed chain id).
    pub async fn prepare_snapshot(
        &self,
        lease: &Lease,
        key: &str,
        parent: &str,
    ) -> Result<Vec<Mount>> {
        let response = self
            .snapshots()
            .prepare(self.leased(
                snapshots::PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.to_string(),
                    parent: parent.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|status| {
                EngineError::rpc("snapshot prepare", || format!("snapshot {key}"), status)
            })?;
        Ok(response.into_inner().mounts)
    }

    /// A read-only view of `parent`.
    pub async fn view_snapshot(
        &self,
        lease: &Lease,
        key: &str,
        parent: &str,
    ) -> Result<Vec<Mount>> {
        let response = self
            .snapshots()
            .view(self.leased(
                snapshots::ViewSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.to_string(),
                    parent: parent.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|status| {
                EngineError::rpc("snapshot view", || format!("snapshot {key}"), status)
            })?;
        Ok(response.into_inner().mounts)
    }

    /// The mounts of an active snapshot.
    pub async fn snapshot_mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let response = self
            .snapshots()
            .mounts(self.request(snapshots::MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
            }))
            .await
            .map_err(|status| {
                EngineError::rpc("snapshot mounts", || format!("snapshot {key}"), status)
            })?;
        Ok(response.into_inner().mounts)
    }

    /// Turns active snapshot `key` into committed snapshot `name`.
    pub async fn commit_snapshot(
        &self,
        lease: &Lease,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        self.snapshots()
            .commit(self.leased(
                snapshots::CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: name.to_string(),
                    key: key.to_string(),
                    labels,
                },
                lease,
            ))
            .await
            .map_err(|status| {
                EngineError::rpc("snapshot commit", || format!("snapshot {name}"), status)
            })?;
        Ok(())
    }

    /// Removes a snapshot; one that is already gone is not an error.
    pub async fn remove_snapshot(&self, key: &str) -> Result<()> {
        match self
            .snapshots()
            .remove(self.request(snapshots::RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
            Err(status) => Err(EngineError::rpc(
                "snapshot remove",
                || format!("snapshot {key}"),
                status,
            )),
        }
    }

    /// Whether a snapshot exists.
    pub async fn snapshot_exists(&self, key: &str) -> Result<bool> {
        match self
            .snapshots()
            .stat(self.request(snapshots::StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(false),
            Err(status) => Err(EngineError::rpc(
                "snapshot stat",
                || format!("snapshot {key}"),
                status,
            )),
        }
    }

    /// The names of all snapshots in this namespace.
    pub async fn list_snapshots(&self) -> Result<Vec<String>> {
        let mut stream = self
            .snapshots()
            .list(self.request(snapshots::ListSnapshotsRequest {
                snapshotter: SNAPSHOTTER.into(),
                filters: vec![],
            }))
            .await
            .map_err(|status| EngineError::rpc("snapshot list", || "snapshots".into(), status))?
            .into_inner();
        let mut names = Vec::new();
        while let Some(message) = stream.next().await {
            let message = message.map_err(|status| {
                EngineError::rpc("snapshot list", || "snapshots".into(), status)
            })?;
            names.extend(message.info.into_iter().map(|info| info.name));
        }
        names.sort();
        Ok(names)
    }

    // ---- diff ----

    /// The changes from `lower` to `upper` as a gzip layer blob in the content
    /// store, and its uncompressed digest (diff id).
    pub async fn diff(
        &self,
        lease: &Lease,
        lower: Vec<Mount>,
        upper: Vec<Mount>,
    ) -> Result<(Descriptor, String)> {
        let response = self
            .differ()
            .diff(self.leased(
                api::DiffRequest {
                    left: lower,
                    right: upper,
                    media_type: crate::image::LAYER_GZIP.into(),
                    labels: HashMap::new(),
                    source_date_epoch: None,
                    r#ref: random_id("lw-diff"),
                },
                lease,
            ))
            .await
            .map_err(|status| EngineError::rpc("diff", || "diff".into(), status))?;
        let layer = response.into_inner().diff.ok_or_else(|| EngineError::Rpc {
            operation: "diff",
            code: tonic::Code::Internal,
            message: "containerd returned no layer".into(),
        })?;
        let info = self.content_info(&layer.digest).await?;
        let diff_id = info
            .labels
            .get("containerd.io/uncompressed")
            .cloned()
            .ok_or_else(|| EngineError::Rpc {
                operation: "diff",
                code: tonic::Code::Internal,
                message: format!("layer {} has no uncompressed digest label", layer.digest),
            })?;
        Ok((layer, diff_id))
    }

    /// Unpacks `layer` onto `mounts`; returns the diff id of what was applied.
    pub async fn apply(
        &self,
        lease: &Lease,
        layer: Descriptor,
        mounts: Vec<Mount>,
    ) -> Result<String> {
        let digest = layer.digest.clone();
        let response = self
            .differ()
            .apply(self.leased(
                api::ApplyRequest {
                    diff: Some(layer),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                lease,
            ))
            .await
            .map_err(|status| {
                EngineError::rpc("layer apply", || format!("layer {digest}"), status)
            })?;
        response
            .into_inner()
            .applied
            .map(|applied| applied.digest)
            .ok_or_else(|| EngineError::Rpc {
                operation: "layer apply",
                code: tonic::Code::Internal,
                message: format!("containerd did not say what {digest} unpacked to"),
            })
    }

    // ---- containers and tasks (listing, for leak checks and reconcile) ----

    /// Ids of the container records in this namespace.
    pub async fn list_containers(&self) -> Result<Vec<String>> {
        self.find_containers(Vec::new()).await
    }

    /// Ids of the container records matching containerd `filters` (any of them).
    pub(crate) async fn find_containers(&self, filters: Vec<String>) -> Result<Vec<String>> {
        let response = self
            .containers()
            .list(self.request(api::ListContainersRequest { filters }))
            .await
            .map_err(|status| EngineError::rpc("container list", || "containers".into(), status))?;
        Ok(response
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect())
    }

    /// Ids of the tasks (running or exited, not deleted) in this namespace.
    pub async fn list_tasks(&self) -> Result<Vec<String>> {
        let response = self
            .tasks()
            .list(self.request(api::ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|status| EngineError::rpc("task list", || "tasks".into(), status))?;
        Ok(response
            .into_inner()
            .tasks
            .into_iter()
            // containerd fills `id` (the container's) in task listings.
            .map(|t| {
                if t.container_id.is_empty() {
                    t.id
                } else {
                    t.container_id
                }
            })
            .collect())
    }

    /// Everything this namespace holds, for leak checks and diagnostics.
    pub async fn inventory(&self) -> Result<Inventory> {
        Ok(Inventory {
            containers: self.list_containers().await?,
            tasks: self.list_tasks().await?,
            snapshots: self.list_snapshots().await?,
            leases: self.list_leases().await?,
            content: self.list_content().await?,
            ingests: self.list_ingests().await?,
            images: self
                .list_images()
                .await?
                .into_iter()
                .map(|i| i.name)
                .collect(),
        })
    }
}

/// What a namespace holds, each list sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub containers: Vec<String>,
    pub tasks: Vec<String>,
    pub snapshots: Vec<String>,
    pub leases: Vec<String>,
    pub content: Vec<String>,
    pub ingests: Vec<String>,
    pub images: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_containerd_rules() {
        for good in ["launchway", "a", "lw-test.1", "a_b-c.d"] {
            assert!(is_identifier(good), "{good}");
        }
        for bad in ["", "-a", "a-", "a--b", "a/b", "a b", "é", &"a".repeat(77)] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn random_ids_are_identifiers_and_differ() {
        let a = random_id("step");
        let b = random_id("step");
        assert!(is_identifier(&a));
        assert_ne!(a, b);
    }
}
