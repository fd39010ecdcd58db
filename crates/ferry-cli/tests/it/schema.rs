//! `ferry schema`: the real binary running expand–contract changes against a real table keyed
//! `(tenant_id bigint, id bigint)`; bad plans refused naming `operations[i].field`; the plan
//! printed without a change; complete and rollback refused by the tenants' phases; and the
//! JSON Schema of plan files kept equal to what the parser accepts.

use std::collections::BTreeSet;
use std::process::{Command, Output};

use ferry_schema::Plan;
use ferry_schema::plan::OPERATIONS;
use ferry_testkit::{TempDir, TestDb};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{ferry, ok, run, stderr, stdout};

/// Tenants 1 and 2, `ROWS` orders each, amounts as text and notes.
const ORDERS: &str = "
CREATE TABLE public.orders (
    tenant_id bigint NOT NULL,
    id bigint NOT NULL,
    amount text,
    note text,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO public.orders (tenant_id, id, amount, note)
SELECT t, i, (i * 25) || '.' || lpad((i % 100)::text, 2, '0'), CASE WHEN i % 7 = 0 THEN NULL ELSE 'n' || i END
FROM generate_series(1, 2) AS t, generate_series(1, 1200) AS i;
";

const MIGRATION: &str = "orders_v2";

/// The application's database with `public.orders`, a store, and a runtime for SQL.
struct World {
    rt: tokio::runtime::Runtime,
    db: TestDb,
    pool: PgPool,
    _dir: TempDir,
    store: String,
}

impl World {
    fn new() -> World {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (db, pool) = rt.block_on(async {
            let db = TestDb::new().await;
            let pool = PgPool::connect(db.url()).await.unwrap();
            sqlx::raw_sql(ORDERS).execute(&pool).await.unwrap();
            (db, pool)
        });
        let dir = TempDir::new("schema-cli");
        let store = format!("sqlite://{}", dir.path().join("ferry.db").display());
        World {
            rt,
            db,
            pool,
            _dir: dir,
            store,
        }
    }

    fn ferry(&self) -> Command {
        ferry(&self.store)
    }

    /// `ferry schema ACTION MIGRATION --source-url URL EXTRA…`.
    fn schema(&self, action: &str, extra: &[&str]) -> Command {
        let mut cmd = self.ferry();
        cmd.args(["schema", action, MIGRATION, "--source-url", self.db.url()])
            .args(extra);
        cmd
    }

    fn create(&self, plan: &Value) -> Output {
        run(self.ferry().args([
            "migration",
            "create",
            MIGRATION,
            "--kind",
            "schema-change",
            "--config",
            &plan.to_string(),
        ]))
    }

    fn snapshot(&self) -> Vec<String> {
        self.rt
            .block_on(ferry_schema::catalogue::snapshot(&self.pool, "public"))
            .unwrap()
    }

    fn sql<T>(&self, query: &str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        self.rt
            .block_on(sqlx::query_as(sqlx::AssertSqlSafe(query.to_owned())).fetch_all(&self.pool))
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    fn exec(&self, statements: &str) {
        self.rt
            .block_on(sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_owned())).execute(&self.pool))
            .unwrap_or_else(|e| panic!("{statements}: {e}"));
    }

    fn advance(&self, tenants: &str, from: &str) -> String {
        ok(self.ferry().args([
            "rollout",
            MIGRATION,
            "--tenants",
            tenants,
            "--from-phase",
            from,
        ]))
    }
}

fn plan(operations: Value) -> Value {
    json!({"schema": "public", "lock_timeout_ms": 1000,
           "backfill": {"min_batch": 100, "start_batch": 200, "max_batch": 500},
           "operations": operations})
}

/// amount text -> numeric(12,2), note renamed to comment, an index built on the new amount.
fn change_plan() -> Value {
    plan(json!([
        {"op": "change_type", "table": "orders", "column": "amount", "type": "numeric(12,2)",
         "up": "amount::numeric(12,2)", "down": "amount::text"},
        {"op": "rename_column", "table": "orders", "from": "note", "to": "comment"},
        {"op": "create_index", "table": "orders", "name": "orders_amount_idx",
         "columns": ["tenant_id", "amount"]}
    ]))
}

fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}:\n{}\n{}",
        stdout(out),
        stderr(out)
    );
}

