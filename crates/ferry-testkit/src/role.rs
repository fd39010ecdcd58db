//! A login role of one test's own, for tests that take privileges away from one client of a
//! database (a router that can heartbeat but not read phases, say) while others keep theirs.

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use crate::db::{TestDb, server_url};

/// A role `ferry_role_<db>_<suffix>` with LOGIN, dropped (with what it owns and its grants)
/// when this value is dropped.
pub struct TestRole {
    name: String,
    url: String,
    db_url: String,
}

impl TestRole {
    /// Creates the role and gives it `CONNECT` on `db`.
    pub async fn new(db: &TestDb, suffix: &str) -> TestRole {
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "a role suffix is letters, digits and '_'"
        );
        let name = format!(
            "ferry_role_{}_{suffix}",
            db.name().trim_start_matches("ferry_test_")
        );
        let mut conn = PgConnection::connect(db.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", db.name()));
        // The name is built from integers and a checked suffix: safe to splice.
        conn.execute(AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS \"{name}\"; CREATE ROLE \"{name}\" LOGIN; \
             GRANT CONNECT ON DATABASE \"{}\" TO \"{name}\"",
            db.name()
        )))
        .await
        .unwrap_or_else(|e| panic!("create role {name}: {e} (the test role needs CREATEROLE)"));
        let _ = conn.close().await;
        TestRole {
            url: url_with_user(db.url(), &name),
            db_url: db.url().to_owned(),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `quoted()` for splicing into GRANT and REVOKE.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.name)
    }

    /// The test database's URL, logging in as this role.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `url` with its user replaced by `user` (and its password dropped).
pub fn url_with_user(url: &str, user: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        panic!("not a postgres:// URL: {url}");
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{host}")
}

impl Drop for TestRole {
    fn drop(&mut self) {
        let server = server_url();
        let db_url = self.db_url.clone();
        let name = self.name.clone();
        // As in TestDb's drop: a short-lived runtime on its own thread. The role's grants
        // live in the test database (if it is still there): DROP OWNED removes them, then
        // DROP ROLE succeeds.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&db_url).await {
                    let _ = conn
                        .execute(AssertSqlSafe(format!("DROP OWNED BY \"{name}\"")))
                        .await;
                    let _ = conn.close().await;
                }
                if let Ok(mut conn) = PgConnection::connect(&server).await {
                    let _ = conn
                        .execute(AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{name}\"")))
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_with_user_replaces_user_and_password() {
        use super::url_with_user;
        assert_eq!(
            url_with_user("postgres://a:secret@h:5432/db", "r"),
            "postgres://r@h:5432/db"
        );
        assert_eq!(url_with_user("postgres://h/db", "r"), "postgres://r@h/db");
    }
}
