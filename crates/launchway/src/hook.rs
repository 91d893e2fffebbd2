//! `launchway hook pre-receive|post-receive`: run by git inside a push. The
//! hook forwards what git tells it (ref updates on stdin, push options and the
//! quarantine directory in the environment) to the daemon and exits with its
//! verdict. The daemon talks to the pusher itself, through the SSH session.

use std::io::BufRead as _;
use std::process::ExitCode;

use launchway_api::proto::HookRequest;

pub(crate) fn run(name: &str) -> anyhow::Result<ExitCode> {
    let (Ok(session), Ok(socket)) = (
        std::env::var("LAUNCHWAY_SESSION"),
        std::env::var("LAUNCHWAY_SOCKET"),
    ) else {
        eprintln!("launchway hook: not running inside a Launchway push");
        return Ok(ExitCode::from(1));
    };
    let updates: Vec<String> = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    let count: usize = std::env::var("GIT_PUSH_OPTION_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let push_options = (0..count.min(100))
        .filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok())
        .collect();
    let quarantine = match std::env::var_os("GIT_QUARANTINE_PATH") {
        Some(path) => std::path::absolute(path)?.display().to_string(),
        None => String::new(),
    };
    let request = HookRequest {
        session,
        updates,
        push_options,
        quarantine,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let accepted = runtime.block_on(async {
        let mut client = launchway_api::connect(std::path::Path::new(&socket)).await?;
        let reply = match name {
            "pre-receive" => client.pre_receive(request).await,
            "post-receive" => client.post_receive(request).await,
            other => anyhow::bail!("unknown hook `{other}`"),
        };
        Ok::<_, anyhow::Error>(
            reply
                .map_err(|status| anyhow::anyhow!("{}", status.message()))?
                .into_inner()
                .accept,
        )
    });
    match accepted {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::from(1)),
        Err(error) => {
            eprintln!("launchway: {error:#}");
            Ok(ExitCode::from(1))
        }
    }
}