#[test]
fn bad_plans_are_refused_naming_each_operation_and_field() {
    let w = World::new();
    // Refused when the migration is created: the parser's problems, every one.
    let out = w.create(&plan(json!([
        {"op": "add_colum", "table": "orders"},
        {"op": "change_type", "table": "orders", "column": "amount", "type": "numeric",
         "down": "amount::text"}
    ])));
    assert_code(&out, 1, "create with an unknown op and a missing up");
    let err = stderr(&out);
    assert!(
        err.contains("operations[0].op: unknown operation \"add_colum\""),
        "{err}"
    );
    assert!(
        err.contains("operations[1].up: missing field `up`"),
        "{err}"
    );

    // Stored, but refused by validate against the catalogue: every problem on its line.
    let long = "x".repeat(64);
    w.create(&plan(json!([
        {"op": "add_column", "table": "invoices", "column": {"name": "total", "type": "numeric"}},
        {"op": "add_column", "table": "orders", "column": {"name": long, "type": "text"}},
        {"op": "rename_column", "table": "orders", "from": "note", "to": "Comment"},
        {"op": "add_column", "table": "orders",
         "column": {"name": "currency", "type": "text", "nullable": false}},
        {"op": "rename_column", "table": "orders", "from": "amount", "to": "total"},
        {"op": "change_type", "table": "orders", "column": "total", "type": "numeric",
         "up": "amount::numeric", "down": "total::text"}
    ])));
    let before = w.snapshot();
    let out = run(&mut w.schema("validate", &[]));
    assert_code(&out, 1, "validate a plan with six problems");
    let err = stderr(&out);
    for expected in [
        "operations[0].table: table \"invoices\" does not exist",
        "operations[1].column.name: ",
        "PostgreSQL truncates names at 63",
        "operations[2].to: \"Comment\" would need quoting",
        "operations[3].up: column \"currency\" is NOT NULL without a default",
        "operations[5].column: conflicts with operations[4]",
    ] {
        assert!(err.contains(expected), "{expected:?} not in:\n{err}");
    }
    assert_eq!(
        err.lines().filter(|l| l.contains("operations[")).count(),
        5,
        "{err}"
    );
    // The other commands refuse it too, and nothing was changed.
    let out = run(&mut w.schema("start", &[]));
    assert_code(&out, 1, "start an invalid plan");
    assert!(
        stderr(&out).contains("\n  operations[2].to: "),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.snapshot(), before);
}

#[test]
fn plan_prints_the_sql_and_changes_nothing() {
    let w = World::new();
    assert_code(&w.create(&change_plan()), 0, "create");
    let before = w.snapshot();
    let valid = ok(&mut w.schema("validate", &[]));
    assert!(valid.starts_with("valid: 3 operations"), "{valid}");
    assert!(valid.contains("state: not started"), "{valid}");
    let sql = ok(&mut w.schema("plan", &[]));
    for expected in [
        "-- ferry schema start orders_v2",
        "ALTER TABLE \"public\".\"orders\" ADD COLUMN \"_ferry_new_amount\" numeric(12,2);",
        "CREATE VIEW \"public_orders_v2\".\"orders\" AS SELECT",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS \"orders_amount_idx\"",
        "-- ferry schema complete orders_v2",
        "ALTER TABLE \"public\".\"orders\" RENAME COLUMN \"note\" TO \"comment\";",
        "-- ferry schema rollback orders_v2",
        "--   orders._ferry_new_amount = amount::numeric(12,2), in keyset batches on (id)",
        "-- state: not started",
    ] {
        assert!(sql.contains(expected), "{expected:?} not in:\n{sql}");
    }
    assert_eq!(w.snapshot(), before, "plan and validate change nothing");
    let status = ok(&mut w.schema("status", &["--json"]));
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "not started");
    assert_eq!(status["version_schema"], "public_orders_v2");
}

