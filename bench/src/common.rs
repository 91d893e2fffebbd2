//! What the benchmarks share: the Launchway daemon and OpenSSH's sshd as
//! child processes, git, timing helpers.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

pub(crate) fn list(times: &[Duration]) -> String {
    times
        .iter()
        .map(|t| format!("{:.3}", t.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

pub(crate) fn run(command: &mut Command) -> anyhow::Result<String> {
    Ok(run_output(command)?.0)
}

/// As [`run`]: its stdout and its stderr.
pub(crate) fn run_output(command: &mut Command) -> anyhow::Result<(String, String)> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

pub(crate) fn git(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com");
    command
}

pub(crate) fn push(work: &Path, remote: &str, ssh_command: &str) -> anyhow::Result<Duration> {
    push_with(work, remote, ssh_command, &[])
}

pub(crate) fn push_with(
    work: &Path,
    remote: &str,
    ssh_command: &str,
    options: &[&str],
) -> anyhow::Result<Duration> {
    Ok(push_refspec(work, remote, ssh_command, options, "main")?.0)
}

/// `git push -q OPTIONS REMOTE REFSPEC`, timed; its stderr (what the
/// remote said: Launchway's activity log).
pub(crate) fn push_refspec(
    work: &Path,
    remote: &str,
    ssh_command: &str,
    options: &[&str],
    refspec: &str,
) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let (_, stderr) = run_output(
        git(work)
            .env("GIT_SSH_COMMAND", ssh_command)
            .arg("push")
            .arg("-q")
            .args(options)
            .args([remote, refspec]),
    )?;
    Ok((started.elapsed(), stderr))
}

/// `[containerd]` for the containerd `make bench` provides, in a namespace
/// of this run's own.
pub(crate) fn containerd_settings() -> String {
    // Runtime images built from Debian can be kept between runs.
    let cache = std::env::var("LW_BENCH_ROOTFS_CACHE")
        .map(|dir| format!("[runtimes]\nrootfs_cache = \"{dir}\"\n"))
        .unwrap_or_default();
    cache
        + &match launchway_integration::containerd_socket() {
            Some(socket) => format!(
                "[containerd]\nsocket = \"{}\"\nnamespace = \"lwbench-{}\"\n",
                socket.display(),
                launchway_integration::random_hex()
            ),
            None => String::new(),
        }
}

/// The body of a 200 answer to `GET path` with `Host: host`.
pub(crate) fn http_get(
    addr: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> anyhow::Result<String> {
    let (status, body) = launchway_integration::http_get(addr, host, path)?;
    if status != 200 {
        bail!("GET {host}{path}: {status} {body}");
    }
    Ok(body)
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn ssh_command(key: &Path, known_hosts: &Path) -> String {
    format!(
        "ssh -F /dev/null -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null",
        key.display(),
        known_hosts.display()
    )
}

pub(crate) fn wait_for(what: &str, mut ready: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what} did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

pub(crate) struct LaunchwayServer {
    binary: PathBuf,
    settings: PathBuf,
    child: Child,
    key: PathBuf,
    pub(crate) ssh_command: String,
    /// The HTTP router's address.
    pub(crate) router: std::net::SocketAddr,
    /// The HTTPS router's address (see [`LaunchwayServer::start_with_https`]).
    pub(crate) https: Option<std::net::SocketAddr>,
    /// The HTTP API's address (`[http] listen`).
    pub(crate) api: std::net::SocketAddr,
    /// The data directory.
    pub(crate) data: PathBuf,
    namespace: Option<String>,
    stopped: bool,
}

impl LaunchwayServer {
    pub(crate) fn start(binary: &Path, root: &Path, key: &Path) -> anyhow::Result<LaunchwayServer> {
        LaunchwayServer::start_with(binary, root, key, false, "")
    }

    /// As [`LaunchwayServer::start`], with `extra` appended to the settings
    /// file (whole sections: it comes after `[deploy]` and `[containerd]`).
    pub(crate) fn start_with_settings(
        binary: &Path,
        root: &Path,
        key: &Path,
        extra: &str,
    ) -> anyhow::Result<LaunchwayServer> {
        LaunchwayServer::start_with(binary, root, key, false, extra)
    }

    /// As [`LaunchwayServer::start`], with the router serving HTTPS too
    /// (`[router] https_listen`) on a port of its own.
    pub(crate) fn start_with_https(
        binary: &Path,
        root: &Path,
        key: &Path,
    ) -> anyhow::Result<LaunchwayServer> {
        LaunchwayServer::start_with(binary, root, key, true, "")
    }

    fn start_with(
        binary: &Path,
        root: &Path,
        key: &Path,
        with_https: bool,
        extra: &str,
    ) -> anyhow::Result<LaunchwayServer> {
        let port = free_port()?;
        let router = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let https = if with_https {
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?)))
        } else {
            None
        };
        let https_listen = https
            .map(|address| format!("https_listen = \"{address}\"\n"))
            .unwrap_or_default();
        let api = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let data = root.join("launchway");
        let settings = root.join("launchway.toml");
        let containerd = containerd_settings();
        let namespace = containerd
            .lines()
            .find_map(|l| l.strip_prefix("namespace = \""))
            .map(|n| n.trim_end_matches('"').to_string());
        std::fs::write(
            &settings,
            format!(
                "data_dir = \"{}\"\n[ssh]\nlisten = \"127.0.0.1:{port}\"\n[router]\nlisten = \"{router}\"\n{https_listen}[http]\nlisten = \"{api}\"\n[deploy]\nstop_grace_secs = 5\n{containerd}{extra}",
                data.display(),
            ),
        )?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&settings)
            .arg("serve")
            .env(
                "RUST_LOG",
                std::env::var("LW_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()?;
        wait_for("launchway", || data.join("launchway.sock").exists())?;
        let host_key = std::fs::read_to_string(data.join("ssh_host_ed25519_key.pub"))?;
        let known_hosts = root.join("known_hosts_launchway");
        let key_fields: Vec<&str> = host_key.split_whitespace().take(2).collect();
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", key_fields.join(" ")),
        )?;
        Ok(LaunchwayServer {
            binary: binary.to_path_buf(),
            settings,
            child,
            key: key.to_path_buf(),
            ssh_command: ssh_command(key, &known_hosts),
            router,
            https,
            api,
            data,
            namespace,
            stopped: false,
        })
    }

    /// The daemon's settings file.
    pub(crate) fn settings(&self) -> &Path {
        &self.settings
    }

    /// The CLI binary.
    pub(crate) fn binary(&self) -> &Path {
        &self.binary
    }

    pub(crate) fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new(&self.binary)
            .arg("--config")
            .arg(&self.settings)
            .args(args))
    }

    /// The CLI as a command, to redirect its input or output.
    pub(crate) fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command.arg("--config").arg(&self.settings).args(args);
        command
    }

    /// Runs the CLI; its log (stderr, where activity logs go) and stdout.
    pub(crate) fn cli_log(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.binary)
            .arg("--config")
            .arg(&self.settings)
            .args(args)
            .output()?;
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        if !out.status.success() {
            bail!("launchway {args:?} failed:\n{log}");
        }
        Ok(log)
    }

    pub(crate) fn project(&self, name: &str) -> anyhow::Result<String> {
        let remote = self.cli(&["project", "create", name])?.trim().to_owned();
        self.cli(&[
            "keys",
            "add",
            "--project",
            name,
            "--role",
            "admin",
            &self.key.with_extension("pub").display().to_string(),
        ])?;
        Ok(remote)
    }

    pub(crate) fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// The daemon's resident memory now (VmRSS), in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// The daemon's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// Registers the busybox fixture as `python:3.11`: builds run on a warm,
    /// tiny runtime image, offline.
    pub(crate) fn use_busybox_runtime(&self) -> anyhow::Result<()> {
        self.cli(&[
            "runtimes",
            "import",
            "python:3.11",
            &launchway_integration::busybox_archive()
                .display()
                .to_string(),
        ])?;
        Ok(())
    }

    /// The containerd namespace it uses.
    pub(crate) fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Stops the daemon, then removes the apps it deployed (they outlive
    /// it by design) and their network namespaces.
    pub(crate) fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        if let (Some(socket), Some(namespace)) =
            (launchway_integration::containerd_socket(), &self.namespace)
            && let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        {
            let scratch = self.data.join("scratch");
            runtime.block_on(async {
                if let Ok(engine) =
                    launchway_containerd::Engine::connect(&socket, namespace, &scratch).await
                {
                    for id in engine.app_containers(None).await.unwrap_or_default() {
                        let _ = engine.remove_app(&id).await;
                    }
                }
            });
        }
        // Hubs (`<id>`) and their members (`<id>.members/<address>`).
        if let Ok(entries) = std::fs::read_dir(self.data.join("netns")) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    for member in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                        let _ = launchway_router::netns::remove(&member.path());
                    }
                    let _ = std::fs::remove_dir(&path);
                } else {
                    let _ = launchway_router::netns::remove(&path);
                }
            }
        }
    }
}

