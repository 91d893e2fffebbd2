//! The services of a deploy: what each runs and what apps see of it.
//!
//! Each service of the config becomes a [`ServiceSpec`]: its resolved type
//! and image, its address on the environment network, its container's
//! program, readiness command and configuration script (users, databases,
//! privileges), and a hash of what its container runs, so a deploy that
//! changes nothing of a service leaves it running. Each relationship of an
//! app to a service becomes an Upsun-shaped `PLATFORM_RELATIONSHIPS` entry
//! with the endpoint's credentials, a `/etc/hosts` line and a rule of the
//! app's network filter.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use launchway_config::Service;
use launchway_services::configuration::{Configuration, parse};
use launchway_services::credentials::{Credentials, credentials};
use launchway_services::relationships::{ServiceRelationship, entry, variables};
use launchway_services::run::{
    Backend, VARNISH_PORT, configure_command, configure_script, minimum_memory_mib, program,
    ready_command,
};
use launchway_services::{Resolved, resolve};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::network::Filter;

/// The memory a service gets when the settings give none (MiB).
pub const DEFAULT_SERVICE_MEMORY_MIB: u64 = 256;

/// One service of a deploy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Its name (`db`); its data is `services/<name>`.
    pub name: String,
    /// The type as written (`postgresql:12`).
    pub written_type: String,
    /// What runs (`postgresql`).
    pub kind: String,
    /// Which version of it (`15`).
    pub version: String,
    /// The image it runs (`postgresql:15`, under `launchway/service/`).
    pub image_type: String,
    /// The Debian suite and packages its image is built from.
    pub suite: String,
    pub packages: Vec<String>,
    /// Said in the deploy log when what runs is not what was asked.
    pub note: Option<String>,
    /// Its address on the environment network.
    pub address: Ipv4Addr,
    /// Whether its data lives on the environment's volume.
    pub persistent: bool,
    /// The shell program of its container.
    pub program: String,
    /// Succeeds once it answers queries.
    pub ready: Vec<String>,
    /// Applies its configuration, reading [`ServiceSpec::configure_script`].
    pub configure: Option<Vec<String>>,
    /// The configuration script (holds passwords: never printed).
    pub configure_script: Option<String>,
    /// The passwords of its endpoints (masked in logs).
    pub secrets: Vec<String>,
    /// Its container's memory limit (MiB).
    pub memory_mib: u64,
    /// A hash of what its container runs: the same hash keeps it running.
    pub run_hash: String,
    /// What it may connect to (the apps Varnish calls), and the port its
    /// namespace sends port 80 to.
    #[serde(default)]
    pub filter: Filter,
}

/// The member name of a service on the environment network.
pub fn service_member(service: &str) -> String {
    format!("service/{service}")
}

/// Whether routes may send requests to `service` (Varnish), when it runs.
pub fn routable(service: &Service) -> bool {
    service.kind == "varnish" && not_run(service).is_none()
}

/// Why a config's service gets no container, if it gets none: said in the
/// deploy log (network-storage needs none).
pub(crate) fn not_run(service: &Service) -> Option<String> {
    let (resolved, _) = resolved(service)?;
    (resolved.kind.name != "network-storage" && !launchway_services::run::runs(resolved.kind))
        .then(|| {
            format!(
                "service '{}' ({}): Launchway does not run {} yet; relationships to it are not provided",
                service.name, resolved.written, resolved.kind.name
            )
        })
}

/// The resolved type and configuration of a config's service, if it can
/// run (the config loader has refused those that cannot).
pub(crate) fn resolved(service: &Service) -> Option<(Resolved, Configuration)> {
    let resolved = resolve(&format!("{}:{}", service.kind, service.version), false).ok()?;
    let configuration = parse(resolved.kind, service.kept.get("configuration")).ok()?;
    Some((resolved, configuration))
}

