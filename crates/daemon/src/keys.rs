//! SSH keys granted a role on a project (`launchway key add|list|remove`).

use launchway_api::proto;
use launchway_store::KeyGrant;
use tonic::Status;

use crate::api::{internal, parse_role};
use crate::{Daemon, now_ms};

fn key_info(grant: &KeyGrant) -> proto::KeyInfo {
    proto::KeyInfo {
        project: grant.project.clone(),
        fingerprint: grant.fingerprint.clone(),
        role: grant.role.as_str().into(),
        comment: grant.comment.clone(),
        added_at: grant.added_at,
        public_key: grant.public_key.clone(),
    }
}

impl Daemon {
    /// `launchway key add`.
    pub(crate) fn add_key(&self, request: &proto::AddKeyRequest) -> Result<proto::KeyInfo, Status> {
        let project = self.existing_project(&request.project)?;
        let role = parse_role(&request.role)?;
        let key = launchway_ssh::parse_public_key(&request.public_key)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let grant = KeyGrant {
            project: project.name,
            fingerprint: key.fingerprint,
            public_key: key.public_key,
            comment: key.comment,
            role,
            added_at: now_ms(),
        };
        self.store.put_key(&grant).map_err(internal)?;
        Ok(key_info(&grant))
    }

    /// `launchway keys`: one project's, or every project's.
    pub(crate) fn list_keys(&self, project: &str) -> Result<proto::KeyList, Status> {
        let filter = if project.is_empty() {
            None
        } else {
            Some(self.existing_project(project)?.name)
        };
        let keys = self.store.keys(filter.as_deref()).map_err(internal)?;
        Ok(proto::KeyList {
            keys: keys.iter().map(key_info).collect(),
        })
    }

    /// `launchway key remove`: by fingerprint or public key.
    pub(crate) fn remove_key(
        &self,
        request: &proto::RemoveKeyRequest,
    ) -> Result<proto::RemoveKeyReply, Status> {
        let project = self.existing_project(&request.project)?;
        let key = request.key.trim();
        let fingerprint = if key.starts_with("SHA256:") {
            key.to_owned()
        } else {
            launchway_ssh::parse_public_key(key)
                .map_err(|e| Status::invalid_argument(e.to_string()))?
                .fingerprint
        };
        let removed = self
            .store
            .remove_key(&project.name, &fingerprint)
            .map_err(internal)?;
        Ok(proto::RemoveKeyReply { removed })
    }
}
