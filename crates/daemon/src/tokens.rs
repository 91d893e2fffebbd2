//! API tokens, their core operations (issue 23, first part): create with a
//! scope and an expiry, list without secrets, revoke. The secret is shown
//! once and only its hash is stored (`launchway_store::tokens`). The HTTP
//! door that accepts them is the next part of the issue; until then they
//! are made over the operator's socket.

use launchway_api::proto;
use launchway_store::{NewToken, TokenRecord};
use tonic::Status;

use crate::api::{internal, parse_role};
use crate::{Daemon, now_ms};

/// `30d`, `12h`, `90m` in milliseconds.
fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let unit_ms = match unit {
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    number
        .checked_mul(unit_ms)
        .filter(|&ms| ms > 0 && ms <= 5 * 365 * 86_400_000)
}

fn token_info(record: &TokenRecord, secret: String) -> proto::TokenInfo {
    proto::TokenInfo {
        id: record.id.clone(),
        name: record.name.clone(),
        project: record.project.clone(),
        role: record.role.as_str().into(),
        environment: record.environment.clone().unwrap_or_default(),
        deploy_key: record.deploy_only,
        created_at: record.created_at,
        expires_at: record.expires_at.unwrap_or_default(),
        secret,
    }
}

impl Daemon {
    /// `launchway token create`.
    pub(crate) fn create_token(
        &self,
        request: &proto::CreateTokenRequest,
    ) -> Result<proto::TokenInfo, Status> {
        let project = self.existing_project(&request.project)?;
        let role = parse_role(&request.role)?;
        let environment = match request.environment.trim() {
            "" => None,
            name => {
                if self
                    .store
                    .environment(&project.name, name)
                    .map_err(internal)?
                    .is_none()
                {
                    return Err(Status::not_found(format!(
                        "project `{}` has no environment `{name}`",
                        project.name
                    )));
                }
                Some(name.to_owned())
            }
        };
        let expires_at = match request.expires.trim() {
            "" | "never" => None,
            text => Some(now_ms() + parse_duration(text).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "`{text}` is not a lifetime: write e.g. 90m, 12h or 30d (at most 5 years), or never"
                ))
            })?),
        };
        let name = request.name.trim();
        if name.len() > 64 || name.chars().any(char::is_control) {
            return Err(Status::invalid_argument(
                "a token's name is at most 64 printable characters",
            ));
        }
        let (record, secret) = self
            .store
            .create_token(&NewToken {
                name: name.to_owned(),
                project: project.name,
                role,
                environment,
                deploy_only: request.deploy_key,
                created_at: now_ms(),
                expires_at,
                created_by: "operator".into(),
            })
            .map_err(internal)?;
        Ok(token_info(&record, secret))
    }

    /// `launchway token list`.
    pub(crate) fn list_tokens(&self, project: &str) -> Result<proto::TokenList, Status> {
        let project = if project.is_empty() {
            None
        } else {
            Some(self.existing_project(project)?.name)
        };
        let tokens = self.store.tokens(project.as_deref()).map_err(internal)?;
        Ok(proto::TokenList {
            tokens: tokens
                .iter()
                .map(|record| token_info(record, String::new()))
                .collect(),
        })
    }

    /// `launchway token revoke`.
    pub(crate) fn revoke_token(&self, id: &str) -> Result<(), Status> {
        if self.store.revoke_token(id.trim()).map_err(internal)? {
            Ok(())
        } else {
            Err(Status::not_found(format!("no token `{id}`")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_minutes_hours_or_days_up_to_five_years() {
        assert_eq!(parse_duration("90m"), Some(90 * 60_000));
        assert_eq!(parse_duration("12h"), Some(12 * 3_600_000));
        assert_eq!(parse_duration("30d"), Some(30 * 86_400_000));
        for bad in [
            "",
            "d",
            "0d",
            "-1d",
            "30",
            "30w",
            "9999999999999999999d",
            "1826d",
            "1.5d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
