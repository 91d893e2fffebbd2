//! A host getting ready: `scripts/setup.sh` reports what it lacks, and
//! `launchway doctor` fails the checks that matter with their fix.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};

use launchway_integration::{Daemon, launchway_bin, workspace};

fn setup_check(purpose: &str, admindir: &Path) -> Output {
    Command::new(workspace().join("scripts/setup.sh"))
        .args(["--check", purpose])
        .env("LAUNCHWAY_SETUP_DPKG_ADMINDIR", admindir)
        .output()
        .expect("setup.sh runs")
}

/// A copy of the host's dpkg database without the `package` stanza.
fn dpkg_without(package: &str, dir: &Path) {
    let status = std::fs::read_to_string("/var/lib/dpkg/status").expect("a Debian host");
    let kept: Vec<&str> = status
        .split("\n\n")
        .filter(|stanza| !stanza.starts_with(&format!("Package: {package}\n")))
        .collect();
    assert!(
        kept.len() < status.split("\n\n").count(),
        "{package} must be installed on the test host (scripts/setup.sh test installs it)"
    );
    std::fs::write(dir.join("status"), kept.join("\n\n")).expect("status written");
}

#[test]
fn setup_reports_a_missing_package_and_how_to_install_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The host as it is: everything `make test` needs is there.
    std::fs::copy("/var/lib/dpkg/status", dir.path().join("status")).expect("copy");
    let ready = setup_check("test", dir.path());
    let said = String::from_utf8_lossy(&ready.stderr);
    assert!(ready.status.success(), "{said}");
    assert!(said.contains("ready for 'test'"), "{said}");

    // mmdebstrap made to look missing: named, with the command that installs
    // it, exit status 1, and nothing installed (--check only reports).
    dpkg_without("mmdebstrap", dir.path());
    for purpose in ["run", "test", "ci"] {
        let missing = setup_check(purpose, dir.path());
        let said = String::from_utf8_lossy(&missing.stderr);
        assert_eq!(missing.status.code(), Some(1), "{said}");
        assert!(
            said.contains("missing Debian packages")
                && said.contains("apt-get install -y --no-install-recommends mmdebstrap"),
            "{said}"
        );
        assert!(!said.contains("installing"), "{said}");
    }
    // `build` does not need it.
    let build = setup_check("build", dir.path());
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let usage = setup_check("everything", dir.path());
    assert_eq!(usage.status.code(), Some(2));
}

/// `launchway --config SETTINGS doctor --json`: exit status and the checks
/// by name.
fn doctor(settings: &Path) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(launchway_bin())
        .arg("--config")
        .arg(settings)
        .args(["doctor", "--json"])
        .output()
        .expect("launchway doctor runs");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|error| {
        panic!(
            "doctor --json printed no JSON ({error}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|check| check["name"] == name))
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

fn text(check: &serde_json::Value, field: &str) -> String {
    check[field].as_str().unwrap_or_default().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Settings with a data directory and ports of the test's own.
fn settings(dir: &Path, data_dir: &Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("launchway.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n{extra}\n[ssh]\nlisten = \"127.0.0.1:{}\"\n[router]\nlisten = \"127.0.0.1:{}\"\n",
            data_dir.display(),
            free_port(),
            free_port()
        ),
    )
    .expect("settings written");
    path
}

#[test]
fn doctor_fails_a_containerd_that_does_not_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A socket that accepts connections into its backlog and never answers.
    let socket = dir.path().join("hung.sock");
    let _hung = UnixListener::bind(&socket).expect("socket bound");

    // Nothing answers and the embedded containerd cannot start: a failure,
    // with what to install.
    let path = settings(
        dir.path(),
        &dir.path().join("data"),
        &format!(
            "[containerd]\nsocket = \"{}\"\nbinary = \"/nonexistent/containerd\"\n",
            socket.display()
        ),
    );
    let (code, report) = doctor(&path);
    let containerd = check(&report, "containerd");
    assert_eq!(containerd["verdict"], "fail", "{containerd:#}");
    let detail = text(containerd, "detail");
    assert!(
        detail.contains("does not answer") && detail.contains(&socket.display().to_string()),
        "{detail}"
    );
    assert!(
        detail.contains("the embedded one does not start"),
        "{detail}"
    );
    assert!(
        text(containerd, "fix").contains("apt-get install containerd runc"),
        "{containerd:#}"
    );
    assert_eq!(code, Some(1), "a failed check fails the doctor");
    // Nothing of the probes stays: the data directory was not even created.
    assert!(!dir.path().join("data").exists());

    // With Debian's containerd to start, serve would run its own: the hung
    // one is a warning that says so, and how to repair it.
    let path = settings(
        dir.path(),
        &dir.path().join("data"),
        &format!("[containerd]\nsocket = \"{}\"\n", socket.display()),
    );
    let (_, report) = doctor(&path);
    let containerd = check(&report, "containerd");
    assert_eq!(containerd["verdict"], "warn", "{containerd:#}");
    assert!(
        text(containerd, "detail").contains("serve starts its own instead (containerd "),
        "{containerd:#}"
    );
    assert!(
        text(containerd, "fix").contains("systemctl restart containerd"),
        "{containerd:#}"
    );
}

/// A read-only filesystem at `dir`, unmounted when dropped.
struct ReadOnlyMount<'a>(&'a Path);

