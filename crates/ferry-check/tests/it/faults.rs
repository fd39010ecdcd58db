//! Network faults with the checker on: the application's pools (both sides) go through fault
//! proxies, the copier and the control store connect directly, and while tenants move (forward
//! copies, reverse copies, rollbacks) episodes of four kinds hit the proxies at random moments:
//! a latency spike (50–500 ms per round trip for 0.5–1.5 s), a reset of every connection, a
//! blackhole (0.5–3 s), and a lost COMMIT answer (the server committed, the client saw its
//! connection drop). After each episode clears, recovery is the time until every client's
//! next successful operation (its progress counter moved); each must be under 30 s. At the end
//! the checker must find no anomaly of any kind, and every phase change refused for open
//! mismatches is settled by `ferry verify`, as an operator would.
//!
//! `FERRY_FAULT_EPISODES` sets the number of episodes (20 by default, 100 for the long tier),
//! `FERRY_FAULT_SEED` the random seed (printed with the figures).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferry_check::{AppPools, Scenario, ScenarioSettings};
use ferry_testkit::FaultProxy;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::world::{settings, world_with};

/// Recovery must come within this long of a fault clearing.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Latency,
    Reset,
    Blackhole,
    LostCommit,
}

const KINDS: [Kind; 4] = [
    Kind::Latency,
    Kind::Reset,
    Kind::Blackhole,
    Kind::LostCommit,
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[low, high]` milliseconds.
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low + 1))
    }
}

/// What one episode did.
#[derive(Debug)]
struct Episode {
    kind: Kind,
    /// Which proxies: source, target, or both.
    sides: &'static str,
    /// How long the fault was on (zero for a reset).
    held: Duration,
    /// For a lost COMMIT answer: whether a COMMIT passed the proxy while it was armed.
    triggered: bool,
    recovery: Duration,
}

/// The application's pool for one side, through `proxy`, with the copier's session settings.
async fn app_pool(proxy: &FaultProxy) -> PgPool {
    let options = proxy
        .options()
        .application_name("ferry-check-app")
        .options([
            ("timezone", "UTC"),
            ("datestyle", "ISO, YMD"),
            ("intervalstyle", "iso_8601"),
            ("extra_float_digits", "3"),
            ("bytea_output", "hex"),
        ]);
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .unwrap()
}

/// Waits until every client's progress counter moved past `before`; how long that took.
async fn recovery(s: &Scenario, cleared: Instant, before: &[u64]) -> Duration {
    loop {
        let now = s.client_progress();
        if now.iter().zip(before).all(|(n, b)| n > b) {
            return cleared.elapsed();
        }
        assert!(
            cleared.elapsed() < RECOVERY_LIMIT,
            "clients {:?} made no progress within {RECOVERY_LIMIT:?} of the fault clearing",
            now.iter()
                .zip(before)
                .enumerate()
                .filter(|(_, (n, b))| n <= b)
                .map(|(c, _)| c)
                .collect::<Vec<_>>()
        );
        // Polling a counter the clients move: observable progress, not a guess.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One episode of `kind` on the proxies `on`; returns once every client recovered.
async fn episode(s: &Scenario, on: &[&FaultProxy], kind: Kind, rng: &mut Rng) -> Episode {
    let started = Instant::now();
    let mut triggered = true;
    match kind {
        Kind::Latency => {
            let round_trip = rng.millis(50, 500);
            for p in on {
                p.set_latency(round_trip / 2, round_trip / 2);
            }
            tokio::time::sleep(rng.millis(500, 1500)).await;
        }
        Kind::Reset => {
            for p in on {
                p.reset_all().await;
            }
        }
        Kind::Blackhole => {
            for p in on {
                p.set_blackhole(true);
            }
            tokio::time::sleep(rng.millis(500, 3000)).await;
        }
        Kind::LostCommit => {
            let lost: u64 = on.iter().map(|p| p.answers_lost()).sum();
            for p in on {
                p.lose_next_commit_answer();
            }
            // Armed until a COMMIT passes (one side may see none while its tenants are in
            // `legacy`): wait for the proxy's counter, up to 5 s.
            while on.iter().map(|p| p.answers_lost()).sum::<u64>() == lost {
                if started.elapsed() > Duration::from_secs(5) {
                    triggered = false;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    let held = started.elapsed();
    let before = s.client_progress();
    for p in on {
        p.clear();
    }
    let cleared = Instant::now();
    let recovery = recovery(s, cleared, &before).await;
    Episode {
        kind,
        sides: "",
        held,
        triggered,
        recovery,
    }
}

/// Runs `count` episodes at random moments; kinds come shuffled four at a time, so each
/// appears a quarter of the time.
async fn episodes(
    s: &Scenario,
    proxies: &[FaultProxy; 2],
    count: usize,
    seed: u64,
) -> Vec<Episode> {
    let mut rng = Rng(seed | 1);
    let mut done = Vec::new();
    let mut deck = Vec::new();
    while done.len() < count {
        if deck.is_empty() {
            deck = KINDS.to_vec();
            for i in (1..deck.len()).rev() {
                deck.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
        }
        let kind = deck.pop().unwrap_or(Kind::Reset);
        // A random moment: the driver keeps moving tenants meanwhile.
        tokio::time::sleep(rng.millis(100, 700)).await;
        let (sides, on): (&'static str, Vec<&FaultProxy>) = match rng.next() % 3 {
            0 => ("source", vec![&proxies[0]]),
            1 => ("target", vec![&proxies[1]]),
            _ => ("both", proxies.iter().collect()),
        };
        let mut e = episode(s, &on, kind, &mut rng).await;
        e.sides = sides;
        done.push(e);
    }
    done
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_fault_episodes_while_tenants_move_zero_anomalies() {
    if let Ok(filter) = std::env::var("FERRY_CHECK_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let count = env("FERRY_FAULT_EPISODES").unwrap_or(20) as usize;
    let seed = env("FERRY_FAULT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut proxies = None;
    let w = world_with(
        ScenarioSettings {
            // The episodes end the run; this is only a bound.
            duration: Duration::from_secs(3600),
            ..settings(20, 6, 8, Duration::ZERO)
        },
        async |url| {
            let pair = [FaultProxy::start(url).await, FaultProxy::start(url).await];
            let app = AppPools {
                source: app_pool(&pair[0]).await,
                target: app_pool(&pair[1]).await,
            };
            proxies = Some(Arc::new(pair));
            app
        },
    )
    .await;
    let proxies = proxies.unwrap();
    let started = Instant::now();
    let (outcome, done) =
        w.s.run_alongside(episodes(&w.s, &proxies, count, seed), |_| {})
            .await
            .unwrap();
    let seconds = started.elapsed().as_secs_f64();

    let report = &outcome.report;
    let mut recoveries: Vec<Duration> = done.iter().map(|e| e.recovery).collect();
    recoveries.sort();
    let per_kind: Vec<String> = KINDS
        .iter()
        .map(|k| {
            let of: Vec<&Episode> = done.iter().filter(|e| e.kind == *k).collect();
            let untriggered = of.iter().filter(|e| !e.triggered).count();
            format!("{k:?} {} ({untriggered} untriggered)", of.len())
        })
        .collect();
    let unknown_commits: u64 =
        w.s.tables
            .iter()
            .map(|t| t.stats.commits_unknown.load(Ordering::Relaxed))
            .sum();
    eprintln!(
        "seed {seed}: {} episodes in {seconds:.1} s: {}",
        done.len(),
        per_kind.join(", ")
    );
    for e in &done {
        eprintln!(
            "  {:?} on {} for {:?}: recovered in {:?}{}",
            e.kind,
            e.sides,
            e.held,
            e.recovery,
            if e.triggered {
                ""
            } else {
                " (no COMMIT passed)"
            }
        );
    }
    eprintln!(
        "recovery: max {:?}, median {:?}",
        recoveries.last().copied().unwrap_or_default(),
        recoveries
            .get(recoveries.len() / 2)
            .copied()
            .unwrap_or_default()
    );
    eprintln!(
        "{} operations, {} of unknown outcome, {} refused; {} COMMIT answers lost by the proxies, {} seen by the tables; {} phase changes, {} ferry verify runs",
        report.operations,
        report.unknown_outcomes,
        report.refused,
        proxies.iter().map(|p| p.answers_lost()).sum::<u64>(),
        unknown_commits,
        outcome.phase_changes,
        w.s.verifies.load(Ordering::Relaxed),
    );
    eprintln!(
        "proxies: source {:?}, target {:?}",
        proxies[0].counters(),
        proxies[1].counters()
    );
    eprintln!("anomalies: {:?}", report.anomalies);

    assert!(report.passed(), "seed {seed}: {report:#?}");
    assert_eq!(done.len(), count);
    assert!(
        recoveries.iter().all(|r| *r < RECOVERY_LIMIT),
        "{recoveries:?}"
    );
    assert!(
        report.operations > 500,
        "only {} operations",
        report.operations
    );
    assert!(
        outcome.phase_changes >= 10,
        "only {} phase changes",
        outcome.phase_changes
    );
}
