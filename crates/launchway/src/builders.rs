//! `launchway builders …`: the dedicated build hosts of this daemon (the
//! operator's, over the admin socket only): list them, make a join token,
//! remove one.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use launchway_api::proto;

use crate::admin::{print_table, time, with_client};

#[derive(Debug, Subcommand)]
pub(crate) enum BuildersCommand {
    /// List the registered builders: NAME ADDRESS SLOTS RUNNING LAST-SEEN
    /// (the default).
    List,
    /// Make a join token for build hosts (`[builder] join` in their
    /// settings). Only the token goes to stdout: `$(launchway builders
    /// token)`.
    Token {
        /// How long it may be redeemed: 90m, 1h, 2d (default: 1h).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        /// How many builders may redeem it (default: 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        uses: Option<u32>,
    },
    /// Forget a builder and end its session; it must join again with a new
    /// token.
    Remove {
        /// The builder's name.
        name: String,
    },
}

pub(crate) fn builders(
    settings_path: Option<&Path>,
    command: Option<BuildersCommand>,
) -> anyhow::Result<ExitCode> {
    match command.unwrap_or(BuildersCommand::List) {
        BuildersCommand::List => {
            let list = with_client(settings_path, async |client| {
                Ok(client
                    .list_builders(proto::ListBuildersRequest {})
                    .await?
                    .into_inner())
            })?;
            let now = now_ms();
            let rows: Vec<Vec<String>> = list
                .builders
                .iter()
                .map(|b| {
                    vec![
                        b.name.clone(),
                        if b.address.is_empty() {
                            "-".into()
                        } else {
                            b.address.clone()
                        },
                        b.slots.to_string(),
                        b.running.to_string(),
                        last_seen(b.last_seen_at, now, b.connected),
                    ]
                })
                .collect();
            print_table(&["NAME", "ADDRESS", "SLOTS", "RUNNING", "LAST-SEEN"], &rows);
            if rows.is_empty() {
                eprintln!(
                    "(no builders: make a join token with `launchway builders token` and put it in the build host's `[builder] join`)"
                );
            }
        }
        BuildersCommand::Token { expires, uses } => {
            let expires_secs = match expires {
                // 0: the daemon's default (an hour).
                None => 0,
                Some(expires) if expires.as_secs() == 0 => {
                    anyhow::bail!("--expires: give at least a second (e.g. 1h)")
                }
                Some(expires) => expires.as_secs(),
            };
            let uses = uses.unwrap_or(1);
            let token = with_client(settings_path, async |client| {
                Ok(client
                    .create_builder_token(proto::CreateBuilderTokenRequest { expires_secs, uses })
                    .await?
                    .into_inner())
            })?;
            eprintln!(
                "Join token for {} build host{}, valid until {} (put it in the build host's `[builder] join`; it is shown only now):",
                uses,
                if uses == 1 { "" } else { "s" },
                time(token.expires_at),
            );
            println!("{}", token.token);
        }
        BuildersCommand::Remove { name } => {
            with_client(settings_path, async |client| {
                client
                    .remove_builder(proto::RemoveBuilderRequest { name: name.clone() })
                    .await?;
                Ok(())
            })?;
            println!("Removed builder {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `3s ago`, `6m ago`, `2h ago`, `4d ago` (` (offline)` when not connected).
fn last_seen(at_ms: u64, now_ms: u64, connected: bool) -> String {
    let seen = if at_ms == 0 {
        "never".to_owned()
    } else {
        let secs = now_ms.saturating_sub(at_ms) / 1000;
        match secs {
            0..60 => format!("{secs}s ago"),
            60..3_600 => format!("{}m ago", secs / 60),
            3_600..86_400 => format!("{}h ago", secs / 3_600),
            _ => format!("{}d ago", secs / 86_400),
        }
    };
    if connected {
        seen
    } else {
        format!("{seen} (offline)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_says_how_long_ago() {
        let now = 1_000_000_000;
        assert_eq!(last_seen(now - 3_400, now, true), "3s ago");
        assert_eq!(
            last_seen(now - 6 * 60_000 - 5, now, false),
            "6m ago (offline)"
        );
        assert_eq!(last_seen(now - 2 * 3_600_000, now, true), "2h ago");
        assert_eq!(
            last_seen(now - 3 * 86_400_000, now, false),
            "3d ago (offline)"
        );
        assert_eq!(last_seen(0, now, false), "never (offline)");
        // A clock a little ahead: no negative ages.
        assert_eq!(last_seen(now + 500, now, true), "0s ago");
    }

    #[test]
    fn builders_parse_with_list_as_the_default() {
        use clap::Parser as _;
        let cli = crate::Cli::try_parse_from(["launchway", "builders"]).unwrap();
        assert!(matches!(
            cli.command,
            crate::Command::Builders { command: None }
        ));
        let cli = crate::Cli::try_parse_from([
            "launchway",
            "builders",
            "token",
            "--expires",
            "90m",
            "--uses",
            "3",
        ])
        .unwrap();
        match cli.command {
            crate::Command::Builders {
                command: Some(BuildersCommand::Token { expires, uses }),
            } => {
                assert_eq!(expires, Some(Duration::from_secs(90 * 60)));
                assert_eq!(uses, Some(3));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            crate::Cli::try_parse_from(["launchway", "builders", "token", "--uses", "0"]).is_err()
        );
        assert!(
            crate::Cli::try_parse_from(["launchway", "builders", "token", "--expires", "soon"])
                .is_err()
        );
    }
}
