//! containerd killed under a running daemon (issue 8). The daemon runs its
//! own (embedded) containerd, so that killing it touches no other test; a
//! failpoint command kills it with SIGKILL at a step of a push. The daemon
//! starts it again, the interrupted deploy is finished (or the build fails
//! with the old release serving), requests held meanwhile are served, no
//! container is left over, and the next push works. A second test runs
//! containerd itself, as a host's service manager would, and starts it
//! again only three seconds after it dies.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use launchway_containerd::embedded::EmbeddedContainerd;
use launchway_integration::{Daemon, Work, failpoints_bin, http_get, pause};

const CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        echo "building $(cat version)"
        mkdir -p public
        cp version public/index.html
      deploy: |
        echo "starting the deploy hook"
        sleep 2
        echo "deploying $(cat public/index.html)"
      post_deploy: echo "post_deploy ran"
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
"#;

const HOST: &str = "main.shop.localhost";

/// How a push containerd dies under ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    /// The build fails; the previous release keeps serving.
    BuildFails,
    /// The deploy stops; a recovery activity deploys the release once
    /// containerd is back.
    DeployResumed,
    /// The deploy waits for containerd and runs its hook then.
    HookWaits,
    /// The hook runs through the outage; the deploy waits for its end.
    HookRunsThrough,
}

/// The steps containerd is killed at.
const OUTAGES: &[(&str, Outcome)] = &[
    ("build.hook", Outcome::BuildFails),
    ("deploy.stopping_old", Outcome::DeployResumed),
    ("deploy.starting", Outcome::DeployResumed),
    ("deploy.deploy_hook", Outcome::HookWaits),
    ("deploy.exec_output", Outcome::HookRunsThrough),
    ("deploy.post_deploy", Outcome::HookWaits),
];

fn commit(work: &Work, version: &str) {
    work.write(".upsun/config.yaml", CONFIG);
    work.write("version", version);
    work.commit(version);
}

/// The pid of the containerd running on `config`.
fn containerd_pid(daemon: &Daemon, config: &Path) -> u32 {
    let wanted = format!("--config\0{}", config.display());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&wanted) {
                return pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no containerd runs on {}:\n{}",
            config.display(),
            daemon.log()
        );
        pause();
    }
}

/// Waits (up to a minute) until `done`.
fn wait_for(done: impl Fn() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{}", what());
        pause();
    }
}

fn arm(dir: &Path, step: &str, pid: u32) {
    std::fs::write(dir.join(format!("arm-{step}")), pid.to_string()).unwrap();
}

#[test]
fn containerd_killed_during_a_push_is_restarted_and_the_deploy_finished() {
    let mut daemon = Daemon::prepare(
        failpoints_bin(),
        "[containerd]\nsocket = \"/nonexistent/containerd.sock\"\n\
         [deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n",
    );
    let config = daemon.data_dir().join("containerd/config.toml");
    push_through_outages(&mut daemon, &config, OUTAGES);
}

#[test]
fn a_containerd_of_its_own_restarted_later_is_found_again() {
    // The host's containerd, as systemd would run it: killed, started
    // again three seconds later by someone else.
    let host = tempfile::tempdir().unwrap();
    let containerd = Supervised::start(host.path());
    let mut daemon = Daemon::prepare(
        failpoints_bin(),
        &format!(
            "[containerd]\nsocket = \"{}\"\n\
             [deploy]\nstart_timeout_secs = 20\nstop_grace_secs = 2\n",
            containerd.socket.display()
        ),
    );
    let config = host.path().join("containerd/config.toml");
    push_through_outages(
        &mut daemon,
        &config,
        &[
            ("deploy.starting", Outcome::DeployResumed),
            ("deploy.exec_output", Outcome::HookRunsThrough),
        ],
    );
    assert!(containerd.restarts() >= 2);
    drop(daemon);
}

/// A containerd the test runs and starts again 3 s after it dies.
struct Supervised {
    socket: std::path::PathBuf,
    restarts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervised {
    fn start(dir: &Path) -> Supervised {
        use std::sync::atomic::Ordering;
        let restarts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (started, socket) = std::sync::mpsc::channel();
        let thread = {
            let (dir, restarts, stop) = (dir.to_path_buf(), restarts.clone(), stop.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let mut containerd = EmbeddedContainerd::start(&dir, Path::new("containerd"))
                        .await
                        .unwrap();
                    started.send(containerd.socket().to_path_buf()).unwrap();
                    while !stop.load(Ordering::SeqCst) {
                        if containerd.exited().is_some() {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            containerd.restart().await.unwrap();
                            restarts.fetch_add(1, Ordering::SeqCst);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let _ = containerd.stop().await;
                });
            })
        };
        Supervised {
            socket: socket.recv().unwrap(),
            restarts,
            stop,
            thread: Some(thread),
        }
    }

