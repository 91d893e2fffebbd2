//! One daemon per containerd namespace.
//!
//! Two daemons pointed at the same namespace would destroy each other's
//! apps: start-up repair removes containers and leases it does not know,
//! gc deletes images outside its keep list. So a daemon **claims** its
//! namespace at start with a lease named [`OWNER_LEASE`] labelled with its
//! instance id (creating a lease is atomic on its id), keeps a heartbeat
//! (`org.launchway.heartbeat=<instance>:<unix seconds>`, a namespace label)
//! fresh every [`HEARTBEAT`], and gives both up at a clean stop. Another
//! daemon finding a fresh heartbeat of another instance refuses to start; a
//! heartbeat older than `stale_after` (a crashed owner) is taken over.
//!
//! Whatever a claimed engine creates carries [`INSTANCE_LABEL`] (containers,
//! images, leases), and its repair and gc only ever list what carries its
//! own instance's label. A namespace claimed for the first time by an
//! instance that has never run (an upgrade from a Launchway without
//! ownership) adopts the unlabelled containers and images in it.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1 as api;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;

use crate::engine::Engine;
use crate::error::{EngineError, Result};

/// The label naming the daemon instance that made a resource.
pub const INSTANCE_LABEL: &str = "org.launchway.instance";
/// The lease whose existence is the claim.
pub const OWNER_LEASE: &str = "launchway-owner";
/// The namespace label holding the owner's heartbeat.
const HEARTBEAT_LABEL: &str = "org.launchway.heartbeat";
/// The owner lease's label naming the owner's data directory (for messages).
const DATA_DIR_LABEL: &str = "org.launchway.data-dir";
/// How often the owner refreshes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// How a claim went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The namespace had no owner: it is ours now.
    New,
    /// It was ours already (a restart after a stop or a crash).
    Ours,
    /// Another instance owned it but stopped heartbeating; taken over.
    TakenOver {
        /// The previous owner.
        from: String,
    },
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `instance:seconds` → (instance, seconds).
fn parse_heartbeat(value: &str) -> Option<(&str, u64)> {
    let (instance, seconds) = value.rsplit_once(':')?;
    Some((instance, seconds.parse().ok()?))
}

impl Engine {
    /// The instance this engine labels what it creates with, once claimed.
    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// The containerd filter selecting this instance's resources (none
    /// before a claim: everything).
    pub(crate) fn instance_filter(&self) -> Option<String> {
        self.instance
            .as_deref()
            .map(|id| format!("labels.\"{INSTANCE_LABEL}\"=={id}"))
    }

    /// Adds the instance label to `labels` (a claimed engine's resources).
    pub(crate) fn label_instance(&self, labels: &mut HashMap<String, String>) {
        if let Some(id) = self.instance.as_deref() {
            labels.insert(INSTANCE_LABEL.to_owned(), id.to_owned());
        }
    }

    fn namespaces_client(&self) -> NamespacesClient<tonic::transport::Channel> {
        NamespacesClient::new(self.channel())
    }

    fn taken_by(&self, owner: &api::Lease, seen_secs_ago: u64) -> EngineError {
        EngineError::NamespaceTaken {
            namespace: self.namespace().to_owned(),
            socket: self.socket().to_path_buf(),
            owner: owner
                .labels
                .get(INSTANCE_LABEL)
                .cloned()
                .unwrap_or_default(),
            data_dir: owner
                .labels
                .get(DATA_DIR_LABEL)
                .cloned()
                .unwrap_or_default(),
            seen_secs_ago,
        }
    }

    /// The owner lease, if there is one.
    async fn read_owner(&self) -> Result<Option<api::Lease>> {
        let response = LeasesClient::new(self.channel())
            .list(self.request(api::ListRequest {
                filters: vec![format!("id=={OWNER_LEASE}")],
            }))
            .await
            .map_err(|status| EngineError::rpc("lease list", || OWNER_LEASE.into(), status))?;
        Ok(response
            .into_inner()
            .leases
            .into_iter()
            .find(|l| l.id == OWNER_LEASE))
    }

