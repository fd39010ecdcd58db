//! A state-machine property test of the phase engine under racing operators.
//!
//! Proptest draws steps `(tenant, operator, op)` over 20 tenants: advance, rollback, pause or
//! resume (some forced, some expecting the phase the operator last saw), or a complete backfill
//! for the tenant's copy epoch, so guarded changes sometimes pass and sometimes are refused.
//! Three operators (each its own store handle) take the steps in rounds of at most one step
//! each; a round's steps run at once as tokio tasks calling `PhaseEngine::change`. Each case is
//! a fresh migration. Afterwards the store must show that:
//!
//! - each tenant's history is a chain from `legacy` (phase and paused flag) to its stored phase;
//! - each entry is legal by ferry-domain's rules (`Transition::plan` over `RULES`), forcing only
//!   its rule's guards, and none advanced a paused tenant (pause and resume are audited);
//! - versions only grow: change counters along a history and the audit log, versions as
//!   operators read them, and a tenant's version counts its entries;
//! - each accepted change is exactly one entry saying what the engine reported, and a refused
//!   one left none, so it changed nothing (each request has a unique reason);
//! - refusals are the documented ones (forced changes never fail on guards), `verify_audit`
//!   agrees, and replayed through the pure rules with the facts its steps recorded, a tenant
//!   got exactly the predicted answers until two steps raced on it in one round.
//!
//! Every case runs against SQLite and PostgreSQL. `PROPTEST_CASES` runs more cases.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferry_domain::{
    Action, Guard, GuardFacts, GuardFailure, MigrationId, Phase, TenantId, TenantPhase, Transition,
    TransitionError,
};
use ferry_engine::{EngineError, EngineSettings, Moved, PhaseEngine, Refusal, Request};
use ferry_store::{
    AuditEntry, BackfillProgress, ControlStore, CopyDirection, MigrationKind, NewMigration,
    StoreError, TenantQuery, TenantRecord, TenantSize,
};
use ferry_testkit::{TestStore, both_stores};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner, basic_result_cache};
use tokio::task::JoinSet;

mod checks;
use checks::*;

const TENANTS: usize = 20;
/// Tenants most steps go to, so that steps race on them and they get deep into the phases.
const HOT_TENANTS: usize = 2;
const OPERATORS: usize = 3;
const MAX_STEPS: usize = 60;
const CASES: u32 = 24;

/// One thing an operator does to a tenant.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `(action, force, expect)`: a change through the engine; with `expect`, the request's
    /// `expect_phase` is the phase this operator last saw the tenant in (at first `legacy`).
    Change(Action, bool, bool),
    /// The copier finished: a complete copy recorded for the tenant's current epoch, forward
    /// in `dual_write` and `shadow`, reverse in `target_primary`, nothing elsewhere.
    Backfill,
}

/// Compact, so a shrunk sequence reads as a script: `advance+force+expect`, `backfill`.
impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Op::Change(action, force, expect) = *self else {
            return f.write_str("backfill");
        };
        let force = if force { "+force" } else { "" };
        let expect = if expect { "+expect" } else { "" };
        write!(f, "{action}{force}{expect}")
    }
}

/// `(tenant index, operator index, op)`.
type Step = (usize, usize, Op);

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let action = prop_oneof![
        6 => Just(Action::Advance),
        2 => Just(Action::Rollback),
        1 => Just(Action::Pause),
        1 => Just(Action::Resume),
    ];
    let change = (action, prop::bool::weighted(0.15), prop::bool::ANY)
        .prop_map(|(action, force, expect)| Op::Change(action, force, expect));
    let op = prop_oneof![1 => Just(Op::Backfill), 2 => change];
    let tenant = prop_oneof![3 => 0..HOT_TENANTS, 1 => 0..TENANTS];
    prop::collection::vec((tenant, 0..OPERATORS, op), 0..=MAX_STEPS)
}

/// 24 cases unless `PROPTEST_CASES` says otherwise; no regression files: a failure prints
/// its minimal sequence. Results are cached per sequence, so shrinking, which re-runs the
/// last failing sequence after each candidate that passed, is not stopped by a race that
/// goes the other way on the re-run.
fn config() -> Config {
    let default = Config::default();
    let cases = std::env::var_os("PROPTEST_CASES").map_or(CASES, |_| default.cases);
    Config {
        cases,
        failure_persistence: None,
        result_cache: basic_result_cache,
        ..default
    }
}

both_stores!(racing_operators_leave_every_tenant_on_a_legal_audited_chain);

