use crate::{ferry, ok};

/// `--json` prints exactly one object of the promised shape, with every figure and ratio
/// positive (a zero or negative time would mean the measurement did not happen).
#[test]
fn control_store_bench_json_has_the_promised_shape() {
    let out = ok(ferry("unused")
        .args(["bench", "control-store", "--tenants", "2000", "--json"])
        .env_remove("DATABASE_URL"));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object: {out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["bench"], "control-store");
    for key in [
        "sqlite.lookup_ns",
        "sqlite.rollout_10pct_s",
        "sqlite.status_s",
        "sqlite.baseline_hashmap_lookup_ns",
    ] {
        assert!(v["figures"][key].as_f64().unwrap() > 0.0, "{key}: {out}");
    }
    assert_eq!(v["figures"]["tenants"], 2000.0);
    for key in [
        "sqlite.lookup_vs_hashmap",
        "sqlite.rollout_vs_bare_update",
        "sqlite.status_vs_count",
    ] {
        assert!(v["ratios"][key].as_f64().unwrap() > 0.0, "{key}: {out}");
    }
}

/// `ferry bench copy --json` on a tiny table: one object, and the copier really copied (its
/// rate is positive and every ratio is computed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_bench_json_has_the_promised_shape() {
    let db = ferry_testkit::TestDb::new().await;
    let url = db.url().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        ok(ferry("unused").args([
            "bench",
            "copy",
            "--rows",
            "3000",
            "--tenants",
            "7",
            "--json",
            "--postgres-url",
            &url,
        ]))
    })
    .await
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object: {out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["bench"], "copy");
    assert_eq!(v["figures"]["rows"], 3000.0);
    for key in [
        "ceiling_rows_per_s",
        "naive_rows_per_s",
        "ferry_rows_per_s",
        "bytes_per_row",
    ] {
        assert!(v["figures"][key].as_f64().unwrap() > 0.0, "{key}: {out}");
    }
    for key in ["ferry_vs_ceiling", "naive_vs_ceiling", "ferry_vs_naive"] {
        assert!(v["ratios"][key].as_f64().unwrap() > 0.0, "{key}: {out}");
    }
}

/// `ferry bench tier --json` on a tiny table: one object; the archive really wrote segments,
/// point reads found every sampled key in both tiers, and the buffer was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tier_bench_json_has_the_promised_shape() {
    let db = ferry_testkit::TestDb::new().await;
    let url = db.url().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        ok(ferry("unused").args([
            "bench",
            "tier",
            "--rows",
            "4000",
            "--tenants",
            "4",
            "--samples",
            "50",
            "--updates",
            "200",
            "--json",
            "--postgres-url",
            &url,
        ]))
    })
    .await
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object: {out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["bench"], "tier");
    assert_eq!(v["figures"]["rows"], 4000.0);
    assert_eq!(v["figures"]["buffer_applied"], 200.0);
    for key in [
        "ceiling_rows_per_s",
        "archive_rows_per_s",
        "parquet_bytes",
        "relation_bytes",
        "cold_get_p50_us",
        "hot_get_p99_us",
        "routed_get_mean_us",
        "buffer_applied_per_s",
    ] {
        assert!(v["figures"][key].as_f64().unwrap() > 0.0, "{key}: {out}");
    }
    for key in [
        "archive_vs_ceiling",
        "size_reduction",
        "cold_vs_hot_p50",
        "routed_vs_direct",
    ] {
        assert!(v["ratios"][key].as_f64().unwrap() > 0.0, "{key}: {out}");
    }
}

/// `ferry bench schema --json` on a tiny table: one object; the backfill wrote every row of
/// the table (the bench itself checks each holds `up`), and every ratio is computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_bench_json_has_the_promised_shape() {
    let db = ferry_testkit::TestDb::new().await;
    let url = db.url().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        ok(ferry("unused").args([
            "bench",
            "schema",
            "--rows",
            "3000",
            "--tenants",
            "7",
            "--json",
            "--postgres-url",
            &url,
        ]))
    })
    .await
    .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object: {out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["bench"], "schema");
    assert_eq!(v["figures"]["rows"], 3000.0);
    assert_eq!(v["figures"]["backfill_rows_written"], 3000.0, "{out}");
    for key in [
        "update_rows_per_s",
        "update_1_rows_per_s",
        "backfill_rows_per_s",
        "bytes_per_row",
    ] {
        assert!(v["figures"][key].as_f64().unwrap() > 0.0, "{key}: {out}");
    }
    for key in [
        "backfill_vs_update",
        "backfill_vs_update_1",
        "update_n_vs_1",
    ] {
        assert!(v["ratios"][key].as_f64().unwrap() > 0.0, "{key}: {out}");
    }
}
