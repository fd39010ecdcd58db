//! Named crash points, for tests that crash the real `ferry` binary at exact moments.
//!
//! `crash_point!("copy_before_commit")` marks a moment in library code. Built with the
//! `failpoints` feature, each point reads three environment variables (once per process):
//!
//! - `FERRY_CRASH_AT=name`: the process ends the moment it reaches that point, printing
//!   `ferry: crash point NAME hit` on stderr and exiting with code [`EXIT_CODE`] (86), with no
//!   cleanup: open transactions are never committed, as after `kill -9`;
//! - `FERRY_CRASH_AFTER=n`: ... at the n-th time it reaches it (default 1);
//! - `FERRY_CRASH_TRACE=path`: every point reached is appended to the file, one name a line,
//!   before the process goes on (or ends), so a test sees which points a run visits and can
//!   kill it when the file shows a given moment.
//!
//! Without the feature a point compiles to nothing, and [`check_build`] refuses those
//! variables, so a test run against a binary without points fails instead of silently
//! testing nothing.
//!
//! Every point's name is in [`POINTS`]; the macro checks it at compile time, so a point cannot
//! be misspelt in the code, and [`check_build`] refuses an unknown name in `FERRY_CRASH_AT`,
//! so it cannot be misspelt in a test either.

/// The exit code of a process ended by a crash point.
pub const EXIT_CODE: i32 = 86;

/// Whether this build has live crash points (the `failpoints` feature).
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Every crash point, with where it is.
pub const POINTS: &[(&str, &str)] = &[
    (
        "copy_batch_start",
        "copier: a batch is about to read its rows",
    ),
    (
        "copy_before_commit",
        "copier: a batch is written in the destination, its transaction not committed",
    ),
    (
        "copy_after_commit",
        "copier (forward): a batch is committed in the target, its checkpoint not written",
    ),
    (
        "copy_after_checkpoint",
        "copier: a batch's checkpoint is written",
    ),
    (
        "rollback_walk",
        "copier (reverse, back from target_only): a batch is committed in the source, its checkpoint not written",
    ),
    (
        "phase_change",
        "engine: changes planned and checked, before the phase-change transaction",
    ),
    (
        "phase_change_commit",
        "store: inside the phase-change transaction (phases, audit, resets written), before its commit",
    ),
    (
        "phase_change_committed",
        "engine: the phase change committed, before the operator log and the wait for routers",
    ),
    (
        "buffer_apply",
        "tiering: buffered changes rewritten into an uploaded segment, not yet marked applied",
    ),
    (
        "manifest_swap",
        "tiering (archive): segments uploaded and changed rows re-queued, the manifest not yet committed",
    ),
    (
        "hot_copy_delete",
        "tiering: a chunk of archived rows' hot copies deleted, the deletion not yet committed",
    ),
    (
        "schema_step_done",
        "schema change: a step of start, complete or rollback committed, the next not begun",
    ),
    (
        "schema_backfill_batch",
        "schema change: a backfill batch committed, its checkpoint not written",
    ),
];

/// Whether `name` is one of [`POINTS`] (usable in constants: the macro checks at compile
/// time).
pub const fn is_point(name: &str) -> bool {
    let mut i = 0;
    while i < POINTS.len() {
        if str_eq(POINTS[i].0, name) {
            return true;
        }
        i += 1;
    }
    false
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Marks a named crash point (one of [`POINTS`], checked at compile time). Compiles to
/// nothing without the `failpoints` feature.
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {{
        const _: () = assert!(
            $crate::is_point($name),
            "not a crash point in ferry_crash::POINTS"
        );
        $crate::hit($name);
    }};
}

/// Why the crash-point environment cannot be honoured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrashError {
    #[error(
        "{0} is set, but this ferry was built without the failpoints feature (build it with `cargo build -p ferry-cli --features failpoints`)"
    )]
    NotBuilt(&'static str),
    #[error("FERRY_CRASH_AT={0} is not a crash point; the points are: {1}")]
    UnknownPoint(String, String),
    #[error("FERRY_CRASH_AFTER={0} is not a positive whole number")]
    BadCount(String),
    #[error("FERRY_CRASH_TRACE={path}: {source}")]
    Trace {
        path: String,
        source: std::io::Error,
    },
}

