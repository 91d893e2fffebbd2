//! The web console in a real browser (issue 23): Debian's chromium driven
//! through chromedriver's WebDriver protocol (spoken here over a plain TCP
//! connection: a handful of JSON calls). A key signs in with the one-time
//! link `ssh git@host login` prints, opens the environment tree, watches a
//! push's build log arrive live on the activity page, rolls back to an older
//! release and sees it served; a forged POST without the CSRF token is
//! refused, and a viewer's page has no buttons. Every page visited is saved
//! as a PNG under `target/test-output/console/`.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use launchway_integration::{Daemon, http_get, pause, workspace};
use serde_json::{Value, json};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless chromium behind its chromedriver.
struct Browser {
    driver: Child,
    address: SocketAddr,
    session: String,
    shots: PathBuf,
}

impl Browser {
    fn start(shots: PathBuf) -> Browser {
        std::fs::create_dir_all(&shots).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/setup.sh test installs chromium-driver)");
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut browser = Browser {
            driver,
            address,
            session: String::new(),
            shots,
        };
        let started = Instant::now();
        while browser
            .raw("GET", "/status", None)
            .map_or(true, |(status, _)| status != 200)
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            pause();
        }
        let created = browser.call(
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--window-size=1280,1000",
                             "--no-proxy-server"]
                }
            }}})),
        );
        browser.session = created["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
        let mut stream = TcpStream::connect(self.address)?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.address,
            body.len()
        )?;
        // chromedriver keeps the connection open whatever the request says:
        // read the head, then as many bytes as it announces.
        let mut answer = Vec::new();
        let mut buffer = [0u8; 64 * 1024];
        let head_end = loop {
            if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                break answer.len();
            }
            answer.extend_from_slice(&buffer[..read]);
        };
        let length = text(&answer[..head_end])
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())
                    .flatten()
            })
            .unwrap_or(0);
        while answer.len() < head_end + length {
            let read = stream.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..read]);
        }
        let answer = text(&answer);
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let json = answer
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str(body).ok())
            .unwrap_or(Value::Null);
        Ok((status, json))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.raw(method, path, body.as_ref()).unwrap();
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({"url": url})));
    }

    fn url(&self) -> String {
        self.call("GET", &self.at("/url"), None)
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn find(&self, css: &str) -> Option<String> {
        let (status, answer) = self
            .raw(
                "POST",
                &self.at("/element"),
                Some(&json!({"using": "css selector", "value": css})),
            )
            .unwrap();
        (status == 200).then(|| answer["value"][ELEMENT].as_str().unwrap().to_owned())
    }

    fn text_of(&self, css: &str) -> String {
        let Some(element) = self.find(css) else {
            return String::new();
        };
        self.call("GET", &self.at(&format!("/element/{element}/text")), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let element = self.find(css)?;
        self.call(
            "GET",
            &self.at(&format!("/element/{element}/attribute/{name}")),
            None,
        )
        .as_str()
        .map(str::to_owned)
    }

    fn click(&self, css: &str) {
        let element = self
            .find(css)
            .unwrap_or_else(|| panic!("no `{css}` on {}", self.url()));
        self.call(
            "POST",
            &self.at(&format!("/element/{element}/click")),
            Some(json!({})),
        );
    }

    /// Waits until `css`'s text satisfies `ok`; returns it.
    fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let found = self.text_of(css);
            if ok(&found) {
                return found;
            }
            if started.elapsed() > Duration::from_secs(90) {
                self.screenshot("failure");
                panic!(
                    "waited for {what} in `{css}` on {}; it shows: {found}; the page: {}",
                    self.url(),
                    self.text_of("body")
                );
            }
            pause();
        }
    }

    fn screenshot(&self, name: &str) {
        let data = self.call("GET", &self.at("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap())
            .unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.call("GET", &self.at("/cookie"), None)
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["value"].as_str().map(str::to_owned))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const APP: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        echo "hook starts for $(cat /app/index.html)"
        sleep 8
        echo "hook ends"
    web:
      commands:
        start: httpd -f -p $PORT -h /app
"#;

fn served(daemon: &Daemon) -> String {
    http_get(daemon.router_addr(), "main.shop.localhost", "/index.html")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// `curl` against the console: (status, headers, body).
fn curl(address: SocketAddr, args: &[&str]) -> (u16, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-sk", "--noproxy", "*", "--max-time", "20", "-D"])
        .arg(&headers)
        .args(args)
        .output()
        .unwrap();
    let head = std::fs::read_to_string(&headers).unwrap_or_default();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer from {address}: {}", text(&out.stderr)));
    (status, head, text(&out.stdout))
}

fn releases(daemon: &Daemon) -> Vec<(String, String)> {
    // ID … STATUS, newest first.
    daemon
        .cli_ok(&["releases", "-p", "shop", "-e", "main"])
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            Some((cells.first()?.to_string(), line.to_owned()))
        })
        .collect()
}

fn shots_dir() -> PathBuf {
    workspace().join("target/test-output/console")
}

fn wait_for_running_activity(daemon: &Daemon) -> u64 {
    let started = Instant::now();
    loop {
        let listed = daemon.cli_ok(&["activities", "-p", "shop", "--json"]);
        let activities: Value = serde_json::from_str(&listed).unwrap_or(Value::Null);
        if let Some(id) = activities
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["state"] == "in_progress")
            .and_then(|a| a["id"].as_u64())
        {
            return id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no running activity: {listed}"
        );
        pause();
    }
}

