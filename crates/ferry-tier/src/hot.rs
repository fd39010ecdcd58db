//! The hot table's statements: read an age window in key order, read and write single rows,
//! restore rows from the cold tier, delete archived copies. Built once from the validated
//! declaration; values are always bound.

use arrow_array::RecordBatch;
use ferry_domain::TenantId;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool};

use crate::codec;
use crate::columns::{Column, ColumnKind, TableDecl};
use crate::error::TierError;
use crate::key::{KeyValue, RowKey};

/// A row as PostgreSQL's `to_jsonb` prints it: the one form both tiers are compared and
/// returned in.
pub type Row = serde_json::Map<String, serde_json::Value>;

pub struct HotTable {
    pub decl: TableDecl,
    pub pool: PgPool,
    window: WindowSql,
    rows: RowSql,
    images: ImageSql,
}

/// The archive's reads of one age window of one tenant: `$1` tenant, `$2` from (or NULL),
/// `$3` to.
struct WindowSql {
    /// The rows and, last, their `xmin`: the version the archive compares later.
    rows: String,
    /// Key and `xmin` of the same rows.
    versions: String,
    /// The first row of a window holding an infinite date or timestamp, if any: the cold
    /// tier's types cannot hold one, and it must be refused, not decoded.
    infinite: Option<String>,
}

/// The application's rows: one by key (`$1` tenant, then the key), a key range, an insert.
struct RowSql {
    select: String,
    scan: String,
    insert: String,
    delete: String,
}

/// Row images (JSON) written over the table or read back in `to_jsonb` form.
struct ImageSql {
    normalize: String,
    normalize_many: String,
    upsert: String,
    /// `SELECT 1` when every column is the tenant or a key column: nothing to update.
    update_existing: String,
}

impl HotTable {
    pub fn new(decl: TableDecl, pool: PgPool) -> HotTable {
        HotTable {
            window: WindowSql::new(&decl),
            rows: RowSql::new(&decl),
            images: ImageSql::new(&decl),
            decl,
            pool,
        }
    }

