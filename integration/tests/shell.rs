//! Shells, one-off commands and tunnels, end to end with the real OpenSSH
//! client and psql: a Python app in Upsun's layout (a mount, a PostgreSQL
//! relationship read the way `platformshconfig` reads it, a migration
//! script run with `launchway run`), a shell driven through a real
//! terminal (Python's `pty`, so window changes are the client's own), and
//! `launchway tunnel` used by psql from the host.
#![allow(clippy::tests_outside_test_module, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use launchway_integration::{
    Daemon, Key, Work, pause, python_wheels as wheels, serve_wheels as serve,
};

fn write_app(work: &Work, links: &str) {
    work.write(
        ".upsun/config.yaml",
        format!(
            r#"applications:
  app:
    type: "python:3.11"
    dependencies:
      python3:
        pg8000: "*"
    variables:
      env:
        PIP_FIND_LINKS: "{links}"
        PIP_NO_INDEX: "1"
    relationships:
      database: "db:postgresql"
    mounts:
      data:
        source: storage
        source_path: data
    web:
      commands:
        start: python3 -m http.server $PORT --bind 127.0.0.1
services:
  db:
    type: postgresql:15
"#
        ),
    );
    work.write(
        "migrate.py",
        r#"import base64, json, os, sys
import pg8000.native
c = json.loads(base64.b64decode(os.environ["PLATFORM_RELATIONSHIPS"]))["database"][0]
db = pg8000.native.Connection(c["username"], password=c["password"], host=c["host"], port=c["port"], database=c["path"])
db.run("CREATE TABLE IF NOT EXISTS notes (id serial PRIMARY KEY, note text)")
db.run("INSERT INTO notes (note) VALUES (:note)", note=sys.argv[1])
print("migrated; notes:", db.run("SELECT count(*) FROM notes")[0][0])
"#,
    );
    work.write(".environment", "export FROM_DOT_ENVIRONMENT=sourced\n");
    work.commit("app");
}

/// Drives `ssh` in a pseudo-terminal: the commands a person types, a
/// window resize (the terminal's own, so ssh sends the change), Ctrl-C.
const PTY_DRIVER: &str = r#"
import fcntl, os, pty, select, signal, struct, sys, termios, time

def set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

pid, fd = pty.fork()
if pid == 0:
    set_size(0, 30, 100)
    os.execvp(sys.argv[1], sys.argv[1:])

out = b""
def read_until(marker, timeout=60):
    global out
    end = time.time() + timeout
    while marker.encode() not in out:
        if time.time() > end:
            sys.stdout.write(out.decode(errors="replace"))
            raise SystemExit("timed out waiting for %r" % marker)
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            out += data

def send(text):
    os.write(fd, text.encode())

def resize(rows, cols):
    set_size(fd, rows, cols)
    os.kill(pid, signal.SIGWINCH)

send('echo "W""HO=$(id -un)"; echo "P""WD=$(pwd)"\r')
read_until("PWD=")
send('env | grep -c "^PLATFORM_" | sed "s/^/PLATFORM""COUNT=/"; echo "D""OT=$FROM_DOT_ENVIRONMENT"\r')
read_until("DOT=")
send('echo shell-wrote > data/note && echo "M""OUNT=$(cat data/note)"\r')
read_until("MOUNT=")
send('stty size | sed "s/^/S""IZE1=/"\r')
read_until("SIZE1=")
# Out of range: the server ignores it, the terminal keeps its size.
resize(30, 5000)
resize(50, 160)
for attempt in range(100):
    marker = "SIZE2_%d=" % attempt
    send('stty size | sed "s/^/%s""=/"\r' % marker[:-1])
    read_until(marker)
    line = out.split(marker.encode())[-1].split(b"\r")[0]
    if line.strip() == b"50 160":
        print("RESIZED")
        break
    time.sleep(0.1)
send('sleep 30; echo "AF""TER"\r')
read_until("sleep 30")
time.sleep(1)
send("\x03")
send('echo "ST""ILL=alive"\r')
read_until("STILL=")
send("exit 3\r")
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
print("\nSSH-EXIT=%d" % os.waitstatus_to_exitcode(status))
"#;

