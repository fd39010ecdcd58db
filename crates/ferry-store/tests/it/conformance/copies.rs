//! Copy progress and the copier's controls (`areas/copies.rs`).

use ferry_store::*;
use ferry_testkit::{TestStore, both_stores};

use super::{advance, meta, migration_with_tenants, tenant};

both_stores!(
    progress_is_a_checkpoint_and_controls_merge,
    control_changes_touch_only_their_columns,
);

async fn progress_is_a_checkpoint_and_controls_merge(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 100), ("b", 5)]).await;
    assert!(s.store.progress(&m, None).await.unwrap().is_empty());
    let mut p = BackfillProgress::new(m.clone(), tenant("a"), CopyDirection::Forward);
    // In legacy no copy runs: progress from a stray copier is refused.
    let err = s.store.record_backfill(&p).await.unwrap_err();
    assert!(
        matches!(err, StoreError::ProgressOutOfPhase { .. }),
        "{err}"
    );
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    s.store
        .apply_changes(&m, &[advance(&a)], &meta())
        .await
        .unwrap();
    p.last_key = Some(vec!["a".into(), "42".into()]);
    p.rows_done = 40;
    p.rows_total = 100;
    p.batch_size = 500;
    p.rows_per_s = 1234.5;
    p.throttled = Some("replication lag 6.0s > 5.0s".into());
    s.store.record_backfill(&p).await.unwrap();
    let got = s.store.progress(&m, Some(&tenant("a"))).await.unwrap();
    assert_eq!(got.len(), 1);
    let got = &got[0];
    assert_eq!(got.last_key, p.last_key);
    assert_eq!(
        (got.rows_done, got.rows_total, got.batch_size),
        (40, 100, 500)
    );
    assert!((got.rows_per_s - 1234.5).abs() < 1e-9);
    assert_eq!(got.throttled, p.throttled);
    assert!(got.updated_at.is_some());
    assert!(
        s.store
            .progress(&m, Some(&tenant("b")))
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        s.store.control(&m, Some(&tenant("a"))).await.unwrap(),
        CopyControl::default()
    );
    s.store
        .set_control(
            &m,
            None,
            CopyControl {
                rate_limit: Some(1000),
                ..CopyControl::default()
            },
        )
        .await
        .unwrap();
    s.store
        .set_control(
            &m,
            Some(&tenant("a")),
            CopyControl {
                paused: true,
                rate_limit: Some(200),
                ..CopyControl::default()
            },
        )
        .await
        .unwrap();
    let a = s.store.control(&m, Some(&tenant("a"))).await.unwrap();
    assert_eq!(
        a,
        CopyControl {
            paused: true,
            cancelled: false,
            rate_limit: Some(200)
        }
    );
    let b = s.store.control(&m, Some(&tenant("b"))).await.unwrap();
    assert_eq!(
        b,
        CopyControl {
            paused: false,
            cancelled: false,
            rate_limit: Some(1000)
        }
    );
    let err = s
        .store
        .set_control(&m, Some(&tenant("ghost")), CopyControl::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TenantNotFound { .. }), "{err}");
}

async fn control_changes_touch_only_their_columns(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1)]).await;
    let a = tenant("a");
    let throttle = ControlChange {
        rate_limit: Some(Some(500)),
        ..ControlChange::default()
    };
    let pause = ControlChange {
        paused: Some(true),
        ..ControlChange::default()
    };
    let c = s
        .store
        .change_control(&m, Some(&a), throttle)
        .await
        .unwrap();
    assert_eq!((c.paused, c.rate_limit), (false, Some(500)));
    // A pause from another operator keeps the throttle, and the other way round.
    let c = s.store.change_control(&m, Some(&a), pause).await.unwrap();
    assert_eq!(
        (c.paused, c.cancelled, c.rate_limit),
        (true, false, Some(500))
    );
    let unlimited = ControlChange {
        rate_limit: Some(None),
        ..ControlChange::default()
    };
    let c = s
        .store
        .change_control(&m, Some(&a), unlimited)
        .await
        .unwrap();
    assert_eq!((c.paused, c.rate_limit), (true, None));
    assert_eq!(s.store.scope_control(&m, Some(&a)).await.unwrap(), c);
    // The migration's own scope is separate.
    let whole = s.store.change_control(&m, None, pause).await.unwrap();
    assert_eq!((whole.paused, whole.rate_limit), (true, None));
    assert!(
        s.store
            .change_control(&m, Some(&tenant("ghost")), pause)
            .await
            .is_err()
    );
}
