//! Every supported type, NULLs included, through Arrow, a Parquet segment on a real local
//! object store, and back into PostgreSQL: the row text must be identical.

use ferry_domain::{MigrationId, TenantId};
use ferry_testkit::{TempDir, TestDb};
use ferry_tier::codec::{rows_to_batch, rows_to_json};
use ferry_tier::{
    ColdStore, Declaration, KeyValue, SegmentFile, TableDecl, TierError, write_segment,
};
use sqlx::{AssertSqlSafe, PgPool};

const TABLE: &str = "
CREATE TABLE public.events (
    tenant_id text NOT NULL,
    id bigint NOT NULL,
    i2 smallint, i4 integer, f4 real, f8 double precision,
    price numeric(12,2), exact numeric, label varchar(40), code char(3), body text,
    flag boolean, day date, local_at timestamp, at timestamptz NOT NULL,
    ref uuid, doc json, docb jsonb, raw bytea,
    span interval, clock time, net inet, tags text[], ratios float8[],
    PRIMARY KEY (tenant_id, id)
)";

async fn fill(pool: &PgPool) {
    sqlx::raw_sql(TABLE).execute(pool).await.unwrap();
    sqlx::query(
        "INSERT INTO public.events
         SELECT 'acme', i,
            CASE WHEN i % 3 = 0 THEN NULL ELSE (i % 30000)::smallint END,
            CASE WHEN i % 4 = 0 THEN NULL ELSE -i * 7 END,
            CASE i % 5 WHEN 0 THEN NULL WHEN 1 THEN 'NaN'::real WHEN 2 THEN '-Infinity' ELSE i / 7.0 END,
            CASE i % 6 WHEN 0 THEN NULL WHEN 1 THEN 'Infinity'::float8 WHEN 2 THEN -0.0 ELSE i * 0.1 END,
            CASE WHEN i % 7 = 0 THEN NULL ELSE (i * 1.25 - 500)::numeric(12,2) END,
            CASE i % 4 WHEN 0 THEN NULL WHEN 1 THEN 'NaN'::numeric WHEN 2 THEN 1.500 ELSE i::numeric / 3 END,
            CASE WHEN i % 8 = 0 THEN NULL ELSE 'label ' || i || ' ✓ \"q\" \\ tab	' END,
            CASE WHEN i % 2 = 0 THEN 'ab' ELSE 'xyz' END,
            CASE WHEN i % 9 = 0 THEN NULL ELSE repeat('body ', i % 20) END,
            CASE WHEN i % 3 = 0 THEN NULL ELSE i % 2 = 0 END,
            CASE WHEN i % 5 = 0 THEN NULL ELSE date '1969-12-25' + i END,
            CASE WHEN i % 6 = 0 THEN NULL ELSE timestamp '1999-12-31 23:59:59.999999' + i * interval '1 hour' END,
            timestamptz '2024-02-29 12:00:00.123456+00' + i * interval '1 minute 1 microsecond',
            CASE WHEN i % 4 = 0 THEN NULL ELSE md5(i::text)::uuid END,
            CASE WHEN i % 5 = 0 THEN NULL ELSE ('{\"b\": 1,  \"a\": [' || i || ', null], \"a\": \"dup\"}')::json END,
            CASE WHEN i % 5 = 1 THEN NULL ELSE jsonb_build_object('i', i, 's', 'x\"y') END,
            CASE WHEN i % 3 = 1 THEN NULL WHEN i % 3 = 2 THEN ''::bytea ELSE decode(md5(i::text), 'hex') END,
            CASE WHEN i % 4 = 1 THEN NULL ELSE make_interval(months => i % 14, days => -i, secs => i / 7.0) END,
            CASE WHEN i % 4 = 2 THEN NULL ELSE time '00:00:00.000001' + i * interval '17 seconds' END,
            CASE WHEN i % 4 = 3 THEN NULL WHEN i % 2 = 0 THEN '10.0.0.1/8'::inet ELSE '::ffff:1.2.3.4'::inet END,
            CASE WHEN i % 5 = 2 THEN NULL ELSE ARRAY['a,b', NULL, '\"q\"', '', 'x' || i] END,
            CASE WHEN i % 5 = 3 THEN NULL ELSE ARRAY[i / 3.0, 'NaN', '-Infinity', -0.0]::float8[] END
         FROM generate_series(1, 3000) AS i",
    )
    .execute(pool)
    .await
    .unwrap();
}

