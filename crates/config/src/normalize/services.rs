//! Services: each type checked against what this host runs
//! (`launchway_services::catalog`) and its `configuration` decoded, each
//! problem located at its key.

use std::collections::BTreeMap;

use launchway_services::configuration::{self, Configuration};

use super::{Normalizer, keep};
use crate::config::Service;
use crate::model::ServiceConfig;

/// Default endpoints and the other endpoints every service of a type has.
pub(super) fn default_endpoint(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "mariadb" | "mysql" | "oracle-mysql" => "mysql",
        "postgresql" => "postgresql",
        "redis" | "redis-persistent" | "valkey" | "valkey-persistent" => "redis",
        "memcached" => "memcached",
        "mongodb" | "mongodb-enterprise" => "mongodb",
        "elasticsearch" | "elasticsearch-enterprise" => "elasticsearch",
        "opensearch" => "opensearch",
        "rabbitmq" => "rabbitmq",
        "solr" => "solr",
        "influxdb" => "influxdb",
        "kafka" => "kafka",
        "varnish" | "chrome-headless" => "http",
        "network-storage" => "",
        _ => return None,
    })
}

impl Normalizer<'_> {
    /// The endpoints relationships may name, after checking the type
    /// against what this host runs and decoding `configuration`; problems
    /// are reported at their keys.
    fn service_endpoints(
        &mut self,
        name: &str,
        config: &ServiceConfig,
        kind: &str,
    ) -> Option<Vec<String>> {
        let type_span = self.value_span(&["services", name, "type"]);
        let resolved = match launchway_services::resolve(&config.service_type, false) {
            Ok(resolved) => resolved,
            Err(error) => {
                let d = self.diags.error(type_span, error.to_string());
                d.hint = Some(
                    "change the type, or remove the service and the relationships to it".into(),
                );
                return None;
            }
        };
        if let Some(note) = &resolved.note {
            self.diags.warning(type_span, note.clone());
        }
        match configuration::parse(resolved.kind, config.configuration.as_ref()) {
            Err(problems) => {
                for problem in problems {
                    let mut path: Vec<&str> = vec!["services", name, "configuration"];
                    path.extend(problem.path.iter().map(String::as_str));
                    // The deepest key that exists in the file.
                    let span = (3..=path.len())
                        .rev()
                        .find_map(|len| self.key_span(&path[..len]))
                        .or_else(|| self.key_span(&["services", name]));
                    self.diags.error(span, problem.message).hint = problem.hint;
                }
                None
            }
            Ok(Configuration::Sql(sql)) => {
                // The type's default endpoint first: a relationship that
                // names none gets it.
                let mut endpoints: Vec<String> = sql.endpoints.keys().cloned().collect();
                endpoints.sort_by_key(|e| e != resolved.kind.endpoint);
                Some(endpoints)
            }
            Ok(_) => {
                let mut endpoints = Vec::new();
                if let Some(default) = default_endpoint(kind)
                    && !default.is_empty()
                {
                    endpoints.push(default.to_owned());
                    // Seen in official templates: HA Redis clusters expose a replica endpoint.
                    if default == "redis" {
                        endpoints.push("redis-replica".to_owned());
                    }
                }
                Some(endpoints)
            }
        }
    }

    /// The service, or `None` when its type or configuration failed (said).
    pub(super) fn service(&mut self, name: &str, config: ServiceConfig) -> Option<Service> {
        let path = ["services", name];
        self.check_name("service", name, &path);
        let (kind, version) = config
            .service_type
            .split_once(':')
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .unwrap_or_default();
        let endpoints = self.service_endpoints(name, &config, &kind)?;
        let mut kept = BTreeMap::new();
        keep(&mut kept, "disk", &config.disk);
        keep(&mut kept, "size", &config.size);
        keep(&mut kept, "configuration", &config.configuration);
        keep(&mut kept, "container_profile", &config.container_profile);
        keep(&mut kept, "resources", &config.resources);
        Some(Service {
            name: name.to_owned(),
            kind,
            version,
            endpoints,
            relationships: BTreeMap::new(),
            kept,
        })
    }
}