impl<'a> ReadOnlyMount<'a> {
    fn new(dir: &'a Path) -> ReadOnlyMount<'a> {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a read-only tmpfs (needs root)");
        ReadOnlyMount(dir)
    }
}

impl Drop for ReadOnlyMount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn doctor_fails_an_unwritable_data_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let readonly = dir.path().join("ro");
    let _mount = ReadOnlyMount::new(&readonly);
    // Existing and read-only, or to be created below a read-only directory.
    for data_dir in [readonly.clone(), readonly.join("data")] {
        let path = settings(dir.path(), &data_dir, "");
        let (code, report) = doctor(&path);
        let data = check(&report, "data directory");
        assert_eq!(data["verdict"], "fail", "{data:#}");
        assert!(
            text(data, "detail").contains("Read-only file system"),
            "{data:#}"
        );
        let fix = text(data, "fix");
        assert!(
            fix.contains("read-only filesystem") && fix.contains("set data_dir in"),
            "{fix}"
        );
        // What needs a writable data directory is not tried.
        assert_eq!(check(&report, "overlayfs")["verdict"], "skip");
        assert_eq!(check(&report, "reflinks")["verdict"], "skip");
        assert_eq!(code, Some(1));
    }
}

#[test]
fn doctor_names_who_holds_a_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr: SocketAddr = taken.local_addr().expect("addr");
    let path = dir.path().join("launchway.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{}\"\n[ssh]\nlisten = \"{taken_addr}\"\n",
            dir.path().join("data").display()
        ),
    )
    .expect("settings");
    let (code, report) = doctor(&path);
    let ssh = check(&report, "ssh port");
    assert_eq!(ssh["verdict"], "fail", "{ssh:#}");
    assert!(
        text(ssh, "detail").contains(&format!("(pid {})", std::process::id())),
        "the test process holds it: {ssh:#}"
    );
    assert!(text(ssh, "fix").contains("[ssh] listen"), "{ssh:#}");
    assert_eq!(code, Some(1));
    drop(taken);
}

