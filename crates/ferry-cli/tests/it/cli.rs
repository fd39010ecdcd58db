use ferry_testkit::{TempDir, TestDb};

use crate::{ferry, ok, run, stderr, stdout};

fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("ferry.db").display())
}

/// The operator workflow of the foundation, identical on both stores.
fn workflow(url: &str) {
    ok(ferry(url).args([
        "migration",
        "create",
        "orders_move",
        "--kind",
        "tenant-move",
    ]));
    let out = ok(ferry(url).args([
        "tenant",
        "add",
        "orders_move",
        "acme=120000",
        "globex=800",
        "initech",
    ]));
    assert_eq!(
        out.trim(),
        "registered 3 tenant(s) in orders_move: 3 new, 0 updated"
    );

    let out = ok(ferry(url).args([
        "tenant",
        "advance",
        "orders_move",
        "acme",
        "--reason",
        "canary",
    ]));
    assert!(out.contains("moved acme: legacy -> dual_write"), "{out}");
    assert!(out.contains("effective"), "{out}");

    // The next step needs a backfill: refused, exit code 3, nothing changed.
    let refused = run(ferry(url).args(["tenant", "advance", "orders_move", "acme"]));
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("guards failed: backfill not complete"),
        "{}",
        stderr(&refused)
    );
    // --force without a reason is an error; with one it is audited.
    let no_reason = run(ferry(url).args(["tenant", "advance", "orders_move", "acme", "--force"]));
    assert_eq!(no_reason.status.code(), Some(1));
    assert!(
        stderr(&no_reason).contains("needs a --reason"),
        "{}",
        stderr(&no_reason)
    );
    ok(ferry(url).args([
        "tenant",
        "advance",
        "orders_move",
        "acme",
        "--force",
        "--reason",
        "verified by hand",
    ]));
    let history = ok(ferry(url).args(["tenant", "history", "orders_move", "acme", "--json"]));
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(
        history[1]["forced_guards"],
        serde_json::json!(["backfill_complete"])
    );
    assert_eq!(history[1]["actor"], "tester");
    assert_eq!(history[1]["reason"], "verified by hand");

    // A rollout over everyone: acme moves on (shadow -> target_primary needs a backfill, so
    // it is refused), the two others enter dual_write. Exit code 3 for the refusal.
    let rollout = run(ferry(url).args(["rollout", "orders_move", "--all", "--json"]));
    assert_eq!(rollout.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_str(&stdout(&rollout)).unwrap();
    assert_eq!(report["moved"].as_array().unwrap().len(), 2);
    assert_eq!(report["refused"][0]["tenant"], "acme");

    // status --json agrees with the table and with what happened.
    let status = ok(ferry(url).args(["status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let m = &status["migrations"][0];
    assert_eq!(m["migration"], "orders_move");
    assert_eq!(m["tenants"], 3);
    let phases: Vec<(String, u64)> = m["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["phase"].as_str().unwrap().to_owned(),
                p["tenants"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        phases,
        [
            ("legacy".to_owned(), 0),
            ("dual_write".to_owned(), 2),
            ("shadow".to_owned(), 1),
            ("target_primary".to_owned(), 0),
            ("target_only".to_owned(), 0),
            ("complete".to_owned(), 0),
        ]
    );
    let table = ok(ferry(url).arg("status"));
    assert!(
        table.contains("orders_move (tenant_move): 3 tenants, 0 paused"),
        "{table}"
    );

    let verify = ok(ferry(url).args(["migration", "verify", "orders_move"]));
    assert!(verify.contains("consistent"), "{verify}");
}

#[test]
fn operator_workflow_on_sqlite() {
    let dir = TempDir::new("cli");
    workflow(&sqlite_url(&dir));
}

#[tokio::test]
async fn operator_workflow_on_postgres() {
    let db = TestDb::new().await;
    let url = db.url().to_owned();
    tokio::task::spawn_blocking(move || workflow(&url))
        .await
        .unwrap();
}

#[test]
fn bad_input_is_one_clear_line_and_changes_nothing() {
    let dir = TempDir::new("cli-bad");
    let url = sqlite_url(&dir);
    ok(ferry(&url).args(["migration", "create", "m", "--kind", "import"]));
    ok(ferry(&url).args(["tenant", "add", "m", "a"]));

    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["tenant", "advance", "m", "ghost"],
            1,
            "error: advance tenant ghost: tenant ghost is not registered in migration m (see `ferry tenant add`)",
        ),
        (
            &["tenant", "advance", "nope", "a"],
            1,
            "error: advance tenant a: migration nope does not exist (see `ferry migration list`)",
        ),
        (
            &["tenant", "rollback", "m", "a"],
            3,
            "error: cannot rollback tenant a of migration m: cannot roll back from legacy: the tenant is already on the source",
        ),
        (
            &["tenant", "advance", "m", "a/../b"],
            2,
            "tenant id \"a/../b\" has '/' at byte 1",
        ),
        (
            &["migration", "create", "Bad-Name", "--kind", "import"],
            2,
            "migration id \"Bad-Name\" has 'B' at byte 0",
        ),
        (
            &["migration", "create", "m", "--kind", "import"],
            1,
            "error: create migration: migration m already exists",
        ),
        (
            &[
                "migration",
                "create",
                "x",
                "--kind",
                "import",
                "--config",
                "[1",
            ],
            1,
            "error: parse --config as JSON",
        ),
        (
            &["rollout", "m", "--percent", "101"],
            1,
            "percentage \"101\" is not a number between 0 and 100",
        ),
        (
            &["tenant", "add", "m", "b=lots"],
            1,
            "row count \"lots\" is not a whole number",
        ),
    ];
    for (args, code, message) in cases {
        let out = run(ferry(&url).args(*args));
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        if *code != 2 {
            assert_eq!(
                stderr(&out)
                    .lines()
                    .filter(|l| l.starts_with("error"))
                    .count(),
                1,
                "{args:?}: one error line: {}",
                stderr(&out)
            );
        }
    }
    // Nothing was written by any of the refusals.
    let history = ok(ferry(&url).args(["tenant", "history", "m", "a", "--json"]));
    assert_eq!(history.trim(), "[]");
    let list = ok(ferry(&url).args(["migration", "list", "--json"]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn unreachable_and_too_new_stores_are_refused() {
    let out = run(ferry("postgres://ferry:hunter2@127.0.0.1:1/ferry").arg("status"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: open the control store: cannot reach the control store at postgres://ferry:***@127.0.0.1:1/ferry"), "{err}");
    assert!(!err.contains("hunter2"));

    let dir = TempDir::new("cli-newer");
    let url = sqlite_url(&dir);
    ok(ferry(&url).arg("status"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("UPDATE ferry_meta SET value = 99 WHERE key = 'schema_version'")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let out = run(ferry(&url).args(["migration", "create", "m", "--kind", "import"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("schema version 99, newer than this binary supports (4); upgrade ferry"),
        "{}",
        stderr(&out)
    );
}

/// `ferry copy run --parallel`: many tenants of skewed sizes copied at once (the order is the
/// schedule's, unit-tested in ferry-copier); every tenant ends exact, and no other tenant's
/// rows move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_copies_of_skewed_tenants_end_exact() {
    let data = ferry_testkit::TestDb::new().await;
    let pool = sqlx::PgPool::connect(data.url()).await.unwrap();
    let sizes: Vec<(String, i64)> = [("big1", 6000), ("big2", 4000), ("mid", 900)]
        .iter()
        .map(|(t, n)| (t.to_string(), *n))
        .chain((1..=12).map(|i| (format!("small{i}"), i * 7)))
        .collect();
    sqlx::raw_sql(
        "CREATE TABLE public.orders (tenant_id text NOT NULL, id bigint NOT NULL,
             amount numeric(12,2) NOT NULL, version bigint NOT NULL DEFAULT 1,
             PRIMARY KEY (tenant_id, id));",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (t, n) in sizes
        .iter()
        .chain(std::iter::once(&("bystander".to_string(), 50)))
    {
        sqlx::query(
            "INSERT INTO public.orders (tenant_id, id, amount) SELECT $1, i, i / 3.0 FROM generate_series(1, $2) i",
        )
        .bind(t)
        .bind(n)
        .execute(&pool)
        .await
        .unwrap();
    }
    let dir = TempDir::new("parallel-copy");
    let store = format!("sqlite://{}", dir.path().join("p.db").display());
    let url = data.url().to_owned();
    let config = r#"{"source": {"schema": "public", "table": "orders"},
        "target": {"schema": "moved", "table": "orders"}, "tenant_column": "tenant_id",
        "version_column": "version",
        "copy": {"target_batch_ms": 100, "min_batch": 100, "max_batch": 1000}}"#;
    let registered: Vec<String> = sizes.iter().map(|(t, n)| format!("{t}={n}")).collect();
    let out = tokio::task::spawn_blocking(move || {
        ok(ferry(&store).args([
            "migration",
            "create",
            "orders_move",
            "--kind",
            "tenant-move",
            "--config",
            config,
        ]));
        ok(ferry(&store)
            .args(["tenant", "add", "orders_move"])
            .args(&registered));
        ok(ferry(&store).args(["rollout", "orders_move", "--all", "--reason", "go"]));
        ok(ferry(&store).args([
            "copy",
            "run",
            "orders_move",
            "--create-target",
            "--parallel",
            "2",
            "--source-url",
            &url,
        ]))
    })
    .await
    .unwrap();
    for (t, n) in &sizes {
        let line = format!(
            "{t}: forward copy complete: {} rows",
            crate::cli::thousands(*n)
        );
        assert!(out.contains(&line), "{line} in {out}");
    }
    let diff: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             (SELECT * FROM public.orders WHERE tenant_id <> 'bystander' EXCEPT SELECT * FROM moved.orders)
             UNION ALL (SELECT * FROM moved.orders EXCEPT SELECT * FROM public.orders)) d",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(diff, 0, "every copied tenant is exact");
    let bystander: i64 =
        sqlx::query_scalar("SELECT count(*) FROM moved.orders WHERE tenant_id = 'bystander'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(bystander, 0, "an unregistered tenant is not copied");
}

pub fn thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `ferry status --watch | head -1`: the reader goes away, ferry ends quietly (141, as for
/// SIGPIPE), without a panic.
#[test]
fn a_closed_pipe_ends_watch_quietly() {
    use std::io::Read as _;
    let dir = TempDir::new("pipe");
    let url = sqlite_url(&dir);
    ok(ferry(&url).args(["migration", "create", "m", "--kind", "tenant-move"]));
    let mut child = ferry(&url)
        .args(["status", "--watch", "1", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"{");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// With `--json`, a refusal or an error is one JSON object on stdout, with the API's error
/// codes and the documented exit codes; a rollback walk reports every step it took.
#[test]
fn json_output_covers_refusals_errors_and_rollback_walks() {
    let dir = TempDir::new("cli-json");
    let url = sqlite_url(&dir);
    ok(ferry(&url).args(["migration", "create", "m", "--kind", "import"]));
    ok(ferry(&url).args(["tenant", "add", "m", "a", "b"]));
    let json_of = |out: &std::process::Output| -> serde_json::Value {
        serde_json::from_str(&stdout(out))
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
    };
    let cases: &[(&[&str], i32, &str, &str)] = &[
        (
            &["tenant", "rollback", "m", "a", "--one-step", "--json"],
            3,
            "refused",
            "cannot roll back from legacy",
        ),
        (
            &["tenant", "advance", "nope", "a", "--json"],
            1,
            "not_found",
            "migration nope does not exist",
        ),
        (
            &["tenant", "advance", "m", "ghost", "--json"],
            1,
            "not_found",
            "tenant ghost is not registered",
        ),
        (&["tenant", "advance", "m", "--json"], 2, "usage", ""),
    ];
    for (args, code, kind, message) in cases {
        let out = run(ferry(&url).args(*args));
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", stderr(&out));
        let body = json_of(&out);
        assert_eq!(body["error"]["code"], *kind, "{args:?}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(message),
            "{args:?}: {body}"
        );
    }
    // A walk back from shadow: two steps, each reported, then "effective".
    ok(ferry(&url).args(["tenant", "advance", "m", "b"]));
    ok(ferry(&url).args(["tenant", "advance", "m", "b", "--force", "--reason", "test"]));
    let out = run(ferry(&url).args(["tenant", "rollback", "m", "b", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let walk = json_of(&out);
    assert_eq!(walk["result"], "effective", "{walk}");
    assert_eq!(walk["steps"].as_array().unwrap().len(), 1, "{walk}");
    assert_eq!(walk["steps"][0]["moved"][0]["to"], "legacy", "{walk}");
    assert!(walk["error"].is_null(), "{walk}");
    // And from legacy a walk is refused at once: no steps, the refusal as the error.
    let out = run(ferry(&url).args(["tenant", "rollback", "m", "b", "--json"]));
    assert_eq!(out.status.code(), Some(3));
    let walk = json_of(&out);
    assert_eq!(
        (walk["result"].as_str(), walk["error"]["code"].as_str()),
        (Some("refused"), Some("refused")),
        "{walk}"
    );
}

/// A migration's config is checked when it is created, naming the field; nothing is stored.
#[test]
fn migration_create_checks_the_config_against_its_kind() {
    let dir = TempDir::new("cli-config");
    let url = sqlite_url(&dir);
    let cases: &[(&str, &str, &str)] = &[
        (
            "tenant-move",
            r#"{"source": {"schema": "public", "table": "orders"}, "target": {"schema": "moved", "table": "orders"}, "tenant_column": "tenant id", "version_column": "version"}"#,
            "tenant_column",
        ),
        (
            "tenant-move",
            r#"{"source": {"schema": "public", "table": "orders"}, "target": {"schema": "moved", "table": "orders"}, "tenant_column": "tenant_id", "version_column": "version", "batch": 5}"#,
            "unknown field `batch`",
        ),
        (
            "tiering",
            r#"{"table": "events", "tenant_column": "tenant_id", "age_column": "at", "cold_url": "ftp://x"}"#,
            "unknown scheme \"ftp\"",
        ),
        (
            "tiering",
            r#"{"table": "events", "tenant_column": "tenant_id", "cold_url": "/tmp/x"}"#,
            "missing field `age_column`",
        ),
    ];
    for (kind, config, message) in cases {
        let out = run(ferry(&url).args([
            "migration",
            "create",
            "m",
            "--kind",
            kind,
            "--config",
            config,
        ]));
        assert_eq!(
            out.status.code(),
            Some(1),
            "{kind} {config}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(message),
            "{kind} {config}: {}",
            stderr(&out)
        );
    }
    let list = ok(ferry(&url).args(["migration", "list", "--json"]));
    assert_eq!(list.trim(), "[]", "nothing was stored");
    let good = r#"{"table": "events", "tenant_column": "tenant_id", "age_column": "at", "cold_url": "file:///tmp/ferry-cold"}"#;
    ok(ferry(&url).args([
        "migration",
        "create",
        "m",
        "--kind",
        "tiering",
        "--config",
        good,
    ]));
}

/// A binary built without crash points refuses the crash variables instead of running as if
/// a crash test had nothing to crash; one built with them (CI's --all-features) checks them.
#[test]
fn crash_variables_need_the_failpoints_build() {
    let (var, value, says) = if cfg!(feature = "failpoints") {
        (
            "FERRY_CRASH_AFTER",
            "0",
            "FERRY_CRASH_AFTER=0 is not a positive whole number",
        )
    } else {
        (
            "FERRY_CRASH_AT",
            "copy_before_commit",
            "built without the failpoints feature",
        )
    };
    let out = crate::run(
        crate::ferry("sqlite::memory:")
            .args(["status"])
            .env(var, value),
    );
    let stderr = crate::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(says), "{stderr}");
}
