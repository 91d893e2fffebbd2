//! The disk filling up during a build (issue 8): the data directory is a
//! small loop-mounted ext4, a build hook fills its build cache. The build
//! fails with a clear error, the previous release keeps serving, the state
//! stays readable, and once the cache is cleared the next push works, also
//! after a restart.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use std::process::Command;

use launchway_integration::{Daemon, Work, http_get, launchway_bin};

/// A small ext4 filesystem mounted at a directory, unmounted on drop.
struct SmallDisk {
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(image: &Path, at: &Path, mib: u64) -> SmallDisk {
        std::fs::File::create(image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image)
            .status()
            .unwrap();
        assert!(made.success(), "mkfs.ext4 failed");
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(at)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount -o loop failed");
        SmallDisk {
            mount: at.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

const CONFIG: &str = r#"applications:
  web:
    type: "python:3.11"
    hooks:
      build: |
        mkdir -p public
        cp version public/index.html
        if grep -q yes fill; then dd if=/dev/zero of="$PLATFORM_CACHE_DIR/fill" bs=1M count=1000; fi
    web:
      commands:
        start: exec httpd -f -p 127.0.0.1:$PORT -h /app/public
"#;

#[test]
fn a_full_disk_fails_the_build_clearly_and_corrupts_nothing() {
    let mut daemon = Daemon::prepare(launchway_bin(), "[deploy]\nstop_grace_secs = 2\n");
    let _disk = SmallDisk::mount(
        &daemon.scratch("disk").join("data.img"),
        &daemon.data_dir(),
        160,
    );
    daemon.spawn();
    daemon.use_busybox_runtime("python:3.11");
    let mut work = daemon.admin_work("shop");
    let host = "main.shop.localhost";
    let commit = |work: &Work, version: &str, fill: bool| {
        work.write(".upsun/config.yaml", CONFIG);
        work.write("version", version);
        work.write("fill", if fill { "yes" } else { "no" });
        work.commit(version);
    };

    commit(&work, "v1", false);
    work.push_ok("main", &[]);
    assert_eq!(http_get(daemon.router_addr(), host, "/").unwrap().1, "v1");

    commit(&work, "v2", true);
    let out = work.push("main", &[]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "the build filling the disk succeeded:\n{log}"
    );
    assert!(log.contains("No space left on device"), "{log}");
    assert_eq!(
        http_get(daemon.router_addr(), host, "/").unwrap().1,
        "v1",
        "the previous release stops serving"
    );
    // The state is readable, the failure recorded.
    let builds = daemon.cli_ok(&["builds", "-p", "shop"]);
    assert!(builds.contains("failed"), "{builds}");
    daemon.cli_ok(&["activities", "-p", "shop"]);

    daemon.cli_ok(&["project", "clear-build-cache", "-p", "shop"]);
    commit(&work, "v3", false);
    work.push_ok("main", &[]);
    assert_eq!(http_get(daemon.router_addr(), host, "/").unwrap().1, "v3");

    // And after a restart.
    daemon.stop();
    daemon.spawn();
    work.set_ssh(daemon.ssh_command(&daemon.existing_key("alice")));
    assert_eq!(http_get(daemon.router_addr(), host, "/").unwrap().1, "v3");
    let releases = daemon.cli_ok(&["releases", "-p", "shop"]);
    assert!(releases.contains("active *"), "{releases}");
    // Before the filesystem goes: nothing may keep it busy.
    daemon.stop();
    daemon.remove_environments();
}