/// The credentials of every endpoint of a service.
pub(crate) fn endpoint_credentials(
    secret: &[u8],
    service: &Service,
    resolved: &Resolved,
    configuration: &Configuration,
) -> BTreeMap<String, Credentials> {
    match configuration {
        Configuration::Sql(sql) => sql
            .endpoints
            .keys()
            .map(|endpoint| {
                (
                    endpoint.clone(),
                    credentials(secret, &service.name, resolved.kind, endpoint),
                )
            })
            .collect(),
        Configuration::RabbitMq { .. } => BTreeMap::from([(
            resolved.kind.endpoint.to_owned(),
            credentials(secret, &service.name, resolved.kind, resolved.kind.endpoint),
        )]),
        _ => BTreeMap::new(),
    }
}

/// The spec of `service` at `address`, calling `backends` (Varnish).
pub(crate) fn service_spec(
    service: &Service,
    address: Ipv4Addr,
    secret: &[u8],
    memory_mib: u64,
    backends: &[Backend],
) -> Option<ServiceSpec> {
    let (resolved, configuration) = resolved(service)?;
    if !launchway_services::run::runs(resolved.kind) {
        return None;
    }
    let users = endpoint_credentials(secret, service, &resolved, &configuration);
    let memory_mib = memory_mib.max(minimum_memory_mib(resolved.kind));
    let program = program(&resolved, &configuration, memory_mib, backends);
    let filter = Filter {
        allowed: backends
            .iter()
            .map(|backend| (backend.address, backend.port))
            .collect(),
        web_port: (resolved.kind.name == "varnish").then_some(VARNISH_PORT),
        ..Filter::default()
    };
    let image_type = resolved.image_type();
    let run_hash = {
        let mut hasher = Sha256::new();
        for part in [
            image_type.as_str(),
            program.as_str(),
            &memory_mib.to_string(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hex::encode(&hasher.finalize()[..8])
    };
    Some(ServiceSpec {
        name: service.name.clone(),
        written_type: resolved.written.clone(),
        kind: resolved.kind.name.to_owned(),
        version: resolved.offer.version.to_owned(),
        image_type,
        suite: resolved.offer.suite.to_owned(),
        packages: resolved
            .offer
            .packages
            .iter()
            .map(|p| (*p).to_owned())
            .collect(),
        note: resolved.note.clone(),
        address,
        persistent: resolved.kind.persistent,
        program,
        ready: ready_command(&resolved),
        configure: configure_command(&resolved),
        configure_script: configure_script(&resolved, &configuration, &users),
        secrets: users.values().map(|c| c.password.clone()).collect(),
        memory_mib,
        run_hash,
        filter,
    })
}

/// What an app gets for a relationship to a service.
#[derive(Clone, Debug)]
pub(crate) struct Provided {
    /// Its `PLATFORM_RELATIONSHIPS` entry.
    pub(crate) entry: serde_json::Value,
    /// Its `<RELATIONSHIP>_*` variables.
    pub(crate) variables: Vec<(String, String)>,
    /// The port the app may connect to.
    pub(crate) port: u16,
}

/// The relationship entry and variables an app gets for relationship
/// `name` to `endpoint` of `service`.
pub(crate) fn relationship(
    name: &str,
    service: &Service,
    endpoint: &str,
    address: Ipv4Addr,
    secret: &[u8],
    project: &str,
    environment: &str,
) -> Option<Provided> {
    let (resolved, configuration) = resolved(service)?;
    let users = endpoint_credentials(secret, service, &resolved, &configuration);
    let path = match &configuration {
        Configuration::Sql(sql) => sql
            .endpoints
            .get(endpoint)
            .and_then(|e| e.default_database.clone()),
        _ => None,
    };
    let cluster = format!("{project}-{environment}");
    let hostname = format!("{}.{environment}.{project}.service.launchway", service.name);
    let value = entry(&ServiceRelationship {
        name,
        service: &service.name,
        resolved: &resolved,
        endpoint,
        credentials: users.get(endpoint),
        path: path.as_deref(),
        address,
        cluster: &cluster,
        hostname: &hostname,
    });
    let vars = variables(name, &value);
    Some(Provided {
        entry: value,
        variables: vars,
        port: resolved.kind.port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(yaml: &str) -> Service {
        let config = crate::test_config(&format!(
            "applications:\n  app:\n    type: python:3.11\n    web: {{commands: {{start: run}}}}\nservices:\n{yaml}"
        ));
        config.services.into_values().next().expect("a service")
    }

    #[test]
    fn a_postgresql_service_and_what_an_app_sees_of_it() {
        let db = service("  db:\n    type: postgresql:12\n");
        let address = Ipv4Addr::new(169, 254, 3, 3);
        let spec = service_spec(&db, address, b"secret", 256, &[]).expect("runs");
        assert_eq!(spec.written_type, "postgresql:12");
        assert_eq!(spec.image_type, "postgresql:15");
        assert!(
            spec.note
                .as_deref()
                .unwrap_or_default()
                .contains("running postgresql:15")
        );
        assert!(spec.persistent);
        assert_eq!(spec.secrets.len(), 1);
        let script = spec.configure_script.clone().expect("a configuration");
        assert!(script.contains(&spec.secrets[0]));
        // The same service gives the same run hash; more memory restarts it.
        assert_eq!(
            service_spec(&db, address, b"other secret", 256, &[])
                .expect("runs")
                .run_hash,
            spec.run_hash,
            "passwords are applied without a restart"
        );
        assert_ne!(
            service_spec(&db, address, b"secret", 512, &[])
                .expect("runs")
                .run_hash,
            spec.run_hash
        );
        let Provided {
            entry,
            variables: vars,
            port,
        } = relationship(
            "database",
            &db,
            "postgresql",
            address,
            b"secret",
            "shop",
            "main",
        )
        .expect("an entry");
        assert_eq!(port, 5432);
        assert_eq!(entry["password"], spec.secrets[0]);
        assert_eq!(entry["username"], "main");
        assert_eq!(entry["path"], "main");
        assert_eq!(entry["ip"], "169.254.3.3");
        assert!(
            vars.iter()
                .any(|(k, v)| k == "DATABASE_URL" && v.starts_with("pgsql://main:"))
        );
    }

    #[test]
    fn network_storage_gets_no_container_and_rabbitmq_gets_its_user() {
        let files = service("  files:\n    type: network-storage:2.0\n");
        assert!(service_spec(&files, Ipv4Addr::new(169, 254, 1, 1), b"s", 256, &[]).is_none());
        assert_eq!(not_run(&files), None, "a directory needs no process");
        let queue = service(
            "  queue:\n    type: rabbitmq:3.10\n    configuration:\n      vhosts: [jobs]\n",
        );
        let address = Ipv4Addr::new(169, 254, 1, 2);
        let spec = service_spec(&queue, address, b"s", 256, &[]).expect("runs");
        assert_eq!(spec.memory_mib, 512, "RabbitMQ's floor");
        assert!(
            spec.program
                .contains("total_memory_available_override_value = 512MiB")
        );
        assert!(
            spec.program.contains(r#"{"name":"jobs"}"#),
            "{}",
            spec.program
        );
        let script = spec.configure_script.clone().expect("definitions");
        assert!(
            !script.contains(&spec.secrets[0]),
            "only the password's hash"
        );
        let Provided { entry, port, .. } = relationship(
            "rabbitmq", &queue, "rabbitmq", address, b"s", "shop", "main",
        )
        .expect("an entry");
        assert_eq!(port, 5672);
        assert_eq!(entry["scheme"], "amqp");
        assert_eq!(entry["username"], "rabbitmq");
        assert_eq!(entry["password"], spec.secrets[0]);
        assert_eq!(entry["query"], serde_json::json!([]));
    }
}