    /// The tenant's rows with `from <= age < to` (`from` absent: no lower bound), in key
    /// order, as one batch, with each row's `xmin`.
    pub async fn window(
        &self,
        tenant: &TenantId,
        from: Option<&str>,
        to: &str,
    ) -> Result<(RecordBatch, Vec<String>), TierError> {
        // One snapshot: the check for infinities covers exactly the rows read.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| TierError::db("begin reading rows to archive", e))?;
        if let Some(sql) = &self.window.infinite {
            let found: Option<(String, String)> = sqlx::query_as(AssertSqlSafe(sql.clone()))
                .bind(tenant.as_str())
                .bind(from)
                .bind(to)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| TierError::db("look for infinite dates", e))?;
            if let Some((column, key)) = found {
                return Err(TierError::Value {
                    column,
                    detail: format!(
                        "the row of tenant {tenant} with key {key} holds infinity, which the \
                         cold tier cannot store; change it, or archive with an earlier cutoff"
                    ),
                });
            }
        }
        let rows: Vec<PgRow> = sqlx::query(AssertSqlSafe(self.window.rows.clone()))
            .bind(tenant.as_str())
            .bind(from)
            .bind(to)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| TierError::db("read rows to archive", e))?;
        tx.commit()
            .await
            .map_err(|e| TierError::db("end reading rows to archive", e))?;
        let n = self.decl.columns.len();
        let versions = rows
            .iter()
            .map(|r| {
                sqlx::Row::try_get::<String, _>(r, n)
                    .map_err(|e| TierError::db("read a row version", e))
            })
            .collect::<Result<_, _>>()?;
        Ok((codec::rows_to_batch(&self.decl, &rows)?, versions))
    }

    /// Key -> `xmin` of the same window, read in the caller's transaction: cheap to compare
    /// with what an archive read, without reading the rows again.
    pub async fn versions_in(
        &self,
        tx: &mut sqlx::PgConnection,
        tenant: &TenantId,
        from: Option<&str>,
        to: &str,
    ) -> Result<std::collections::HashMap<RowKey, String>, TierError> {
        let rows: Vec<PgRow> = sqlx::query(AssertSqlSafe(self.window.versions.clone()))
            .bind(tenant.as_str())
            .bind(from)
            .bind(to)
            .fetch_all(tx)
            .await
            .map_err(|e| TierError::db("re-read row versions", e))?;
        let n = self.decl.key.len();
        let mut out = std::collections::HashMap::with_capacity(rows.len());
        for r in &rows {
            let key = crate::key::key_from_row(&self.decl, r)?;
            let xmin: String =
                sqlx::Row::try_get(r, n).map_err(|e| TierError::db("read a row version", e))?;
            out.insert(key, xmin);
        }
        Ok(out)
    }

    pub async fn get(&self, tenant: &TenantId, key: &RowKey) -> Result<Option<Row>, TierError> {
        let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(self.rows.select.clone()))
            .bind(tenant.as_str());
        for v in key {
            q = q.bind(v.to_text());
        }
        let text = q
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| TierError::db("read a hot row", e))?;
        text.map(|t| parse_row(&t)).transpose()
    }

    /// A cold row (one row of a segment batch) in the same form as [`HotTable::get`].
    pub async fn normalize(&self, batch: &RecordBatch, row: usize) -> Result<Row, TierError> {
        let mut json = String::new();
        codec::row_to_json(&self.decl, batch, row, &mut json);
        self.normalize_json(&json).await
    }

    /// Any row image (a `to_jsonb` object, or the codec's JSON) in `to_jsonb` form.
    pub async fn normalize_json(&self, json: &str) -> Result<Row, TierError> {
        let text: String = sqlx::query_scalar(AssertSqlSafe(self.images.normalize.clone()))
            .bind(json)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| TierError::db("read a row image", e))?;
        parse_row(&text)
    }

    /// Many row images (a JSON array) in `to_jsonb` form, in one round trip.
    pub async fn normalize_many(&self, json: &str) -> Result<Vec<Row>, TierError> {
        let texts: Vec<String> =
            sqlx::query_scalar(AssertSqlSafe(self.images.normalize_many.clone()))
                .bind(json)
                .fetch_all(&self.pool)
                .await
                .map_err(|e| TierError::db("read row images", e))?;
        texts.iter().map(|t| parse_row(t)).collect()
    }

    /// The tenant's hot rows with `from <= key <= to` (each bound a JSON object of the key
    /// columns, or absent), in key order, at most `limit`.
    pub async fn scan(
        &self,
        tenant: &TenantId,
        from: Option<&str>,
        to: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Row>, TierError> {
        let texts: Vec<String> = sqlx::query_scalar(AssertSqlSafe(self.rows.scan.clone()))
            .bind(tenant.as_str())
            .bind(from)
            .bind(to)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| TierError::db("scan hot rows", e))?;
        texts.iter().map(|t| parse_row(t)).collect()
    }

    /// A key as a JSON object of its key columns (for [`HotTable::scan`] bounds).
    pub fn key_object(&self, key: &RowKey) -> String {
        let object: serde_json::Map<String, serde_json::Value> = self
            .decl
            .key
            .iter()
            .zip(key)
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_text())))
            .collect();
        serde_json::Value::Object(object).to_string()
    }

    /// Inserts a row; a duplicate key is the hot table's own unique violation.
    pub async fn insert(&self, row: &Row) -> Result<Row, TierError> {
        let text: String = sqlx::query_scalar(AssertSqlSafe(self.rows.insert.clone()))
            .bind(serde_json::Value::Object(row.clone()).to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(|e| TierError::db("insert a hot row", e))?;
        parse_row(&text)
    }

    /// Writes row images (a JSON array) over whatever the hot table holds for their keys.
    pub async fn upsert_json(&self, rows: &str) -> Result<u64, TierError> {
        let done = sqlx::query(AssertSqlSafe(self.images.upsert.clone()))
            .bind(rows)
            .execute(&self.pool)
            .await
            .map_err(|e| TierError::db("write hot rows", e))?;
        Ok(done.rows_affected())
    }

    /// [`HotTable::upsert_json`] inside the caller's transaction.
    pub async fn upsert_json_in(
        &self,
        tx: &mut sqlx::PgConnection,
        rows: &str,
    ) -> Result<u64, TierError> {
        let done = sqlx::query(AssertSqlSafe(self.images.upsert.clone()))
            .bind(rows)
            .execute(tx)
            .await
            .map_err(|e| TierError::db("write hot rows", e))?;
        Ok(done.rows_affected())
    }

    /// Whether `image` is a row the table accepts: written over the key's hot copy (or as a
    /// new row) inside a savepoint that is then rolled back, so the table's CHECK and NOT
    /// NULL constraints, foreign keys and triggers judge it, and nothing stays written.
    /// `json_populate_record` alone checks types only. Returns the database's refusal.
    pub async fn check_image(
        &self,
        tx: &mut sqlx::PgConnection,
        image: &Row,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SAVEPOINT ferry_check")
            .execute(&mut *tx)
            .await?;
        let json = format!("[{}]", serde_json::Value::Object(image.clone()));
        let tried = sqlx::query(AssertSqlSafe(self.images.upsert.clone()))
            .bind(json)
            .execute(&mut *tx)
            .await;
        sqlx::query("ROLLBACK TO SAVEPOINT ferry_check")
            .execute(&mut *tx)
            .await?;
        tried.map(|_| ())
    }

    /// [`HotTable::mirror`] or [`HotTable::mirror_existing`] inside a savepoint: a failure
    /// leaves the caller's transaction (and the locks it holds) usable.
    pub async fn mirror_in_savepoint(
        &self,
        tx: &mut sqlx::PgConnection,
        tenant: &TenantId,
        key: &RowKey,
        image: Option<&Row>,
        whole: bool,
    ) -> Result<(), TierError> {
        sqlx::query("SAVEPOINT ferry_mirror")
            .execute(&mut *tx)
            .await
            .map_err(|e| TierError::db("mirror a hot copy", e))?;
        let mirrored = match (whole, image) {
            (true, _) | (false, None) => self.mirror(tx, tenant, key, image).await,
            (false, Some(row)) => self.mirror_existing(tx, tenant, key, row).await,
        };
        let end = if mirrored.is_ok() {
            "RELEASE SAVEPOINT ferry_mirror"
        } else {
            "ROLLBACK TO SAVEPOINT ferry_mirror"
        };
        sqlx::query(end)
            .execute(&mut *tx)
            .await
            .map_err(|e| TierError::db("mirror a hot copy", e))?;
        mirrored
    }

    /// Sets the hot copy of a key to `image` (or deletes it), in the caller's transaction
    /// (the one holding the tenant's lock: see `Tiering::lock_tenant`).
    pub async fn mirror(
        &self,
        tx: &mut sqlx::PgConnection,
        tenant: &TenantId,
        key: &RowKey,
        image: Option<&Row>,
    ) -> Result<(), TierError> {
        match image {
            Some(row) => {
                let json = format!("[{}]", serde_json::Value::Object(row.clone()));
                self.upsert_json_in(tx, &json).await?;
            }
            None => {
                let mut q =
                    sqlx::query(AssertSqlSafe(self.rows.delete.clone())).bind(tenant.as_str());
                for v in key {
                    q = q.bind(v.to_text());
                }
                q.execute(tx)
                    .await
                    .map_err(|e| TierError::db("delete a hot copy", e))?;
            }
        }
        Ok(())
    }

    /// Sets the hot copy of a key to `image` only if the copy still exists, in the caller's
    /// transaction.
    pub async fn mirror_existing(
        &self,
        tx: &mut sqlx::PgConnection,
        tenant: &TenantId,
        key: &RowKey,
        image: &Row,
    ) -> Result<(), TierError> {
        if self.images.update_existing == "SELECT 1" {
            return Ok(());
        }
        let mut q = sqlx::query(AssertSqlSafe(self.images.update_existing.clone()))
            .bind(serde_json::Value::Object(image.clone()).to_string())
            .bind(tenant.as_str());
        for v in key {
            q = q.bind(v.to_text());
        }
        q.execute(tx)
            .await
            .map_err(|e| TierError::db("update a hot copy", e))?;
        Ok(())
    }

    pub async fn delete(&self, tenant: &TenantId, key: &RowKey) -> Result<u64, TierError> {
        let mut q = sqlx::query(AssertSqlSafe(self.rows.delete.clone())).bind(tenant.as_str());
        for v in key {
            q = q.bind(v.to_text());
        }
        let done = q
            .execute(&self.pool)
            .await
            .map_err(|e| TierError::db("delete a hot row", e))?;
        Ok(done.rows_affected())
    }

    /// The key of a row image, from its key columns.
    pub fn key_of(&self, row: &Row) -> Result<RowKey, TierError> {
        self.decl
            .key
            .iter()
            .map(|k| {
                let kind = self.decl.key_kind(k)?;
                let text = match row.get(k.as_str()) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => {
                        return Err(TierError::Value {
                            column: k.to_string(),
                            detail: "a row needs a value for every key column".into(),
                        });
                    }
                };
                KeyValue::parse(kind, &text, k.as_str())
            })
            .collect()
    }
}

