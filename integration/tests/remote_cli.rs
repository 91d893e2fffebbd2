//! The CLI from another machine (issue 23): the same commands, run once
//! over the daemon's socket and once over its HTTP API with a token, print
//! the same thing; the API's certificate is pinned on first use; a login is
//! saved and used; a token's role still decides.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use launchway_integration::{Daemon, launchway_bin};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const APP: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: echo built
    web:
      commands:
        start: httpd -f -p $PORT -h /app
"#;

/// The CLI as a laptop runs it: no settings, a home of its own.
fn remote(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = Command::new(launchway_bin());
    command
        .env_remove("LAUNCHWAY_CONFIG")
        .env_remove("LAUNCHWAY_URL")
        .env_remove("LAUNCHWAY_TOKEN")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", home)
        .args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// Digits and ids out, so two runs of the same change compare.
fn normalized(text: &str) -> String {
    let mut out = String::new();
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out.split_whitespace()
        .map(|word| {
            if word.len() == 10
                && word.starts_with(['R', 'B', 'T'])
                && word.chars().all(|c| c.is_ascii_uppercase() || c == '#')
            {
                "<id>"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn token(daemon: &Daemon, args: &[&str]) -> String {
    let mut all = vec!["token", "create", "-p", "shop"];
    all.extend_from_slice(args);
    daemon.cli_ok(&all).trim().to_owned()
}

#[test]
fn commands_print_the_same_over_the_socket_and_over_https() {
    let daemon = Daemon::start_with("[http]\nlisten = \"127.0.0.1:0\"\n");
    let url = format!("https://{}", daemon.http_api_addr());
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    work.write("index.html", "one\n");
    work.commit("one");
    work.push_ok("main", &[]);
    work.write("index.html", "two\n");
    work.commit("two");
    work.push_ok("main", &[]);
    daemon.wait_idle("shop");
    let admin = token(&daemon, &["--role", "admin"]);
    let home = daemon.scratch("laptop");
    let pins = home.join("pins");
    let pins_text = pins.to_str().unwrap();
    let env = [
        ("LAUNCHWAY_URL", url.as_str()),
        ("LAUNCHWAY_TOKEN", admin.as_str()),
        ("LAUNCHWAY_KNOWN_HOSTS", pins_text),
    ];

    // The first connection pins the certificate and says so.
    let first = remote(&home, &env, &["environments", "-p", "shop"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stderr).contains("pinned its certificate"),
        "{}",
        text(&first.stderr)
    );
    assert!(std::fs::read_to_string(&pins).unwrap().contains("SHA256:"));

    let releases = daemon.active_releases("shop", "main");
    let old_release = daemon.cli_ok(&["releases", "-p", "shop", "-e", "main"]);
    let old_release = old_release
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find(|w| w.starts_with('R') && w.len() == 10)
        })
        .next_back()
        .unwrap()
        .trim_start_matches('*')
        .to_owned();
    let activity = daemon.wait_idle("shop")["activities"][0]["id"].to_string();
    let activity = activity.trim_matches('"').to_owned();
    assert!(!releases.is_empty());

    let same: Vec<Vec<&str>> = vec![
        vec!["environments", "-p", "shop"],
        vec!["releases", "-p", "shop"],
        vec!["releases", "-p", "shop", "-e", "main"],
        vec!["releases", "info", &old_release],
        vec!["builds", "-p", "shop"],
        vec!["activities", "-p", "shop"],
        vec!["activity", "log", &activity],
        vec!["variable", "list", "-p", "shop"],
        vec!["backups", "-p", "shop"],
        vec!["crons", "-p", "shop", "-e", "main"],
        vec!["plan", "shop", "main"],
        vec!["environments", "-p", "nope"],
        vec!["releases", "info", "RNOTHING00"],
        vec!["activity", "log", "999999999"],
    ];
    for args in &same {
        let local = daemon.cli(args);
        let far = remote(&home, &env, args);
        assert_eq!(
            (text(&local.stdout), local.status.code()),
            (text(&far.stdout), far.status.code()),
            "`launchway {}` differs:\nsocket stderr: {}\nHTTP stderr: {}",
            args.join(" "),
            text(&local.stderr),
            text(&far.stderr)
        );
        if !local.status.success() {
            assert_eq!(text(&local.stderr), text(&far.stderr), "{args:?}");
        }
    }

    // Changes print the same too (numbers and ids aside).
    let changes: Vec<Vec<&str>> = vec![
        vec![
            "variable", "set", "-p", "shop", "-e", "main", "GREETING", "hi",
        ],
        vec!["redeploy", "-p", "shop", "-e", "main"],
        vec!["releases", "promote", &old_release],
    ];
    for args in &changes {
        let local = daemon.cli(args);
        daemon.wait_idle("shop");
        let far = remote(&home, &env, args);
        daemon.wait_idle("shop");
        assert!(local.status.success(), "{args:?}: {}", text(&local.stderr));
        assert_eq!(
            (normalized(&text(&local.stdout)), local.status.code()),
            (normalized(&text(&far.stdout)), far.status.code()),
            "`launchway {}` differs:\nsocket: {}{}\nHTTP: {}{}",
            args.join(" "),
            text(&local.stdout),
            text(&local.stderr),
            text(&far.stdout),
            text(&far.stderr)
        );
    }

    // A viewer's token reads, and is refused changes with the reason.
    let viewer = token(&daemon, &["--role", "viewer"]);
    let viewer_env = [
        ("LAUNCHWAY_URL", url.as_str()),
        ("LAUNCHWAY_TOKEN", viewer.as_str()),
        ("LAUNCHWAY_KNOWN_HOSTS", pins_text),
    ];
    let out = remote(&home, &viewer_env, &["releases", "-p", "shop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = remote(
        &home,
        &viewer_env,
        &["redeploy", "-p", "shop", "-e", "main"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("needs the admin role"),
        "{}",
        text(&out.stderr)
    );
    // What only the host's operator may do says so.
    let out = remote(&home, &env, &["project", "create", "blog"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("operator"),
        "{}",
        text(&out.stderr)
    );

    // A saved login is used by commands without LAUNCHWAY_URL.
    let out = remote(
        &home,
        &[
            ("LAUNCHWAY_TOKEN", admin.as_str()),
            ("LAUNCHWAY_KNOWN_HOSTS", pins_text),
        ],
        &["login", &url],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let saved = home.join(".config/launchway/remote.toml");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = remote(
        &home,
        &[("LAUNCHWAY_KNOWN_HOSTS", pins_text)],
        &["environments", "-p", "shop"],
    );
    assert_eq!(
        text(&out.stdout),
        daemon.cli_ok(&["environments", "-p", "shop"])
    );
    let out = remote(&home, &[], &["logout"]);
    assert!(out.status.success());
    assert!(!saved.exists());

    // A certificate that is not the pinned one is refused, with the file.
    std::fs::write(
        &pins,
        format!(
            "{} SHA256:{}\n",
            url.trim_start_matches("https://"),
            "0".repeat(64)
        ),
    )
    .unwrap();
    let out = remote(&home, &env, &["environments", "-p", "shop"]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(
        said.contains("changed") && said.contains(pins_text),
        "{said}"
    );
}