/// `ssh` as `key` for `user` at the daemon, with `options` before the
/// destination (what is added after it is the command).
fn ssh(daemon: &Daemon, key: &Key, user: &str, options: &[&str]) -> Command {
    let line = daemon.ssh_command(key);
    let mut parts = line.split(' ');
    let mut command = Command::new(parts.next().unwrap());
    command
        .args(parts)
        .args(["-p", &daemon.port.to_string(), "-l", user])
        .args(options)
        .arg("127.0.0.1")
        .stdin(Stdio::null());
    command
}

/// Runs `ssh … user@host -- command`; (status, stdout, stderr).
fn ssh_run(daemon: &Daemon, key: &Key, user: &str, command: &str) -> (i32, String, String) {
    let output = ssh(daemon, key, user, &[])
        .args(["--", command])
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What ssh said on stderr when forwarding to `forward` as `key` for `user`.
fn forward_refusal(daemon: &Daemon, key: &Key, user: &str, forward: &str) -> String {
    let output = ssh(daemon, key, user, &["-W", forward]).output().unwrap();
    assert!(!output.status.success(), "{forward}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn marker<'a>(text: &'a str, name: &str) -> &'a str {
    text.split(&format!("{name}="))
        .nth(1)
        .map(|rest| rest.split(['\r', '\n']).next().unwrap_or_default().trim())
        .unwrap_or_else(|| panic!("no {name}= in {text}"))
}

/// Waits until `done` holds (up to 60 s).
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        for _ in 0..10 {
            pause();
        }
    }
}