impl WindowSql {
    fn new(decl: &TableDecl) -> WindowSql {
        let t = decl.quoted();
        let age = decl.age.quoted();
        let age_type = decl
            .columns
            .iter()
            .find(|c| c.name == decl.age)
            .map(|c| c.pg_type.clone())
            .unwrap_or_else(|| "timestamptz".into());
        let window = format!(
            "{} AND ($2::text IS NULL OR t.{age} >= CAST($2 AS {age_type})) \
             AND t.{age} < CAST($3 AS {age_type})",
            decl.tenant_match("t", 1)
        );
        WindowSql {
            rows: format!(
                "SELECT {}, t.xmin::text FROM {t} AS t WHERE {window} ORDER BY {}",
                decl.select_list(),
                decl.key_list("t"),
            ),
            versions: format!(
                "SELECT {}, t.xmin::text FROM {t} AS t WHERE {window}",
                decl.key
                    .iter()
                    .map(|k| {
                        let uuid = decl
                            .columns
                            .iter()
                            .any(|c| &c.name == k && c.kind == ColumnKind::Uuid);
                        if uuid {
                            format!("t.{}::text", k.quoted())
                        } else {
                            format!("t.{}", k.quoted())
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            infinite: Self::infinite(decl, &window),
        }
    }

    fn infinite(decl: &TableDecl, window: &str) -> Option<String> {
        let t = decl.quoted();
        let temporal: Vec<&Column> = decl
            .columns
            .iter()
            .filter(|c| {
                matches!(
                    c.kind,
                    ColumnKind::Date | ColumnKind::Timestamp | ColumnKind::TimestampTz
                )
            })
            .collect();
        (!temporal.is_empty()).then(|| {
            let which = temporal
                .iter()
                .map(|c| {
                    format!(
                        "WHEN NOT isfinite(t.{0}) THEN '{1}'",
                        c.name.quoted(),
                        c.name.as_str()
                    )
                })
                .collect::<Vec<_>>()
                .join(" ");
            let any = temporal
                .iter()
                .map(|c| format!("NOT isfinite(t.{})", c.name.quoted()))
                .collect::<Vec<_>>()
                .join(" OR ");
            format!(
                "SELECT CASE {which} END, json_build_array({})::text FROM {t} AS t \
                 WHERE {window} AND ({any}) LIMIT 1",
                decl.key_list("t")
            )
        })
    }
}

impl RowSql {
    fn new(decl: &TableDecl) -> RowSql {
        let t = decl.quoted();
        let tenant = decl.tenant_match("t", 1);
        let cols = column_list(decl);
        RowSql {
            select: format!(
                "SELECT to_jsonb(t)::text FROM {t} AS t WHERE {tenant} AND {}",
                decl.key_match(2)
            ),
            scan: format!(
                "SELECT to_jsonb(t)::text FROM {t} AS t WHERE {tenant} \
                 AND ($2::json IS NULL OR ({keys}) >= (SELECT {keys} FROM json_populate_record(NULL::{t}, $2::json) AS t)) \
                 AND ($3::json IS NULL OR ({keys}) <= (SELECT {keys} FROM json_populate_record(NULL::{t}, $3::json) AS t)) \
                 ORDER BY {keys} LIMIT $4",
                keys = decl.key_list("t"),
            ),
            insert: format!(
                "INSERT INTO {t} AS inserted ({cols}) SELECT {cols} FROM json_populate_record(NULL::{t}, $1::json) \
                 RETURNING to_jsonb(inserted)::text"
            ),
            delete: format!(
                "DELETE FROM {t} AS t WHERE {tenant} AND {}",
                decl.key_match(2)
            ),
        }
    }
}

impl ImageSql {
    fn new(decl: &TableDecl) -> ImageSql {
        let t = decl.quoted();
        let cols = column_list(decl);
        let key_cols = std::iter::once(decl.tenant.quoted())
            .chain(decl.key.iter().map(|k| k.quoted()))
            .collect::<Vec<_>>()
            .join(", ");
        let set = value_columns(decl)
            .map(|c| format!("{0} = EXCLUDED.{0}", c.name.quoted()))
            .collect::<Vec<_>>()
            .join(", ");
        let on_conflict = if set.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            format!("DO UPDATE SET {set}")
        };
        let values = value_columns(decl)
            .map(|c| c.name.quoted())
            .collect::<Vec<_>>()
            .join(", ");
        ImageSql {
            normalize: format!(
                "SELECT to_jsonb(r)::text FROM json_populate_record(NULL::{t}, $1::json) AS r"
            ),
            normalize_many: format!(
                "SELECT to_jsonb(r)::text FROM json_populate_recordset(NULL::{t}, $1::json) AS r"
            ),
            upsert: format!(
                "INSERT INTO {t} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{t}, $1::json) \
                 ON CONFLICT ({key_cols}) {on_conflict}"
            ),
            update_existing: if values.is_empty() {
                "SELECT 1".to_owned()
            } else {
                format!(
                    "UPDATE {t} AS t SET ({values}) = (SELECT {values} FROM json_populate_record(NULL::{t}, $1::json)) \
                     WHERE {} AND {}",
                    decl.tenant_match("t", 2),
                    decl.key_match(3)
                )
            },
        }
    }
}

/// Every column, quoted, in column order.
fn column_list(decl: &TableDecl) -> String {
    decl.columns
        .iter()
        .map(|c| c.name.quoted())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns that are neither the tenant nor a key column: what an upsert may change.
fn value_columns(decl: &TableDecl) -> impl Iterator<Item = &Column> {
    decl.columns
        .iter()
        .filter(|c| c.name != decl.tenant && !decl.key.contains(&c.name))
}

pub fn parse_row(text: &str) -> Result<Row, TierError> {
    if ferry_domain::json_text::has_reserved_key(text) {
        return Err(TierError::Value {
            column: "*".into(),
            detail: format!(
                "a row holds a JSON object with the key {:?}, which Ferry cannot carry without changing it",
                ferry_domain::json_text::RESERVED_KEY
            ),
        });
    }
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(row)) => Ok(row),
        _ => Err(TierError::Value {
            column: "*".into(),
            detail: format!("not a row object: {text}"),
        }),
    }
}
