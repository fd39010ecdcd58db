//! Crashes at random moments, many times: `ferry copy run` and `ferry tier run` are ended
//! again and again, each time at a moment chosen at random, and restarted until they finish.
//!
//! A moment is chosen one of two ways. Most runs crash at the n-th visit of a point (n at
//! random), which places the crash exactly in a stage; the stages are taken in turn, so every
//! one is hit (and the test requires it). Every third run is instead killed with SIGKILL once
//! its trace shows a random number of points reached: the kill lands wherever the process is
//! by then, counted under the last point it reached. Kills are counted per stage and printed.
//!
//! `FERRY_KILLS=200` raises the number of kills of each test for a long run (default 20);
//! `FERRY_KILL_SEED` repeats a run's choices.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::copy::{CopyWorld, MAX_BATCH, MIGRATION as COPY};
use crate::tier::{ROWS, TierWorld, day};
use crate::{ok, text, trace_lines};

/// Kills each test makes at least.
fn kills_wanted() -> u32 {
    std::env::var("FERRY_KILLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
        .max(20)
}

/// xorshift64, seeded from `FERRY_KILL_SEED` or the clock (printed, to repeat a run).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("FERRY_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("FERRY_KILL_SEED={seed}");
        Rng(seed)
    }

    /// 1..=n.
    fn upto(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        1 + (self.0 % u64::from(n.max(1))) as u32
    }
}

/// How one run of a command ended.
enum Ended {
    /// It finished by itself.
    Finished,
    /// It was ended at a moment after this point (the stage's point).
    Killed(String),
}

/// Kills per stage, and how.
#[derive(Default)]
struct Tally {
    by_stage: BTreeMap<String, u32>,
    sigkills: u32,
    total: u32,
}

impl Tally {
    fn count(&mut self, stage: &str, sigkill: bool) {
        *self.by_stage.entry(stage.to_owned()).or_default() += 1;
        self.sigkills += u32::from(sigkill);
        self.total += 1;
    }

    fn require(&self, stages: &[&str], what: &str) {
        eprintln!(
            "{what}: {} kills ({} by SIGKILL at a traced moment), per stage: {:?}",
            self.total, self.sigkills, self.by_stage
        );
        for stage in stages {
            assert!(
                self.by_stage.get(*stage).copied().unwrap_or(0) > 0,
                "stage {stage} was never hit: {:?}",
                self.by_stage
            );
        }
        assert!(self.total >= kills_wanted(), "{} kills", self.total);
    }
}

/// Runs `cmd` to crash at the `after`-th visit of `point`: killed there, or it finished.
fn crash_at(mut cmd: Command, point: &str, after: u32, trace: &Path) -> Ended {
    let _ = std::fs::remove_file(trace);
    let out = cmd
        .env("FERRY_CRASH_AT", point)
        .env("FERRY_CRASH_AFTER", after.to_string())
        .env("FERRY_CRASH_TRACE", trace)
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => Ended::Finished,
        Some(ferry_crash::EXIT_CODE) => Ended::Killed(point.to_owned()),
        _ => panic!("{cmd:?} ended {}: {}", out.status, text(&out.stderr)),
    }
}

/// Runs `cmd` traced and sends it SIGKILL once the trace holds `points` lines (or lets it
/// finish first); the stage is the last point it reached.
fn kill_when_traced(mut cmd: Command, points: usize, trace: &Path) -> Ended {
    let _ = std::fs::remove_file(trace);
    let mut child = cmd
        .env("FERRY_CRASH_TRACE", trace)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "a traced run ended with {status}");
            return Ended::Finished;
        }
        if trace_lines(trace).len() >= points {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let last = trace_lines(trace).pop().unwrap();
            return Ended::Killed(last);
        }
        assert!(
            Instant::now() < deadline,
            "the run neither reached {points} points nor ended"
        );
        // Polling the trace file (the condition is its contents), not waiting for a time.
        #[allow(clippy::disallowed_methods)] // a plain test thread, not a runtime worker
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One run of `cmd`, ended at a random moment: mostly at the n-th visit of the next stage's
/// point, every third run by SIGKILL at a traced moment.
fn one_run(
    cmd: Command,
    stages: &[(&str, &str)],
    rng: &mut Rng,
    turn: u32,
    max_after: u32,
    trace: &Path,
    tally: &mut Tally,
) -> bool {
    let sigkill = turn % 3 == 2;
    let ended = if sigkill {
        kill_when_traced(cmd, rng.upto(3 * max_after) as usize, trace)
    } else {
        let (_, point) = stages[(turn / 3 * 2 + turn % 3) as usize % stages.len()];
        crash_at(cmd, point, rng.upto(max_after), trace)
    };
    match ended {
        Ended::Finished => false,
        Ended::Killed(point) => {
            let stage = stages
                .iter()
                .find(|(_, p)| *p == point)
                .map_or(point.as_str(), |(s, _)| s);
            tally.count(stage, sigkill);
            true
        }
    }
}

const COPY_STAGES: &[(&str, &str)] = &[
    ("mid batch", "copy_before_commit"),
    ("between commit and checkpoint", "copy_after_commit"),
    ("after checkpoint", "copy_after_checkpoint"),
    ("batch start", "copy_batch_start"),
];