#[test]
fn a_key_signs_in_by_link_watches_a_push_live_and_rolls_back() {
    let daemon = Daemon::start_with("[http]\nlisten = \"127.0.0.1:0\"\n");
    let api = daemon.http_api_addr();
    let base = format!("https://{api}");
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    daemon.cli_ok(&[
        "variable",
        "set",
        "-p",
        "shop",
        "env:API_SECRET",
        "hunter2-sensitive",
        "--sensitive",
    ]);
    daemon.cli_ok(&[
        "variable",
        "set",
        "-p",
        "shop",
        "env:GREETING",
        "hello-visible",
    ]);
    work.write(".upsun/config.yaml", APP);
    work.write("index.html", "v1\n");
    work.commit("v1");
    work.push_ok("main", &[]);
    daemon.wait_idle("shop");
    work.write("index.html", "v2\n");
    work.commit("v2");
    work.push_ok("main", &[]);
    daemon.wait_idle("shop");
    assert_eq!(served(&daemon), "v2\n");

    // The link, minted over SSH by a key that can push.
    let alice = daemon.existing_key("alice");
    let out = daemon.ssh(&alice, &["git@127.0.0.1", "login"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let link = text(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        link.starts_with(&format!("{base}/console/login?code=")),
        "{link}"
    );
    // With the default settings, webhooks may not point at this host or at
    // link-local addresses (a project admin probing the server's services).
    for url in [
        "http://127.0.0.1:9/",
        "http://localhost/hook",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
    ] {
        let out = daemon.cli(&["webhook", "add", "-p", "shop", url]);
        assert!(!out.status.success(), "{url} was accepted");
        assert!(
            text(&out.stderr).contains("allow_local"),
            "{}",
            text(&out.stderr)
        );
    }
    // A viewer's key gets none.
    let viewer_key = daemon.key("victor", "shop", "viewer");
    let refused = daemon.ssh(&viewer_key, &["git@127.0.0.1", "login"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("keys that can push"),
        "{}",
        text(&refused.stderr)
    );

    let browser = Browser::start(shots_dir());
    // Signed out, the console sends you to sign in.
    browser.goto(&format!("{base}/console/"));
    assert!(
        browser.url().ends_with("/console/login"),
        "{}",
        browser.url()
    );
    browser.goto(&link);
    // The page names the key the link was made for.
    let owner = browser.text_of("#owner");
    assert!(owner.starts_with("alice (SHA256:"), "{owner}");
    browser.screenshot("1-login");
    browser.click("#sign-in");
    let projects = browser.wait_text("ul.projects", "the project list", |t| t.contains("shop"));
    assert!(projects.contains("shop"), "{projects}");
    browser.screenshot("2-projects");
    // The link was used up.
    let (status, _, body) = curl(
        api,
        &[
            "-d",
            &format!("code={}", link.split("code=").nth(1).unwrap()),
            &format!("{base}/console/login"),
        ],
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unknown, used or expired"), "{body}");

    // The environment tree.
    browser.click("ul.projects a");
    let tree = browser.wait_text("#environments", "the environment tree", |t| {
        t.contains("main")
    });
    assert!(tree.contains("active"), "{tree}");
    browser.screenshot("3-environments");

    // A push, watched live on its activity's page.
    work.write("index.html", "v3\n");
    work.commit("v3");
    let pusher = {
        let command = daemon.ssh_command(&alice);
        let dir = work.dir.clone();
        std::thread::spawn(move || {
            launchway_integration::Work::open(dir)
                .with_ssh(command)
                .push("main", &[])
        })
    };
    let activity = wait_for_running_activity(&daemon);
    browser.goto(&format!(
        "{base}/console/projects/shop/activities/{activity}"
    ));
    browser.wait_text("#log", "the hook's first line", |t| {
        t.contains("hook starts for v3")
    });
    assert!(
        !pusher.is_finished(),
        "the log line reached the browser only after the push ended: not live"
    );
    browser.screenshot("4-activity-live");
    let pushed = pusher.join().unwrap();
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    let log = browser.wait_text("#log", "the end of the log", |t| t.contains("hook ends"));
    let started = Instant::now();
    while browser.attribute("#log", "data-done").as_deref() != Some("true") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the log never ended: {log}"
        );
        pause();
    }
    // Each line once: a reconnect would have resumed, not repeated.
    assert_eq!(
        browser
            .text_of("#log")
            .matches("hook starts for v3")
            .count(),
        1
    );
    browser.screenshot("5-activity-done");
    daemon.wait_idle("shop");
    assert_eq!(served(&daemon), "v3\n");

    // Roll back to v1 (the oldest release) from the environment page.
    let listed = releases(&daemon);
    let (v1, _) = listed.last().unwrap().clone();
    browser.goto(&format!("{base}/console/projects/shop/environments/main"));
    browser.wait_text("#releases", "the releases", |t| t.contains("Roll back"));
    browser.screenshot("6-environment");
    let variables = browser.text_of("table.variables");
    assert!(
        variables.contains("GREETING") && variables.contains("hello-visible"),
        "{variables}"
    );
    assert!(
        variables.contains("API_SECRET") && variables.contains("sensitive: never shown"),
        "{variables}"
    );
    assert!(!variables.contains("hunter2"), "{variables}");
    browser.click(&format!("tr[data-release=\"{v1}\"] a.button"));
    browser.wait_text("h1", "the confirmation", |t| t.contains(&v1));
    browser.screenshot("7-confirm");

    // Before confirming: a forged POST (no CSRF token, or a wrong one) with
    // the browser's own cookie is refused and changes nothing.
    let cookie = browser
        .cookie("__Host-lw_console")
        .expect("the session cookie");
    let promote = format!("{base}/console/projects/shop/releases/{v1}/promote");
    for form in ["", "csrf=0123456789abcdef"] {
        let (status, _, body) = curl(
            api,
            &[
                "-H",
                &format!("Cookie: __Host-lw_console={cookie}"),
                "-d",
                form,
                &promote,
            ],
        );
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("CSRF"), "{body}");
    }
    // And from another origin, even with the token.
    let csrf = browser.attribute("input[name=csrf]", "value").unwrap();
    let (status, _, _) = curl(
        api,
        &[
            "-H",
            &format!("Cookie: __Host-lw_console={cookie}"),
            "-H",
            "Origin: https://evil.example",
            "-d",
            &format!("csrf={csrf}"),
            &promote,
        ],
    );
    assert_eq!(status, 403);
    assert_eq!(releases(&daemon).len(), listed.len());
    assert_eq!(served(&daemon), "v3\n");

    browser.click("#confirm");
    browser.wait_text("#state", "the rollback's end", |t| {
        t.contains("complete") || t.contains("success") || t.contains("failure")
    });
    daemon.wait_idle("shop");
    browser.screenshot("8-rollback");
    assert_eq!(served(&daemon), "v1\n");
    browser.goto(&format!("{base}/console/projects/shop/environments/main"));
    let serving = browser.text_of("#serving");
    assert_eq!(serving, v1);

    // Builds and their logs.
    browser.goto(&format!("{base}/console/projects/shop/builds"));
    browser.click("table.builds a");
    browser.wait_text("#build-log", "a build log", |t| t.contains("hook"));
    browser.screenshot("9-build");

    // The live log's endpoint resumes where a dropped connection stopped
    // (EventSource sends `Last-Event-ID`): the rest, nothing twice.
    let events_url = format!("{base}/console/projects/shop/activities/{activity}/events");
    let whole = curl(
        api,
        &[
            "-H",
            &format!("Cookie: __Host-lw_console={cookie}"),
            &events_url,
        ],
    )
    .2;
    let ids: Vec<u64> = whole
        .lines()
        .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
        .collect();
    assert!(ids.len() > 3, "{whole}");
    let middle = ids[ids.len() / 2];
    let rest = curl(
        api,
        &[
            "-H",
            &format!("Cookie: __Host-lw_console={cookie}"),
            "-H",
            &format!("Last-Event-ID: {middle}"),
            &events_url,
        ],
    )
    .2;
    let rest_ids: Vec<u64> = rest
        .lines()
        .filter_map(|l| l.strip_prefix("id: ")?.parse().ok())
        .collect();
    assert_eq!(rest_ids, ids[ids.len() / 2 + 1..].to_vec(), "{rest}");

    // Every page carries the strict policy.
    let (_, head, _) = curl(
        api,
        &[
            "-H",
            &format!("Cookie: __Host-lw_console={cookie}"),
            &format!("{base}/console/"),
        ],
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );

    // A viewer (signed in with a token) sees releases but no button, and no
    // sensitive value.
    let viewer_token = daemon
        .cli_ok(&["token", "create", "-p", "shop", "--role", "viewer"])
        .trim()
        .to_owned();
    let (status, head, _) = curl(
        api,
        &[
            "-d",
            &format!("token={viewer_token}"),
            &format!("{base}/console/login"),
        ],
    );
    assert_eq!(status, 303, "{head}");
    let viewer_cookie = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie:")
                .then(|| l.to_owned())
        })
        .and_then(|l| {
            l.split_once("__Host-lw_console=")
                .map(|(_, v)| v.split(';').next().unwrap_or_default().to_owned())
        })
        .unwrap();
    let (status, _, page) = curl(
        api,
        &[
            "-H",
            &format!("Cookie: __Host-lw_console={viewer_cookie}"),
            &format!("{base}/console/projects/shop/environments/main"),
        ],
    );
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&v1) && !page.contains("Roll back") && !page.contains("Promote"),
        "{page}"
    );
    assert!(!page.contains("hunter2-sensitive"));
    assert!(!page.contains(&viewer_token));
    // The viewer's own POST, with its own CSRF token, is refused by the core.
    let viewer_csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let (status, _, body) = curl(
        api,
        &[
            "-H",
            &format!("Cookie: __Host-lw_console={viewer_cookie}"),
            "-d",
            &format!("csrf={viewer_csrf}"),
            &promote,
        ],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs the admin role"), "{body}");
    // Random addresses and forms, signed in as an admin (with the right
    // CSRF token half of the time): every answer is a redirect or a refusal
    // with a page, never a server error, and nothing changes.
    fuzz(api, &cookie, &csrf, &v1);
    assert_eq!(releases(&daemon).len(), listed.len());
    assert_eq!(served(&daemon), "v1\n");

    // Signing out ends the session.
    let (status, _, _) = curl(
        api,
        &[
            "-H",
            &format!("Cookie: __Host-lw_console={viewer_cookie}"),
            "-d",
            &format!("csrf={viewer_csrf}"),
            &format!("{base}/console/logout"),
        ],
    );
    assert_eq!(status, 303);
    let (status, head, _) = curl(
        api,
        &[
            "-H",
            &format!("Cookie: __Host-lw_console={viewer_cookie}"),
            &format!("{base}/console/"),
        ],
    );
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("/console/login"));
}

