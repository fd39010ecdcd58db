//! A primary with a streaming hot standby, both throwaway, for tests of what replication lag
//! does to Ferry: the standby is a real replica (`pg_basebackup -R`), whose replay a test can
//! pause (`pg_wal_replay_pause()`) to make lag grow, and resume.
//!
//! Unlike [`crate::cluster::start`], these clusters belong to one test: they are stopped and
//! their directories removed when the value is dropped (and by a watchdog if the process
//! dies first).

use std::path::PathBuf;

use crate::cluster::{
    Cluster, as_owner, find_bin_dir, free_port, is_root, run, spawn_watchdog, start,
};

/// A primary and its standby, each with a superuser URL.
pub struct Replicated {
    pub primary: Cluster,
    pub standby_url: String,
    standby_dir: PathBuf,
    root: bool,
}

impl Replicated {
    /// Starts a fresh primary, base-backs it up into a standby that streams from it, starts
    /// the standby and waits until it accepts connections. Panics saying what failed.
    pub fn start() -> Replicated {
        let primary = start().unwrap_or_else(|e| panic!("start a primary cluster: {e}"));
        let root = is_root();
        let bin_dir = find_bin_dir().unwrap_or_else(|e| panic!("{e}"));
        let standby_dir = std::env::temp_dir().join(format!(
            "ferry-pg-standby-{}-{}",
            std::process::id(),
            primary
                .data_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("x")
        ));
        let _ = std::fs::remove_dir_all(&standby_dir);
        let port = primary
            .url
            .rsplit(':')
            .next()
            .and_then(|rest| rest.split('/').next())
            .expect("the primary's URL has a port")
            .to_owned();
        let mut backup = as_owner(root, &bin_dir.join("pg_basebackup"));
        backup.arg("-D").arg(&standby_dir).args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-R",
            "-X",
            "stream",
        ]);
        run(backup, "pg_basebackup").unwrap_or_else(|e| panic!("{e}"));
        let standby_port = free_port().unwrap_or_else(|e| panic!("{e}"));
        let options = format!(
            // A hot standby needs max_connections at least the primary's (300).
            "-p {standby_port} -k {} -c listen_addresses=127.0.0.1 -c hot_standby=on -c fsync=off \
             -c max_connections=300",
            standby_dir.display()
        );
        let mut pg_ctl = as_owner(root, &bin_dir.join("pg_ctl"));
        pg_ctl
            .arg("-D")
            .arg(&standby_dir)
            .args(["-o", &options, "-l"])
            .arg(standby_dir.join("standby.log"))
            .args(["-w", "start"]);
        if let Err(e) = run(pg_ctl, "start the standby") {
            let log = std::fs::read_to_string(standby_dir.join("standby.log")).unwrap_or_default();
            panic!("{e}\nthe standby's log:\n{log}");
        }
        spawn_watchdog(root, &bin_dir, &standby_dir).unwrap_or_else(|e| panic!("{e}"));
        Replicated {
            standby_url: format!("postgres://postgres@127.0.0.1:{standby_port}/postgres"),
            primary,
            standby_dir,
            root,
        }
    }

    /// A URL of database `name` on the primary.
    pub fn primary_db(&self, name: &str) -> String {
        ferry_store::url_with_database(&self.primary.url, name)
    }
}

impl Drop for Replicated {
    fn drop(&mut self) {
        for dir in [&self.standby_dir, &self.primary.data_dir] {
            let mut stop = as_owner(self.root, &self.primary.bin_dir.join("pg_ctl"));
            stop.arg("-D").arg(dir).args(["stop", "-m", "immediate"]);
            let _ = run(stop, "stop a test cluster");
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