pub(crate) struct Sshd {
    child: Child,
    port: u16,
    repos: PathBuf,
    pub(crate) ssh_command: String,
}

impl Sshd {
    pub(crate) fn start(root: &Path, key: &Path) -> anyhow::Result<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() {
            bail!("/usr/sbin/sshd is missing: install openssh-server");
        }
        // Debian's sshd wants its privilege separation directory.
        std::fs::create_dir_all("/run/sshd")?;
        let port = free_port()?;
        let host_key = root.join("sshd_host_ed25519_key");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key))?;
        let authorized = root.join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized)?;
        let config = root.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nPermitRootLogin prohibit-password\nAcceptEnv GIT_PROTOCOL\n",
                host_key.display(),
                authorized.display()
            ),
        )?;
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_for("sshd", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        let known_hosts = root.join("known_hosts_sshd");
        let public = std::fs::read_to_string(host_key.with_extension("pub"))?;
        let key_fields: Vec<&str> = public.split_whitespace().take(2).collect();
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {}\n", key_fields.join(" ")),
        )?;
        let repos = root.join("sshd-repos");
        std::fs::create_dir_all(&repos)?;
        Ok(Sshd {
            child,
            port,
            repos,
            ssh_command: ssh_command(key, &known_hosts),
        })
    }

    /// The bare repository [`Sshd::new_repo`] makes for `name`.
    pub(crate) fn repo_path(&self, name: &str) -> PathBuf {
        self.repos.join(format!("{name}.git"))
    }

    pub(crate) fn new_repo(&self, name: &str) -> anyhow::Result<String> {
        let path = self.repo_path(name);
        run(git(&self.repos)
            .args(["init", "-q", "--bare", "--initial-branch=main"])
            .arg(&path))?;
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        Ok(format!(
            "ssh://{user}@127.0.0.1:{}{}",
            self.port,
            path.display()
        ))
    }
}

