//! A throwaway PostgreSQL cluster, for the tests on machines where `DATABASE_URL` is not set
//! and for `ferry demo`.
//!
//! Started with `initdb` and `pg_ctl` (found on `PATH` or under
//! `/usr/lib/postgresql/*/bin`), listening on 127.0.0.1 on a free port, with `fsync` off. A
//! watchdog shell process stops it and deletes its directory when the process that started it exits,
//! however it exits. PostgreSQL refuses to run as root, so as root the cluster runs as the
//! `postgres` user through `runuser`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A running cluster: its superuser URL and data directory.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub url: String,
    pub data_dir: PathBuf,
    pub bin_dir: PathBuf,
}

pub fn find_bin_dir() -> Result<PathBuf, String> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                // A link farm (Debian's /usr/local/bin links, say) may hold only some of the
                // programs: use the directory the real initdb is in, which holds them all.
                return Ok(std::fs::canonicalize(dir.join("initdb"))
                    .ok()
                    .and_then(|real| real.parent().map(Path::to_path_buf))
                    .filter(|real| real.join("pg_ctl").is_file())
                    .unwrap_or(dir));
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            "initdb is not on PATH and /usr/lib/postgresql does not exist: install Debian's \
             `postgresql` package (apt-get install postgresql), or give a database URL"
                .to_owned()
        })?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "no initdb under /usr/lib/postgresql/*/bin: install Debian's `postgresql` package \
             (apt-get install postgresql), or give a database URL"
            .to_owned()
    })
}

pub fn is_root() -> bool {
    // `id -u` avoids an unsafe libc call (the workspace forbids unsafe code).
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Builds a command that runs as the cluster's owner.
pub fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

pub fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

pub fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("find a free port: {e}"))
}

/// Starts a cluster that lives until this process exits.
pub fn start() -> Result<Cluster, String> {
    let bin_dir = find_bin_dir()?;
    let root = is_root();
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data_dir = std::env::temp_dir().join(format!("ferry-pg-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("create {}: {e}", data_dir.display()))?;
    if root {
        run(
            {
                let mut c = Command::new("chown");
                c.arg("postgres:postgres").arg(&data_dir);
                c
            },
            "chown the cluster directory to postgres",
        )?;
    }
    let mut initdb = as_owner(root, &bin_dir.join("initdb"));
    initdb.arg("-D").arg(&data_dir).args([
        "-A",
        "trust",
        "-U",
        "postgres",
        "--no-sync",
        "-E",
        "UTF8",
    ]);
    run(initdb, "initdb")?;
    let port = free_port()?;
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
        data_dir.display()
    );
    let mut pg_ctl = as_owner(root, &bin_dir.join("pg_ctl"));
    pg_ctl
        .arg("-D")
        .arg(&data_dir)
        .args(["-o", &options, "-l"])
        .arg(data_dir.join("log"))
        .args(["-w", "start"]);
    run(pg_ctl, "pg_ctl start")?;
    spawn_watchdog(root, &bin_dir, &data_dir)?;
    Ok(Cluster {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        data_dir,
        bin_dir,
    })
}

/// Stops the cluster and removes its directory once this process is gone.
pub fn spawn_watchdog(root: bool, bin_dir: &Path, data_dir: &Path) -> Result<(), String> {
    let stop = if root {
        format!(
            "runuser -u postgres -- {} -D {} stop -m immediate",
            bin_dir.join("pg_ctl").display(),
            data_dir.display()
        )
    } else {
        format!(
            "{} -D {} stop -m immediate",
            bin_dir.join("pg_ctl").display(),
            data_dir.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = data_dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| format!("spawn the cluster watchdog: {e}"))
}