/// `events` filled and declared, and all its rows as one segment.
pub(crate) async fn events_segment(pool: &PgPool) -> (TableDecl, SegmentFile) {
    fill(pool).await;
    let decl = TableDecl::declare(pool, &declaration()).await.unwrap();
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {} FROM public.events AS t ORDER BY t.id",
        decl.select_list()
    )))
    .fetch_all(pool)
    .await
    .unwrap();
    let batch = rows_to_batch(&decl, &rows).unwrap();
    let segment = write_segment(&decl, &[batch]).unwrap();
    (decl, segment)
}

fn declaration() -> Declaration {
    Declaration {
        schema: "public".into(),
        table: "events".into(),
        tenant_column: "tenant_id".into(),
        age_column: "at".into(),
        columns: None,
    }
}

#[tokio::test]
async fn every_supported_type_round_trips_through_a_segment() {
    let db = TestDb::new().await;
    let pool = PgPool::connect(db.url()).await.unwrap();
    let (decl, segment) = events_segment(&pool).await;
    assert_eq!(decl.key.len(), 1);
    assert_eq!(segment.rows, 3000);
    assert_eq!(
        (segment.min_key.clone(), segment.max_key.clone()),
        (vec![KeyValue::Int(1)], vec![KeyValue::Int(3000)])
    );

    let dir = TempDir::new("tier-roundtrip");
    let cold = ColdStore::open(&format!("file://{}", dir.path().display())).unwrap();
    let path = ColdStore::segment_path(
        &MigrationId::new("events_tier").unwrap(),
        &TenantId::new("acme").unwrap(),
        1,
    );
    cold.put(&path, segment.bytes.clone()).await.unwrap();
    let back = cold.read(&path).await.unwrap();
    assert_eq!(back.iter().map(|b| b.num_rows()).sum::<usize>(), 3000);

    sqlx::raw_sql("CREATE TABLE public.restored (LIKE public.events INCLUDING ALL)")
        .execute(&pool)
        .await
        .unwrap();
    for b in &back {
        let json = rows_to_json(&decl, b, 0..b.num_rows());
        sqlx::query(
            "INSERT INTO public.restored SELECT * FROM json_populate_recordset(NULL::public.restored, $1::json)",
        )
        .bind(json)
        .execute(&pool)
        .await
        .unwrap();
    }
    // Row text compares every value as PostgreSQL prints it: scale, json text, -0, NaN.
    for (a, b) in [("events", "restored"), ("restored", "events")] {
        let differing: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM (SELECT t::text FROM public.{a} t EXCEPT ALL SELECT t::text FROM public.{b} t) d"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        let sample: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT t::text FROM public.{a} t WHERE t::text NOT IN (SELECT t::text FROM public.{b} t) ORDER BY id LIMIT 2"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            differing, 0,
            "rows of {a} missing from {b}, e.g. {sample:?}"
        );
    }

    // Point lookups: present keys come back whole, absent ones are None.
    for id in [1, 1500, 3000] {
        let row = cold
            .lookup(&decl, &path, &vec![KeyValue::Int(id)])
            .await
            .unwrap()
            .expect("an archived key");
        let json = rows_to_json(&decl, &row, [0]);
        let expected: String =
            sqlx::query_scalar("SELECT t::text FROM public.events t WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        let got: String = sqlx::query_scalar(
            "SELECT t::text FROM json_populate_record(NULL::public.events, $1::json -> 0) t",
        )
        .bind(json)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(got, expected);
    }
    for id in [0, 3001, -5] {
        assert!(
            cold.lookup(&decl, &path, &vec![KeyValue::Int(id)])
                .await
                .unwrap()
                .is_none()
        );
    }
}

