//! The records the store keeps. Times are milliseconds since the Unix epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A project: one bare repository and its environments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// The name, also the repository's name (`NAME.git`).
    pub name: String,
    /// The branch of the production environment.
    pub default_branch: String,
    /// When it was created.
    pub created_at: u64,
    /// The secret its service passwords derive from (hex; made at
    /// creation, or at the first deploy of a project made before services).
    /// Never returned by the API.
    #[serde(default)]
    pub service_secret: String,
    /// What its build hooks may reach (`launchway project set -p P
    /// build.egress=…`).
    #[serde(default)]
    pub build_egress: BuildEgress,
    /// The most bytes its backups may hold together (`backup.max_bytes`;
    /// 0: no limit but the disk's).
    #[serde(default)]
    pub backup_max_bytes: u64,
    /// Per environment, when its backups are taken and how many are kept
    /// (`backup.schedule.<env>`, `backup.retention.<env>`).
    #[serde(default)]
    pub backup_schedules: BTreeMap<String, BackupSchedule>,
    /// Set when its deletion started (ms): from then on nothing else acts
    /// on it, and a daemon that stopped midway finishes the deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting: Option<u64>,
    /// Bumped by each `clear-build-cache`, per app (`""`: every app): the
    /// registry copy of an app's build cache is tagged with the sum, so a
    /// clear is never undone by a build that started before it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_cache_generations: BTreeMap<String, u64>,
}

impl Project {
    /// The generation of `app`'s build cache.
    pub fn build_cache_generation(&self, app: &str) -> u64 {
        let of = |key: &str| self.build_cache_generations.get(key).copied().unwrap_or(0);
        of("").saturating_add(of(app))
    }
}

/// An environment's scheduled backups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSchedule {
    /// A cron spec, matched in UTC.
    pub schedule: String,
    /// Which scheduled backups stay (`7d,4w`; see
    /// `launchway_volumes::retention`).
    pub retention: String,
}

/// The network a project's build hooks get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildEgress {
    /// None at all: only loopback.
    #[default]
    None,
    /// The package registries of the daemon's allow-list, through a proxy.
    Registries,
}

impl BuildEgress {
    /// Every value, as written in `build.egress=…`.
    pub const ALL: [(&'static str, BuildEgress); 2] = [
        ("none", BuildEgress::None),
        ("registries", BuildEgress::Registries),
    ];

    /// As written in `build.egress=…`.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildEgress::None => "none",
            BuildEgress::Registries => "registries",
        }
    }
}

pub use launchway_ops::Role;

/// An SSH public key granted a role on one project.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyGrant {
    /// The project.
    pub project: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The key in OpenSSH format, without its comment.
    pub public_key: String,
    /// The comment of the key file, for people.
    pub comment: String,
    /// What the key may do.
    pub role: Role,
    /// When it was granted.
    pub added_at: u64,
}

/// The kind of an environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentType {
    /// The default branch's.
    Production,
    /// A pre-production copy.
    Staging,
    /// Everything else.
    Development,
}

impl EnvironmentType {
    /// The type's name as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentType::Production => "production",
            EnvironmentType::Staging => "staging",
            EnvironmentType::Development => "development",
        }
    }

    /// Parses `production`, `staging` or `development`.
    pub fn parse(text: &str) -> Option<EnvironmentType> {
        match text {
            "production" => Some(EnvironmentType::Production),
            "staging" => Some(EnvironmentType::Staging),
            "development" => Some(EnvironmentType::Development),
            _ => None,
        }
    }
}

/// Whether an environment is built and deployed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentStatus {
    /// Built and deployed on every push.
    Active,
    /// Only its branch is kept.
    Inactive,
}

impl EnvironmentStatus {
    /// The status's name as users write it.
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentStatus::Active => "active",
            EnvironmentStatus::Inactive => "inactive",
        }
    }
}

/// One environment per branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// The project.
    pub project: String,
    /// The environment's name: its branch.
    pub name: String,
    /// The environment its data is cloned from.
    pub parent: Option<String>,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: EnvironmentType,
    /// Active or inactive.
    pub status: EnvironmentStatus,
    /// A title for people; the branch name when not set.
    pub title: Option<String>,
    /// The commit its branch points at.
    pub head: Option<String>,
    /// Whether activation copies the parent's data (`clone_parent_on_create`).
    #[serde(default = "yes")]
    pub clone_parent: bool,
}

fn yes() -> bool {
    true
}

impl Environment {
    /// An environment with no head and no title yet.
    pub fn new(
        project: &str,
        name: &str,
        parent: Option<&str>,
        kind: EnvironmentType,
        status: EnvironmentStatus,
    ) -> Environment {
        Environment {
            project: project.into(),
            name: name.into(),
            parent: parent.map(str::to_owned),
            kind,
            status,
            title: None,
            head: None,
            clone_parent: true,
        }
    }
}

