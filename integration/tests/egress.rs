//! Package access for build hooks, end to end: the hook keeps having no
//! network; `launchway project set -p P build.egress=registries` gives it a
//! proxy that reaches only the daemon's allow-list. The "registries" are
//! servers of this test on `127.0.0.2`/`127.0.0.3` (host loopback addresses
//! the hook's `NO_PROXY` does not name), listed in `[build] egress_allow`.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use launchway_integration::{Daemon, http_fetch, serve_http_on};

const HOST: &str = "main.shop.localhost";
const REGISTRY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server on `ip` answering every path with `body`; its port and how
/// many requests it got.
fn serve_counting(ip: Ipv4Addr, body: &'static str) -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let port = serve_http_on(ip, move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        Some(("text/plain", body.as_bytes().to_vec()))
    });
    (port, hits)
}

/// One busybox app whose build hook runs `hook`, served by `httpd`.
fn busybox_app(hook: &str) -> String {
    let hook = hook.replace('\n', "\n        ");
    format!(
        r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        {hook}
    web:
      commands:
        start: httpd -f -p $PORT -h /app
"#
    )
}

fn latest_build(daemon: &Daemon) -> String {
    let list = daemon.cli_ok(&["builds", "-p", "shop"]);
    list.lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("no build listed:\n{list}"))
        .to_owned()
}

#[test]
fn hooks_have_no_network_until_the_project_opens_egress_to_the_allow_list() {
    let (registry, registry_hits) = serve_counting(REGISTRY, "package bytes\n");
    let (elsewhere, elsewhere_hits) = serve_counting(ELSEWHERE, "should never be read\n");
    let daemon = Daemon::start_with(&format!(
        "[build]\negress_allow = [\"127.0.0.2:{registry}\"]\n"
    ));
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    let fetch_registry =
        format!("wget -q -O fetched.txt http://127.0.0.2:{registry}/pkg.tgz\ncat fetched.txt");
    work.write(".upsun/config.yaml", busybox_app(&fetch_registry));
    work.commit("fetch from the registry");

    // The default: no network. The proxy refuses, the message names the setting.
    let out = work.push("main", &[]);
    let log = text(&out.stderr);
    assert!(!out.status.success(), "the push should fail:\n{log}");
    assert!(
        log.contains(&format!("Build egress: 127.0.0.2:{registry}: 1 refused")),
        "{log}"
    );
    assert!(
        log.contains("no network access")
            && log.contains("launchway project set -p shop build.egress=registries"),
        "{log}"
    );
    assert_eq!(registry_hits.load(Ordering::SeqCst), 0);

    // Bad settings change nothing.
    for (setting, said) in [
        (
            "build.egress=everything",
            "`everything` is not a value of build.egress: use one of none, registries",
        ),
        ("colour=blue", "`colour` is not a project setting"),
        ("build.egress", "is not KEY=VALUE"),
    ] {
        let out = daemon.cli(&["project", "set", "-p", "shop", setting]);
        assert!(!out.status.success(), "{setting} was accepted");
        assert!(text(&out.stderr).contains(said), "{}", text(&out.stderr));
    }
    let shown = daemon.cli_ok(&["project", "get", "-p", "shop"]);
    assert!(
        shown
            .lines()
            .any(|l| l.split_whitespace().eq(["build.egress", "none"])),
        "{shown}"
    );
    let set = daemon.cli_ok(&["project", "set", "-p", "shop", "build.egress=registries"]);
    assert!(
        set.lines()
            .any(|l| l.split_whitespace().eq(["build.egress", "registries"])),
        "{set}"
    );

    // Registries: the listed one is reached, counted in the log and the record.
    work.write("README", "egress on\n");
    work.commit("again, with egress");
    let log = work.push_ok("main", &[]);
    assert!(log.contains("Build egress: package registries"), "{log}");
    assert!(log.contains("package bytes"), "{log}");
    assert!(
        log.contains(&format!(
            "Build egress: 127.0.0.2:{registry}: 1 connection, "
        )),
        "{log}"
    );
    assert_eq!(registry_hits.load(Ordering::SeqCst), 1);
    let info = daemon.cli_ok(&["builds", "info", &latest_build(&daemon)]);
    let row = info
        .lines()
        .find(|l| l.contains(&format!("127.0.0.2:{registry}")))
        .unwrap_or_else(|| panic!("no egress row:\n{info}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &columns[..4],
        ["web", &format!("127.0.0.2:{registry}"), "1", "0"]
    );
    let served = http_fetch(daemon.router_addr(), HOST, "/fetched.txt").unwrap();
    assert_eq!(served.body, "package bytes\n", "{served:?}");

    // Anything else stays refused: the build fails, the release serves on.
    work.write(
        ".upsun/config.yaml",
        busybox_app(&format!(
            "wget -q -O other.txt http://127.0.0.3:{elsewhere}/x\necho GOT-IT"
        )),
    );
    work.commit("fetch from elsewhere");
    let out = work.push("main", &[]);
    let log = text(&out.stderr);
    assert!(!out.status.success(), "the push should fail:\n{log}");
    assert!(!log.contains("GOT-IT"), "{log}");
    assert!(
        log.contains(&format!("Build egress: 127.0.0.3:{elsewhere}: 1 refused")),
        "{log}"
    );
    assert!(
        log.contains(&format!("asked for 127.0.0.3:{elsewhere}")) && log.contains("egress_allow"),
        "{log}"
    );
    assert_eq!(
        elsewhere_hits.load(Ordering::SeqCst),
        0,
        "a refused host was dialled"
    );
    let info = daemon.cli_ok(&["builds", "info", &latest_build(&daemon)]);
    assert!(info.contains("failed"), "{info}");
    let row = info
        .lines()
        .find(|l| l.contains(&format!("127.0.0.3:{elsewhere}")))
        .unwrap_or_else(|| panic!("no egress row:\n{info}"));
    assert_eq!(
        &row.split_whitespace().collect::<Vec<_>>()[..4],
        ["web", &format!("127.0.0.3:{elsewhere}"), "0", "1"]
    );
    let served = http_fetch(daemon.router_addr(), HOST, "/fetched.txt").unwrap();
    assert_eq!(served.body, "package bytes\n", "{served:?}");
}

/// `lw-greet 1.0.0` as an npm tarball.
fn greet_tarball() -> Vec<u8> {
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, content) in [
        (
            "package/package.json",
            r#"{"name":"lw-greet","version":"1.0.0","main":"index.js"}"#,
        ),
        (
            "package/index.js",
            "module.exports = (who) => `hello ${who} from lw-greet 1.0.0\\n`;\n",
        ),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        archive
            .append_data(&mut header, name, content.as_bytes())
            .unwrap();
    }
    archive.into_inner().unwrap().finish().unwrap()
}