const VARS: [&str; 3] = ["FERRY_CRASH_AT", "FERRY_CRASH_AFTER", "FERRY_CRASH_TRACE"];

/// Checks the crash-point environment at start-up: without the feature, any of the variables
/// is an error; with it, an unknown point, a bad count or a trace file that cannot be opened
/// is. A binary calls this before doing anything else.
pub fn check_build() -> Result<(), CrashError> {
    if !ENABLED {
        return match VARS.iter().find(|v| std::env::var_os(v).is_some()) {
            Some(var) => Err(CrashError::NotBuilt(var)),
            None => Ok(()),
        };
    }
    #[cfg(feature = "failpoints")]
    live::check()?;
    Ok(())
}

/// Reaches the point `name`: see the crate's documentation. Call it through
/// [`crash_point!`], which checks the name.
#[inline(always)]
pub fn hit(name: &'static str) {
    #[cfg(feature = "failpoints")]
    live::hit(name);
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

#[cfg(feature = "failpoints")]
mod live {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Mutex, OnceLock};

    use super::{CrashError, EXIT_CODE, POINTS, is_point};

    pub(super) struct Config {
        at: Option<String>,
        after: u64,
        trace: Option<Mutex<std::fs::File>>,
        reached: AtomicU64,
    }

    fn read() -> Result<Config, CrashError> {
        let at = std::env::var("FERRY_CRASH_AT")
            .ok()
            .filter(|s| !s.is_empty());
        if let Some(at) = &at
            && !is_point(at)
        {
            let names: Vec<&str> = POINTS.iter().map(|(n, _)| *n).collect();
            return Err(CrashError::UnknownPoint(at.clone(), names.join(", ")));
        }
        let after = match std::env::var("FERRY_CRASH_AFTER") {
            Ok(n) => n
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(CrashError::BadCount(n))?,
            Err(_) => 1,
        };
        let trace = match std::env::var("FERRY_CRASH_TRACE") {
            Ok(path) if !path.is_empty() => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| CrashError::Trace { path, source })?,
            )),
            _ => None,
        };
        Ok(Config {
            at,
            after,
            trace,
            reached: AtomicU64::new(0),
        })
    }

    /// The environment as read by the first point reached (or its error, as text).
    fn config() -> Result<&'static Config, &'static str> {
        static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
        CONFIG
            .get_or_init(|| read().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(String::as_str)
    }

    /// What [`super::check_build`] checks: the environment read afresh, its error typed.
    pub(super) fn check() -> Result<(), CrashError> {
        read().map(drop)
    }

    fn die(code: i32, message: &str) -> ! {
        eprintln!("{message}");
        std::process::exit(code)
    }

    pub(super) fn hit(name: &'static str) {
        let config = match config() {
            Ok(c) => c,
            Err(e) => die(1, &format!("error: {e}")),
        };
        if let Some(trace) = &config.trace {
            let mut file = trace
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(e) = file.write_all(format!("{name}\n").as_bytes()) {
                die(1, &format!("error: write the crash trace: {e}"));
            }
        }
        if config.at.as_deref() == Some(name)
            && config.reached.fetch_add(1, Ordering::SeqCst) + 1 == config.after
        {
            // No cleanup: what is not committed stays uncommitted, as after kill -9.
            die(EXIT_CODE, &format!("ferry: crash point {name} hit"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_unique_and_known() {
        for (i, (name, _)) in POINTS.iter().enumerate() {
            assert!(is_point(name));
            assert!(
                POINTS[i + 1..].iter().all(|(other, _)| other != name),
                "{name}"
            );
        }
        assert!(!is_point("copy_batch"));
        assert!(!is_point("copy_batch_start_"));
        assert!(!is_point(""));
    }

    #[test]
    fn a_point_outside_a_run_does_nothing() {
        // No FERRY_CRASH_* in the test environment: reaching a point just returns.
        crash_point!("copy_batch_start");
    }
}
