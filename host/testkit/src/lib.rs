//! Throwaway servers in temporary folders, stopped when dropped, for the tests and the
//! benchmarks: a PostgreSQL cluster ([`Postgres`]; `initdb` and `pg_ctl` refuse to run as root,
//! so as root they run as the `postgres` user), a NATS server with JetStream ([`Nats`]), a
//! headless Chromium driven over WebDriver ([`Browser`]), and a network link the test controls
//! ([`link`]: latency, refused connections, a blackhole); a randomized fault run over a
//! fleet of real edges with a checker of what it promised ([`chaos`]); and a runner of a
//! README's shell blocks, as a reader pastes them ([`readme`]).

pub mod certs;
pub mod chaos;
pub mod link;
pub mod nats_jwt;
pub mod readme;

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Whether the server offers TLS (with the certificate in its data folder).
    tls: bool,
}

/// Where the server binaries are: on the PATH, or Debian's versioned folder.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let on_path = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(initdb) = on_path
        && let Some(dir) = initdb.parent()
    {
        return Ok(dir.to_owned());
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().ok_or_else(|| {
        anyhow::anyhow!(
            "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: `make test` installs them"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command for a server binary, as `postgres` when we are root.
fn pg_command(bin: &Path, tool: &str) -> Command {
    let exe = bin.join(tool);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

/// Writes a file only its owner may read, owned by `postgres` when we are root.
fn write_owned(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    if is_root() {
        let mut c = Command::new("chown");
        c.arg("postgres:postgres").arg(path);
        run(c, "chown")?;
    }
    Ok(())
}

fn run(mut c: Command, what: &str) -> anyhow::Result<()> {
    let out = c.output().map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Postgres {
    /// Creates and starts a cluster on a free port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// [`Self::start`], offering TLS with this certificate (`ssl=on`); clients may still
    /// connect without it unless [`Self::add_login`] says otherwise.
    pub fn start_tls(server: &certs::Issued) -> anyhow::Result<Self> {
        Self::start_with(Some(server))
    }

    fn start_with(server: Option<&certs::Issued>) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("cart-pg-").tempdir()?;
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown the cluster folder",
            )?;
        }
        let data = dir.path().join("data");
        let mut initdb = pg_command(&bin, "initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(initdb, "initdb")?;
        if let Some(server) = server {
            write_owned(&data.join("server.crt"), &server.cert_pem)?;
            write_owned(&data.join("server.key"), &server.key_pem)?;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let pg = Self {
            dir,
            bin,
            port,
            tls: server.is_some(),
        };
        pg.resume()?;
        Ok(pg)
    }

    /// A superuser `user` who logs in with `password` (SCRAM) and, if `tls_only`, only over
    /// TLS; others keep logging in as before.
    pub async fn add_login(
        &self,
        user: &str,
        password: &str,
        tls_only: bool,
    ) -> anyhow::Result<()> {
        let client = self.admin().await?;
        client
            .batch_execute(&format!(
                "CREATE ROLE \"{user}\" LOGIN SUPERUSER PASSWORD '{}'",
                password.replace('\'', "''")
            ))
            .await?;
        let hba = self.data().join("pg_hba.conf");
        let mut lines = String::new();
        if tls_only {
            lines.push_str(&format!("hostnossl all {user} all reject\n"));
        }
        lines.push_str(&format!("host all {user} all scram-sha-256\n"));
        let rest = std::fs::read_to_string(&hba)?;
        std::fs::write(&hba, lines + &rest)?;
        client.batch_execute("SELECT pg_reload_conf()").await?;
        Ok(())
    }

    async fn admin(&self) -> anyhow::Result<tokio_postgres::Client> {
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts (or restarts) the server.
    pub fn resume(&self) -> anyhow::Result<()> {
        let mut c = pg_command(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"));
        let tls = if self.tls {
            " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
        } else {
            ""
        };
        c.arg("-o").arg(format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200 -c fsync=off{tls}",
            self.port,
            self.dir.path().display()
        ));
        c.args(["-w", "start"]);
        run(c, "pg_ctl start")
    }

    /// Stops the server at once, as an outage would.
    pub fn halt(&self) -> anyhow::Result<()> {
        let mut c = pg_command(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"]);
        run(c, "pg_ctl stop")
    }

    /// A fresh database in this cluster; its URL.
    pub async fn database(&self, name: &str) -> anyhow::Result<String> {
        self.admin()
            .await?
            .execute(&format!("CREATE DATABASE \"{name}\""), &[])
            .await?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// A client program (`pg_dump`, `pg_restore`) logged in to this server as `postgres`.
    fn client(&self, tool: &str) -> Command {
        let beside = self.bin.join(tool);
        let mut c = Command::new(if beside.exists() { beside } else { tool.into() });
        let port = self.port.to_string();
        c.args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"]);
        c
    }

    /// A backup of database `name`, as an operator takes one: `pg_dump` in its custom format,
    /// written to `to`.
    pub fn dump(&self, name: &str, to: &Path) -> anyhow::Result<()> {
        let mut c = self.client("pg_dump");
        c.arg("-Fc").arg("-f").arg(to).arg(name);
        run(c, "pg_dump")
    }

    /// Database `name` restored from a [`Self::dump`]: dropped (its connections cut, as a
    /// restore does), made again, and `pg_restore`d in one transaction, so that its clients find
    /// it whole or not at all, never half loaded.
    pub async fn restore(&self, name: &str, from: &Path) -> anyhow::Result<()> {
        let admin = self.admin().await?;
        // One statement each: a batch of them would run as one transaction, which DROP refuses.
        for sql in [
            format!("DROP DATABASE \"{name}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{name}\""),
        ] {
            admin.execute(&sql, &[]).await?;
        }
        let mut c = self.client("pg_restore");
        c.args(["--single-transaction", "-d", name]).arg(from);
        run(c, "pg_restore")
    }

    /// The server's version, as `postgres --version` says it.
    pub fn version(&self) -> String {
        Command::new(self.bin.join("postgres"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut c = pg_command(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"]);
        let _ = c.output();
    }
}

/// A `nats-server -js` on a free port, its JetStream store in a temporary folder.
pub struct Nats {
    dir: TempDir,
    pub port: u16,
    server: Option<std::process::Child>,
    /// TLS and a user's password, when the server asks for them.
    secured: Vec<String>,
}

impl Nats {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let mut nats = Self::start_stopped()?;
        nats.resume()?;
        Ok(nats)
    }

    /// [`Self::start`], speaking TLS only, with this certificate, and admitting only `user`
    /// with `password`.
    pub fn start_secured(
        server: &certs::Issued,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Self> {
        let mut nats = Self::start_stopped()?;
        nats.secured = nats.tls_args(server)?;
        nats.secured.extend([
            "--user".into(),
            user.into(),
            "--pass".into(),
            password.into(),
        ]);
        nats.resume()?;
        Ok(nats)
    }

    /// [`Self::start`], speaking TLS only, with this certificate, in operator mode: it trusts
    /// `operator` and admits the users of `accounts`, each with its `.creds` file.
    pub fn start_operated(
        server: &certs::Issued,
        operator: &nats_jwt::Operator,
        accounts: &[&nats_jwt::Account],
    ) -> anyhow::Result<Self> {
        let mut nats = Self::start_stopped()?;
        let operator_jwt = nats.dir.path().join("operator.jwt");
        std::fs::write(&operator_jwt, operator.jwt()?)?;
        let config = nats.dir.path().join("operated.conf");
        std::fs::write(&config, operator.server_config(&operator_jwt, accounts))?;
        nats.secured = nats.tls_args(server)?;
        nats.secured
            .extend(["-c".into(), config.display().to_string()]);
        nats.resume()?;
        Ok(nats)
    }

    /// The server's certificate and key, written to its folder, as its command line names them.
    fn tls_args(&self, server: &certs::Issued) -> anyhow::Result<Vec<String>> {
        let (cert, key) = (
            self.dir.path().join("server.crt"),
            self.dir.path().join("server.key"),
        );
        std::fs::write(&cert, &server.cert_pem)?;
        std::fs::write(&key, &server.key_pem)?;
        Ok(vec![
            "--tls".into(),
            "--tlscert".into(),
            cert.display().to_string(),
            "--tlskey".into(),
            key.display().to_string(),
        ])
    }

    fn start_stopped() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("cart-nats-").tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Ok(Self {
            dir,
            port,
            server: None,
            secured: Vec::new(),
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the server on the same port and store.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))?;
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .args(&self.secured)
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "nats-server (JetStream) does not start: {e}; `make test` installs it"
                )
            })?;
        self.server = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops the server at once (its store stays), as an outage would.
    pub fn halt(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.server.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// The server's version, as `nats-server --version` says it.
    pub fn version() -> String {
        Command::new("nats-server")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// A headless Chromium, driven over WebDriver by its own `chromedriver` (Debian's
/// `chromium-driver`), with a fresh profile in a temporary folder. Dropping it ends both.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: std::process::Child,
    _profile: TempDir,
}

/// Windows narrower than this are a phone's.
const PHONE_WIDTH: u32 = 600;

impl Browser {
    /// Opens a browser window `width` × `height` CSS pixels.
    pub async fn open(width: u32, height: u32) -> anyhow::Result<Self> {
        let profile = tempfile::Builder::new()
            .prefix("cart-chromium-")
            .tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("chromedriver does not start: {e}; `make test` installs it")
            })?;
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium()?,
                "args": [
                    "--headless=new",
                    // Root in a container has no user namespace for Chromium's sandbox.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let mut capabilities = capabilities;
        if width < PHONE_WIDTH {
            // Chromium's windows are never this narrow: a phone's screen is emulated.
            capabilities["goog:chromeOptions"]["mobileEmulation"] = serde_json::json!({
                "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1.0 },
            });
        }
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let client = loop {
            let tried = fantoccini::ClientBuilder::new(
                hyper_util::client::legacy::connect::HttpConnector::new(),
            )
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
            match tried {
                Ok(client) => break client,
                Err(e) if std::time::Instant::now() > deadline => {
                    let _ = driver.kill();
                    anyhow::bail!("no Chromium session within 30 s: {e}");
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        };
        Ok(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    /// Ends the session (Chromium exits) and the driver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.client.clone().close().await?;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver takes its Chromium with it.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Debian's Chromium, or whichever `chromium` is on the PATH.
fn chromium() -> anyhow::Result<String> {
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("Chromium is not installed; `make test` installs it"))
}