    /// The namespace's labels (empty when it does not exist yet).
    async fn namespace_labels(&self) -> Result<HashMap<String, String>> {
        match self
            .namespaces_client()
            .get(self.request(api::GetNamespaceRequest {
                name: self.namespace().to_owned(),
            }))
            .await
        {
            Ok(response) => Ok(response
                .into_inner()
                .namespace
                .map(|n| n.labels)
                .unwrap_or_default()),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(HashMap::new()),
            Err(status) => Err(EngineError::rpc(
                "namespace get",
                || format!("namespace {}", self.namespace()),
                status,
            )),
        }
    }

    /// The owner's instance and how long ago its heartbeat was written.
    async fn heartbeat_age(&self) -> Result<Option<(String, u64)>> {
        let labels = self.namespace_labels().await?;
        Ok(labels
            .get(HEARTBEAT_LABEL)
            .and_then(|v| parse_heartbeat(v))
            .map(|(instance, at)| (instance.to_owned(), unix_now().saturating_sub(at))))
    }

    async fn create_owner_lease(&self, instance: &str, data_dir: &str) -> Result<bool> {
        let mut labels = HashMap::new();
        labels.insert(INSTANCE_LABEL.to_owned(), instance.to_owned());
        labels.insert(DATA_DIR_LABEL.to_owned(), data_dir.to_owned());
        match LeasesClient::new(self.channel())
            .create(self.request(api::CreateRequest {
                id: OWNER_LEASE.to_owned(),
                labels,
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(false),
            Err(status) => Err(EngineError::rpc(
                "lease create",
                || OWNER_LEASE.into(),
                status,
            )),
        }
    }

    /// Claims this engine's namespace for `instance` (see the module's
    /// header); on success the engine labels and filters by `instance`.
    /// Refused with [`EngineError::NamespaceTaken`] while another instance's
    /// heartbeat is younger than `stale_after`.
    pub async fn claim_namespace(
        &mut self,
        instance: &str,
        data_dir: &str,
        stale_after: Duration,
    ) -> Result<Claim> {
        let mut taken_over = None;
        let mut waited = false;
        let claim = loop {
            if self.create_owner_lease(instance, data_dir).await? {
                break match taken_over.take() {
                    Some(from) => Claim::TakenOver { from },
                    None => Claim::New,
                };
            }
            let owner = self.read_owner().await?;
            let Some(owner) = owner else {
                // Deleted between our create and list: try again.
                continue;
            };
            let owner_instance = owner
                .labels
                .get(INSTANCE_LABEL)
                .cloned()
                .unwrap_or_default();
            if owner_instance == instance {
                break Claim::Ours;
            }
            let heartbeat = self.heartbeat_age().await?;
            let fresh = heartbeat
                .as_ref()
                .filter(|(beating, _)| *beating == owner_instance)
                .map(|(_, age)| *age);
            if let Some(age) = fresh
                && age < stale_after.as_secs()
            {
                return Err(self.taken_by(&owner, age));
            }
            if !waited {
                // Stale or absent (an owner that has just claimed writes its
                // first heartbeat right after; one whose containerd just came
                // back beats within a period): look again after more than a
                // period; a live owner's heartbeat is fresh by then.
                waited = true;
                tokio::time::sleep(HEARTBEAT + Duration::from_secs(5)).await;
                continue;
            }
            LeasesClient::new(self.channel())
                .delete(self.request(api::DeleteRequest {
                    id: OWNER_LEASE.to_owned(),
                    sync: false,
                }))
                .await
                .or_else(|status| match status.code() {
                    tonic::Code::NotFound => Ok(tonic::Response::new(())),
                    _ => Err(EngineError::rpc(
                        "lease delete",
                        || OWNER_LEASE.into(),
                        status,
                    )),
                })?;
            taken_over = Some(owner_instance);
            waited = false;
        };
        self.instance = Some(instance.into());
        self.heartbeat().await?;
        Ok(claim)
    }

    /// Writes the heartbeat; `Err(NamespaceTaken)` when the owner lease
    /// names another instance now (this daemon stalled and was taken over).
    pub async fn heartbeat(&self) -> Result<()> {
        let Some(instance) = self.instance.as_deref() else {
            return Ok(());
        };
        if let Some(owner) = self.read_owner().await? {
            let owner_instance = owner
                .labels
                .get(INSTANCE_LABEL)
                .cloned()
                .unwrap_or_default();
            if owner_instance != instance {
                return Err(self.taken_by(&owner, 0));
            }
        }
        self.set_heartbeat(Some(format!("{instance}:{}", unix_now())))
            .await
    }

    /// Sets (or, with `None`, removes) the namespace's heartbeat label.
    async fn set_heartbeat(&self, value: Option<String>) -> Result<()> {
        let labels = value
            .map(|value| HashMap::from([(HEARTBEAT_LABEL.to_owned(), value)]))
            .unwrap_or_default();
        self.namespaces_client()
            .update(self.request(api::UpdateNamespaceRequest {
                namespace: Some(api::Namespace {
                    name: self.namespace().to_owned(),
                    labels,
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("labels.{HEARTBEAT_LABEL}")],
                }),
            }))
            .await
            .map_err(|status| {
                EngineError::rpc(
                    "namespace update",
                    || format!("namespace {}", self.namespace()),
                    status,
                )
            })?;
        Ok(())
    }

    /// Gives the namespace up (a clean stop): the owner lease and the
    /// heartbeat go, so another daemon may claim it at once.
    pub async fn release_namespace(&self) -> Result<()> {
        let Some(instance) = self.instance.as_deref() else {
            return Ok(());
        };
        let owner = self.read_owner().await?;
        let ours = owner
            .is_some_and(|o| o.labels.get(INSTANCE_LABEL).map(String::as_str) == Some(instance));
        if !ours {
            // Taken over meanwhile: the claim is someone else's now.
            return Ok(());
        }
        self.delete_lease_id(OWNER_LEASE, false).await?;
        self.set_heartbeat(None).await
    }

    /// Labels the unlabelled containers and images of the namespace as this
    /// instance's (first claim after an upgrade). Returns how many.
    pub async fn adopt_unlabelled(&self) -> Result<(usize, usize)> {
        let Some(instance) = self.instance.clone() else {
            return Ok((0, 0));
        };
        let mask = || prost_types::FieldMask {
            paths: vec![format!("labels.{INSTANCE_LABEL}")],
        };
        let mut labels = HashMap::new();
        labels.insert(INSTANCE_LABEL.to_owned(), instance.to_string());
        let containers = self
            .containers()
            .list(self.request(api::ListContainersRequest { filters: vec![] }))
            .await
            .map_err(|status| EngineError::rpc("container list", || "containers".into(), status))?
            .into_inner()
            .containers;
        let mut adopted_containers = 0;
        for container in containers {
            if container.labels.contains_key(INSTANCE_LABEL) {
                continue;
            }
            self.containers()
                .update(self.request(api::UpdateContainerRequest {
                    container: Some(api::Container {
                        id: container.id.clone(),
                        labels: labels.clone(),
                        ..Default::default()
                    }),
                    update_mask: Some(mask()),
                }))
                .await
                .map_err(|status| {
                    EngineError::rpc(
                        "container update",
                        || format!("container {}", container.id),
                        status,
                    )
                })?;
            adopted_containers += 1;
        }
        let mut adopted_images = 0;
        for image in self.list_all_images().await? {
            if image.labels.contains_key(INSTANCE_LABEL) {
                continue;
            }
            self.images()
                .update(self.request(api::UpdateImageRequest {
                    image: Some(api::Image {
                        name: image.name.clone(),
                        labels: labels.clone(),
                        ..Default::default()
                    }),
                    update_mask: Some(mask()),
                    source_date_epoch: None,
                }))
                .await
                .map_err(|status| {
                    EngineError::rpc("image update", || format!("image {}", image.name), status)
                })?;
            adopted_images += 1;
        }
        Ok((adopted_containers, adopted_images))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_read_back() {
        assert_eq!(
            parse_heartbeat("ab12:1700000000"),
            Some(("ab12", 1_700_000_000))
        );
        assert_eq!(parse_heartbeat("ab12"), None);
        assert_eq!(parse_heartbeat("ab12:x"), None);
    }
}
