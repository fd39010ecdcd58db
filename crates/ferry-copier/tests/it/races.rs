//! Races 1 and 2 of DESIGN.md, provoked: an application dual-writes (source first, then the
//! target, as the router does in dual_write) updates, deletes and inserts on the very rows
//! the copier is copying, with small batches so they collide often. Afterwards source and
//! target must be identical: no update lost to an older copy (race 1), no deleted row
//! resurrected by a copy (race 2).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ferry_copier::Outcome;
use ferry_domain::Action;
use ferry_store::CopyDirection;
use ferry_testkit::{TestStore, both_stores};
use sqlx::PgPool;

use crate::fixture::{Fixture, tenant};

both_stores!(
    concurrent_updates_and_deletes_are_neither_lost_nor_resurrected,
    without_row_locks_validation_still_removes_raced_deletes,
);

async fn concurrent_updates_and_deletes_are_neither_lost_nor_resurrected(store: &TestStore) {
    race(store, true).await;
}

/// With `lock_source_rows = false` a concurrent delete can be written back by a batch read
/// before it; the batch's validation must find and remove it, so the end state is the same.
async fn without_row_locks_validation_still_removes_raced_deletes(store: &TestStore) {
    race(store, false).await;
}

/// One dual write: the source (authoritative) first, then the same row image to the target
/// with the version guard, or the delete on both.
async fn dual_write(pool: &PgPool, op: u64, id: i64) {
    match op % 3 {
        0 => {
            let image: Option<String> = sqlx::query_scalar(
                "UPDATE public.orders SET amount = amount + 1, note = 'updated', version = version + 1
                 WHERE tenant_id = 't1' AND id = $1 RETURNING to_jsonb(orders)::text",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .unwrap();
            if let Some(image) = image {
                upsert_target(pool, &image).await;
            }
        }
        1 => {
            sqlx::query("DELETE FROM public.orders WHERE tenant_id = 't1' AND id = $1")
                .bind(id)
                .execute(pool)
                .await
                .unwrap();
            sqlx::query("DELETE FROM moved.orders WHERE tenant_id = 't1' AND id = $1")
                .bind(id)
                .execute(pool)
                .await
                .unwrap();
        }
        _ => {
            let image: Option<String> = sqlx::query_scalar(
                "INSERT INTO public.orders (tenant_id, id, amount, version) VALUES ('t1', $1, 1, 1)
                 ON CONFLICT DO NOTHING RETURNING to_jsonb(orders)::text",
            )
            .bind(id + 100_000)
            .fetch_optional(pool)
            .await
            .unwrap();
            if let Some(image) = image {
                upsert_target(pool, &image).await;
            }
        }
    }
}

async fn upsert_target(pool: &PgPool, image: &str) {
    sqlx::query(
        "INSERT INTO moved.orders SELECT * FROM jsonb_populate_record(NULL::moved.orders, $1::jsonb)
         ON CONFLICT (tenant_id, id) DO UPDATE SET amount = EXCLUDED.amount, note = EXCLUDED.note,
             version = EXCLUDED.version
         WHERE moved.orders.version < EXCLUDED.version",
    )
    .bind(image)
    .execute(pool)
    .await
    .unwrap();
}

async fn race(store: &TestStore, lock: bool) {
    let rows = 1500;
    let f = Fixture::new(
        store.reopen_as_test_store().await,
        &[("t1", rows), ("t2", 200)],
        serde_json::json!({"copy": {"min_batch": 20, "max_batch": 60, "start_batch": 40, "target_batch_ms": 20, "rate_limit": 2000, "lock_source_rows": lock}}),
    )
    .await;
    let copier = f.copier().await;
    f.change("t1", Action::Advance).await;
    let t2_before = f.digest("public", "t2").await;

    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..2u64 {
        let (pool, stop, ops) = (f.pool.clone(), stop.clone(), ops.clone());
        writers.push(tokio::spawn(async move {
            let mut x = 0x9e37_79b9_u64 + w;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Mostly the keys the copier is near, so they collide with its batches.
                let id = (x % rows as u64) as i64 + 1;
                dual_write(&pool, x, id).await;
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let outcome = copier
        .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        matches!(outcome, Outcome::Complete { mismatches: 0, .. }),
        "{outcome:?}"
    );
    let n = ops.load(Ordering::Relaxed);
    assert!(n > 200, "only {n} concurrent writes raced the copy");
    assert_eq!(
        f.digest("moved", "t1").await,
        f.digest("public", "t1").await,
        "after {n} concurrent writes the target equals the source"
    );
    assert_eq!(f.digest("public", "t2").await, t2_before);
    assert_eq!(f.digest("moved", "t2").await.0, 0);
    // And a whole-tenant verify agrees.
    assert!(
        copier
            .verify(&tenant("t1"), CopyDirection::Forward)
            .await
            .unwrap()
            .is_empty()
    );
}