/// The whole change through the CLI: two tenants, rows written by both versions on the way,
/// complete refused while a tenant is at legacy and rollback while one reads the new shape.
#[test]
fn a_change_runs_through_the_cli_tenant_by_tenant() {
    let w = World::new();
    assert_code(&w.create(&change_plan()), 0, "create");
    ok(w.ferry()
        .args(["tenant", "add", MIGRATION, "1=1200", "2=1200"]));
    let before = w.snapshot();
    let started = ok(&mut w.schema("start", &[]));
    assert!(
        started.contains("started orders_v2: 2 step(s) run"),
        "{started}"
    );
    assert!(
        started.contains("SET search_path TO public_orders_v2, public"),
        "{started}"
    );
    assert_ne!(w.snapshot(), before);
    // The old version writes on, the new one writes through its views.
    w.exec(
        "INSERT INTO public.orders (tenant_id, id, amount, note) VALUES (1, 5001, '7.25', 'old');
         SET search_path TO public_orders_v2, public;
         INSERT INTO orders (tenant_id, id, amount, comment) VALUES (2, 5002, 12.5, 'new');
         RESET search_path;",
    );

    w.advance("1", "legacy");
    let backfilled = ok(&mut w.schema("backfill", &[]));
    assert!(
        backfilled.contains("1: backfill complete: 1,201 row(s) written"),
        "{backfilled}"
    );
    assert!(
        backfilled.contains("1 not in dual_write, shadow or target_primary"),
        "{backfilled}"
    );
    w.advance("1", "dual_write");
    w.advance("1", "shadow");

    // Tenant 2 is at legacy: complete refused, naming it; nothing changed.
    let refused = run(&mut w.schema("complete", &[]));
    assert_code(&refused, 3, "complete with a tenant at legacy");
    assert!(
        stderr(&refused).contains("  2: legacy"),
        "{}",
        stderr(&refused)
    );
    // Tenant 1 reads the new shape: rollback refused, naming it.
    let refused = run(&mut w.schema("rollback", &[]));
    assert_code(&refused, 3, "rollback with a tenant at target_primary");
    let err = stderr(&refused);
    assert!(err.contains("  1: target_primary"), "{err}");
    assert!(err.contains("ferry tenant rollback orders_v2"), "{err}");

    w.advance("2", "legacy");
    let backfilled = ok(&mut w.schema("backfill", &["--tenant", "2"]));
    assert!(
        backfilled.contains("2: backfill complete: 1,201 row(s) written"),
        "{backfilled}"
    );
    let again = ok(&mut w.schema("backfill", &[]));
    assert!(again.contains("2: backfill already complete"), "{again}");
    w.advance("2", "dual_write");
    w.advance("2", "shadow");
    w.advance("1,2", "target_primary");
    let status = ok(&mut w.schema("status", &["--json"]));
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"], "started");
    assert_eq!(
        status["phases"][4],
        json!({"phase": "target_only", "tenants": 2})
    );

    let completed = ok(&mut w.schema("complete", &[]));
    assert!(completed.contains("completed orders_v2: "), "{completed}");
    assert!(
        completed.contains("target_only -> complete: 2"),
        "{completed}"
    );
    check_completed(&w);
}

/// After the contract: the new shape, every row converted, the index on the new column.
fn check_completed(w: &World) {
    let columns: Vec<(String, String)> = w.sql(
        "SELECT column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = 'orders' ORDER BY column_name",
    );
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["amount", "comment", "id", "tenant_id"]);
    assert_eq!(columns[0].1, "numeric");
    let wrong: Vec<(i64,)> = w.sql(
        "SELECT count(*) FROM public.orders WHERE id <= 1200 AND (amount IS DISTINCT FROM
             ((id * 25) || '.' || lpad((id % 100)::text, 2, '0'))::numeric(12,2)
           OR comment IS DISTINCT FROM CASE WHEN id % 7 = 0 THEN NULL ELSE 'n' || id END)",
    );
    assert_eq!(wrong, [(0,)], "every history row converted");
    let written: Vec<(i64, i64, String, String)> = w.sql(
        "SELECT tenant_id, id, amount::text, comment FROM public.orders WHERE id > 5000 ORDER BY id",
    );
    assert_eq!(
        written,
        [
            (1, 5001, "7.25".into(), "old".into()),
            (2, 5002, "12.50".into(), "new".into())
        ]
    );
    let index: Vec<(String,)> = w.sql(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexname = 'orders_amount_idx'",
    );
    assert!(index[0].0.contains("(tenant_id, amount)"), "{index:?}");
    let gone: Vec<(i64,)> =
        w.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'public_orders_v2'");
    assert_eq!(gone, [(0,)]);
}