impl Drop for LaunchwayServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An XFS filesystem with reflinks on a loop device, unmounted on drop.
pub(crate) struct XfsMount {
    image: tempfile::TempDir,
    pub(crate) dir: PathBuf,
}

impl XfsMount {
    pub(crate) fn new(size_mib: u64) -> anyhow::Result<XfsMount> {
        let image = tempfile::tempdir()?;
        let file = image.path().join("xfs.img");
        std::fs::File::create(&file)?.set_len(size_mib << 20)?;
        run(Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&file))
        .context("mkfs.xfs (apt-get install xfsprogs)")?;
        let dir = image.path().join("mnt");
        std::fs::create_dir(&dir)?;
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&file)
            .arg(&dir))?;
        Ok(XfsMount { image, dir })
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = self.image.path();
    }
}

/// Debian's nginx run from `dir` with its own configuration: the common
/// frame (workers, pid, logs, temp paths) around `http` (the contents of
/// the `http {}` block, given the address to listen on).
pub(crate) struct HostNginx {
    child: Child,
    pub(crate) address: std::net::SocketAddr,
}

impl HostNginx {
    pub(crate) fn start(
        binary: &Path,
        dir: &Path,
        http: impl FnOnce(std::net::SocketAddr) -> String,
    ) -> anyhow::Result<HostNginx> {
        HostNginx::start_workers(binary, dir, "auto", http)
    }

