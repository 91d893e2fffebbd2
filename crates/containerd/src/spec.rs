//! What a step is (pure data) and the OCI runtime spec made from it.
//!
//! Choices, so every step is locked down unless it asks otherwise:
//! - no capabilities at all (bounding, effective, permitted, inheritable and
//!   ambient sets empty) unless the step names some; build steps run as uid
//!   10000 and need none;
//! - `no_new_privileges`, containerd 1.6's default seccomp profile (the
//!   JSON containerd itself generates for a default container on amd64),
//!   the usual masked and read-only /proc and /sys paths;
//! - a private tmpfs on `/tmp` (512 MiB unless set), so a read-only rootfs
//!   still has scratch space;
//! - a fresh, empty network namespace unless the step joins one or asks for
//!   the host's.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    LinuxSeccomp, MountBuilder, Process, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use crate::error::{EngineError, Result};

const SECCOMP_DEFAULT: &str = include_str!("seccomp-default.json");

/// The network a step sees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// A new namespace with only `lo` (up): no route anywhere, the host's
    /// loopback included.
    #[default]
    None,
    /// Join an existing network namespace (a path such as `/var/run/netns/x`).
    Join(PathBuf),
    /// The host's network namespace.
    Host,
}

/// A host directory or file made visible in the step. On a read-only rootfs
/// the target must exist in the image (nothing can create it there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: String,
    pub writable: bool,
}

/// Resource limits; `None` leaves the host's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub pids: Option<u64>,
}

/// One process to run in a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepSpec {
    pub args: Vec<String>,
    /// Added to (and overriding) the image's environment.
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub binds: Vec<Bind>,
    pub tmp_size_bytes: u64,
    pub network: Network,
    pub limits: Limits,
    pub capabilities: Vec<Capability>,
    /// Killed (exit 137) when it runs longer.
    pub timeout: Option<Duration>,
    pub hostname: String,
}

/// The uid and gid app and build processes run as (user `web` in runtime images).
pub const WEB_UID: u32 = 10000;

impl StepSpec {
    /// A step running `args` as uid/gid 10000 in `/`, no network, no binds.
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StepSpec {
            args: args.into_iter().map(Into::into).collect(),
            env: Vec::new(),
            cwd: "/".into(),
            uid: WEB_UID,
            gid: WEB_UID,
            binds: Vec::new(),
            tmp_size_bytes: 512 * 1024 * 1024,
            network: Network::None,
            limits: Limits::default(),
            capabilities: Vec::new(),
            timeout: None,
            hostname: "launchway".into(),
        }
    }
}

fn invalid(what: &'static str, reason: impl Into<String>) -> EngineError {
    EngineError::Invalid {
        what,
        reason: reason.into(),
    }
}

/// An absolute path inside the container with no `..`, `.` or empty parts.
fn check_container_path(path: &str, what: &'static str) -> Result<()> {
    let parsed = Path::new(path);
    if !parsed.is_absolute() {
        return Err(invalid(what, format!("'{path}' is not an absolute path")));
    }
    if parsed
        .components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(invalid(
            what,
            format!("'{path}' may not contain '.' or '..'"),
        ));
    }
    Ok(())
}