#[test]
fn a_forced_complete_needs_a_reason_and_is_in_the_operator_log() {
    let w = World::new();
    assert_code(
        &w.create(&plan(json!([
            {"op": "rename_column", "table": "orders", "from": "note", "to": "comment"}
        ]))),
        0,
        "create",
    );
    ok(w.ferry().args(["tenant", "add", MIGRATION, "1", "2"]));
    ok(&mut w.schema("start", &[]));
    let out = run(&mut w.schema("complete", &["--force"]));
    assert_code(&out, 1, "--force without --reason");
    assert!(
        stderr(&out).contains("--force needs a --reason"),
        "{}",
        stderr(&out)
    );
    let forced = run(&mut w.schema(
        "complete",
        &["--force", "--reason", "tenants never read it"],
    ));
    assert_code(&forced, 0, "forced complete");
    assert!(stderr(&forced).contains("FORCED"), "{}", stderr(&forced));
    assert!(
        stdout(&forced).contains("no tenant at target_only"),
        "{}",
        stdout(&forced)
    );
    let log = w.rt.block_on(async {
        let store = ferry_store::open(&w.store, &ferry_store::StoreOptions::default())
            .await
            .unwrap();
        store.operations(0, 100).await.unwrap()
    });
    let entry = log
        .iter()
        .find(|e| e.operation == "schema.complete" && e.outcome.starts_with("ok"))
        .unwrap_or_else(|| panic!("no schema.complete entry in {log:?}"));
    assert_eq!(entry.actor, "tester");
    assert_eq!(entry.target, MIGRATION);
    assert!(
        entry.outcome.contains("forced past 2 tenant(s) not at target_only (1 (legacy), 2 (legacy)): tenants never read it"),
        "{}",
        entry.outcome
    );
    assert!(log.iter().any(|e| e.operation == "schema.start"), "{log:?}");
}

// --- the JSON Schema of plan files ---

fn json_schema() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/schema-plan.schema.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Follows `{"$ref": "#/$defs/x"}` (and an `allOf`'s first member).
fn deref<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.strip_prefix("#/$defs/").unwrap();
        return deref(root, &root["$defs"][name]);
    }
    if let Some(all) = schema["allOf"].as_array() {
        return deref(root, &all[0]);
    }
    schema
}

/// A value of the schema's shape, every property filled.
fn sample(root: &Value, schema: &Value) -> Value {
    let schema = deref(root, schema);
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(one) = schema["oneOf"].as_array() {
        return sample(root, &one[0]);
    }
    if let Some(values) = schema["enum"].as_array() {
        return values[0].clone();
    }
    let ty = match &schema["type"] {
        Value::Array(types) => types[0].as_str().unwrap(),
        other => other.as_str().unwrap_or("string"),
    };
    match ty {
        "object" => Value::Object(
            schema["properties"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), sample(root, v)))
                .collect(),
        ),
        "array" => json!([sample(root, &schema["items"])]),
        "boolean" => json!(true),
        "integer" | "number" => json!(1000),
        _ => json!("x"),
    }
}