#[test]
fn doctor_on_a_serving_host() {
    // The ports a running daemon holds are its own, not conflicts; the
    // containerd it uses answers.
    let (ssh, router) = (free_port(), free_port());
    let daemon = Daemon::start_with(&format!(
        "[router]\nlisten = \"127.0.0.1:{router}\"\n[ssh]\nlisten = \"127.0.0.1:{ssh}\"\n"
    ));
    let out = daemon.cli(&["doctor"]);
    let said = String::from_utf8_lossy(&out.stdout);
    let pid = daemon.pid();
    for (name, port) in [("ssh port", ssh), ("router port", router)] {
        let line = said
            .lines()
            .find(|line| line.contains(name))
            .unwrap_or_else(|| panic!("no {name} line in {said}"));
        assert!(
            line.trim_start().starts_with("ok")
                && line.contains(&format!(
                    "127.0.0.1:{port} is held by this daemon (pid {pid})"
                )),
            "{line}"
        );
    }
    let containerd = said
        .lines()
        .find(|line| line.contains("containerd"))
        .expect("a containerd line");
    assert!(containerd.trim_start().starts_with("ok"), "{said}");
    assert!(said.contains(" checks: "), "{said}");
}

#[test]
fn settings_defaults_and_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let defaults = Command::new(launchway_bin())
        .args(["settings", "defaults"])
        .output()
        .expect("runs");
    assert!(defaults.status.success());
    let path = dir.path().join("launchway.toml");
    std::fs::write(&path, &defaults.stdout).expect("written");
    // The defaults file read back shows the built-in defaults.
    let shown = |path: Option<&Path>| {
        let mut command = Command::new(launchway_bin());
        if let Some(path) = path {
            command.arg("--config").arg(path);
        }
        let out = command.args(["settings", "show"]).output().expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().skip(1).collect::<Vec<_>>().join("\n")
    };
    let from_file = shown(Some(&path));
    assert!(
        from_file.contains("data_dir = \"/var/lib/launchway\""),
        "{from_file}"
    );
    assert!(
        from_file.contains("listen = \"127.0.0.1:8080\""),
        "{from_file}"
    );
    // A bad file is refused with its line.
    std::fs::write(&path, "[ssh]\nlisten = 1\n").expect("written");
    let bad = Command::new(launchway_bin())
        .arg("--config")
        .arg(&path)
        .args(["settings", "show"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 2"));
}

#[test]
fn install_writes_settings_once_and_uninstall_keeps_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (prefix, etc, units) = (
        dir.path().join("usr"),
        dir.path().join("etc"),
        dir.path().join("units"),
    );
    let run = |args: &[&str]| {
        let out = Command::new(workspace().join("scripts/install.sh"))
            .args(args)
            .env("PREFIX", &prefix)
            .env("LAUNCHWAY_ETC", &etc)
            .env("SYSTEMD_UNIT_DIR", &units)
            .output()
            .expect("install.sh runs");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let binary = launchway_bin().display().to_string();
    run(&[&binary]);
    let settings = etc.join("launchway.toml");
    let written = std::fs::read_to_string(&settings).expect("settings written");
    assert_eq!(written, launchway_daemon::DEFAULTS_FILE);
    let unit = std::fs::read_to_string(units.join("launchway.service")).expect("unit");
    let installed = prefix.join("bin/launchway");
    assert!(
        unit.contains(&format!(
            "ExecStart={} --config {} serve",
            installed.display(),
            settings.display()
        )),
        "{unit}"
    );
    assert!(unit.contains("Restart=on-failure") && unit.contains("TimeoutStopSec="));

    // An operator's settings are never overwritten; the data directory they
    // name is made (0700).
    let data = dir.path().join("data");
    let mine = format!("data_dir = \"{}\"\n", data.display());
    std::fs::write(&settings, &mine).expect("edited");
    let said = run(&[&binary]);
    assert!(said.contains("exists; left as it is"), "{said}");
    assert_eq!(std::fs::read_to_string(&settings).expect("kept"), mine);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&data)
        .expect("data dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    std::fs::write(data.join("precious"), b"rows").expect("data");

    run(&["--uninstall"]);
    assert!(!installed.exists() && !units.join("launchway.service").exists());
    assert_eq!(std::fs::read_to_string(&settings).expect("kept"), mine);
    assert_eq!(std::fs::read(data.join("precious")).expect("kept"), b"rows");
}