/// `image_env` overlaid with `step_env`, keeping the image's order.
pub fn merge_env(image_env: &[String], step_env: &[(String, String)]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let entries = image_env
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (entry.clone(), String::new()),
        })
        .chain(step_env.iter().cloned());
    for (key, value) in entries {
        if values.insert(key.clone(), value).is_none() {
            order.push(key);
        }
    }
    order
        .into_iter()
        .map(|key| {
            let value = values.get(&key).cloned().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect()
}

fn default_seccomp() -> Result<LinuxSeccomp> {
    serde_json::from_str(SECCOMP_DEFAULT)
        .map_err(|error| invalid("built-in seccomp profile", error.to_string()))
}

fn oci(error: oci_spec::OciSpecError) -> EngineError {
    invalid("container spec", error.to_string())
}

/// The process of `step` (user, command, environment over `image_env`,
/// capabilities, limits): the container's own or one executed in it.
pub fn process_spec(step: &StepSpec, image_env: &[String]) -> Result<Process> {
    if step.args.is_empty() {
        return Err(invalid("step", "no command to run"));
    }
    check_container_path(&step.cwd, "working directory")?;
    for (key, _) in &step.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid("environment variable", format!("bad name '{key}'")));
        }
    }

    let capabilities: HashSet<Capability> = step.capabilities.iter().copied().collect();
    ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(step.uid)
                .gid(step.gid)
                .additional_gids(vec![step.gid])
                .build()
                .map_err(oci)?,
        )
        .args(step.args.clone())
        .env(merge_env(image_env, &step.env))
        .cwd(PathBuf::from(&step.cwd))
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(capabilities.clone())
                .effective(capabilities.clone())
                .permitted(capabilities.clone())
                .inheritable(capabilities.clone())
                .ambient(capabilities)
                .build()
                .map_err(oci)?,
        )
        .rlimits(vec![
            oci_spec::runtime::PosixRlimitBuilder::default()
                .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
                .hard(4096u64)
                .soft(4096u64)
                .build()
                .map_err(oci)?,
        ])
        .no_new_privileges(true)
        .build()
        .map_err(oci)
}

