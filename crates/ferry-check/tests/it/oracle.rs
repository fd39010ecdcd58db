//! The oracle is tested: a move is finished under the workload (every tenant in
//! `target_primary`, both sides equal, reads served by the target), then defects are injected
//! into the target one at a time, 540 of them over nine kinds: a missing row, an extra row (a
//! deleted key back, or a row under another tenant), a token twice, a changed column, NULL for
//! an empty string and back, a trailing space, a timezone shift, a numeric's last digit and a
//! `json` document's key order. Validation (`Copier::verify`) and the history checker must each
//! catch every one, as the kind of difference the defect is; each defect is undone (the row put
//! back from the source) before the next.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ferry_check::{
    ClientRun, ClientSettings, KeyState, Kind, MovedTarget, ScenarioSettings, Target, check,
    run_client,
};
use ferry_copier::validate::Diff;
use ferry_domain::{Action, TenantId};
use ferry_store::CopyDirection;
use sqlx::AssertSqlSafe;

use crate::world::{World, settings, world};

const INJECTIONS: usize = 540;

const COLUMNS: &str = "tenant_id, id, appends, version, note, amount, at, doc";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Defect {
    MissingRow,
    ResurrectedRow,
    RowUnderAnotherTenant,
    TokenTwice,
    ChangedColumn,
    NullForEmpty,
    TrailingSpace,
    TimezoneShift,
    NumericDigit,
    JsonKeyOrder,
}

impl Defect {
    const ALL: [Defect; 10] = [
        Defect::MissingRow,
        Defect::ResurrectedRow,
        Defect::RowUnderAnotherTenant,
        Defect::TokenTwice,
        Defect::ChangedColumn,
        Defect::NullForEmpty,
        Defect::TrailingSpace,
        Defect::TimezoneShift,
        Defect::NumericDigit,
        Defect::JsonKeyOrder,
    ];

    /// The statement that makes it: `$1` the key's tenant, `$2` its id, `$3` another tenant.
    fn sql(self) -> String {
        let set = |assignment: &str| {
            format!(
                "UPDATE wl_moved.items SET {assignment} WHERE tenant_id = $1 AND id = $2 AND $3 <> ''"
            )
        };
        match self {
            Defect::MissingRow => {
                "DELETE FROM wl_moved.items WHERE tenant_id = $1 AND id = $2 AND $3 <> ''".into()
            }
            Defect::ResurrectedRow => format!(
                "INSERT INTO wl_moved.items ({COLUMNS}) SELECT $1, $2, 'ghost', 1, NULL, 1, now(), '{{}}' \
                 WHERE $3 <> ''"
            ),
            Defect::RowUnderAnotherTenant => format!(
                "INSERT INTO wl_moved.items ({COLUMNS}) SELECT $3, id, appends, version, note, amount, at, doc \
                 FROM wl_moved.items WHERE tenant_id = $1 AND id = $2"
            ),
            Defect::TokenTwice => set("appends = appends || ' ' || split_part(appends, ' ', 1)"),
            Defect::ChangedColumn => set("appends = appends || ' ghost'"),
            Defect::NullForEmpty => set("note = CASE WHEN note IS NULL THEN '' END"),
            Defect::TrailingSpace => set("note = note || ' '"),
            Defect::TimezoneShift => {
                set("at = (at AT TIME ZONE 'UTC') AT TIME ZONE 'Europe/Paris'")
            }
            Defect::NumericDigit => set("amount = amount + 0.001"),
            Defect::JsonKeyOrder => set(
                r#"doc = ('{"a":' || (doc -> 'a')::text || ',"b":' || (doc -> 'b')::text || '}')::json"#,
            ),
        }
    }

    /// Which keys it can be injected into: their state, and a condition on the target's row.
    fn applies(self) -> (bool, &'static str) {
        match self {
            Defect::ResurrectedRow => (false, "true"),
            Defect::NullForEmpty => (true, "(note IS NULL OR note = '')"),
            Defect::TrailingSpace => (true, "note IS NOT NULL"),
            _ => (true, "true"),
        }
    }

    /// What the checker must call it.
    fn anomaly(self) -> Kind {
        match self {
            Defect::MissingRow | Defect::ChangedColumn => Kind::Lost,
            Defect::ResurrectedRow => Kind::Resurrected,
            Defect::RowUnderAnotherTenant => Kind::CrossTenant,
            Defect::TokenTwice => Kind::Duplicated,
            _ => Kind::Corrupted,
        }
    }

    /// Whether validation saw it as the kind of difference it is.
    fn validation_caught(self, diff: &Diff) -> bool {
        match self {
            Defect::MissingRow => !diff.missing.is_empty(),
            Defect::ResurrectedRow | Defect::RowUnderAnotherTenant => !diff.extra.is_empty(),
            _ => !diff.differing.is_empty(),
        }
    }
}

