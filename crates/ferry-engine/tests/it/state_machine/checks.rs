//! The checks `state_machine.rs` runs after each case: the engine's answers, the store's
//! histories and audit log, and the replay of each tenant through the pure rules.

use super::*;

/// The engine's answer is one it documents for the request.
pub(super) fn check_answer(o: &Outcome) -> Result<(), TestCaseError> {
    let step = o.step;
    match &o.result {
        Ok(moved) => {
            if let Some(expected) = o.expect_phase {
                prop_assert_eq!(moved.from.phase, expected, "step {} expected a phase", step);
            }
            let forced = &moved.forced;
            prop_assert!(
                o.force || forced.is_empty(),
                "step {step}: forced {forced:?}"
            );
        }
        Err(Refusal::Transition(TransitionError::GuardsFailed(failed))) => {
            prop_assert!(
                !o.force,
                "step {step}: forced, refused by guards: {failed:?}"
            );
        }
        Err(Refusal::Conflict | Refusal::Transition(_)) => {}
        Err(Refusal::UnexpectedPhase { expected, actual }) => {
            prop_assert_eq!(Some(*expected), o.expect_phase, "step {}", step);
            prop_assert_ne!(actual, expected, "step {}", step);
        }
        Err(other) => return Err(fail(format!("step {step}: unexpected refusal: {other}"))),
    }
    Ok(())
}

/// Checks the store's tenants, histories and audit log against the invariants.
pub(super) async fn check_store(
    store: &dyn ControlStore,
    mig: &MigrationId,
    outcomes: &[Outcome],
) -> Result<(), TestCaseError> {
    let all = TenantQuery::default();
    let records = store.tenants(mig, &all).await.map_err(fail)?;
    prop_assert_eq!(records.len(), TENANTS);
    let log = store.audit_log(mig, 0, 100_000).await.map_err(fail)?;
    for pair in log.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        prop_assert!(
            a.seq < b.seq && a.change_version <= b.change_version,
            "the change counter went back along the audit log: {a:?} then {b:?}"
        );
    }
    log.iter().try_for_each(check_legal)?;
    for record in &records {
        prop_assert!(Phase::ALL.contains(&record.state.phase));
        let history = store.history(mig, &record.tenant).await.map_err(fail)?;
        let t = &record.tenant;
        let logged = log.iter().filter(|e| e.tenant == *t);
        prop_assert!(history.iter().eq(logged), "{t}: history is not its log");
        check_chain(record, &history)?;
    }
    check_attribution(&log, outcomes)?;
    let verified = ferry_engine::verify_audit(store, mig).await.map_err(fail)?;
    prop_assert!(verified.consistent(), "{:?}", verified.problems);
    prop_assert_eq!(verified.entries, log.len() as u64);
    Ok(())
}

/// One entry is a legal transition by the domain's rules, and not an advance while paused.
pub(super) fn check_legal(e: &AuditEntry) -> Result<(), TestCaseError> {
    let what = format!(
        "entry {} ({} {} from {}, paused {})",
        e.seq, e.tenant, e.action, e.from_phase, e.from_paused
    );
    let advance = e.action == Action::Advance;
    prop_assert!(!(advance && e.from_paused), "{what}: advanced while paused");
    let from = TenantPhase {
        phase: e.from_phase,
        paused: e.from_paused,
        version: 0,
    };
    let planned = Transition::plan(from, e.action).map_err(|err| fail(format!("{what}: {err}")))?;
    let (to, planned_to) = (
        (e.to_phase, e.to_paused),
        (planned.to_phase, planned.to_paused),
    );
    prop_assert_eq!(to, planned_to, "{}: the rules lead elsewhere", what);
    let (forced, guards) = (&e.forced_guards, planned.guards);
    prop_assert!(
        forced.iter().all(|g| guards.contains(g)),
        "{what}: forced {forced:?}, but its rule's guards are {guards:?}"
    );
    Ok(())
}

/// A tenant's history is a chain from the initial state to its stored state, with strictly
/// growing change counters, and its version counts the changes.
pub(super) fn check_chain(
    record: &TenantRecord,
    history: &[AuditEntry],
) -> Result<(), TestCaseError> {
    let t = &record.tenant;
    let (mut at, mut counter) = ((Phase::Legacy, false), 0);
    for e in history {
        let from = (e.from_phase, e.from_paused);
        prop_assert_eq!(from, at, "{}: entry {} starts elsewhere", t, e.seq);
        prop_assert!(e.change_version > counter, "{t}: entry {} went back", e.seq);
        (at, counter) = ((e.to_phase, e.to_paused), e.change_version);
    }
    let state = record.state;
    prop_assert_eq!((state.phase, state.paused), at, "{}: stored state", t);
    prop_assert_eq!(state.version, history.len() as i64, "{}: version", t);
    prop_assert_eq!(record.changed_at_version, counter, "{}: changed at", t);
    Ok(())
}

