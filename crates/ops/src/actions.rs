//! Every operation a door offers, and what each needs.

use serde::Serialize;

use crate::Role;

macro_rules! actions {
    ($($kind:ident => $need:ident, deploy_key: $deploy:literal;)*) => {
        /// One variant per operation any door offers (the admin socket's
        /// RPCs, which the HTTP API and the console reach too).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        pub enum ActionKind { $($kind,)* }

        impl ActionKind {
            /// Every operation, in the order the table lists them.
            pub const ALL: &[ActionKind] = &[$(ActionKind::$kind,)*];

            /// The operation's name (the RPC's).
            pub fn name(self) -> &'static str {
                match self { $(ActionKind::$kind => stringify!($kind),)* }
            }

            /// What the caller needs on the operation's target.
            pub fn need(self) -> Need {
                match self { $(ActionKind::$kind => Need::$need,)* }
            }

            /// Whether a deploy key may run it: build and deploy its
            /// project, and read what that needs (builds, releases,
            /// activities), nothing else (no variables, no data).
            pub fn deploy_key(self) -> bool {
                match self { $(ActionKind::$kind => $deploy,)* }
            }
        }
    };
}

/// What an operation needs, before the target is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Need {
    /// The host's operator only (the 0600 admin socket): host-wide changes.
    Operator,
    /// Anyone authenticated: host-wide facts that are no one's secret, and
    /// lists filtered to what the caller may see.
    Authenticated,
    /// Viewer of the target's project.
    Read,
    /// Contributor on an environment that is not the default one; admin on
    /// the default one and on the project as a whole.
    Change,
    /// Admin of the target's project.
    Admin,
}

actions! {
    ServerInfo => Authenticated, deploy_key: true;
    CreateProject => Operator, deploy_key: false;
    ListProjects => Authenticated, deploy_key: true;
    GetProject => Read, deploy_key: true;
    DeleteProject => Operator, deploy_key: false;
    SetProjectSetting => Admin, deploy_key: false;
    AddKey => Admin, deploy_key: false;
    ListKeys => Admin, deploy_key: false;
    RemoveKey => Admin, deploy_key: false;
    Plan => Read, deploy_key: true;
    ListActivities => Read, deploy_key: true;
    ActivityLog => Read, deploy_key: true;
    FollowActivity => Read, deploy_key: true;
    CancelActivity => Change, deploy_key: true;
    PreReceive => Operator, deploy_key: false;
    PostReceive => Operator, deploy_key: false;
    ListRuntimes => Authenticated, deploy_key: true;
    BuildRuntime => Operator, deploy_key: false;
    ImportRuntime => Operator, deploy_key: false;
    ListBuilds => Read, deploy_key: true;
    GetBuild => Read, deploy_key: true;
    BuildLogs => Read, deploy_key: true;
    StartBuild => Change, deploy_key: true;
    UploadSource => Change, deploy_key: true;
    ExportBuild => Admin, deploy_key: false;
    ImportBuild => Admin, deploy_key: true;
    ClearBuildCache => Admin, deploy_key: false;
    CollectGarbage => Operator, deploy_key: false;
    ListReleases => Read, deploy_key: true;
    GetRelease => Read, deploy_key: true;
    PromoteRelease => Change, deploy_key: true;
    AppLogs => Read, deploy_key: false;
    ListEnvironments => Read, deploy_key: true;
    ActivateEnvironment => Change, deploy_key: false;
    DeactivateEnvironment => Change, deploy_key: false;
    DeleteEnvironment => Change, deploy_key: false;
    Deploy => Change, deploy_key: true;
    Redeploy => Change, deploy_key: true;
    SyncEnvironment => Change, deploy_key: false;
    MergeEnvironment => Change, deploy_key: false;
    ListServices => Read, deploy_key: false;
    ServiceClient => Change, deploy_key: false;
    Shell => Change, deploy_key: false;
    RunCommand => Change, deploy_key: false;
    Tunnel => Change, deploy_key: false;
    DeleteServiceData => Admin, deploy_key: false;
    ListVariables => Read, deploy_key: false;
    SetVariable => Change, deploy_key: false;
    DeleteVariable => Change, deploy_key: false;
    ListCrons => Read, deploy_key: false;
    RunCron => Change, deploy_key: false;
    CreateBackup => Change, deploy_key: false;
    ListBackups => Read, deploy_key: false;
    RestoreBackup => Change, deploy_key: false;
    DeleteBackup => Admin, deploy_key: false;
    ExportBackup => Admin, deploy_key: false;
    ImportBackup => Admin, deploy_key: false;
    AddCertificate => Operator, deploy_key: false;
    RemoveCertificate => Operator, deploy_key: false;
    RenewCertificate => Operator, deploy_key: false;
    ListCertificates => Read, deploy_key: false;
    CreateToken => Operator, deploy_key: false;
    ListTokens => Admin, deploy_key: false;
    RevokeToken => Admin, deploy_key: false;
    CreateWebhook => Admin, deploy_key: false;
    ListWebhooks => Admin, deploy_key: false;
    DeleteWebhook => Admin, deploy_key: false;
    ListWebhookDeliveries => Admin, deploy_key: false;
    ListBuilders => Operator, deploy_key: false;
    CreateBuilderToken => Operator, deploy_key: false;
    RemoveBuilder => Operator, deploy_key: false;
}

impl ActionKind {
    /// Whether the operation only reads.
    pub fn reads_only(self) -> bool {
        matches!(self.need(), Need::Authenticated | Need::Read)
    }

    /// The role a change needs on an environment.
    pub(crate) fn change_role(default_environment: bool, environment: bool) -> Role {
        if environment && !default_environment {
            Role::Contributor
        } else {
            Role::Admin
        }
    }
}
