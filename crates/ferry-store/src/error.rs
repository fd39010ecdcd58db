//! Errors of the control store, named after what failed and where.

use ferry_domain::{MigrationId, TenantId};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    // The cause is part of the message (not a `source`), so printing an error chain does not
    // repeat it.
    #[error("cannot reach the control store at {url}: {cause}")]
    Unreachable { url: String, cause: sqlx::Error },
    #[error("invalid control store URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error(
        "the control store has schema version {found}, newer than this binary supports ({supported}); upgrade ferry"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("migration {0} does not exist (see `ferry migration list`)")]
    MigrationNotFound(MigrationId),
    #[error("migration {0} already exists")]
    MigrationExists(MigrationId),
    #[error("tenant {tenant} is not registered in migration {migration} (see `ferry tenant add`)")]
    TenantNotFound {
        migration: MigrationId,
        tenant: TenantId,
    },
    #[error(
        "tenant {tenant} of migration {migration} changed concurrently (expected version {expected}); re-read it and retry"
    )]
    Conflict {
        migration: MigrationId,
        tenant: TenantId,
        expected: i64,
    },
    #[error(
        "tenant {tenant} of migration {migration} is in {phase}; a {direction} copy's progress is not accepted there (a copier from an earlier phase?)"
    )]
    ProgressOutOfPhase {
        migration: MigrationId,
        tenant: TenantId,
        phase: ferry_domain::Phase,
        direction: &'static str,
    },
    /// Copy progress from an earlier epoch of the tenant (it was rolled back to `legacy`, or
    /// entered or left `target_only`, since the copy started): not recorded.
    #[error(
        "tenant {tenant} of migration {migration} changed epoch since this copy started ({epoch} -> {current}); its progress is stale and not recorded"
    )]
    ProgressStale {
        migration: MigrationId,
        tenant: TenantId,
        epoch: i64,
        current: i64,
    },
    #[error("invalid request to the control store: {0}")]
    InvalidRequest(String),
    #[error("the control store holds a value this binary cannot read: {what}")]
    Corrupt { what: String },
    #[error("control store query failed ({doing}): {cause}")]
    Query {
        doing: &'static str,
        cause: sqlx::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches what the store was doing to a database error.
pub(crate) trait QueryContext<T> {
    fn doing(self, doing: &'static str) -> Result<T>;
}

impl<T> QueryContext<T> for std::result::Result<T, sqlx::Error> {
    fn doing(self, doing: &'static str) -> Result<T> {
        self.map_err(|cause| StoreError::Query { doing, cause })
    }
}

/// Hides the password of a database URL (in the authority or as a `password=` parameter)
/// before it reaches a message or a log line.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            // The password may itself contain '@': the host starts after the last one.
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    if userinfo.contains(':') {
                        format!("{scheme}://{user}:***@{host}{path}")
                    } else {
                        base.to_owned()
                    }
                }
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// The same server URL naming another database (path replaced, query kept).
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{redact_url, url_with_database};

    #[test]
    fn database_is_swapped_in_urls() {
        assert_eq!(
            url_with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            url_with_database("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            url_with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("sqlite://ferry.db"), "sqlite://ferry.db");
        assert_eq!(
            redact_url("postgres://app:p@ss@db/x"),
            "postgres://app:***@db/x"
        );
        assert_eq!(
            redact_url("postgres://db/x?user=app&password=s3cret&sslmode=require"),
            "postgres://db/x?user=app&password=***&sslmode=require"
        );
    }
}