async fn racing_operators_leave_every_tenant_on_a_legal_audited_chain(s: &TestStore) {
    let mut engines = vec![s.store.clone()];
    for _ in 1..OPERATORS {
        engines.push(s.reopen().await);
    }
    let engines: Vec<Arc<PhaseEngine>> = engines
        .into_iter()
        .map(|store| Arc::new(PhaseEngine::new(store, EngineSettings::default())))
        .collect();
    let (store, runtime) = (s.store.clone(), tokio::runtime::Handle::current());
    // The runner is synchronous: on a blocking thread, it blocks on each case's async body
    // (shrinking runs included), each case with a migration of its own.
    let (result, stats) = tokio::task::spawn_blocking(move || {
        let (next_case, stats) = (AtomicUsize::new(0), Mutex::new(Stats::default()));
        let result = TestRunner::new(config()).run(&steps(), |steps| {
            let case = next_case.fetch_add(1, Ordering::Relaxed);
            runtime.block_on(run_case(store.as_ref(), &engines, case, &steps, &stats))
        });
        (result, stats.into_inner().unwrap())
    })
    .await
    .unwrap();
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, steps)) => panic!("{why}; minimal sequence:\n{}", script(&steps)),
        Err(abort) => panic!("{abort}"),
    }
    eprintln!("{stats:#?}");
    // Not vacuous: tenants got past the first guarded advance, changes were refused by guards
    // and by a stale expectation, and the model predicted answers.
    let count = |kind: &str| stats.get(kind).copied().unwrap_or(0);
    if count("cases") >= CASES as usize {
        let kinds = [
            "advance -> shadow",
            "refused: guards",
            "refused: unexpected phase",
        ];
        for kind in kinds.into_iter().chain(["predicted"]) {
            assert!(count(kind) > 0, "no {kind:?}: {stats:#?}");
        }
    }
}

/// What the passing cases exercised, by kind; printed (`--nocapture`) to show a run's reach.
type Stats = BTreeMap<String, usize>;

fn tally(stats: &mut Stats, o: &Outcome) {
    let kind = match &o.result {
        Ok(m) if !m.forced.is_empty() => format!("forced {} -> {}", m.action, m.to_phase),
        Ok(m) => format!("{} -> {}", m.action, m.to_phase),
        Err(Refusal::Transition(TransitionError::GuardsFailed(_))) => "refused: guards".into(),
        Err(Refusal::Transition(_)) => "refused: rules".into(),
        Err(Refusal::Conflict) => "refused: conflict".into(),
        Err(_) => "refused: unexpected phase".into(),
    };
    *stats.entry(kind).or_default() += 1;
}

/// One case: a fresh migration, the steps raced by the operators, then the invariants.
async fn run_case(
    store: &dyn ControlStore,
    engines: &[Arc<PhaseEngine>],
    case: usize,
    steps: &[Step],
    stats: &Mutex<Stats>,
) -> Result<(), TestCaseError> {
    let mig = MigrationId::new(format!("sm_{case:05}")).unwrap();
    let tenants = Arc::new(setup(store, &mig).await);
    let outcomes = race(engines, &mig, &tenants, steps).await?;
    check_store(store, &mig, &outcomes).await?;
    let predicted = check_predictable(steps, &outcomes)?;
    let mut stats = stats.lock().unwrap();
    *stats.entry("cases".into()).or_default() += 1;
    *stats.entry("predicted".into()).or_default() += predicted;
    outcomes.iter().for_each(|o| tally(&mut stats, o));
    Ok(())
}

async fn setup(store: &dyn ControlStore, mig: &MigrationId) -> Vec<TenantId> {
    let migration = NewMigration {
        id: mig.clone(),
        kind: MigrationKind::TenantMove,
        description: "state machine property".into(),
        config: serde_json::json!({}),
        created_by: "proptest".into(),
    };
    store.create_migration(&migration).await.unwrap();
    let tenants: Vec<TenantSize> = (0..TENANTS)
        .map(|i| TenantSize {
            tenant: TenantId::new(format!("t{i:02}")).unwrap(),
            rows: 10,
        })
        .collect();
    store.register_tenants(mig, &tenants).await.unwrap();
    tenants.into_iter().map(|t| t.tenant).collect()
}

/// A change an operator asked for and what the engine answered.
#[derive(Debug)]
struct Outcome {
    /// Index in the case's sequence; the request's reason is [`reason`] of it.
    step: usize,
    action: Action,
    force: bool,
    expect_phase: Option<Phase>,
    result: Result<Moved, Refusal>,
}

/// The audit reason of a step's request: unique per case, so an entry names its step.
fn reason(step: usize) -> String {
    format!("step {step}")
}

