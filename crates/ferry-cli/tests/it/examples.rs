use std::process::Command;

use ferry_testkit::TempDir;

use crate::ok;

#[test]
fn canary_rollout_example_runs_as_documented() {
    let dir = TempDir::new("example");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/canary_rollout.sh"
    );
    let out = ok(Command::new("bash")
        .arg(script)
        .env("FERRY", env!("CARGO_BIN_EXE_ferry"))
        .env(
            "FERRY_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("canary.db").display()),
        )
        .env("TMPDIR", dir.path())
        .env("FERRY_ACTOR", "example"));
    assert!(
        out.contains("registered 50 tenant(s) in orders_move: 50 new, 0 updated"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert!(
        out.contains("blocked: guards failed: backfill not complete"),
        "{out}"
    );
    assert!(out.contains("dual_write -> legacy"), "{out}");
    assert!(
        out.contains("consistent: every phase is explained by the audit log"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_move_example_runs_as_documented() {
    let data = ferry_testkit::TestDb::new().await;
    let pool = sqlx::PgPool::connect(data.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.orders (tenant_id text NOT NULL, id bigint NOT NULL,
             amount numeric(12,2) NOT NULL, version bigint NOT NULL DEFAULT 1,
             PRIMARY KEY (tenant_id, id));
         INSERT INTO public.orders (tenant_id, id, amount)
         SELECT t, i, i FROM unnest(ARRAY['acme', 'globex']) t, generate_series(1, 5000) i;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let dir = TempDir::new("move-example");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/tenant_move.sh");
    let url = data.url().to_owned();
    let store = format!("sqlite://{}", dir.path().join("move.db").display());
    let out = tokio::task::spawn_blocking(move || {
        ok(Command::new("bash")
            .arg(script)
            .env("FERRY", env!("CARGO_BIN_EXE_ferry"))
            .env("FERRY_DATABASE_URL", store)
            .env("FERRY_SOURCE_URL", url)
            .env("FERRY_ACTOR", "example"))
    })
    .await
    .unwrap();
    assert!(
        out.contains("acme: forward copy complete: 5,000 rows"),
        "{out}"
    );
    assert!(out.contains("acme: source and target match"), "{out}");
    assert!(
        out.contains("acme: complete; deleted 5,000 row(s) from the source"),
        "{out}"
    );
    let left: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM public.orders WHERE tenant_id = 'acme'),
                (SELECT count(*) FROM moved.orders WHERE tenant_id = 'acme')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, (0, 5000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiering_example_runs_as_documented() {
    let data = ferry_testkit::TestDb::new().await;
    let pool = sqlx::PgPool::connect(data.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.events (tenant_id text NOT NULL, id bigint NOT NULL,
             kind text NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (tenant_id, id));
         INSERT INTO public.events
         SELECT t, i, 'click', timestamptz '2020-01-01 00:00:00+00' + i * interval '2 hours'
         FROM unnest(ARRAY['acme', 'globex']) t, generate_series(1, 5000) i;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let dir = TempDir::new("tier-example");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/tiering.sh");
    let url = data.url().to_owned();
    let store = format!("sqlite://{}", dir.path().join("tier.db").display());
    let cold = dir.path().join("cold");
    let out = tokio::task::spawn_blocking(move || {
        ok(Command::new("bash")
            .arg(script)
            .env("FERRY", env!("CARGO_BIN_EXE_ferry"))
            .env("FERRY_DATABASE_URL", store)
            .env("FERRY_HOT_URL", url)
            .env("COLD_DIR", cold)
            .env("FERRY_ACTOR", "example")
            .stderr(std::process::Stdio::inherit()))
    })
    .await
    .unwrap();
    // 2020 has 8,784 hours: rows 1..=4391 are before 2021.
    // The last thing printed is `tier status --json`.
    let json = out.rfind("\n[").map(|i| i + 1).unwrap_or(0);
    let status: serde_json::Value = serde_json::from_str(&out[json..]).unwrap();
    assert_eq!(status[0]["tenant"], "acme");
    assert_eq!(status[0]["phase"], "target_only");
    assert_eq!(status[0]["archived_rows"], 4391);
    assert_eq!(status[0]["buffer_pending"], 0);
    let hot: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM public.events WHERE tenant_id = 'acme'),
                (SELECT count(*) FROM public.events WHERE tenant_id = 'globex')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        hot,
        (5000 - 4391, 5000),
        "acme's archived rows left hot; globex untouched"
    );
}

#[test]
fn operator_api_example_runs_as_documented() {
    let dir = TempDir::new("example");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/operator_api.sh"
    );
    // A free port for the script's server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = ok(Command::new("bash")
        .arg(script)
        .env("FERRY", env!("CARGO_BIN_EXE_ferry"))
        .env(
            "FERRY_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("ops.db").display()),
        )
        .env("FERRY_EXAMPLE_PORT", port.to_string())
        .env("TMPDIR", dir.path())
        .env("FERRY_ACTOR", "example"));
    assert!(out.contains(r#""migration":"orders_move""#), "{out}");
    assert!(
        out.contains(r#""from":"legacy","to":"dual_write""#),
        "{out}"
    );
    assert!(out.contains("HTTP 403"), "{out}");
    assert!(
        out.contains(r#"ferry_tenants{migration="orders_move",phase="dual_write"} 1"#),
        "{out}"
    );
    assert!(
        out.contains(r#""actor":"token:oncall","operation":"advance""#),
        "{out}"
    );
    assert!(out.contains("token:oncall"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_example_passes_and_leaves_nothing_behind() {
    let data = ferry_testkit::TestDb::new().await;
    let dir = TempDir::new("check-example");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/check.sh");
    let url = data.url().to_owned();
    let cwd = dir.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        ok(Command::new("bash")
            .arg(script)
            .current_dir(cwd)
            .env("FERRY", env!("CARGO_BIN_EXE_ferry"))
            .env("FERRY_CHECK_DATA_URL", url)
            .env("TMPDIR", dir.path()))
    })
    .await
    .unwrap();
    assert!(
        out.contains("PASSED: nothing lost, duplicated, resurrected or misrouted"),
        "{out}"
    );
    assert!(out.contains("lost                0"), "{out}");
    assert!(out.contains("check.json: passed"), "{out}");
    let pool = sqlx::PgPool::connect(data.url()).await.unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ferry\\_check\\_%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "the scratch schemas are dropped");
}

#[test]
fn check_refuses_more_moving_tenants_than_tenants_before_touching_anything() {
    let dir = TempDir::new("check-bad");
    let out = crate::run(
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["check", "--data-url", "postgres://nobody@127.0.0.1:1/none"])
            .args(["--tenants", "5", "--moving", "9"])
            .env("TMPDIR", dir.path()),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = crate::stderr(&out);
    assert!(
        err.contains("--moving (9) cannot exceed --tenants (5)"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_change_example_runs_as_documented() {
    let data = ferry_testkit::TestDb::new().await;
    let pool = sqlx::PgPool::connect(data.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.orders (tenant_id bigint NOT NULL, id bigint NOT NULL,
             amount text, note text, PRIMARY KEY (tenant_id, id));
         INSERT INTO public.orders
         SELECT t, i, i || '.5', 'n' || i FROM generate_series(1, 2) t, generate_series(1, 3000) i;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let dir = TempDir::new("schema-example");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/schema_change.sh"
    );
    let url = data.url().to_owned();
    let store = format!("sqlite://{}", dir.path().join("schema.db").display());
    let out = tokio::task::spawn_blocking(move || {
        ok(Command::new("bash")
            .arg(script)
            .env("FERRY", env!("CARGO_BIN_EXE_ferry"))
            .env("FERRY_DATABASE_URL", store)
            .env("FERRY_SOURCE_URL", url)
            .env("FERRY_ACTOR", "example")
            .stderr(std::process::Stdio::inherit()))
    })
    .await
    .unwrap();
    for expected in [
        "valid: 4 operations",
        "-- ferry schema start orders_v2",
        "SET search_path TO public_orders_v2, public",
        "1: backfill complete: 3,000 row(s) written",
        "2: backfill complete: 3,000 row(s) written",
        "completed orders_v2: ",
        "target_only -> complete: 2",
    ] {
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }
    // The last thing printed is `schema status --json`.
    let json = out.rfind("\n{").map(|i| i + 1).unwrap_or(0);
    let status: serde_json::Value = serde_json::from_str(&out[json..]).unwrap();
    assert_eq!(status["state"], "completed");
    assert_eq!(status["phases"][5]["tenants"], 2);
    let shape: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text, is_nullable = 'YES'
         FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = 'orders' ORDER BY column_name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = [
        ("amount", "numeric", true),
        ("comment", "text", true),
        ("currency", "text", false),
        ("id", "bigint", false),
        ("tenant_id", "bigint", false),
    ];
    assert_eq!(
        shape,
        expected.map(|(c, t, n)| (c.to_owned(), t.to_owned(), n))
    );
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.orders WHERE amount <> (id || '.5')::numeric
             OR comment <> 'n' || id OR currency <> 'EUR'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0);
    let checks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_constraint WHERE conname = 'orders_currency_check' AND convalidated",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(checks, 1, "the currency check is validated");
}
