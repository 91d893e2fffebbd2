//! The environment network: each process its own host with its own
//! address, `PORT=8888` for every app, `<relationship>.internal` in
//! `/etc/hosts`, and only declared relationships reachable.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use launchway_integration::{Daemon, http_get as get};

/// Three apps: `front` relates to `api`; `lone` relates to nothing.
/// Every deploy hook prints its own address, `front`'s and `api`'s probe
/// what they may and may not reach (`__LONE__` and `__FRONT__` are the
/// addresses of the previous deploy).
fn config(lone: &str, front: &str) -> String {
    let app = |name: &str, relationships: &str, probe: &str| {
        format!(
            r#"  {name}:
    type: "python:3.11"
    source:
      root: {name}
{relationships}    hooks:
      deploy: |
        echo "{name}-address=$(ip -o -4 addr show eth0 | awk '{{print $4}}' | cut -d/ -f1) port=$PORT"
{probe}    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app
"#
        )
    };
    let reach = |label: &str, target: &str| {
        format!(
            "        if (printf 'GET / HTTP/1.0\\r\\n\\r\\n'; sleep 1) | nc -w 2 {target} 2>&1 | grep -q served; then echo \"{label}: REACHED\"; else echo \"{label}: BLOCKED\"; fi\n"
        )
    };
    let front_probe = [
        "        backend=$(awk '/ backend.internal$/ || /\\tbackend.internal$/ {print $1}' /etc/hosts)\n        echo \"backend.internal is $backend\"\n".to_owned(),
        reach("front->api:80", "\"$backend\" 80"),
        reach("front->api:8888", "\"$backend\" 8888"),
        reach("front->lone", &format!("{lone} 8888")),
        reach("front->hub", "169.254.0.1 80"),
    ]
    .concat();
    let api_probe = reach("api->front", &format!("{front} 8888"));
    format!(
        "routes:\n  \"http://front.{{default}}/\": {{type: upstream, upstream: \"front:http\"}}\n  \"http://api.{{default}}/\": {{type: upstream, upstream: \"api:http\"}}\n  \"http://lone.{{default}}/\": {{type: upstream, upstream: \"lone:http\"}}\napplications:\n{}{}{}",
        app(
            "front",
            "    relationships:\n      backend: \"api:http\"\n",
            &front_probe
        ),
        app("api", "", &api_probe),
        app("lone", "", ""),
    )
}

fn address(log: &str, app: &str) -> String {
    log.lines()
        .find_map(|line| {
            line.split(&format!("{app}-address=")).nth(1).map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
        })
        .unwrap_or_else(|| panic!("no {app} address in {log}"))
}

#[test]
fn apps_reach_only_what_their_relationships_name() {
    let daemon = Daemon::start_with("[deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n");
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    for app in ["front", "api", "lone"] {
        work.write(&format!("{app}/index.html"), format!("{app} served\n"));
    }
    work.write(".upsun/config.yaml", config("169.254.0.2", "169.254.0.2"));
    work.commit("three apps");
    let log = work.push_ok("main", &[]);
    let (front, api, lone) = (
        address(&log, "front"),
        address(&log, "api"),
        address(&log, "lone"),
    );
    // Every app listens on 8888, each on an address of its own.
    assert!(log.contains("port=8888"), "{log}");
    assert!(front != api && api != lone && front != lone, "{log}");
    assert!(front.starts_with("169.254.") && api.starts_with("169.254."));
    assert!(log.contains(&format!("backend.internal is {api}")), "{log}");

    // Now probe the others' real addresses.
    work.write(".upsun/config.yaml", config(&lone, &front));
    work.commit("probe");
    let log = work.push_ok("main", &[]);
    // Addresses stay put across deploys.
    assert_eq!(address(&log, "lone"), lone, "{log}");
    assert_eq!(address(&log, "front"), front, "{log}");
    // The relationship reaches the app on port 80 (as on Upsun) and on its
    // own port, although it listens on 127.0.0.1 only.
    assert!(log.contains("front->api:80: REACHED"), "{log}");
    assert!(log.contains("front->api:8888: REACHED"), "{log}");
    // Undeclared: blocked, both ways and to the hub.
    assert!(log.contains("front->lone: BLOCKED"), "{log}");
    assert!(log.contains("api->front: BLOCKED"), "{log}");
    assert!(log.contains("front->hub: BLOCKED"), "{log}");

    // The router reaches each of them from the hub.
    let router = daemon.router_addr();
    for app in ["front", "api", "lone"] {
        let host = format!("{app}.main.shop.localhost");
        assert_eq!(
            get(router, &host, "/").unwrap(),
            (200, format!("{app} served\n"))
        );
    }
}