fn properties(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema["required"]
        .as_array()
        .map(|r| r.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The fields serde lists in "unknown field `bogus`, expected one of `a`, `b`".
fn expected_fields(message: &str) -> BTreeSet<String> {
    let list = message.split("expected").nth(1).unwrap_or("");
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn parse_op(op: &Value) -> Result<(), Vec<ferry_schema::PlanError>> {
    Plan::from_json(&json!({"operations": [op]})).map(|_| ())
}

#[test]
fn the_json_schema_of_plans_is_what_the_parser_accepts() {
    let root = json_schema();
    assert_eq!(
        root["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    let ops: Vec<&Value> = root["$defs"]["operation"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| deref(&root, o))
        .collect();
    let names: BTreeSet<&str> = ops
        .iter()
        .map(|o| o["properties"]["op"]["const"].as_str().unwrap())
        .collect();
    assert_eq!(names, OPERATIONS.iter().copied().collect::<BTreeSet<_>>());
    for schema in ops {
        let full = sample(&root, schema);
        let name = full["op"].as_str().unwrap();
        assert_eq!(schema["additionalProperties"], false, "{name}");
        parse_op(&full).unwrap_or_else(|e| panic!("{name} with every field: {e:?}"));
        let mut bogus = full.clone();
        bogus["bogus"] = json!(1);
        let errors = parse_op(&bogus).expect_err(name);
        let mut accepted = expected_fields(&errors[0].message);
        accepted.insert("op".into());
        assert_eq!(accepted, properties(schema), "{name}: the parser's fields");
        let needed = required(schema);
        for field in properties(schema).iter().filter(|f| *f != "op") {
            let mut without = full.clone();
            without.as_object_mut().unwrap().remove(field);
            match parse_op(&without) {
                Ok(()) => assert!(!needed.contains(field), "{name}.{field} is optional"),
                Err(e) => {
                    assert!(needed.contains(field), "{name}.{field} is required: {e:?}");
                    assert_eq!(
                        e[0].to_string(),
                        format!("operations[0].{field}: missing field `{field}`")
                    );
                }
            }
        }
    }
    for def in ["column", "reference"] {
        check_object(&root, def);
    }
    check_settings(&root);
}

/// A nested object (a column, a reference) accepts exactly its schema's properties.
fn check_object(root: &Value, def: &str) {
    let schema = &root["$defs"][def];
    let op = if def == "column" {
        json!({"op": "add_column", "table": "t", "column": sample(root, schema)})
    } else {
        json!({"op": "add_foreign_key", "table": "t", "name": "n", "columns": ["a"],
               "references": sample(root, schema)})
    };
    parse_op(&op).unwrap_or_else(|e| panic!("{def} with every field: {e:?}"));
    let key = if def == "column" {
        "column"
    } else {
        "references"
    };
    let mut bogus = op.clone();
    bogus[key]["bogus"] = json!(1);
    let errors = parse_op(&bogus).expect_err(def);
    assert_eq!(
        expected_fields(&errors[0].message),
        properties(schema),
        "{def}"
    );
    for field in properties(schema) {
        let mut without = op.clone();
        without[key].as_object_mut().unwrap().remove(&field);
        assert_eq!(
            parse_op(&without).is_ok(),
            !required(schema).contains(&field),
            "{def}.{field}"
        );
    }
}

/// The plan's own settings, and the backfill's and backpressure's.
fn check_settings(root: &Value) {
    let mut full = sample(root, root);
    full["operations"] = json!([{"op": "drop_index", "name": "i"}]);
    full["backfill"]["min_batch"] = json!(1);
    Plan::from_json(&full).unwrap_or_else(|e| panic!("every setting: {e:?}"));
    let mut accepted = BTreeSet::from(["operations".to_owned()]);
    for (path, bogus) in [
        ("", "bogus"),
        ("backfill", "bogus"),
        ("backpressure", "bogus"),
    ] {
        let mut plan = full.clone();
        let at = if path.is_empty() {
            &mut plan
        } else {
            &mut plan[path]
        };
        at[bogus] = json!(1);
        let errors = Plan::from_json(&plan).expect_err(path);
        let fields = expected_fields(&errors[0].message);
        if path.is_empty() {
            accepted.extend(fields);
            assert_eq!(accepted, properties(root), "the plan's settings");
        } else {
            let schema = &root["$defs"][path];
            // The copier's settings also take its source-lock fields, which a backfill (an
            // update in place) has no use for: the JSON Schema leaves them out.
            let extra: BTreeSet<String> = fields.difference(&properties(schema)).cloned().collect();
            assert!(properties(schema).is_subset(&fields), "{path}: {fields:?}");
            let allowed = BTreeSet::from([
                "source_lock".to_owned(),
                "lock_source_rows".to_owned(),
                "lag_query".to_owned(),
            ]);
            assert!(extra.is_subset(&allowed), "{path}: {extra:?}");
        }
    }
}

/// The example plan (examples/schema_change.json) parses and names only fields the JSON
/// Schema gives its operations, with every required one.
#[test]
fn the_example_plan_follows_the_json_schema() {
    let root = json_schema();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/schema_change.json"
    );
    let example: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Plan::from_json(&example).unwrap();
    let top: BTreeSet<String> = example.as_object().unwrap().keys().cloned().collect();
    assert!(top.is_subset(&properties(&root)), "{top:?}");
    for op in example["operations"].as_array().unwrap() {
        let name = op["op"].as_str().unwrap();
        let schema = &root["$defs"][format!("op_{name}")];
        let keys: BTreeSet<String> = op.as_object().unwrap().keys().cloned().collect();
        assert!(keys.is_subset(&properties(schema)), "{name}: {keys:?}");
        assert!(required(schema).is_subset(&keys), "{name}: {keys:?}");
    }
}