#[tokio::test]
async fn declarations_refuse_what_cannot_be_archived() {
    let db = TestDb::new().await;
    let pool = PgPool::connect(db.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.odd (tenant_id text, id bigint, span point, at timestamptz,
             PRIMARY KEY (tenant_id, id));
         CREATE TABLE public.nokey (tenant_id text, id bigint, at timestamptz);
         CREATE TABLE public.badage (tenant_id text, id bigint, at text, PRIMARY KEY (tenant_id, id));",
    )
    .execute(&pool)
    .await
    .unwrap();
    let declare = |table: &str, columns: Option<Vec<String>>| {
        let pool = pool.clone();
        let d = Declaration {
            schema: "public".into(),
            table: table.into(),
            tenant_column: "tenant_id".into(),
            age_column: "at".into(),
            columns,
        };
        async move { TableDecl::declare(&pool, &d).await }
    };
    let message = |r: Result<TableDecl, TierError>| r.unwrap_err().to_string();
    let odd = message(declare("odd", None).await);
    assert!(
        odd.contains("column span") && odd.contains("point"),
        "{odd}"
    );
    // Leaving the column out makes the table archivable.
    let only = declare("odd", Some(vec!["id".into()])).await.unwrap();
    assert_eq!(
        only.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["tenant_id", "id", "at"]
    );
    assert!(message(declare("nokey", None).await).contains("primary key"));
    assert!(message(declare("badage", None).await).contains("age column at"));
    assert!(message(declare("missing", None).await).contains("does not exist"));
    assert!(message(declare("odd", Some(vec!["nope".into()])).await).contains("\"nope\""));
    let bad = Declaration {
        schema: "public".into(),
        table: "odd; DROP TABLE x".into(),
        tenant_column: "tenant_id".into(),
        age_column: "at".into(),
        columns: None,
    };
    assert!(TableDecl::declare(&pool, &bad).await.is_err());
}

/// A composite key whose columns are not in table order (`PRIMARY KEY (tenant, b, a)` with `a`
/// first in the table) is looked up by value; and a segment written before the table's shape
/// changed is refused with an error, never decoded into the wrong columns.
#[tokio::test]
async fn composite_keys_in_any_order_and_changed_shapes() {
    let db = TestDb::new().await;
    let pool = PgPool::connect(db.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.pairs (tenant_id text NOT NULL, a bigint NOT NULL, note text,
             b text NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (tenant_id, b, a));
         INSERT INTO public.pairs SELECT 'acme', i % 7, 'n' || i, 'k' || (i / 7), now()
         FROM generate_series(1, 500) AS i;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let declaration = Declaration {
        schema: "public".into(),
        table: "pairs".into(),
        tenant_column: "tenant_id".into(),
        age_column: "at".into(),
        columns: None,
    };
    let decl = TableDecl::declare(&pool, &declaration).await.unwrap();
    assert_eq!(
        decl.key.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        ["b", "a"]
    );
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {} FROM public.pairs AS t ORDER BY {}",
        decl.select_list(),
        decl.key_list("t")
    )))
    .fetch_all(&pool)
    .await
    .unwrap();
    let segment = write_segment(&decl, &[rows_to_batch(&decl, &rows).unwrap()]).unwrap();
    let dir = TempDir::new("tier-pairs");
    let cold = ColdStore::open(dir.path().to_str().unwrap()).unwrap();
    let path = ColdStore::segment_path(
        &MigrationId::new("pairs_tier").unwrap(),
        &TenantId::new("acme").unwrap(),
        1,
    );
    cold.put(&path, segment.bytes).await.unwrap();
    // i = 100: a = 2, b = 'k14', note 'n100'.
    let key = vec![KeyValue::Text("k14".into()), KeyValue::Int(2)];
    let row = cold
        .lookup(&decl, &path, &key)
        .await
        .unwrap()
        .expect("found");
    let json = rows_to_json(&decl, &row, [0]);
    assert!(json.contains("\"note\":\"n100\""), "{json}");
    let missing = vec![KeyValue::Text("k14".into()), KeyValue::Int(99)];
    assert!(cold.lookup(&decl, &path, &missing).await.unwrap().is_none());

    sqlx::query("ALTER TABLE public.pairs ADD COLUMN extra int")
        .execute(&pool)
        .await
        .unwrap();
    let changed = TableDecl::declare(&pool, &declaration).await.unwrap();
    let err = cold
        .lookup(&changed, &path, &key)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the table now has") && err.contains("extra"),
        "{err}"
    );
    assert!(cold.read_checked(&changed, &path).await.is_err());
}
