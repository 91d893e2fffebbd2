//! Relationships of apps and services: what each names, checked against
//! the apps and services that exist and their endpoints.

use std::collections::BTreeMap;

use super::{Normalizer, Targets, default_endpoint};
use crate::config::{App, Relationship, Service};
use crate::diag::did_you_mean;
use crate::model::RelationshipConfig;

impl Normalizer<'_> {
    pub(super) fn relationships(
        &mut self,
        owner: &[&str],
        relationships: Option<&indexmap::IndexMap<String, Option<RelationshipConfig>>>,
        targets: &Targets,
    ) -> BTreeMap<String, Relationship> {
        let mut result = BTreeMap::new();
        for (name, config) in relationships.into_iter().flatten() {
            let mut path = owner.to_vec();
            path.push("relationships");
            path.push(name);
            let (service, endpoint) = match config {
                None => (name.clone(), None),
                Some(RelationshipConfig::Legacy(text)) => match text.split_once(':') {
                    Some((s, e)) => (s.to_owned(), Some(e.to_owned())),
                    None => (text.clone(), None),
                },
                Some(RelationshipConfig::Long(long)) => (
                    long.service.clone().unwrap_or_else(|| name.clone()),
                    long.endpoint.clone(),
                ),
            };
            let span = match config {
                None => self.key_span(&path),
                Some(_) => self.value_span(&path),
            };
            let endpoint = if targets.apps.contains(&service) {
                match endpoint.as_deref() {
                    None | Some("http") => "http".to_owned(),
                    Some(other) => {
                        self.diags.error(span, format!("relationship `{name}`: application `{service}` has no endpoint `{other}`")).hint =
                            Some("relationships to applications use the `http` endpoint".into());
                        continue;
                    }
                }
            } else if let Some(found) = targets.services.get(&service) {
                match (found, endpoint) {
                    (Some((kind, endpoints)), endpoint) if default_endpoint(kind).is_some() => {
                        let endpoint = endpoint
                            .unwrap_or_else(|| endpoints.first().cloned().unwrap_or_default());
                        if !endpoints.contains(&endpoint) {
                            let have = if endpoints.is_empty() {
                                "none".to_owned()
                            } else {
                                endpoints
                                    .iter()
                                    .map(|e| format!("`{e}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            };
                            let d = self.diags.error(span, format!("relationship `{name}`: service `{service}` ({kind}) has no endpoint `{endpoint}`"));
                            d.hint = Some(
                                match did_you_mean(&endpoint, endpoints.iter().map(String::as_str))
                                {
                                    Some(best) => {
                                        format!("did you mean `{best}`? its endpoints: {have}")
                                    }
                                    None => format!("its endpoints: {have}"),
                                },
                            );
                            continue;
                        }
                        endpoint
                    }
                    (Some((kind, _)), endpoint) => endpoint.unwrap_or_else(|| kind.clone()),
                    (None, endpoint) => endpoint.unwrap_or_default(),
                }
            } else {
                let d = self.diags.error(span, format!("relationship `{name}` points to `{service}`, which is not a service or application"));
                let known = targets
                    .apps
                    .iter()
                    .chain(targets.services.keys())
                    .map(String::as_str);
                if let Some(best) = did_you_mean(&service, known) {
                    d.hint = Some(format!("did you mean `{best}`?"));
                }
                continue;
            };
            result.insert(name.clone(), Relationship { service, endpoint });
        }
        result
    }

    /// Refuses an app that relates to a service which calls it back (an
    /// app behind Varnish that also names Varnish): requests would loop.
    pub(super) fn check_service_cycles(
        &mut self,
        services: &BTreeMap<String, Service>,
        apps: &BTreeMap<String, App>,
    ) {
        for service in services.values() {
            for called in service.relationships.values() {
                let Some(app) = apps.get(&called.service) else {
                    continue;
                };
                let back = app
                    .relationships
                    .iter()
                    .map(|(name, r)| {
                        (
                            vec![
                                "applications",
                                app.name.as_str(),
                                "relationships",
                                name.as_str(),
                            ],
                            r,
                        )
                    })
                    .chain(app.workers.iter().flat_map(|(worker, w)| {
                        w.relationships.iter().map(move |(name, r)| {
                            (
                                vec![
                                    "applications",
                                    app.name.as_str(),
                                    "workers",
                                    worker.as_str(),
                                    "relationships",
                                    name.as_str(),
                                ],
                                r,
                            )
                        })
                    }))
                    .find(|(_, r)| r.service == service.name);
                if let Some((path, _)) = back {
                    let span = self
                        .value_span(&path)
                        .or_else(|| self.key_span(&path))
                        .or_else(|| self.key_span(&["applications", app.name.as_str()]));
                    self.diags
                        .error(
                            span,
                            format!(
                                "`{}` relates to service `{}`, which calls `{}`: a circular relationship",
                                app.name, service.name, app.name
                            ),
                        )
                        .hint = Some(format!(
                        "remove this relationship; routes reach `{}` with `upstream: \"{}:http\"`",
                        service.name, service.name
                    ));
                }
            }
        }
    }
}