fn fuzz(api: SocketAddr, cookie: &str, csrf: &str, release: &str) {
    use rand::RngExt as _;
    const PIECES: &[&str] = &[
        "%",
        "%2",
        "%zz",
        "%00",
        "%2F",
        "..",
        ".",
        "%C3%A9",
        "%FF",
        "a",
        "'",
        "%22",
        "%3C",
        ";",
        "=",
        "&",
        "?",
        "0",
        "18446744073709551616",
        "-1",
        "shop",
        "main",
        "promote",
        "events",
        "activities",
        "builds",
        "releases",
        "environments",
        "projects",
    ];
    let mut rng = launchway_integration::fuzz_rng();
    let junk = |rng: &mut rand::rngs::StdRng| -> String {
        (0..rng.random_range(0..4))
            .map(|_| PIECES[rng.random_range(0..PIECES.len())])
            .collect()
    };
    let shapes = [
        "/console/projects/{}",
        "/console/projects/shop/environments/{}",
        "/console/projects/{}/releases/{}/promote",
        "/console/projects/shop/activities/{}",
        "/console/projects/shop/activities/{}/events",
        "/console/projects/shop/builds/{}",
        "/console/{}/{}",
        "/console/static/{}",
        "/console/login?code={}",
        "/console/projects/shop/builds?cursor={}",
    ];
    let mut failures = Vec::new();
    for round in 0..150 {
        let shape = shapes[rng.random_range(0..shapes.len())];
        let mut path = shape.to_owned();
        while path.contains("{}") {
            let piece = junk(&mut rng);
            path = path.replacen("{}", &piece, 1);
        }
        if round % 5 == 0 {
            // A real release of another project's name, or this one's.
            path = format!(
                "/console/projects/{}/releases/{release}/promote",
                junk(&mut rng)
            );
        }
        let post = round % 2 == 0;
        let token = if round % 4 == 0 {
            csrf.to_owned()
        } else {
            junk(&mut rng)
        };
        let form = format!("csrf={token}&{}={}", junk(&mut rng), junk(&mut rng));
        let url = format!("https://{api}{path}");
        let mut args = vec![
            "-H".to_owned(),
            format!("Cookie: __Host-lw_console={cookie}"),
            "--path-as-is".to_owned(),
        ];
        if post {
            args.extend(["-d".to_owned(), form.clone()]);
        }
        args.push(url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, _, body) = curl(api, &args);
        let refused_well = (300..500).contains(&status) || (status == 200 && !post);
        if !refused_well || body.contains("panicked") {
            failures.push(format!(
                "{} {path} ({form}): {status} {body}",
                if post { "POST" } else { "GET" }
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