/// Every accepted change is exactly one entry saying what the engine reported; a refused
/// change has none; no entry comes from anywhere else.
pub(super) fn check_attribution(
    log: &[AuditEntry],
    outcomes: &[Outcome],
) -> Result<(), TestCaseError> {
    let mut by_reason: HashMap<&str, Vec<&AuditEntry>> = HashMap::new();
    for e in log {
        by_reason.entry(e.reason.as_str()).or_default().push(e);
    }
    for o in outcomes {
        let entries = by_reason
            .remove(reason(o.step).as_str())
            .unwrap_or_default();
        let step = o.step;
        match &o.result {
            Err(refusal) => prop_assert!(
                entries.is_empty(),
                "step {step} was refused ({refusal}) but is in the audit log: {entries:?}"
            ),
            Ok(m) => {
                prop_assert_eq!(entries.len(), 1, "step {} moved: {:?}", step, entries);
                let e = entries[0];
                let mut recorded = e.forced_guards.clone();
                let mut reported = guards(&m.forced);
                recorded.sort();
                reported.sort();
                let entry = (&e.tenant, e.action, e.from_phase, e.from_paused, e.to_phase);
                let moved = (&m.tenant, m.action, m.from.phase, m.from.paused, m.to_phase);
                prop_assert_eq!(entry, moved, "step {}", step);
                let entry = (e.to_paused, e.change_version, recorded);
                let moved = (m.to_paused, m.change_version, reported);
                prop_assert_eq!(entry, moved, "step {}", step);
            }
        }
    }
    prop_assert!(by_reason.is_empty(), "entries no step made: {by_reason:?}");
    Ok(())
}

/// Replays each tenant through the pure rules, with the guard facts its own steps recorded,
/// up to the first round in which two steps touched it (after that, which came first is a
/// race): the engine must have given every change exactly the predicted answer. Returns how
/// many answers it predicted.
pub(super) fn check_predictable(
    steps: &[Step],
    outcomes: &[Outcome],
) -> Result<usize, TestCaseError> {
    let by_step: HashMap<usize, &Outcome> = outcomes.iter().map(|o| (o.step, o)).collect();
    let round_of = rounds(steps);
    let mut predicted = 0;
    for tenant in 0..TENANTS {
        let (state, forward_complete, source_stale) = (TenantPhase::INITIAL, false, false);
        let mut model = Model {
            state,
            forward_complete,
            source_stale,
        };
        let mine: Vec<usize> = (0..steps.len()).filter(|&i| steps[i].0 == tenant).collect();
        for (n, &step) in mine.iter().enumerate() {
            let raced =
                |other: Option<&usize>| other.is_some_and(|&o| round_of[o] == round_of[step]);
            if raced(n.checked_sub(1).and_then(|p| mine.get(p))) || raced(mine.get(n + 1)) {
                break;
            }
            let Some(o) = by_step.get(&step) else {
                model.backfill();
                continue;
            };
            let actual: Prediction = match &o.result {
                Ok(m) => Ok((m.from, m.to_phase, m.to_paused, guards(&m.forced))),
                Err(refusal) => Err(refusal.clone()),
            };
            let what = format!(
                "step {step} (t{tenant:02} {:?}), raced by no other",
                steps[step].2
            );
            prop_assert_eq!(actual, model.change(o), "{}", what);
            predicted += 1;
        }
    }
    Ok(predicted)
}

/// An accepted change as `(from, to_phase, to_paused, forced guards)`, or the refusal.
type Prediction = Result<(TenantPhase, Phase, bool, Vec<Guard>), Refusal>;

pub(super) fn guards(failures: &[GuardFailure]) -> Vec<Guard> {
    failures.iter().map(GuardFailure::guard).collect()
}

/// One tenant as ARCHITECTURE.md describes the store: forward progress is forgotten back in
/// `legacy`; the source is stale (the reverse copy reset) from entering `target_only`, and
/// again from stepping back from it, until a reverse copy completes or the tenant is back in
/// `legacy`. No routers, buffered changes or mismatches exist here.
pub(super) struct Model {
    state: TenantPhase,
    forward_complete: bool,
    source_stale: bool,
}

impl Model {
    /// Mirrors [`Operator::backfill`]: a complete copy in the phase's direction, if any.
    fn backfill(&mut self) {
        match self.state.phase {
            Phase::DualWrite | Phase::Shadow => self.forward_complete = true,
            Phase::TargetPrimary => self.source_stale = false,
            _ => {}
        }
    }

    fn facts(&self) -> GuardFacts {
        let rows = if self.forward_complete { 10 } else { 0 };
        GuardFacts {
            backfill_complete: self.forward_complete,
            backfill_rows_done: rows,
            backfill_rows_total: rows,
            source_current: !self.source_stale,
            ..GuardFacts::default()
        }
    }

    /// The answer the rules predict for `o`'s request; an accepted change is applied.
    fn change(&mut self, o: &Outcome) -> Prediction {
        let from = self.state;
        if let Some(expected) = o.expect_phase.filter(|p| *p != from.phase) {
            let actual = from.phase;
            return Err(Refusal::UnexpectedPhase { expected, actual });
        }
        let checked = Transition::plan(from, o.action)
            .and_then(|t| t.check(&self.facts(), o.force))
            .map_err(Refusal::Transition)?;
        let (phase, paused) = (checked.transition.to_phase, checked.transition.to_paused);
        (self.state.phase, self.state.paused, self.state.version) =
            (phase, paused, from.version + 1);
        match (from.phase, phase) {
            (a, b) if a == b => {}
            (_, Phase::Legacy) => (self.forward_complete, self.source_stale) = (false, false),
            (_, Phase::TargetOnly) | (Phase::TargetOnly, Phase::TargetPrimary) => {
                self.source_stale = true
            }
            _ => {}
        }
        Ok((from, phase, paused, guards(&checked.forced)))
    }
}