fn fail(what: impl fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// A sequence one step a line, with its round: what a failure prints.
fn script(steps: &[Step]) -> String {
    let round_of = rounds(steps);
    let line = |(i, (t, operator, op)): (usize, &Step)| {
        format!(
            "  step {i:2} round {:2}: t{t:02} operator {operator} {op:?}\n",
            round_of[i]
        )
    };
    steps.iter().enumerate().map(line).collect()
}

/// Cuts the sequence into rounds: a round ends before a step whose operator already has one
/// in it. Returns each step's round.
fn rounds(steps: &[Step]) -> Vec<usize> {
    let (mut round, mut busy, mut out) = (0, HashSet::new(), Vec::new());
    for &(_, operator, _) in steps {
        if !busy.insert(operator) {
            (round, busy) = (round + 1, HashSet::from([operator]));
        }
        out.push(round);
    }
    out
}

/// Runs the rounds in order, each round's steps at once (one task per operator); returns the
/// changes' outcomes in step order. Only steps of one round race, so a failing sequence
/// replays the same way apart from those races, and shrinks.
async fn race(
    engines: &[Arc<PhaseEngine>],
    mig: &MigrationId,
    tenants: &Arc<Vec<TenantId>>,
    steps: &[Step],
) -> Result<Vec<Outcome>, TestCaseError> {
    let mut operators: Vec<Option<Operator>> = (0..engines.len())
        .map(|id| {
            Some(Operator {
                id,
                engine: engines[id].clone(),
                mig: mig.clone(),
                tenants: tenants.clone(),
                seen: HashMap::new(),
            })
        })
        .collect();
    let round_of = rounds(steps);
    let mut outcomes = Vec::new();
    let mut next = 0;
    while next < steps.len() {
        let mut tasks = JoinSet::new();
        for step in (next..steps.len()).take_while(|&i| round_of[i] == round_of[next]) {
            let (tenant, id, op) = steps[step];
            let mut operator = operators[id].take().expect("one step per operator a round");
            tasks.spawn(async move {
                let outcome = operator.step(step, tenant, op).await;
                (operator, outcome)
            });
        }
        next += tasks.len();
        while let Some(joined) = tasks.join_next().await {
            let (operator, outcome) = joined.map_err(|e| fail(format!("operator task: {e}")))?;
            outcomes.extend(outcome?);
            let id = operator.id;
            operators[id] = Some(operator);
        }
    }
    outcomes.sort_by_key(|o| o.step);
    Ok(outcomes)
}

/// One racing operator: its own store handle, and its own (possibly stale) view of tenants.
struct Operator {
    id: usize,
    engine: Arc<PhaseEngine>,
    mig: MigrationId,
    tenants: Arc<Vec<TenantId>>,
    /// Per tenant index: the newest version this operator saw and the phase it saw then.
    seen: HashMap<usize, (i64, Phase)>,
}

impl Operator {
    /// Versions only grow: nothing this operator reads is older than what it read before.
    fn observe(&mut self, t: usize, version: i64, phase: Phase) -> Result<(), TestCaseError> {
        let before = self.seen.get(&t).map_or(0, |seen| seen.0);
        prop_assert!(
            version >= before,
            "operator {} read t{t:02} at version {version} after version {before}",
            self.id
        );
        self.seen.insert(t, (version, phase));
        Ok(())
    }

    async fn backfill(&mut self, t: usize) -> Result<(), TestCaseError> {
        let store = self.engine.store().clone();
        let record = store
            .tenant(&self.mig, &self.tenants[t])
            .await
            .map_err(fail)?;
        self.observe(t, record.state.version, record.state.phase)?;
        let direction = match record.state.phase {
            Phase::DualWrite | Phase::Shadow => CopyDirection::Forward,
            Phase::TargetPrimary => CopyDirection::Reverse,
            _ => return Ok(()),
        };
        let progress = BackfillProgress {
            rows_done: 10,
            rows_total: 10,
            complete: true,
            epoch: record.copy_epoch,
            ..BackfillProgress::new(self.mig.clone(), record.tenant.clone(), direction)
        };
        match store.record_backfill(&progress).await {
            // A step of the same round moved the tenant since: the store refuses the progress.
            Ok(())
            | Err(StoreError::ProgressOutOfPhase { .. } | StoreError::ProgressStale { .. }) => {
                Ok(())
            }
            Err(e) => Err(fail(format!("record backfill of t{t:02}: {e}"))),
        }
    }

    /// Takes one step: a change's outcome, checked, or `None` for a backfill.
    async fn step(
        &mut self,
        step: usize,
        t: usize,
        op: Op,
    ) -> Result<Option<Outcome>, TestCaseError> {
        let Op::Change(action, force, expect) = op else {
            return self.backfill(t).await.map(|()| None);
        };
        let expect_phase = expect.then(|| self.seen.get(&t).map_or(Phase::Legacy, |s| s.1));
        let actor = format!("operator-{}", self.id);
        let (reason, dry_run) = (reason(step), false);
        let request = Request {
            actor,
            reason,
            force,
            dry_run,
            expect_phase,
        };
        let id = &self.tenants[t];
        let result = match self.engine.change(&self.mig, id, action, &request).await {
            Ok(moved) => {
                self.observe(t, moved.from.version, moved.from.phase)?;
                self.seen
                    .insert(t, (moved.from.version + 1, moved.to_phase));
                Ok(moved)
            }
            Err(EngineError::Refused { reason, .. }) => {
                if let Refusal::UnexpectedPhase { actual, .. } = reason {
                    self.seen.entry(t).or_insert((0, actual)).1 = actual;
                }
                Err(reason)
            }
            Err(e) => return Err(fail(format!("step {step}: {action} {id}: {e}"))),
        };
        let outcome = Outcome {
            step,
            action,
            force,
            expect_phase,
            result,
        };
        check_answer(&outcome)?;
        Ok(Some(outcome))
    }
}
