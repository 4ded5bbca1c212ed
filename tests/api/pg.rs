//! A throwaway PostgreSQL for the tests, started from the installed binaries.
//!
//! One shared cluster serves every test of the binary, each test in a database of its
//! own; tests that stop or restart PostgreSQL get a cluster of their own. Everything lives
//! in a temporary directory that is removed when the test process ends. When running as
//! root, the binaries run as the `postgres` system user (initdb refuses root).
//! `TEST_DATABASE_URL` replaces the shared cluster with an existing server.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use sea_orm::ConnectionTrait;

/// Where tests get PostgreSQL databases from, if anywhere.
pub enum PgSource {
    /// `TEST_DATABASE_URL`: a server somebody else runs. The URL names any database the
    /// user may connect to and create databases from.
    External(String),
    /// The cluster this process started.
    Cluster(PgCluster),
}

/// The shared source, started on first use; `None` when PostgreSQL is not installed (and
/// `LECTERN_REQUIRE_POSTGRES` is not set, in which case this panics instead).
pub fn shared() -> Option<&'static PgSource> {
    static SHARED: OnceLock<Option<PgSource>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
                return Some(PgSource::External(url));
            }
            let mut cluster = PgCluster::init()?;
            // Nothing stops the shared cluster, so it can skip durability for speed.
            cluster.durable = false;
            cluster.start();
            cluster.remove_when_process_exits();
            Some(PgSource::Cluster(cluster))
        })
        .as_ref()
}

impl PgSource {
    /// Creates a fresh, empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "lectern_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin_url = self.url_for("postgres");
        let admin = sea_orm::Database::connect(&admin_url)
            .await
            .expect("connect to the test PostgreSQL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create a test database");
        admin.close().await.ok();
        self.url_for(&name)
    }

    fn url_for(&self, database: &str) -> String {
        match self {
            PgSource::Cluster(c) => c.url(database),
            PgSource::External(url) => replace_database(url, database),
        }
    }
}

/// `postgres://u:p@h:5432/old?x=y` → `postgres://u:p@h:5432/<database>?x=y`.
fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[authority_start..]
        .find('/')
        .map(|i| authority_start + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..path_start], database);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// One PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 only.
pub struct PgCluster {
    bin_dir: PathBuf,
    base: PathBuf,
    pub port: u16,
    run_as_postgres: bool,
    /// fsync and synchronous commit on: what tests that crash the server need so that
    /// acknowledged commits survive, as on a real server.
    durable: bool,
}

impl PgCluster {
    /// Runs initdb into a new directory (a durable cluster); does not start the server. `None` when the
    /// binaries are missing (panics if `LECTERN_REQUIRE_POSTGRES=1`).
    pub fn init() -> Option<Self> {
        let Some(bin_dir) = find_bin_dir() else {
            if std::env::var("LECTERN_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "LECTERN_REQUIRE_POSTGRES=1 but no PostgreSQL binaries (initdb, pg_ctl) were found"
                );
            }
            eprintln!(
                "notice: PostgreSQL binaries not found; the PostgreSQL half of the storage tests is skipped"
            );
            return None;
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir().join(format!(
            "lectern-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&base).expect("create the cluster directory");
        let run_as_postgres = running_as_root();
        if run_as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&base)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown of {} failed", base.display());
        }
        let cluster = Self {
            bin_dir,
            base,
            port: free_port(),
            run_as_postgres,
            durable: true,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().expect("utf-8 temp path"),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        Some(cluster)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn start(&self) {
        let durability = if self.durable {
            ""
        } else {
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        };
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300{durability}",
            self.port,
            self.base.display()
        );
        let log = self.base.join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().expect("utf-8 temp path"),
                "-o",
                &options,
                "-l",
                log.to_str().expect("utf-8 temp path"),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server; `mode` is pg_ctl's: "fast" or "immediate".
    pub fn stop(&self, mode: &str) {
        let data = self.data_dir();
        let data = data.to_str().expect("utf-8 temp path");
        self.run("pg_ctl", &["-D", data, "-m", mode, "-w", "stop"]);
    }

    fn data_dir(&self) -> PathBuf {
        self.base.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin_dir.join(program);
        if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// For the shared cluster, which lives in a static and is never dropped: a detached
    /// shell waits for this process to end, then stops the server and removes the files.
    fn remove_when_process_exits(&self) {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let runuser = if self.run_as_postgres {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {runuser}{pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {base}",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = self.data_dir().display(),
            base = self.base.display(),
        );
        // The outer shell backgrounds the watchdog and exits at once, so the watchdog is
        // nobody's child and outlives this process.
        let status = Command::new("sh")
            .args(["-c", &format!("({script}) >/dev/null 2>&1 &")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn the cluster watchdog");
        assert!(status.success(), "the cluster watchdog started");
    }
}

/// Clusters a test owns are stopped and removed when it ends, passed or failed. (The
/// shared one lives in a static, is never dropped, and has its watchdog instead.)
impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_tools(&dir) {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has_tools(d))
        .collect();
    versions.sort();
    if let Some(newest) = versions.pop() {
        return Some(newest);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| has_tools(d))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}