#[test]
fn copies_crashed_at_random_moments_end_exact() {
    let w = CopyWorld::with_rows(20_000, false, false);
    let trace = w.dir.path().join("trace");
    let (mut rng, mut tally, mut turn) = (Rng::new(), Tally::default(), 0);
    w.change("advance", "legacy");
    while tally.total < kills_wanted() {
        // One copy, crashed until it finishes; checkpoints only move forward, and at most
        // the one batch after the checkpoint is in the target beyond it.
        let mut last = 0;
        loop {
            let killed = one_run(
                w.copy_run(),
                COPY_STAGES,
                &mut rng,
                turn,
                4,
                &trace,
                &mut tally,
            );
            turn += 1;
            let checkpoint = w.checkpoint("forward").unwrap_or(0);
            assert!(
                checkpoint >= last,
                "checkpoint went back from {last} to {checkpoint}"
            );
            last = checkpoint;
            let written = w.target_count();
            assert!(written >= checkpoint && written - checkpoint <= MAX_BATCH);
            if !killed {
                break;
            }
        }
        assert_eq!(last, w.rows);
        w.assert_exact();
        if tally.total < kills_wanted() {
            // Again from the start: back to legacy (the progress is forgotten) and forward.
            ok(w.ferry()
                .args(["tenant", "rollback", COPY, "acme", "--wait", "0"]));
            // An empty target again, so the bound on what lies beyond the checkpoint holds
            // for the next copy as for the first.
            w.sql(
                &w.target_pool,
                "DELETE FROM moved.orders WHERE tenant_id = 'acme'",
            );
            w.change("advance", "legacy");
        }
    }
    tally.require(
        &[
            "mid batch",
            "between commit and checkpoint",
            "after checkpoint",
        ],
        "copy",
    );
}

const TIER_STAGES: &[(&str, &str)] = &[
    ("mid archiving", "manifest_swap"),
    ("mid buffer apply", "buffer_apply"),
    ("mid hot-copy deletion", "hot_copy_delete"),
];

/// Runs `tier run` with `args` until a run finishes, each crashed at a random moment of
/// `TIER_STAGES[stage]` (at most its `max_after`-th visit) or by SIGKILL at a traced one.
/// The bound grows with each run: a restarted deletion visits the chunks it deleted before
/// again (deleting nothing), so a fixed bound could cut every run before new work.
fn tier_until_done(
    w: &TierWorld,
    args: &[&str],
    (stage, max_after): (usize, u32),
    rng: &mut Rng,
    tally: &mut Tally,
) {
    let trace = w.dir.path().join("trace");
    let mut turn = 0;
    let stages = &TIER_STAGES[stage..=stage];
    while one_run(
        w.tier_run(args),
        stages,
        rng,
        turn,
        max_after + 2 * turn,
        &trace,
        tally,
    ) {
        turn += 1;
    }
}

#[test]
fn tiering_crashed_at_random_moments_ends_exact() {
    let w = TierWorld::new();
    let (mut rng, mut tally) = (Rng::new(), Tally::default());
    let rounds = i64::from(kills_wanted().div_ceil(10));
    // Archiving a window of 50 rows per run (one visit of its point: crashed at it, or not).
    let through = (2 * rounds + 8).min(38);
    for d in 1..=through {
        tier_until_done(&w, &["--cutoff", &day(d)], (0, 2), &mut rng, &mut tally);
    }
    // Changes to archived rows across the segments, applied by runs crashed mid-apply (a
    // visit per segment rewritten).
    let mut round = 0;
    // Enough rounds for the kills wanted; the deletion below adds its own (at least one: its
    // first run is always cut, every run visiting every chunk).
    while round < rounds || tally.total < kills_wanted() {
        let hot = w.hot("acme");
        for id in (1..50 * through).step_by(7) {
            if hot.contains_key(&id) {
                w.change_archived(id, Some(&format!("round {round} of {id}")));
            }
        }
        for id in (3 + round..50 * through).step_by(97) {
            if hot.contains_key(&id) {
                w.change_archived(id, None);
            }
        }
        tier_until_done(&w, &[], (1, 3), &mut rng, &mut tally);
        w.assert_cold_matches_hot(through);
        round += 1;
    }
    let cold = w.cold();
    // Then target_only: hot copies deleted 25 at a time, runs crashed mid-deletion.
    w.advance_to("target_only");
    tier_until_done(&w, &["--delete-batch", "25"], (2, 3), &mut rng, &mut tally);
    let hot = w.hot("acme");
    assert_eq!(w.cold(), cold, "deleting hot copies changed nothing cold");
    assert!(
        hot.keys().all(|id| !cold.contains_key(id)),
        "no key in both tiers"
    );
    assert!(
        hot.keys().all(|id| *id >= 50 * through),
        "every archived key only cold"
    );
    assert_eq!(
        hot.len() as i64,
        ROWS - 50 * through + 1,
        "the rest stays hot"
    );
    tally.require(
        &["mid archiving", "mid buffer apply", "mid hot-copy deletion"],
        "tier",
    );
}
