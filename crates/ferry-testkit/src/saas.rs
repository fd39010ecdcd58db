//! A table of the shape most SaaS schemas have, for tests that must hold on real schemas:
//! a `(tenant_id, id)` key with the tenant column of each type Ferry accepts, an enum and a
//! domain in a schema off the search path, an array of the enum, a column with its own
//! collation, and NULLs in every nullable column.

use sqlx::PgPool;

/// A tenant column type with two tenant ids that are canonical values of it.
pub struct TenantType {
    pub sql: &'static str,
    pub tenants: [&'static str; 2],
}

/// Every tenant column type Ferry accepts, with ids at the edges where they exist (the
/// largest integer, a bigint beyond a double's exact range).
pub const TENANT_TYPES: [TenantType; 5] = [
    TenantType {
        sql: "text",
        tenants: ["acme", "globex"],
    },
    TenantType {
        sql: "varchar(36)",
        tenants: ["acme", "globex"],
    },
    TenantType {
        sql: "integer",
        tenants: ["7", "2147483647"],
    },
    TenantType {
        sql: "bigint",
        tenants: ["42", "9007199254740993"],
    },
    TenantType {
        sql: "uuid",
        tenants: [
            "0b1e6a5c-3f0e-4c1a-9d2b-7e8f9a0b1c2d",
            "f47ac10b-58cc-4372-a567-0e02b2c3d479",
        ],
    },
];

/// `app.orders` with its enum `app.status` and domain `app.positive_amount`. The `placed_at`
/// column lets tiering pick old rows; `version` is what every write bumps.
pub fn orders_schema(tenant_type: &str) -> String {
    format!(
        "CREATE SCHEMA app;
         CREATE TYPE app.status AS ENUM ('new', 'paid', 'shipped');
         CREATE DOMAIN app.positive_amount AS numeric(12,2) CHECK (VALUE > 0);
         CREATE TABLE app.orders (
             tenant_id {tenant_type} NOT NULL,
             id bigint NOT NULL,
             status app.status,
             amount app.positive_amount,
             history app.status[],
             note text COLLATE \"C\",
             placed_at timestamptz NOT NULL,
             version bigint NOT NULL DEFAULT 1,
             PRIMARY KEY (tenant_id, id));"
    )
}

/// Creates the schema in `pool`'s database.
pub async fn create_orders(pool: &PgPool, tenant_type: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(orders_schema(tenant_type)))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("create app.orders with a {tenant_type} tenant: {e}"));
}

/// `rows` orders of `tenant`, ids 1..=rows, placed one hour apart ending a year ago, with
/// NULLs in every nullable column on some rows.
pub async fn fill_orders(pool: &PgPool, tenant_type: &str, tenant: &str, rows: i64) {
    let sql = format!(
        "INSERT INTO app.orders (tenant_id, id, status, amount, history, note, placed_at)
         SELECT CAST($1 AS {tenant_type}), i,
                CASE WHEN i % 4 = 0 THEN NULL
                     ELSE (ARRAY['new','paid','shipped'])[i % 3 + 1]::app.status END,
                CASE WHEN i % 5 = 0 THEN NULL ELSE (i * 1.5)::numeric(12,2) END,
                CASE WHEN i % 6 = 0 THEN NULL ELSE ARRAY['new', NULL, 'paid']::app.status[] END,
                CASE WHEN i % 7 = 0 THEN NULL ELSE 'n' || i END,
                now() - interval '365 days' - (($2 - i) * interval '1 hour')
         FROM generate_series(1, $2) AS i"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(rows)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("fill app.orders for {tenant}: {e}"));
}

/// `(row count, md5 of the rows in key order)` of one tenant in `schema.orders`: equal
/// digests mean equal rows, across databases too.
pub async fn orders_digest(
    pool: &PgPool,
    schema: &str,
    tenant_type: &str,
    tenant: &str,
) -> (i64, String) {
    let sql = format!(
        "SELECT count(*), coalesce(md5(string_agg(o::text, '|' ORDER BY id)), '')
         FROM {schema}.orders o WHERE tenant_id = CAST($1 AS {tenant_type})"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("digest {schema}.orders for {tenant}: {e}"))
}
