//! Pushing and cloning over SSH end to end: the real `launchway serve`, the
//! real OpenSSH client and the real `git`, with the host key pinned.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use launchway_integration::{Daemon, SAMPLE_CONFIG, Work, random_bytes};

/// A daemon whose `python:3.11` is the busybox fixture, so that builds
/// run offline in about a second.
fn started() -> Daemon {
    let daemon = Daemon::start();
    daemon.use_busybox_runtime("python:3.11");
    daemon
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A daemon with project `shop`, an admin key `alice` and a work repository
/// holding a valid config, its remote `launchway` set.
fn setup() -> (Daemon, Work, String) {
    let daemon = started();
    let remote = daemon.project("shop");
    let alice = daemon.key("alice", "shop", "admin");
    let work = Work::init(daemon.scratch("work")).with_ssh(daemon.ssh_command(&alice));
    work.write(".upsun/config.yaml", SAMPLE_CONFIG);
    work.write("web/app.py", "print('hello')\n");
    work.commit("first");
    work.git_ok(&["remote", "add", "launchway", &remote]);
    (daemon, work, remote)
}

/// The branch heads the daemon's repository has, as `ls-remote` prints them.
fn remote_heads(work: &Work) -> String {
    work.git_ok(&["ls-remote", "--heads", "launchway"])
}

#[test]
fn push_and_clone_round_trip_with_the_activity_log() {
    let (daemon, work, remote) = setup();
    let out = work.git(&["push", "launchway", "main"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let tree = work.git_ok(&["rev-parse", "HEAD:web"]);
    for expected in [
        "Validating configuration files",
        "Processing activity: alice pushed to main",
        "  Found 1 new commit",
        &format!(
            "  Building application 'web' (runtime type: python:3.11, tree: {})",
            &tree[..7]
        ),
        "main -> main",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }

    let clone = daemon.scratch("clone");
    let out = launchway_integration::hermetic_git(
        &daemon.scratch("."),
        Some(&daemon.ssh_command(&daemon.existing_key("alice"))),
    )
    .args(["clone", "-q", &remote])
    .arg(&clone)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(Work::open(clone.clone()).head(), work.head());
    assert_eq!(
        std::fs::read_to_string(clone.join("web/app.py")).unwrap(),
        "print('hello')\n"
    );

    let listed = daemon.cli_ok(&["activities", "-p", "shop"]);
    let row = listed.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("complete") && row.contains("success") && row.contains("alice pushed to main"),
        "{listed}"
    );
    let id = row.split_whitespace().next().unwrap();
    let log = daemon.cli_ok(&["activity", "log", id]);
    assert!(
        log.contains("Processing activity: alice pushed to main"),
        "{log}"
    );
    assert!(log.contains(&format!("tree: {}", &tree[..7])), "{log}");

    let plan = daemon.cli_ok(&["plan", "shop", "main"]);
    assert!(plan.contains(&format!("commit {}", work.head())), "{plan}");
    let web = plan.lines().find(|l| l.starts_with("web ")).unwrap();
    assert!(
        web.contains("python:3.11") && web.contains(tree.trim()),
        "{plan}"
    );
}

#[test]
fn an_invalid_config_is_refused_with_its_diagnostics_and_no_ref_moves() {
    let (_daemon, work, _) = setup();
    work.git_ok(&["push", "-q", "launchway", "main"]);
    let before = remote_heads(&work);
    work.write(
        ".upsun/config.yaml",
        SAMPLE_CONFIG.replace("    source:", "    sorce:"),
    );
    work.commit("typo");
    let out = work.git(&["push", "launchway", "main"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(".upsun/config.yaml:4:5: error: unknown key `sorce` in application `web`"),
        "{stderr}"
    );
    assert!(stderr.contains("help: did you mean `source`?"), "{stderr}");
    assert!(
        stderr.contains("push refused; no branch was changed"),
        "{stderr}"
    );
    assert_eq!(remote_heads(&work), before);

    // A new branch with the bad commit is refused the same way.
    let out = work.git(&["push", "launchway", "HEAD:refs/heads/feature"]);
    assert!(!out.status.success());
    assert_eq!(remote_heads(&work), before);
}

#[test]
fn roles_decide_who_pushes_where() {
    let (daemon, work, remote) = setup();
    work.git_ok(&["push", "-q", "launchway", "main"]);
    let main_head = remote_heads(&work);

    // A viewer fetches, and cannot push.
    let viewer = daemon.key("victor", "shop", "viewer");
    let fetched = daemon.scratch("viewer-clone");
    let out = launchway_integration::hermetic_git(
        &daemon.scratch("."),
        Some(&daemon.ssh_command(&viewer)),
    )
    .args(["clone", "-q", &remote])
    .arg(&fetched)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut as_viewer = Work::open(work.dir.clone());
    as_viewer.set_ssh(daemon.ssh_command(&viewer));
    work.commit("more");
    let out = as_viewer.git(&["push", "launchway", "main:refs/heads/viewer"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("launchway: your key can only fetch from `shop` (role viewer)"),
        "{stderr}"
    );

    // A contributor pushes a feature branch, not the default branch, and
    // cannot delete branches.
    let carol = daemon.key("carol", "shop", "contributor");
    let mut as_carol = Work::open(work.dir.clone());
    as_carol.set_ssh(daemon.ssh_command(&carol));
    let out = as_carol.git(&["push", "launchway", "main"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "main: pushing the default branch needs the admin role (your key is contributor)"
        ),
        "{stderr}"
    );
    assert_eq!(remote_heads(&work), main_head);
    let out = as_carol.git(&["push", "launchway", "main:refs/heads/feature"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Environment feature is inactive"),
        "{stderr}"
    );
    let out = as_carol.git(&["push", "launchway", ":feature"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("deleting a branch needs the admin role"));

    // The admin deletes the branch, never the default one.
    let out = work.git(&["push", "launchway", ":feature"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!remote_heads(&work).contains("refs/heads/feature"));
    let out = work.git(&["push", "launchway", ":main"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("the default branch cannot be deleted"));
}

#[test]
fn tags_and_other_refs_are_refused() {
    let (_daemon, work, _) = setup();
    work.git_ok(&["push", "-q", "launchway", "main"]);
    work.git_ok(&["tag", "v1"]);
    let out = work.git(&["push", "launchway", "v1"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refs/tags/v1: only branches can be pushed"),
        "{stderr}"
    );
    let out = work.git(&["push", "launchway", "HEAD:refs/notes/x"]);
    assert!(!out.status.success());
    assert!(
        !work
            .git_ok(&["ls-remote", "launchway"])
            .contains("refs/tags/v1")
    );
}

#[test]
fn unknown_keys_and_hidden_projects_are_denied_alike() {
    let (daemon, work, _) = setup();
    let stranger = daemon.new_key("stranger");
    let out = daemon.ssh(&stranger, &["git@127.0.0.1", "git-upload-pack 'shop.git'"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)"),
        "{}",
        text(&out.stderr)
    );

    // A key of another project sees `shop` exactly as it sees no project at all.
    daemon.project("other");
    let outsider = daemon.key("outsider", "other", "admin");
    let hidden = daemon.ssh(&outsider, &["git@127.0.0.1", "git-upload-pack 'shop.git'"]);
    let missing = daemon.ssh(&outsider, &["git@127.0.0.1", "git-upload-pack 'nope.git'"]);
    assert_eq!(hidden.status.code(), Some(1));
    assert_eq!(
        text(&hidden.stderr).replace("shop", "X"),
        text(&missing.stderr).replace("nope", "X")
    );
    assert!(text(&hidden.stderr).contains("does not exist or your key has no access to it"));
    drop(work);
}

#[test]
fn other_commands_and_paths_are_refused_with_one_line() {
    let (daemon, _work, _) = setup();
    let alice = daemon.existing_key("alice");
    for command in [
        "ls",
        "git-receive-pack '../x.git'",
        "git-receive-pack '/srv/git/shop.git'",
        "git-upload-pack '/shop.git/../other.git'",
        "git-upload-pack \"shop.git\"",
        "git-upload-pack 'shop.git",
        "git-upload-archive 'shop.git'",
        "sh -c 'git-upload-pack shop.git'",
    ] {
        let out = daemon.ssh(&alice, &["git@127.0.0.1", command]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("launchway: "))
            .collect();
        assert_eq!(lines.len(), 1, "{command}: {stderr}");
    }
    let shell = daemon.ssh(&alice, &["-T", "git@127.0.0.1"]);
    assert_eq!(shell.status.code(), Some(1));
    assert!(text(&shell.stderr).contains("launchway: there is no shell here"));
    let pty = daemon.ssh(&alice, &["-tt", "git@127.0.0.1"]);
    assert_ne!(pty.status.code(), Some(0));
    let forward = daemon.ssh(&alice, &["-W", "127.0.0.1:22", "git@127.0.0.1"]);
    assert_ne!(forward.status.code(), Some(0));
    assert!(
        text(&forward.stderr).contains("forwarding is not available"),
        "{}",
        text(&forward.stderr)
    );
}

#[test]
fn push_options_shape_the_environment() {
    let (daemon, work, _) = setup();
    work.git_ok(&["push", "-q", "launchway", "main"]);
    let out = work.git(&[
        "push",
        "-o",
        "environment.status=active",
        "-o",
        "environment.title=Review",
        "-o",
        "colour=blue",
        "launchway",
        "main:refs/heads/review",
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("W: unknown push option `colour=blue` ignored"),
        "{stderr}"
    );
    assert!(stderr.contains("Building application 'web'"), "{stderr}");

    let out = work.git(&[
        "push",
        "-o",
        "environment.type=prod",
        "launchway",
        "main:refs/heads/bad",
    ]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the type is `production`, `staging` or `development`"),
        "{stderr}"
    );
    assert!(!remote_heads(&work).contains("refs/heads/bad"));

    let out = work.git(&[
        "push",
        "-o",
        "environment.parent=nowhere",
        "launchway",
        "main:refs/heads/bad",
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("there is no environment `nowhere`"));

    work.commit("again");
    let out = work.git(&["push", "-o", "launchway.wait=false", "launchway", "main"]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("queued: alice pushed to main"), "{stderr}");
    assert!(!stderr.contains("Processing activity"), "{stderr}");
    let id = stderr
        .split("launchway activity log ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let log = daemon.cli_ok(&["activity", "log", &id]);
        if log.contains("Environment main (production) is at") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        launchway_integration::pause();
    }
}

#[test]
fn oversized_pushes_are_refused() {
    let daemon = Daemon::start_with("[git]\nmax_push_bytes = 100000\n");
    let remote = daemon.project("shop");
    let alice = daemon.key("alice", "shop", "admin");
    let work = Work::init(daemon.scratch("work")).with_ssh(daemon.ssh_command(&alice));
    work.write(".upsun/config.yaml", SAMPLE_CONFIG);
    work.write("web/blob.bin", random_bytes(300_000, 7));
    work.commit("big");
    work.git_ok(&["remote", "add", "launchway", &remote]);
    let out = work.git(&["push", "launchway", "main"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("pack exceeds maximum allowed size"),
        "{stderr}"
    );
    assert_eq!(work.git_ok(&["ls-remote", "launchway"]), "");
}

#[test]
fn the_daemon_restarts_with_its_host_key_and_state() {
    let (mut daemon, work, _) = setup();
    work.git_ok(&["push", "-q", "launchway", "main"]);
    let status = daemon.stop().unwrap();
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(!daemon.data_dir().join("launchway.sock").exists());
    let known_hosts = std::fs::read_to_string(&daemon.known_hosts).unwrap();
    daemon.spawn();
    let key_part = |s: &str| s.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
    assert_eq!(
        key_part(&known_hosts),
        key_part(&std::fs::read_to_string(&daemon.known_hosts).unwrap())
    );
    // The port changed; the remote follows it.
    let remote = format!("ssh://git@127.0.0.1:{}/shop.git", daemon.port);
    work.git_ok(&["remote", "set-url", "launchway", &remote]);
    assert_eq!(
        remote_heads(&work).split_whitespace().next().unwrap(),
        work.head()
    );
    assert!(daemon.cli_ok(&["project", "list"]).contains(&remote));
}

#[test]
fn fetches_speak_protocol_version_2() {
    let (daemon, work, _) = setup();
    work.git_ok(&["push", "-q", "launchway", "main"]);
    let out = launchway_integration::hermetic_git(
        &work.dir,
        Some(&daemon.ssh_command(&daemon.existing_key("alice"))),
    )
    .env("GIT_TRACE_PACKET", "1")
    .args(["-c", "protocol.version=2", "ls-remote", "launchway"])
    .output()
    .unwrap();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ls-remote< version 2"), "{stderr}");
}

#[test]
fn hooks_outside_a_push_session_are_refused() {
    let daemon = started();
    let hook = |env: &[(&str, String)]| {
        let mut command = std::process::Command::new(launchway_integration::launchway_bin());
        command
            .args(["hook", "pre-receive"])
            .env_remove("LAUNCHWAY_SESSION")
            .env_remove("LAUNCHWAY_SOCKET");
        for (k, v) in env {
            command.env(k, v);
        }
        command.stdin(std::process::Stdio::null()).output().unwrap()
    };
    let out = hook(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not running inside a Launchway push"));
    let socket = daemon
        .data_dir()
        .join("launchway.sock")
        .display()
        .to_string();
    let out = hook(&[
        ("LAUNCHWAY_SESSION", "forged".into()),
        ("LAUNCHWAY_SOCKET", socket),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a session of the running daemon"),
        "{}",
        text(&out.stderr)
    );
}

/// Reads what the server sends until it closes or `wait` passes.
fn read_until_closed(
    stream: &mut std::net::TcpStream,
    wait: std::time::Duration,
) -> Option<String> {
    use std::io::Read as _;
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => Some(text(&answer)),
        Err(_) => None,
    }
}

#[test]
fn silent_and_surplus_ssh_connections_are_closed() {
    use std::io::{BufRead as _, BufReader};
    use std::time::{Duration, Instant};
    let daemon = Daemon::start_with("[ssh]\nauth_timeout_secs = 2\nmax_connections_per_ip = 4\n");
    let remote = daemon.project("shop");
    let alice = daemon.key("alice", "shop", "admin");
    let address = format!("127.0.0.1:{}", daemon.port);
    // Four silent clients get the banner and hold their slots...
    let mut silent = Vec::new();
    for _ in 0..4 {
        let stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut banner = String::new();
        BufReader::new(stream.try_clone().unwrap())
            .read_line(&mut banner)
            .unwrap();
        assert!(banner.starts_with("SSH-2.0-Launchway"), "{banner:?}");
        silent.push(stream);
    }
    // ...a fifth from the same address is closed at once, with no banner.
    let mut surplus = std::net::TcpStream::connect(&address).unwrap();
    let answer = read_until_closed(&mut surplus, Duration::from_secs(5));
    assert_eq!(
        answer.as_deref(),
        Some(""),
        "the fifth connection was served"
    );
    // The silent ones are closed once the authentication time is up.
    let started = Instant::now();
    for stream in &mut silent {
        assert!(
            read_until_closed(stream, Duration::from_secs(10)).is_some(),
            "a silent client kept its connection"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    // Their slots are free again: a real client gets in.
    let work = Work::init(daemon.scratch("work")).with_ssh(daemon.ssh_command(&alice));
    work.git_ok(&["remote", "add", "launchway", &remote]);
    work.git_ok(&["ls-remote", "launchway"]);
}

#[test]
fn clients_offering_only_unknown_algorithms_are_refused_cleanly() {
    let (daemon, work, _) = setup();
    let alice = daemon.existing_key("alice");
    for (options, refusal) in [
        (
            &["KexAlgorithms=diffie-hellman-group1-sha1"][..],
            "no matching key exchange method",
        ),
        (&["Ciphers=3des-cbc"], "no matching cipher"),
        // A MAC is negotiated only with a cipher that has none built in.
        (&["Ciphers=aes128-ctr", "MACs=hmac-md5"], "no matching MAC"),
        (&["HostKeyAlgorithms=ssh-rsa"], "no matching host key type"),
    ] {
        let mut args: Vec<&str> = options.iter().flat_map(|option| ["-o", option]).collect();
        args.extend(["git@127.0.0.1", "git-upload-pack 'shop.git'"]);
        let out = daemon.ssh(&alice, &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{options:?}: {stderr}");
        assert!(stderr.contains(refusal), "{options:?}: {stderr}");
    }
    // The daemon goes on serving, none the worse.
    work.push_ok("main", &[]);
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
}