    /// As [`HostNginx::start`], with `workers` worker processes.
    pub(crate) fn start_with_workers(
        binary: &Path,
        dir: &Path,
        workers: usize,
        http: impl FnOnce(std::net::SocketAddr) -> String,
    ) -> anyhow::Result<HostNginx> {
        HostNginx::start_workers(binary, dir, &workers.to_string(), http)
    }

    fn start_workers(
        binary: &Path,
        dir: &Path,
        workers: &str,
        http: impl FnOnce(std::net::SocketAddr) -> String,
    ) -> anyhow::Result<HostNginx> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let d = dir.display();
        let config = format!(
            "user root;\nworker_processes {workers};\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\ndaemon off;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n{}\n}}\n",
            http(address)
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config)?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_for("nginx", || std::net::TcpStream::connect(address).is_ok())?;
        Ok(HostNginx { child, address })
    }
}

impl Drop for HostNginx {
    /// SIGTERM first: the master stops its workers (killed at once, it
    /// would leave them serving); SIGKILL if it has not ended in 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The socket a unix-socket app (`upstream.socket_family: unix`) named
/// `app` listens on, seen from the host.
pub(crate) fn app_socket(data: &Path, app: &str) -> anyhow::Result<PathBuf> {
    for environment in std::fs::read_dir(data.join("environments"))?.flatten() {
        let socket = environment.path().join(format!("run/{app}-web/app.sock"));
        if socket.exists() {
            return Ok(socket);
        }
    }
    bail!("the {app} app's socket was not found")
}

/// The `http {}` contents of nginx as a reverse proxy to `socket` with
/// upstream keep-alive (`keepalive_requests` raised from nginx's 1000, so
/// that its upstream connections are not re-made every 1000 requests): one
/// server whose `listen` directive says `listen`
/// (an address, `ADDRESS ssl`, …), with `server` (directives, each line
/// indented by four spaces and ended with a newline) before its location.
pub(crate) fn nginx_proxy(socket: &Path, listen: &str, server: &str) -> String {
    format!(
        r#"  upstream backend {{
    server unix:{socket};
    keepalive 256;
    keepalive_requests 1000000;
  }}
  server {{
    listen {listen};
{server}    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }}
  }}"#,
        socket = socket.display()
    )
}

/// `files` files of `total` bytes together, in directories of 100.
pub(crate) fn fill(dir: &Path, files: usize, total: usize) -> anyhow::Result<()> {
    let size = total / files.max(1);
    let block = launchway_integration::random_bytes(size + 4096, 7);
    for index in 0..files {
        let sub = dir.join(format!("d{}", index / 100));
        if index % 100 == 0 {
            std::fs::create_dir_all(&sub)?;
            std::os::unix::fs::chown(&sub, Some(10_000), Some(10_000))?;
        }
        let path = sub.join(format!("f{}", index % 100));
        let offset = index % 4096;
        let mut file = std::fs::File::create(&path)?;
        std::io::Write::write_all(&mut file, &block[offset..offset + size])?;
        std::os::unix::fs::chown(&path, Some(10_000), Some(10_000))?;
    }
    Ok(())
}