/// What an activity does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// Commits pushed to a branch.
    Push,
    /// A branch deleted by a push.
    BranchDelete,
    /// A build asked for with `launchway build` (no deploy).
    Build,
    /// `launchway deploy`: the branch head built and deployed.
    Deploy,
    /// An inactive environment made active (data cloned, built, deployed).
    Activate,
    /// An active environment's containers and data removed.
    Deactivate,
    /// An environment and its branch removed.
    Delete,
    /// The current release deployed again.
    Redeploy,
    /// A recorded release deployed again (a rollback, or a promotion).
    Promote,
    /// A variable created or changed, and the environment redeployed.
    VariableUpdate,
    /// A variable removed, and the environment redeployed.
    VariableDelete,
    /// The data of a service the config no longer has, deleted.
    ServiceDataDelete,
    /// One run of an app's cron.
    Cron,
    /// A backup of the environment's data taken.
    BackupCreate,
    /// A backup's data put back (and its release deployed again).
    BackupRestore,
    /// The parent's data and/or code brought down to a child.
    Sync,
    /// A child's branch fast-forwarded into its parent's, deployed there.
    Merge,
    /// A directory uploaded by `launchway build|deploy DIR`, built (and
    /// deployed).
    Upload,
    /// A shell or a command run in an app's container over SSH.
    Shell,
    /// `launchway run`: a command in a new container of the app's release.
    Run,
    /// `launchway project delete`.
    ProjectDelete,
}

impl ActivityKind {
    /// The kind's name, as listed.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Push => "environment.push",
            ActivityKind::BranchDelete => "environment.branch_delete",
            ActivityKind::Build => "environment.build",
            ActivityKind::Deploy => "environment.deploy",
            ActivityKind::Activate => "environment.activate",
            ActivityKind::Deactivate => "environment.deactivate",
            ActivityKind::Delete => "environment.delete",
            ActivityKind::Redeploy => "environment.redeploy",
            ActivityKind::Promote => "release.promote",
            ActivityKind::Cron => "environment.cron",
            ActivityKind::VariableUpdate => "environment.variable.update",
            ActivityKind::VariableDelete => "environment.variable.delete",
            ActivityKind::ServiceDataDelete => "environment.service_data.delete",
            ActivityKind::BackupCreate => "environment.backup",
            ActivityKind::BackupRestore => "environment.restore",
            ActivityKind::Sync => "environment.synchronize",
            ActivityKind::Merge => "environment.merge",
            ActivityKind::Upload => "environment.upload",
            ActivityKind::Shell => "environment.ssh",
            ActivityKind::Run => "environment.run",
            ActivityKind::ProjectDelete => "project.delete",
        }
    }
}

/// Where an activity is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityState {
    /// Waiting for the environment's earlier activities.
    Pending,
    /// Running.
    InProgress,
    /// Finished; see the result.
    Complete,
    /// Stopped before it finished.
    Cancelled,
}

impl ActivityState {
    /// The state's name, as listed.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityState::Pending => "pending",
            ActivityState::InProgress => "in_progress",
            ActivityState::Complete => "complete",
            ActivityState::Cancelled => "cancelled",
        }
    }
}

/// How a complete activity ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityResult {
    /// It did what it set out to do.
    Success,
    /// It failed; the log says why.
    Failure,
}

impl ActivityResult {
    /// The result's name, as listed.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityResult::Success => "success",
            ActivityResult::Failure => "failure",
        }
    }
}

/// One activity: a push, an activation, a redeploy…
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Its number, unique in the daemon.
    pub id: u64,
    /// The project.
    pub project: String,
    /// The environment it acts on.
    pub environment: String,
    /// What it does.
    #[serde(rename = "type")]
    pub kind: ActivityKind,
    /// One line for people (`alice pushed to main`).
    pub description: String,
    /// Where it is.
    pub state: ActivityState,
    /// How it ended, once complete.
    pub result: Option<ActivityResult>,
    /// When it was created.
    pub created_at: u64,
    /// When it started running.
    pub started_at: Option<u64>,
    /// When it completed or was cancelled.
    pub completed_at: Option<u64>,
    /// Milliseconds spent per step (`wait`, `plan`, …).
    pub timings: BTreeMap<String, u64>,
}

impl Activity {
    /// A pending activity created at `now`.
    pub fn new(
        id: u64,
        project: &str,
        environment: &str,
        kind: ActivityKind,
        description: &str,
        now: u64,
    ) -> Activity {
        Activity {
            id,
            project: project.into(),
            environment: environment.into(),
            kind,
            description: description.into(),
            state: ActivityState::Pending,
            result: None,
            created_at: now,
            started_at: None,
            completed_at: None,
            timings: BTreeMap::new(),
        }
    }
}

/// Where a build is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    /// Running (or waiting for a slot).
    Running,
    /// Every app has an image.
    Complete,
    /// An app failed to build.
    Failed,
    /// Stopped by `activity cancel` or a daemon stop.
    Cancelled,
}

impl BuildStatus {
    /// The status's name, as listed.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::Running => "running",
            BuildStatus::Complete => "complete",
            BuildStatus::Failed => "failed",
            BuildStatus::Cancelled => "cancelled",
        }
    }
}

