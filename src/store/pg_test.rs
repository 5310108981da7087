//! A real PostgreSQL server for the store's tests (Debian's `postgresql` package): one per
//! test process, made in a temporary directory and listening on a free loopback port,
//! stopped and removed by a watcher once the process has ended. Each test gets a database
//! of its own. No server installed is a failure that says what to install, not a skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `postgres://…/postgres` of the test process's server.
static SERVER: OnceLock<String> = OnceLock::new();

/// A new, empty database on the test server: its URL.
pub async fn database() -> String {
    use sqlx::Connection;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let admin = SERVER.get_or_init(start);
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    // It listens a moment before it takes connections.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match sqlx::PgConnection::connect(admin).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => {
                panic!("the test PostgreSQL server takes no connection: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    conn.close().await.ok();
    let server = admin
        .strip_suffix("/postgres")
        .expect("the admin URL ends in /postgres");
    format!("{server}/{name}")
}

/// The newest installed server's programs (`/usr/lib/postgresql/<version>/bin`).
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "the store's PostgreSQL tests need a PostgreSQL server: apt-get install -y postgresql"
        ),
    }
}

/// PostgreSQL refuses to run as root; as root its programs run as the package's
/// `postgres` user.
fn as_server_user(program: &Path) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Command::new(program);
    }
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ])
    .arg(program);
    c
}

fn start() -> String {
    let bin = bin_dir();
    let dir = tempfile::Builder::new()
        .prefix("switchboard-pg-")
        .tempdir()
        .expect("a temporary directory")
        .keep();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown {} to the postgres user", dir.display());
    }
    let data = dir.join("data");
    let out = as_server_user(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    // The server, and a watcher that stops it and removes its files once this test
    // process is gone (no test outlives the process, and nothing else would stop it).
    // fsync is off: these databases are thrown away.
    let postgres = as_server_user(&bin.join("postgres"));
    let mut argv: Vec<String> = std::iter::once(postgres.get_program())
        .chain(postgres.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    argv.extend(
        [
            "-D",
            &data.to_string_lossy(),
            "-p",
            &port.to_string(),
            "-k",
            &dir.to_string_lossy(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ]
        .map(str::to_string),
    );
    // The watcher is meant to outlive this process: nobody waits for it here.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(
            r#"parent=$1; dir=$2; shift 2
"$@" >"$dir/server.log" 2>&1 &
pg=$!
while kill -0 "$parent" 2>/dev/null && kill -0 "$pg" 2>/dev/null; do sleep 1; done
kill -INT "$pg" 2>/dev/null; wait "$pg"
rm -rf "$dir""#,
        )
        .arg("sh")
        .arg(std::process::id().to_string())
        .arg(&dir)
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the PostgreSQL server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            panic!("the test PostgreSQL server did not start in 30 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}