#[test]
fn shells_commands_and_tunnels_reach_the_app_and_its_database() {
    let links = serve(wheels(&["pg8000"]));
    let daemon =
        Daemon::start_with("[deploy]\nstart_timeout_secs = 60\n[ssh]\nkeepalive_secs = 1\n");
    let work = daemon.admin_work("shop");
    write_app(&work, &links);
    work.push_ok("main", &[]);
    let alice = daemon.existing_key("alice");
    let viewer = daemon.key("vera", "shop", "viewer");
    let contributor = daemon.key("carl", "shop", "contributor");
    // A branch: an inactive environment.
    work.git_ok(&["checkout", "-q", "-b", "feature"]);
    work.push_ok("feature", &[]);
    work.git_ok(&["checkout", "-q", "main"]);
    let containers_before = daemon.all_containers().len();

    // A shell in a real terminal: the app's user, /app, the environment,
    // a mount, window changes, Ctrl-C ending the command and not the shell.
    let driver = daemon.scratch("pty").join("driver.py");
    std::fs::create_dir_all(driver.parent().unwrap()).unwrap();
    std::fs::write(&driver, PTY_DRIVER).unwrap();
    let client = ssh(&daemon, &alice, "shop:main", &["-t"]);
    let output = Command::new("python3")
        .arg(&driver)
        .arg(client.get_program())
        .args(client.get_args())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(marker(&text, "WHO"), "web", "{text}");
    assert_eq!(marker(&text, "PWD"), "/app", "{text}");
    let platform: u32 = marker(&text, "PLATFORMCOUNT").parse().unwrap();
    assert!(platform >= 8, "{text}");
    assert_eq!(marker(&text, "DOT"), "sourced", "{text}");
    assert_eq!(marker(&text, "MOUNT"), "shell-wrote", "{text}");
    assert_eq!(marker(&text, "SIZE1"), "30 100", "{text}");
    assert!(text.contains("RESIZED"), "{text}");
    assert!(
        !text.contains("AFTER"),
        "Ctrl-C did not end the command: {text}"
    );
    assert_eq!(marker(&text, "STILL"), "alive", "{text}");
    assert_eq!(marker(&text, "SSH-EXIT"), "3", "{text}");

    // One command: its output, its status; the relationship's variables.
    let (status, out, _) = ssh_run(
        &daemon,
        &alice,
        "shop:main:app",
        "cat data/note; echo $PLATFORM_APPLICATION_NAME",
    );
    assert_eq!((status, out.as_str()), (0, "shell-wrote\napp\n"));
    let (status, _, _) = ssh_run(&daemon, &alice, "shop:main", "false");
    assert_eq!(status, 1);
    // Megabytes in while output flows back: the connection never waits for
    // the process to read.
    let zeros = daemon.scratch("pty").join("zeros");
    std::fs::write(&zeros, vec![0u8; 8 << 20]).unwrap();
    let piped = ssh(&daemon, &alice, "shop:main", &[])
        .args(["--", "cat"])
        .stdin(std::fs::File::open(&zeros).unwrap())
        .output()
        .unwrap();
    assert!(piped.status.success());
    assert_eq!(piped.stdout.len(), 8 << 20);
    // With a terminal, the end of the client's input does not hang the
    // command up: its later output still arrives.
    let late = ssh(&daemon, &alice, "shop:main", &["-tt"])
        .args(["--", "sleep 1; echo late"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&late.stdout).contains("late"),
        "{late:?}"
    );

    // Who may: viewers never, contributors not on the default environment
    // (on another one they pass the check and meet the inactive branch).
    let (status, _, said) = ssh_run(&daemon, &viewer, "shop:main", "id");
    assert_ne!(status, 0);
    assert!(said.contains("viewer"), "{said}");
    let (status, _, said) = ssh_run(&daemon, &viewer, "shop:feature", "id");
    assert_ne!(status, 0);
    assert!(said.contains("viewer"), "{said}");
    let (status, _, said) = ssh_run(&daemon, &contributor, "shop:main", "id");
    assert_ne!(status, 0);
    assert!(
        said.contains("admin") && said.contains("contributor"),
        "{said}"
    );
    let (status, _, said) = ssh_run(&daemon, &contributor, "shop:feature", "id");
    assert_ne!(status, 0);
    assert!(said.contains("environment feature is not active"), "{said}");
    // Bad targets: clear refusals.
    for (user, expected) in [
        ("nope:main", "there is no project `nope`"),
        ("shop:missing", "there is no environment `missing` in shop"),
        ("shop:main:web", "has no app `web`; its apps: app"),
        ("shop:main:app:x", "too many `:`"),
        ("shop:..:app", "is not an environment name"),
    ] {
        let (status, _, said) = ssh_run(&daemon, &alice, user, "id");
        assert_ne!(status, 0, "{user}");
        assert!(said.contains(expected), "{user}: {said}");
    }

    // A one-off command in a new container: the migration against
    // PostgreSQL, the mount, the exit status.
    let run = daemon.cli(&[
        "run",
        "-p",
        "shop",
        "-e",
        "main",
        "--",
        "python3",
        "migrate.py",
        "from-run",
    ]);
    let said = String::from_utf8_lossy(&run.stdout);
    if !run.status.success() {
        let log = daemon.log();
        panic!(
            "{said}{}\n{}",
            String::from_utf8_lossy(&run.stderr),
            &log[log.len().saturating_sub(3000)..]
        );
    }
    assert!(said.contains("migrated; notes: 1"), "{said}");
    let run = daemon.cli(&[
        "run",
        "-p",
        "shop",
        "-e",
        "main",
        "--",
        "cat data/note && exit 7",
    ]);
    assert_eq!(run.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&run.stdout), "shell-wrote\n");
    // Output comes byte for byte (a dump, a prompt without a newline).
    let run = daemon.cli(&["run", "-p", "shop", "-e", "main", "--", "printf 'a\\0b'"]);
    assert_eq!(run.stdout, b"a\0b");
    let refused = daemon.cli(&["run", "-p", "shop", "-e", "feature", "--", "true"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not active"));

    // A tunnel used by psql on the host; the URL carries the credentials.
    let mut tunnel = daemon
        .cli_command(&[
            "tunnel",
            "-p",
            "shop",
            "-e",
            "main",
            "-r",
            "database",
            "--ssh",
            &format!("127.0.0.1:{}", daemon.port),
        ])
        .env("LAUNCHWAY_SSH_COMMAND", daemon.ssh_command(&alice))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tunnel.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .split_whitespace()
        .find(|word| word.starts_with("postgresql://"))
        .unwrap_or_else(|| panic!("no URL in {first}"))
        .to_owned();
    let psql = Command::new("psql")
        .arg(&url)
        .args(["-At", "-c", "SELECT note FROM notes"])
        .output()
        .unwrap();
    assert!(
        psql.status.success(),
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&psql.stdout), "from-run\n");
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    // `launchway ssh` is OpenSSH with the target and server filled in.
    let wrapped = daemon
        .cli_command(&[
            "ssh",
            "-p",
            "shop",
            "-e",
            "main",
            "--ssh",
            &format!("127.0.0.1:{}", daemon.port),
            "--",
            "echo",
            "wrapped:$PLATFORM_ENVIRONMENT",
        ])
        .env("LAUNCHWAY_SSH_COMMAND", daemon.ssh_command(&alice))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&wrapped.stdout), "wrapped:main\n");

    // Forwards to anything the app's relationships do not name: refused.
    for (forward, expected) in [
        ("db:5432", "has no relationship `db`"),
        ("127.0.0.1:22", "is not a relationship name"),
        ("database:22", "listens on port 5432"),
    ] {
        let said = forward_refusal(&daemon, &alice, "shop:main", forward);
        assert!(said.contains(expected), "{forward}: {said}");
    }
    // And nothing at all in git mode, or for a viewer.
    assert!(forward_refusal(&daemon, &viewer, "shop:main", "database:5432").contains("viewer"));
    assert!(
        forward_refusal(&daemon, &alice, "git", "database:5432")
            .contains("forwarding is not available")
    );

    // A client that goes away: its process ends, and a run's container goes.
    let mut sleeper = ssh(&daemon, &alice, "shop:main", &[])
        .args(["--", "sleep 300; echo not-reached"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let sleeping = || {
        ssh_run(
            &daemon,
            &alice,
            "shop:main",
            "cat /proc/[0-9]*/comm | grep -c '^sleep$'",
        )
        .1
        .trim()
        .parse::<u32>()
        .unwrap_or(0)
    };
    eventually("the sleep starts", || sleeping() == 1);
    sleeper.kill().unwrap();
    let _ = sleeper.wait();
    eventually("the sleep ends with its client", || sleeping() == 0);
    // A client that stops answering (frozen, or its network gone): three
    // unanswered keepalives end the connection and the process.
    let mut frozen = ssh(&daemon, &alice, "shop:main", &[])
        .args(["--", "sleep 300; echo not-reached"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the sleep starts", || sleeping() == 1);
    let stopped = Command::new("kill")
        .args(["-STOP", &frozen.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    eventually("the sleep ends with its silent client", || sleeping() == 0);
    frozen.kill().unwrap();
    let _ = frozen.wait();

    let mut run = daemon
        .cli_command(&["run", "-p", "shop", "-e", "main", "--", "sleep", "300"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the run's container starts", || {
        daemon.all_containers().len() > containers_before
    });
    run.kill().unwrap();
    let _ = run.wait();
    eventually("the run's container goes with its client", || {
        daemon.all_containers().len() == containers_before
    });
    pause();

    // Each session is in the environment's activity log: who, which command.
    let log = daemon.cli_ok(&[
        "activities",
        "-p",
        "shop",
        "-e",
        "main",
        "--json",
        "--limit",
        "500",
    ]);
    assert!(log.contains("environment.ssh"), "{log}");
    assert!(log.contains("environment.run"), "{log}");
    assert!(
        log.contains("alice ran a shell in app app over SSH (exited with code 3)"),
        "{log}"
    );
    assert!(
        log.contains("ran `python3 migrate.py from-run` in a new container of app app"),
        "{log}"
    );
    assert!(
        !log.contains("shell-wrote >"),
        "keystrokes are not recorded: {log}"
    );
}