/// One app of a build.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildApp {
    /// The app's name.
    pub name: String,
    /// `python:3.11`, …, as written.
    pub runtime: String,
    /// The runtime type built on, when the written one resolved to
    /// another version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_runtime: Option<String>,
    /// The git tree id of its `source.root`.
    pub tree_id: String,
    /// The build key, once the runtime image is known.
    pub build_key: Option<String>,
    /// The frozen image's name, once built or reused.
    pub image: Option<String>,
    /// The frozen image's manifest digest.
    pub digest: Option<String>,
    /// The build that made the image, when this one reused it.
    pub reused_from: Option<String>,
    /// The cached step images (dependencies, flavor) the image was built on.
    #[serde(default)]
    pub steps: Vec<String>,
    /// What its build hook reached (or was refused) through the egress
    /// proxy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressTraffic>,
    /// Where it was built, when not on this host: `builder b2`, with the
    /// builder that lost it first when it ran twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_on: Option<String>,
}

/// The traffic of a build hook to one destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressTraffic {
    /// `host:port`.
    pub destination: String,
    /// Connections let through.
    pub connections: u64,
    /// Requests refused.
    pub refused: u64,
    /// Bytes sent by the hook.
    pub sent: u64,
    /// Bytes received by the hook.
    pub received: u64,
}

/// One build: the apps of a commit turned into images.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    /// `B` and nine capitals and digits.
    pub id: String,
    /// The project.
    pub project: String,
    /// The environment it was built for.
    pub environment: String,
    /// The commit.
    pub commit: String,
    /// The apps.
    pub apps: Vec<BuildApp>,
    /// Where it is.
    pub status: BuildStatus,
    /// The release that deployed it, once one did.
    pub release: Option<String>,
    /// When it started (ms since the epoch).
    pub started_at: u64,
    /// How long it took, once finished (ms).
    pub elapsed_ms: Option<u64>,
    /// The commit's subject.
    pub description: String,
    /// The activity that ran it.
    pub activity: Option<u64>,
    /// The build it was imported from (`builds import`), if any.
    pub imported_from: Option<String>,
}

/// Where a release stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseStatus {
    /// Being deployed.
    Deploying,
    /// Serving its environment.
    Active,
    /// Served once; another one serves now.
    Superseded,
    /// Its deploy failed; it never served.
    Failed,
    /// Built by `launchway build`: never deployed, waiting for
    /// `launchway releases promote` (Convox's unpromoted release).
    Pending,
}

impl ReleaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseStatus::Deploying => "deploying",
            ReleaseStatus::Active => "active",
            ReleaseStatus::Superseded => "superseded",
            ReleaseStatus::Failed => "failed",
            ReleaseStatus::Pending => "pending",
        }
    }
}

/// A deployable whole: a build and what its apps run with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// `R` and nine capitals and digits.
    pub id: String,
    pub project: String,
    pub environment: String,
    /// The build it runs.
    pub build: String,
    pub commit: String,
    pub created_at: u64,
    pub description: String,
    pub status: ReleaseStatus,
    /// The deploy spec (apps, processes, mounts, routes, variables), as
    /// `launchway-deploy` writes it.
    pub spec: serde_json::Value,
    /// The activity that deployed it (last, when promoted again).
    pub activity: Option<u64>,
    /// The user variables it runs with: names and where they come from,
    /// never values (those are in `spec`, which is never printed).
    #[serde(default)]
    pub variables: Vec<ReleaseVariable>,
    /// The normalized config of its apps and its routes, as deployed.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// A variable a release runs with, without its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseVariable {
    pub name: String,
    /// `project` or `environment <name>` (the one it is inherited from).
    pub level: String,
    pub sensitive: bool,
    pub visible_build: bool,
    pub visible_runtime: bool,
}

/// A user variable of a project or of one environment (config-reference §2.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub project: String,
    /// `None` for a project variable.
    pub environment: Option<String>,
    /// `env:NAME` becomes the environment variable `NAME`; every name is in
    /// `PLATFORM_VARIABLES`.
    pub name: String,
    pub value: String,
    /// Never printed back once set.
    pub sensitive: bool,
    /// Seen by builds (and part of the build key).
    pub visible_build: bool,
    /// Seen by the running app and its hooks.
    pub visible_runtime: bool,
    /// An environment variable reaches the environment's children too.
    pub inheritable: bool,
    /// `value` is JSON, decoded in `PLATFORM_VARIABLES`.
    pub json: bool,
    pub updated_at: u64,
}

/// An environment's deploy state: what serves, and how far a deploy got.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub project: String,
    pub environment: String,
    /// The release serving (or, mid-deploy, the one being deployed).
    pub release: String,
    /// The release that served before this deploy began.
    pub previous: Option<String>,
    /// The deploy phase (`launchway-deploy`'s `Phase`, as text).
    pub phase: String,
    /// The containers that belong to the environment now.
    pub containers: Vec<String>,
    pub updated_at: u64,
}