/// The OCI runtime spec of `step`, its root read-only or not, its cgroup at
/// `/<namespace>/<id>`, with `image_env` under the step's own variables.
pub fn runtime_spec(
    step: &StepSpec,
    readonly_root: bool,
    namespace: &str,
    id: &str,
    image_env: &[String],
) -> Result<Spec> {
    let process = process_spec(step, image_env)?;

    let mut mounts = oci_spec::runtime::get_default_mounts();
    mounts.push(
        MountBuilder::default()
            .destination("/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec![
                "nosuid".to_string(),
                "nodev".to_string(),
                "mode=1777".to_string(),
                format!("size={}", step.tmp_size_bytes),
            ])
            .build()
            .map_err(oci)?,
    );
    for bind in &step.binds {
        check_container_path(&bind.target, "bind mount target")?;
        if !bind.source.is_absolute() {
            return Err(invalid(
                "bind mount source",
                format!("'{}' is not an absolute path", bind.source.display()),
            ));
        }
        let mode = if bind.writable { "rw" } else { "ro" };
        mounts.push(
            MountBuilder::default()
                .destination(&bind.target)
                .typ("bind")
                .source(&bind.source)
                .options(vec![
                    "rbind".to_string(),
                    mode.to_string(),
                    "nosuid".to_string(),
                    "nodev".to_string(),
                ])
                .build()
                .map_err(oci)?,
        );
    }

    let mut namespaces = oci_spec::runtime::get_default_namespaces();
    match &step.network {
        Network::None => {}
        Network::Host => namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::Network),
        Network::Join(path) => {
            namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::Network);
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .path(path.clone())
                    .build()
                    .map_err(oci)?,
            );
        }
    }

    let mut resources = LinuxResourcesBuilder::default();
    if let Some(bytes) = step.limits.memory_bytes {
        let limit = i64::try_from(bytes).map_err(|_| invalid("memory limit", "too large"))?;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .map_err(oci)?,
        );
    }
    if let Some(shares) = step.limits.cpu_shares {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .shares(shares)
                .build()
                .map_err(oci)?,
        );
    }
    if let Some(pids) = step.limits.pids {
        let limit = i64::try_from(pids).map_err(|_| invalid("pids limit", "too large"))?;
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(oci)?,
        );
    }
    // The default device rules: deny all, then runc adds the standard ones.
    resources = resources.devices(vec![
        oci_spec::runtime::LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(oci)?,
    ]);

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(oci_spec::runtime::get_default_maskedpaths())
        .readonly_paths(oci_spec::runtime::get_default_readonly_paths())
        .resources(resources.build().map_err(oci)?)
        .cgroups_path(PathBuf::from(format!("/{namespace}/{id}")))
        .seccomp(default_seccomp()?)
        .build()
        .map_err(oci)?;

    let mut spec = Spec::default();
    spec.set_hostname(Some(step.hostname.clone()));
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(readonly_root)
            .build()
            .map_err(oci)?,
    ));
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_json(step: &StepSpec) -> serde_json::Value {
        let spec = runtime_spec(step, true, "launchway", "step-1", &["PATH=/bin".into()])
            .expect("spec builds");
        serde_json::to_value(spec).expect("serializes")
    }

    #[test]
    fn defaults_are_locked_down() {
        let json = spec_json(&StepSpec::new(["true"]));
        let process = &json["process"];
        assert_eq!(process["user"]["uid"], 10000);
        assert_eq!(process["noNewPrivileges"], true);
        assert_eq!(process["capabilities"]["bounding"], serde_json::json!([]));
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["linux"]["cgroupsPath"], "/launchway/step-1");
        let network = json["linux"]["namespaces"]
            .as_array()
            .expect("namespaces")
            .iter()
            .find(|ns| ns["type"] == "network")
            .expect("own network namespace");
        assert!(network.get("path").is_none());
        let tmp = json["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["destination"] == "/tmp")
            .expect("/tmp mount");
        assert_eq!(tmp["type"], "tmpfs");
    }

    #[test]
    fn network_modes() {
        let mut step = StepSpec::new(["true"]);
        step.network = Network::Host;
        let json = spec_json(&step);
        assert!(
            !json["linux"]["namespaces"]
                .as_array()
                .expect("ns")
                .iter()
                .any(|ns| ns["type"] == "network")
        );
        step.network = Network::Join("/var/run/netns/env1".into());
        let json = spec_json(&step);
        let joined: Vec<_> = json["linux"]["namespaces"]
            .as_array()
            .expect("ns")
            .iter()
            .filter(|ns| ns["type"] == "network")
            .collect();
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0]["path"], "/var/run/netns/env1");
    }

    #[test]
    fn binds_and_limits() {
        let mut step = StepSpec::new(["true"]);
        step.binds.push(Bind {
            source: "/srv/cache".into(),
            target: "/cache".into(),
            writable: false,
        });
        step.limits.memory_bytes = Some(64 << 20);
        step.limits.pids = Some(100);
        let json = spec_json(&step);
        let bind = json["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["destination"] == "/cache")
            .expect("bind");
        assert!(
            bind["options"]
                .as_array()
                .expect("options")
                .contains(&"ro".into())
        );
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["linux"]["resources"]["pids"]["limit"], 100);
    }

    #[test]
    fn bad_paths_and_empty_commands_are_refused() {
        let mut step = StepSpec::new(["true"]);
        step.binds.push(Bind {
            source: "/srv".into(),
            target: "/app/../etc".into(),
            writable: true,
        });
        assert!(runtime_spec(&step, true, "ns", "id", &[]).is_err());
        let mut step = StepSpec::new(["true"]);
        step.cwd = "app".into();
        assert!(runtime_spec(&step, true, "ns", "id", &[]).is_err());
        let step = StepSpec::new(Vec::<String>::new());
        assert!(runtime_spec(&step, true, "ns", "id", &[]).is_err());
        let mut step = StepSpec::new(["true"]);
        step.env.push(("A=B".into(), "c".into()));
        assert!(runtime_spec(&step, true, "ns", "id", &[]).is_err());
    }

    #[test]
    fn step_env_overrides_image_env_in_place() {
        let merged = merge_env(
            &["PATH=/bin".into(), "LANG=C".into()],
            &[
                ("PATH".into(), "/usr/bin".into()),
                ("HOME".into(), "/app".into()),
            ],
        );
        assert_eq!(merged, vec!["PATH=/usr/bin", "LANG=C", "HOME=/app"]);
    }
}