/// Moves every tenant to `target_primary` with its copy, runs the workload for a while, and
/// returns what the clients did.
async fn finished_move(w: &World) -> Vec<ClientRun> {
    for t in &w.s.tenants {
        w.s.change(t, Action::Advance).await.unwrap();
        w.s.copy(t, CopyDirection::Forward).await.unwrap();
        w.s.change(t, Action::Advance).await.unwrap();
        w.s.change(t, Action::Advance).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut running = Vec::new();
    for c in 0..2u32 {
        let (s, stop) = (w.s.clone(), stop.clone());
        running.push(tokio::spawn(async move {
            let target = MovedTarget::with_fields(s.tables[c as usize].clone());
            let settings = ClientSettings {
                client: c,
                tenants: s.tenants.clone(),
                keys_per_tenant: 5,
                seed: 0x0_7ac1e + u64::from(c),
            };
            run_client(&target, &settings, &stop).await
        }));
    }
    // The length of the workload, not a synchronisation: the clients stop when told.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut runs = Vec::new();
    for r in running {
        runs.push(r.await.unwrap());
    }
    runs
}

/// The keys a defect can go into: (tenant, id) whose client state and target row fit.
async fn candidates(
    w: &World,
    states: &BTreeMap<(TenantId, i64), KeyState>,
    defect: Defect,
) -> Vec<(TenantId, i64)> {
    let (present, condition) = defect.applies();
    let on_target: Vec<(String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT tenant_id, id FROM wl_moved.items WHERE {condition}"
    )))
    .fetch_all(&w.s.pool)
    .await
    .unwrap();
    states
        .iter()
        .filter(|(key, state)| match state {
            KeyState::Present { .. } => {
                present
                    && on_target
                        .iter()
                        .any(|(t, id)| t == key.0.as_str() && *id == key.1)
            }
            KeyState::Absent => !present,
            KeyState::Unknown => false,
        })
        .map(|(key, _)| key.clone())
        .collect()
}

/// Puts every row of `id` in the target back as the source holds it.
async fn undo(w: &World, id: i64) {
    sqlx::query("DELETE FROM wl_moved.items WHERE id = $1")
        .bind(id)
        .execute(&w.s.pool)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO wl_moved.items ({COLUMNS}) SELECT {COLUMNS} FROM wl.items WHERE id = $1"
    )))
    .bind(id)
    .execute(&w.s.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_injected_defect_is_caught_by_validation_and_by_the_checker() {
    let w = world(ScenarioSettings {
        fields: true,
        ..settings(3, 2, 0, Duration::ZERO)
    })
    .await;
    let runs = finished_move(&w).await;
    let target = MovedTarget::with_fields(w.s.tables[0].clone());
    let clean = check(&target as &dyn Target, &runs).await;
    assert!(clean.passed(), "before any defect: {clean:#?}");
    for t in &w.s.tenants {
        let diff = w.s.copier.verify(t, CopyDirection::Forward).await.unwrap();
        assert!(diff.is_empty(), "{t} before any defect: {diff:?}");
    }
    let states: BTreeMap<(TenantId, i64), KeyState> =
        runs.iter().flat_map(|r| r.keys.clone()).collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut injected: BTreeMap<Defect, (u32, u32, u32)> = BTreeMap::new();
    for i in 0..INJECTIONS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let defect = Defect::ALL[i % Defect::ALL.len()];
        let keys = candidates(&w, &states, defect).await;
        assert!(!keys.is_empty(), "no key takes {defect:?}");
        let (tenant, id) = &keys[(rng % keys.len() as u64) as usize];
        let other = &w.s.tenants[(w.s.tenants.iter().position(|t| t == tenant).unwrap()
            + 1
            + (rng >> 32) as usize % (w.s.tenants.len() - 1))
            % w.s.tenants.len()];
        let done = sqlx::query(AssertSqlSafe(defect.sql()))
            .bind(tenant.as_str())
            .bind(id)
            .bind(other.as_str())
            .execute(&w.s.pool)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1, "{defect:?} on {tenant}/{id}");
        let judged = if defect == Defect::RowUnderAnotherTenant {
            other
        } else {
            tenant
        };
        let diff =
            w.s.copier
                .verify(judged, CopyDirection::Forward)
                .await
                .unwrap();
        let report = check(&target as &dyn Target, &runs).await;
        let count = injected.entry(defect).or_default();
        count.0 += 1;
        count.1 += u32::from(defect.validation_caught(&diff));
        let mut expected = ferry_check::Anomalies::default();
        expected.count(defect.anomaly());
        count.2 += u32::from(report.anomalies == expected);
        undo(&w, *id).await;
    }
    eprintln!("(injected, caught by validation, caught by the checker) per defect: {injected:?}");
    for (defect, (n, validation, checker)) in &injected {
        assert_eq!(*validation, *n, "validation missed some {defect:?}");
        assert_eq!(
            *checker, *n,
            "the checker missed or misnamed some {defect:?}"
        );
    }
    assert_eq!(
        injected.values().map(|c| c.0).sum::<u32>(),
        INJECTIONS as u32
    );
    let after = check(&target as &dyn Target, &runs).await;
    assert!(after.passed(), "after undoing every defect: {after:#?}");
}