    fn restarts(&self) -> usize {
        self.restarts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The descriptions of the serving releases of main.
fn serving_releases(daemon: &Daemon) -> Vec<String> {
    let active = daemon.active_releases("shop", "main");
    active
        .into_iter()
        .map(|(_, description)| description)
        .collect()
}

/// Pushes a new version per step of `outages`, containerd (running on
/// `config`) killed at that step, and checks the outcome and the state.
fn push_through_outages(daemon: &mut Daemon, config: &Path, outages: &[(&str, Outcome)]) {
    // Each step kills containerd once, when the test has armed it.
    let arms = daemon.scratch("arms");
    let steps: Vec<&str> = outages.iter().map(|(step, _)| *step).collect();
    daemon.set_failpoint(Some(&steps.join(",")));
    daemon.set_failpoint_command(Some(&format!(
        "f={}/arm-$LAUNCHWAY_FAILPOINT_STEP; pid=$(cat $f 2>/dev/null) && rm -f $f && kill -9 $pid",
        arms.display()
    )));
    daemon.spawn();
    daemon.use_busybox_runtime("python:3.11");
    let work = daemon.admin_work("shop");
    commit(&work, "v0");
    work.push_ok("main", &[]);

    let mut serving = "v0".to_owned();
    for (index, &(step, outcome)) in outages.iter().enumerate() {
        let version = format!("v{}", index + 1);
        let killed = containerd_pid(daemon, config);
        arm(&arms, step, killed);
        commit(&work, &version);
        let out = work.push("main", &[]);
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !arms.join(format!("arm-{step}")).exists(),
            "{step}: the failpoint was not reached:\n{said}"
        );
        match outcome {
            Outcome::BuildFails => {
                assert!(!out.status.success(), "{step}: the push succeeded:\n{said}");
            }
            Outcome::DeployResumed => {
                assert!(!out.status.success(), "{step}: the push succeeded:\n{said}");
                assert!(
                    said.contains("containerd stopped answering"),
                    "{step}: {said}"
                );
            }
            Outcome::HookWaits | Outcome::HookRunsThrough => {
                assert!(out.status.success(), "{step}: the push failed:\n{said}");
                let listed = daemon.cli_ok(&["activities", "-p", "shop", "--json", "--limit", "1"]);
                let latest: serde_json::Value = serde_json::from_str(&listed).unwrap();
                let log = daemon.cli_ok(&["activity", "log", &latest[0]["id"].to_string()]);
                let hook_ran = match step {
                    "deploy.post_deploy" => "post_deploy ran".to_owned(),
                    _ => format!("deploying {version}"),
                };
                assert_eq!(log.matches(&hook_ran).count(), 1, "{step}: {log}");
                assert!(!log.contains("could not run"), "{step}: {log}");
                if step != "deploy.post_deploy" {
                    // The deploy waited for its hook's end before opening.
                    let ran = log.find(&hook_ran).unwrap();
                    assert!(
                        ran < log.find("Opening environment").unwrap(),
                        "{step}: {log}"
                    );
                }
                // A hook that started is waited for, never run again.
                let waited = log.contains("runs once it is back");
                assert_eq!(waited, outcome == Outcome::HookWaits, "{step}: {log}");
            }
        }
        // A request now is held until the release serves again.
        let (status, body) = http_get(daemon.router_addr(), HOST, "/").unwrap();
        assert_eq!(status, 200, "{step}: {body}\n{}", daemon.log());

        let activities = daemon.wait_idle("shop");
        if outcome == Outcome::DeployResumed {
            let resumed = activities.as_array().unwrap().iter().any(|a| {
                a["description"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("recovery: containerd stopped answering"))
                    && a["result"] == "success"
            });
            assert!(resumed, "{step}: no recovery activity: {activities:#}");
        }
        let expected = if outcome == Outcome::BuildFails {
            serving
        } else {
            version.clone()
        };
        let (status, body) = http_get(daemon.router_addr(), HOST, "/").unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, expected.as_str()),
            "{step}: {activities:#}\n{}",
            daemon.log()
        );
        assert_eq!(serving_releases(daemon), vec![expected.clone()], "{step}");
        wait_for(
            || daemon.log().matches("containerd answers again").count() > index,
            || format!("{step}: containerd is not back:\n{}", daemon.log()),
        );
        let restarted = containerd_pid(daemon, config);
        assert_ne!(restarted, killed, "{step}: containerd was not restarted");
        let apps = daemon.app_containers(Some("shop/main"));
        assert_eq!(apps.len(), 1, "{step}: app containers {apps:?}");
        wait_for(
            || daemon.all_containers() == apps,
            || format!("{step}: leftovers"),
        );
        serving = expected;
    }

    commit(&work, "after");
    work.push_ok("main", &[]);
    let (status, body) = http_get(daemon.router_addr(), HOST, "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "after"));
    assert_eq!(serving_releases(daemon), vec!["after".to_owned()]);
    let apps = daemon.app_containers(Some("shop/main"));
    assert_eq!(daemon.all_containers(), apps);
}
