//! Releases over the API: what each deploy ran (`launchway releases`).

use launchway_api::proto;
use launchway_deploy::{DeploySpec, Listen, RouteKind};
use launchway_store::Release;
use tonic::Status;

use crate::Daemon;
use crate::api::internal;

pub(crate) fn release_info(release: &Release) -> proto::ReleaseInfo {
    // A spec written by another version still lists; only its details go.
    let spec = serde_json::from_value::<DeploySpec>(release.spec.clone()).ok();
    let apps = spec
        .as_ref()
        .map(|spec| {
            spec.apps
                .iter()
                .map(|app| proto::ReleaseApp {
                    name: app.name.clone(),
                    runtime: app.runtime.clone(),
                    image: app.image.clone(),
                    listen: match &app.listen {
                        Listen::Port(port) => format!("port {port}"),
                        Listen::Socket(path) => format!("socket {path}"),
                    },
                    processes: app.processes.iter().map(|p| p.name.clone()).collect(),
                })
                .collect()
        })
        .unwrap_or_default();
    let routes = spec
        .as_ref()
        .map(|spec| {
            spec.routes
                .iter()
                .map(|route| match route.kind {
                    RouteKind::Upstream => format!(
                        "{} -> {}",
                        route.url,
                        route.upstream.as_deref().unwrap_or_default()
                    ),
                    RouteKind::Redirect => format!(
                        "{} => {}",
                        route.url,
                        route.to.as_deref().unwrap_or_default()
                    ),
                })
                .collect()
        })
        .unwrap_or_default();
    proto::ReleaseInfo {
        id: release.id.clone(),
        project: release.project.clone(),
        environment: release.environment.clone(),
        build: release.build.clone(),
        commit: release.commit.clone(),
        created_at: release.created_at,
        description: release.description.clone(),
        status: release.status.as_str().into(),
        activity: release.activity.unwrap_or_default(),
        apps,
        routes,
    }
}

impl Daemon {
    pub(crate) fn list_releases(
        &self,
        request: &proto::ListReleasesRequest,
    ) -> Result<proto::ReleaseList, Status> {
        self.existing_project(&request.project)?;
        let environment = (!request.environment.is_empty()).then_some(request.environment.as_str());
        let limit = if request.limit == 0 {
            20
        } else {
            request.limit as usize
        };
        let releases = self
            .store
            .releases(&request.project, environment)
            .map_err(internal)?
            .iter()
            .take(limit)
            .map(release_info)
            .collect();
        Ok(proto::ReleaseList { releases })
    }

    pub(crate) fn get_release(&self, id: &str) -> Result<proto::ReleaseInfo, Status> {
        self.store
            .release(id)
            .map_err(internal)?
            .map(|release| release_info(&release))
            .ok_or_else(|| Status::not_found(format!("there is no release {id}")))
    }
}
