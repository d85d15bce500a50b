//! A throwaway PostgreSQL server for tests and benchmarks.
//!
//! [`Cluster::start`] runs `initdb` into a new temp dir and `pg_ctl start`
//! on a free loopback port (and a Unix socket in the dir), with `fsync` on:
//! a crash test means something. As root, the server runs as the
//! `postgres` user (initdb refuses root). The binaries are those of
//! `$BRUME_PG_BIN`, or the newest `/usr/lib/postgresql/*/bin` (Debian's
//! `postgresql`).
//!
//! The cluster is stopped and its dir removed when it is dropped, and also
//! when the process that started it ends however it ends: a small reaper
//! shell waits for EOF on a pipe that only this process holds open. So a
//! cluster shared by a test binary ([`Cluster::shared`]) does not outlive it.
//!
//! [`Cluster::database`] makes a fresh database owned by the role
//! `brume_owner`, and gives the URLs of that owner and of `brume_app`, a
//! role that owns nothing: the stores' tests connect as `brume_app` so that
//! revoked privileges are really tested (a superuser ignores them).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::Error;

/// A running throwaway server.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
    /// The reaper's stdin: closing it (or this process ending) stops the
    /// server and removes `dir`.
    reaper: Option<(Child, ChildStdin)>,
    /// With TLS: the server's self-signed certificate (PEM), its own CA.
    tls_cert: Option<String>,
}

/// A fresh database of a [`Cluster`].
#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    /// As `brume_owner`, which owns the database (and so the tables its
    /// migrations create).
    pub owner_url: String,
    /// As `brume_app`, which owns nothing; grant it what a store needs.
    pub app_url: String,
    /// As the superuser `postgres`.
    pub superuser_url: String,
}

/// The role that owns the test databases, and the one that owns nothing.
pub const OWNER_ROLE: &str = "brume_owner";
pub const APP_ROLE: &str = "brume_app";

fn pg_bin() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("BRUME_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            Error::Cluster(
                "no PostgreSQL binaries in /usr/lib/postgresql: install Debian's `postgresql` \
                 or set BRUME_PG_BIN"
                    .into(),
            )
        })?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| Error::Cluster("no initdb under /usr/lib/postgresql/*/bin".into()))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn check(out: &std::process::Output, what: &str) -> Result<(), Error> {
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Cluster(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

impl Cluster {
    /// Starts a new cluster (about a second). Blocking: call it off the
    /// async runtime, or before it.
    pub fn start() -> Result<Cluster, Error> {
        Cluster::start_inner(false)
    }

    /// [`Cluster::start`] with TLS on (`ssl=on`), its certificate
    /// self-signed for `localhost` and `127.0.0.1` ([`tls_cert`](Self::tls_cert)).
    pub fn start_tls() -> Result<Cluster, Error> {
        Cluster::start_inner(true)
    }

    /// The server's certificate (PEM), when started with TLS.
    pub fn tls_cert(&self) -> Option<&str> {
        self.tls_cert.as_deref()
    }

    fn start_inner(tls: bool) -> Result<Cluster, Error> {
        let bin = pg_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("brume-pg-")
            .tempdir()?
            .keep();
        let as_postgres = is_root();
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            as_postgres,
            reaper: None,
            tls_cert: None,
        };
        if as_postgres {
            check(
                &Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&cluster.dir)
                    .output()?,
                "chown postgres",
            )?;
        }
        cluster.reaper = Some(cluster.spawn_reaper()?);
        let data = cluster.dir.join("data");
        check(
            &cluster
                .command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
                .args(["--locale=C.UTF-8"])
                .output()?,
            "initdb",
        )?;
        if tls {
            cluster.tls_cert = Some(cluster.write_certificate()?);
        }
        // A port that was free a moment ago may be taken: try a few.
        let mut last = None;
        for _ in 0..5 {
            cluster.port = free_port()?;
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Cluster("could not start".into())))
    }

    /// One cluster for the whole process (a test binary), started on first
    /// use; it is stopped when the process ends.
    pub fn shared() -> Result<&'static Cluster, Error> {
        static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Cluster::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Cluster(e.clone()))
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.current_dir(&self.dir);
        c
    }

    /// A shell that waits for EOF on its stdin, then stops the server hard
    /// and removes the dir.
    fn spawn_reaper(&self) -> Result<(Child, ChildStdin), Error> {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!("runuser -u postgres -- {} ", pg_ctl.display())
        } else {
            format!("{} ", pg_ctl.display())
        };
        let script = format!(
            "read _; {stop} -D \"$0/data\" stop -m immediate >/dev/null 2>&1; rm -rf \"$0\""
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| Error::Cluster("reaper stdin".into()))?;
        Ok((child, stdin))
    }

    /// A self-signed certificate and its key, as `server.crt` and
    /// `server.key` in the data dir (PostgreSQL's defaults); its PEM.
    fn write_certificate(&self) -> Result<String, Error> {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| Error::Cluster(format!("certificate: {e}")))?;
        let data = self.dir.join("data");
        let (crt, key) = (data.join("server.crt"), data.join("server.key"));
        std::fs::write(&crt, made.cert.pem())?;
        std::fs::write(&key, made.signing_key.serialize_pem())?;
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        if self.as_postgres {
            check(
                &Command::new("chown")
                    .arg("postgres:postgres")
                    .args([&crt, &key])
                    .output()?,
                "chown the certificate",
            )?;
        }
        Ok(made.cert.pem())
    }

    fn pg_ctl_start(&self) -> Result<(), Error> {
        let ssl = if self.tls_cert.is_some() { "on" } else { "off" };
        let opts = format!(
            "-k {} -p {} -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200 \
             -c ssl={ssl}",
            self.dir.display(),
            self.port
        );
        check(
            &self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .args(["-w", "-o", &opts, "start"])
                .output()?,
            "pg_ctl start",
        )
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: no
    /// shutdown checkpoint; the next start replays the WAL).
    pub fn crash(&self) -> Result<(), Error> {
        check(
            &self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["stop", "-m", "immediate"])
                .output()?,
            "pg_ctl stop -m immediate",
        )
    }

    /// Starts the server again, on the same port, after [`crash`](Self::crash).
    pub fn restart(&self) -> Result<(), Error> {
        self.pg_ctl_start()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of `role` on `db`.
    pub fn url(&self, role: &str, db: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{db}", self.port)
    }

    /// A fresh database (a new name each call) owned by [`OWNER_ROLE`];
    /// creates the two roles on first use.
    pub async fn database(&self, prefix: &str) -> Result<Database, Error> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let superuser_url = self.url("postgres", "postgres");
        let admin = crate::connect(&superuser_url).await?;
        for role in [OWNER_ROLE, APP_ROLE] {
            let sql = format!(
                "DO $$ BEGIN CREATE ROLE {role} LOGIN; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            );
            admin.batch_execute(&sql).await?;
        }
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {OWNER_ROLE}"))
            .await?;
        Ok(Database {
            owner_url: self.url(OWNER_ROLE, &name),
            app_url: self.url(APP_ROLE, &name),
            superuser_url: self.url("postgres", &name),
            name,
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some((mut child, mut stdin)) = self.reaper.take() {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}
