//! A real image registry for tests: Debian's `docker-registry`
//! (distribution 2.8.2) on 127.0.0.1, over TLS with a certificate of a test
//! CA, behind htpasswd auth with the committed `fixtures/registry/htpasswd`
//! (user `launchway`, password `launchway-test`), storing in a tempdir with
//! deletes enabled.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{pause, workspace};

/// The registry binary of Debian's `docker-registry` package.
pub const BINARY: &str = "/usr/bin/docker-registry";
/// The user in `fixtures/registry/htpasswd`.
pub const USERNAME: &str = "launchway";
/// Its password (the fixture holds its bcrypt hash).
pub const PASSWORD: &str = "launchway-test";

/// A running `docker-registry serve`, killed when dropped. Its data stay in
/// its tempdir across [`TestRegistry::stop`] and [`TestRegistry::restart`].
#[derive(Debug)]
pub struct TestRegistry {
    dir: tempfile::TempDir,
    port: u16,
    url: String,
    child: Option<Child>,
    ca_pem: Vec<u8>,
}

impl TestRegistry {
    /// Starts a registry on a free port of 127.0.0.1 and waits until it
    /// answers `GET /v2/` (with a 401: it wants credentials).
    pub fn start() -> TestRegistry {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing: scripts/setup.sh test installs docker-registry"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_pem, cert_pem, key_pem) = certificates();
        std::fs::write(dir.path().join("registry.crt"), &cert_pem).expect("certificate written");
        std::fs::write(dir.path().join("registry.key"), &key_pem).expect("key written");
        // skopeo and other containers/image tools read `*.crt` of a directory.
        std::fs::create_dir(dir.path().join("certs")).expect("certs dir");
        std::fs::write(dir.path().join("certs/ca.crt"), &ca_pem).expect("CA written");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        let mut registry = TestRegistry {
            dir,
            port: 0,
            url: String::new(),
            child: None,
            ca_pem: ca_pem.into_bytes(),
        };
        registry.spawn();
        registry
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT`, as image references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The port it listens on (the same after a restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that issued the registry's certificate (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        self.ca_pem.clone()
    }

    /// The CA's PEM file (`[registry] ca_file`).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("certs/ca.crt")
    }

    /// A directory holding only the CA as `ca.crt`, for skopeo's
    /// `--cert-dir`.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The user the registry accepts.
    pub fn username(&self) -> &'static str {
        USERNAME
    }

    /// That user's password.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// The registry's storage root.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A client configuration for `repository` with the registry's
    /// credentials and CA.
    pub fn config(&self, repository: &str) -> launchway_registry::RegistryConfig {
        launchway_registry::RegistryConfig {
            url: self.url.clone(),
            repository: repository.to_owned(),
            username: Some(USERNAME.to_owned()),
            password: Some(PASSWORD.to_owned()),
            ca_pem: Some(self.ca_pem()),
        }
    }

    /// A `[registry]` settings table for `repository`, its password in a
    /// new file (mode 0600) under the registry's directory.
    pub fn settings(&self, repository: &str) -> String {
        use std::os::unix::fs::PermissionsExt as _;
        let password = self
            .dir
            .path()
            .join(format!("password-{}", crate::random_hex()));
        std::fs::write(&password, format!("{PASSWORD}\n")).expect("password file");
        std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600))
            .expect("password file mode");
        format!(
            "[registry]\nurl = \"{}\"\nrepository = \"{repository}\"\nusername = \"{USERNAME}\"\npassword_file = \"{}\"\nca_file = \"{}\"\n",
            self.url,
            password.display(),
            self.ca_path().display(),
        )
    }

    /// Kills the registry and waits for it; its data stay.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Whether the process is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    fn write_config(&self) -> PathBuf {
        let dir = self.dir.path();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: launchway-test-secret\n  tls:\n    certificate: {cert}\n    key: {key}\n\
             auth:\n  htpasswd:\n    realm: launchway-test\n    path: {htpasswd}\n",
            data = dir.join("data").display(),
            port = self.port,
            cert = dir.join("registry.crt").display(),
            key = dir.join("registry.key").display(),
            htpasswd = workspace().join("fixtures/registry/htpasswd").display(),
        );
        let path = dir.join("config.yml");
        std::fs::write(&path, config).expect("registry config written");
        path
    }

    /// Spawns `docker-registry serve` (on port 0 the first time, then on the
    /// port it took), learns the port from its log and waits until it
    /// answers.
    fn spawn(&mut self) {
        let config = self.write_config();
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log();
            if let Some(port) = log
                .split("listening on 127.0.0.1:")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|port| port.parse().ok())
            {
                self.port = port;
                self.url = format!("https://127.0.0.1:{port}");
                break;
            }
            assert!(
                self.running(),
                "docker-registry exited before listening:\n{log}"
            );
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start listening:\n{log}"
            );
            pause();
        }
        self.wait_answering(deadline);
    }

    /// Waits until `GET /v2/` answers 401 (the registry wants credentials):
    /// TLS and auth are up. From its own thread, so it works inside an async
    /// test too.
    fn wait_answering(&mut self, deadline: Instant) {
        let config = launchway_registry::RegistryConfig {
            username: None,
            password: None,
            ..self.config("launchway/ready")
        };
        let answered = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let client = launchway_registry::Registry::new(config).expect("client");
                loop {
                    match client.ping().await {
                        Err(launchway_registry::RegistryError::Auth { .. }) => return Ok(()),
                        Err(_) if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(error) => return Err(error.to_string()),
                        Ok(()) => {
                            return Err("it answered without asking for credentials".to_owned());
                        }
                    }
                }
            })
        })
        .join()
        .expect("readiness check");
        if let Err(why) = answered {
            let log = self.log();
            self.stop();
            panic!("docker-registry does not answer as expected: {why}\n{log}");
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test CA and a certificate it issued for 127.0.0.1 and localhost:
/// (CA PEM, certificate PEM, key PEM).
fn certificates() -> (String, String, String) {
    let now = std::time::SystemTime::now();
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Launchway test registry CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca_params.not_before = (now - Duration::from_secs(3600)).into();
    ca_params.not_after = (now + Duration::from_secs(30 * 86_400)).into();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(30 * 86_400)).into();
    let cert = params.signed_by(&key, &ca).expect("certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}
