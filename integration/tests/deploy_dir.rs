//! Deploys from CI without `git push` (issue 23): `launchway deploy DIR`
//! with a deploy key over the HTTP API sends the checkout (what
//! `.gitignore` lets through), which is validated as a push is, built as a
//! commit of the environment (an unchanged tree reuses its build) and
//! served; an invalid configuration is refused with its position and
//! changes nothing.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use launchway_integration::{Daemon, http_get, launchway_bin};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const APP: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: echo "building from an upload"
    web:
      commands:
        start: httpd -f -p $PORT -h /app
"#;

fn remote(home: &Path, url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(launchway_bin())
        .env_remove("LAUNCHWAY_CONFIG")
        .env("HOME", home)
        .env("LAUNCHWAY_URL", url)
        .env("LAUNCHWAY_TOKEN", token)
        .args(args)
        .output()
        .unwrap()
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
}

#[test]
fn a_checkout_is_deployed_by_a_deploy_key_reused_when_unchanged_and_refused_when_invalid() {
    let daemon = Daemon::start_with("[http]\nlisten = \"127.0.0.1:0\"\n");
    let url = format!("https://{}", daemon.http_api_addr());
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    work.write(".upsun/config.yaml", APP);
    work.write("index.html", "pushed\n");
    work.commit("pushed");
    work.push_ok("main", &[]);
    daemon.wait_idle("shop");
    let deploy_key = daemon
        .cli_ok(&[
            "token",
            "create",
            "-p",
            "shop",
            "--role",
            "admin",
            "--deploy-key",
        ])
        .trim()
        .to_owned();
    let home = daemon.scratch("ci");

    // A CI checkout: its own git repository, an ignored file.
    let checkout = daemon.scratch("checkout");
    git(&checkout, &["init", "-q"]);
    std::fs::create_dir_all(checkout.join(".upsun")).unwrap();
    std::fs::write(checkout.join(".upsun/config.yaml"), APP).unwrap();
    std::fs::write(checkout.join("index.html"), "from CI\n").unwrap();
    std::fs::write(checkout.join(".gitignore"), "secret.txt\n").unwrap();
    std::fs::write(checkout.join("secret.txt"), "do not ship\n").unwrap();
    let dir = checkout.to_str().unwrap();

    let out = remote(&home, &url, &deploy_key, &["deploy", "-p", "shop", dir]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("building from an upload"), "{said}");
    let router = daemon.router_addr();
    assert_eq!(
        http_get(router, "main.shop.localhost", "/index.html").unwrap(),
        (200, "from CI\n".to_owned())
    );
    let (status, _) = http_get(router, "main.shop.localhost", "/secret.txt").unwrap();
    assert_eq!(status, 404, "an ignored file was uploaded");

    // The same tree again: its build is reused, nothing is rebuilt.
    let out = remote(&home, &url, &deploy_key, &["deploy", "-p", "shop", dir]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("Reusing existing build"), "{said}");
    assert!(!said.contains("building from an upload"), "{said}");

    // An invalid configuration: refused with its position, nothing changes.
    let activities = daemon.cli_ok(&["activities", "-p", "shop"]);
    std::fs::write(
        checkout.join(".upsun/config.yaml"),
        APP.replace(
            "type: \"python:3.11\"",
            "type: \"python:3.11\"\n    colour: blue",
        ),
    )
    .unwrap();
    std::fs::write(checkout.join("index.html"), "broken\n").unwrap();
    let out = remote(&home, &url, &deploy_key, &["deploy", "-p", "shop", dir]);
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(said.contains(".upsun/config.yaml:"), "{said}");
    assert!(said.contains("colour"), "{said}");
    assert_eq!(daemon.cli_ok(&["activities", "-p", "shop"]), activities);
    assert_eq!(
        http_get(router, "main.shop.localhost", "/index.html").unwrap(),
        (200, "from CI\n".to_owned())
    );

    // `build DIR` builds without deploying; the operator's socket works too.
    std::fs::write(checkout.join(".upsun/config.yaml"), APP).unwrap();
    let out = daemon.cli(&["build", "-p", "shop", dir]);
    let said = text(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(
        http_get(router, "main.shop.localhost", "/index.html").unwrap(),
        (200, "from CI\n".to_owned())
    );
    // It left a release waiting for a promotion (Convox's `build`), which
    // the deploy key may promote.
    let release = said
        .split("release ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    assert!(release.starts_with('R'), "{said}");
    let listed = daemon.cli_ok(&["releases", "-p", "shop", "-e", "main"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&release) && l.contains("pending")),
        "{listed}"
    );
    let out = remote(&home, &url, &deploy_key, &["releases", "promote", &release]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    daemon.wait_idle("shop");
    assert_eq!(
        http_get(router, "main.shop.localhost", "/index.html").unwrap(),
        (200, "broken\n".to_owned())
    );
    let listed = daemon.cli_ok(&["releases", "-p", "shop", "-e", "main"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&release) && l.contains("active")),
        "{listed}"
    );

    // A viewer's token may not deploy.
    let viewer = daemon
        .cli_ok(&["token", "create", "-p", "shop", "--role", "viewer"])
        .trim()
        .to_owned();
    let out = remote(&home, &url, &viewer, &["deploy", "-p", "shop", dir]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("needs the admin role"),
        "{}",
        text(&out.stderr)
    );
}
