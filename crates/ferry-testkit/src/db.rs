use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

use crate::cluster;

const HOW_TO_PROVIDE: &str = "set DATABASE_URL=postgres://USER@HOST:PORT/DB (a role that may CREATE DATABASE), \
or install the PostgreSQL server binaries (initdb, pg_ctl) so the tests can start a throwaway cluster";

/// The URL of the PostgreSQL server tests use: `DATABASE_URL`, or a throwaway cluster started
/// once per process. Panics, saying how to provide one, if neither is possible.
pub fn server_url() -> String {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    let server = SERVER.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => cluster::start().map(|c| c.url),
    });
    match server {
        Ok(url) => url.clone(),
        Err(why) => panic!(
            "this test needs PostgreSQL and none could be had: {why}\nTo run it, {HOW_TO_PROVIDE}."
        ),
    }
}

/// A fresh database on the test server, dropped when this value is dropped.
///
/// Names are `ferry_test_<pid>_<n>`; databases left behind by a process that died (its pid is
/// no longer running) are dropped the first time a process creates one.
pub struct TestDb {
    url: String,
    name: String,
    server: String,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

async fn admin(server: &str) -> PgConnection {
    PgConnection::connect(server).await.unwrap_or_else(|e| {
        panic!("this test needs PostgreSQL at {server} and cannot connect: {e}\nTo run it, {HOW_TO_PROVIDE}.")
    })
}

async fn drop_stale(conn: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'ferry\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let Some(pid) = name
            .strip_prefix("ferry_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
        let _ = conn.execute(AssertSqlSafe(sql)).await;
    }
}

impl TestDb {
    pub async fn new() -> TestDb {
        static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        let server = server_url();
        let mut conn = admin(&server).await;
        CLEANED.get_or_init(|| drop_stale(&mut conn)).await;
        TestDb::create(server, conn).await
    }

    /// A fresh database on another server (a test's own cluster, say).
    pub async fn new_on(server: &str) -> TestDb {
        let conn = admin(server).await;
        TestDb::create(server.to_owned(), conn).await
    }

    async fn create(server: String, mut conn: PgConnection) -> TestDb {
        let name = format!(
            "ferry_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // The name is built from two integers above: safe to splice.
        conn.execute(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap_or_else(|e| {
                panic!("create test database {name}: {e}\nTo run it, {HOW_TO_PROVIDE}.")
            });
        let _ = conn.close().await;
        TestDb {
            url: ferry_store::url_with_database(&server, &name),
            name,
            server,
        }
    }

    /// A URL for this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server = self.server.clone();
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime, which cannot be blocked on; a short-lived
        // runtime on its own thread does the async work.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&server).await {
                    let _ = conn.execute(AssertSqlSafe(sql)).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}