/// A Node app in Upsun's layout whose build hook runs `npm ci` against a
/// registry of its own (`.npmrc`), reached through the egress proxy.
#[test]
fn npm_ci_installs_from_a_registry_through_the_egress_proxy() {
    use base64::Engine as _;
    use sha2::Digest as _;

    let tarball = greet_tarball();
    let integrity = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&tarball))
    );
    let port_cell = Arc::new(std::sync::OnceLock::<u16>::new());
    let tarballs = Arc::new(AtomicUsize::new(0));
    let port = {
        let port_cell = port_cell.clone();
        let tarballs = tarballs.clone();
        let tarball = tarball.clone();
        let integrity = integrity.clone();
        serve_http_on(REGISTRY, move |path| {
            let port = port_cell.get().copied().unwrap_or_default();
            match path {
                "/lw-greet" => Some((
                    "application/json",
                    format!(
                        r#"{{"name":"lw-greet","dist-tags":{{"latest":"1.0.0"}},"versions":{{"1.0.0":{{"name":"lw-greet","version":"1.0.0","dist":{{"tarball":"http://127.0.0.2:{port}/lw-greet/-/lw-greet-1.0.0.tgz","integrity":"{integrity}"}}}}}}}}"#
                    )
                    .into_bytes(),
                )),
                "/lw-greet/-/lw-greet-1.0.0.tgz" => {
                    tarballs.fetch_add(1, Ordering::SeqCst);
                    Some(("application/octet-stream", tarball.clone()))
                }
                _ => None,
            }
        })
    };
    port_cell.set(port).unwrap();

    let daemon = Daemon::start_with(&format!(
        "[build]\negress_allow = [\"127.0.0.2:{port}\"]\n[deploy]\nstart_timeout_secs = 60\n"
    ));
    let work = daemon.admin_work("shop");
    daemon.cli_ok(&["project", "set", "-p", "shop", "build.egress=registries"]);
    work.write(
        ".upsun/config.yaml",
        r#"applications:
  app:
    type: "nodejs:20"
    build:
      flavor: none
    hooks:
      build: |
        set -e
        npm ci --no-audit --no-fund
    web:
      commands:
        start: node server.js
"#,
    );
    work.write(".npmrc", format!("registry=http://127.0.0.2:{port}/\n"));
    work.write(
        "package.json",
        r#"{"name":"app","version":"1.0.0","private":true,"dependencies":{"lw-greet":"1.0.0"}}"#,
    );
    work.write(
        "package-lock.json",
        format!(
            r#"{{
  "name": "app",
  "version": "1.0.0",
  "lockfileVersion": 3,
  "requires": true,
  "packages": {{
    "": {{ "name": "app", "version": "1.0.0", "dependencies": {{ "lw-greet": "1.0.0" }} }},
    "node_modules/lw-greet": {{
      "version": "1.0.0",
      "resolved": "http://127.0.0.2:{port}/lw-greet/-/lw-greet-1.0.0.tgz",
      "integrity": "{integrity}"
    }}
  }}
}}
"#
        ),
    );
    work.write(
        "server.js",
        "const http = require('http');\nconst greet = require('lw-greet');\nhttp.createServer((req, res) => res.end(greet('upsun'))).listen(process.env.PORT);\n",
    );
    work.commit("node app");
    let log = work.push_ok("main", &[]);
    assert!(log.contains("added 1 package"), "{log}");
    assert!(
        log.contains(&format!("Build egress: 127.0.0.2:{port}: ")),
        "{log}"
    );
    assert_eq!(tarballs.load(Ordering::SeqCst), 1);
    let page = http_fetch(daemon.router_addr(), HOST, "/").unwrap();
    assert_eq!(page.body, "hello upsun from lw-greet 1.0.0\n", "{page:?}");
}
