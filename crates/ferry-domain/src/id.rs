//! Validated identifiers.
//!
//! Ids are checked once, at the edge, and carried as types afterwards, so code deeper in never
//! wonders whether a string is safe to put in a SQL statement, an object-store key or a log line.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

/// Why a string was refused as an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} {value:?} is {len} bytes long; the limit is {max}")]
    TooLong {
        kind: &'static str,
        value: String,
        len: usize,
        max: usize,
    },
    #[error("{kind} {value:?} has {found:?} at byte {at}; allowed: {allowed}")]
    BadChar {
        kind: &'static str,
        value: String,
        found: char,
        at: usize,
        allowed: &'static str,
    },
    #[error("{kind} {value:?} must start with {first}")]
    BadStart {
        kind: &'static str,
        value: String,
        first: &'static str,
    },
}

struct Rules {
    kind: &'static str,
    max: usize,
    allowed: &'static str,
    first: &'static str,
    is_first: fn(char) -> bool,
    is_rest: fn(char) -> bool,
}

fn validate(value: &str, rules: &Rules) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind: rules.kind });
    }
    if value.len() > rules.max {
        return Err(IdError::TooLong {
            kind: rules.kind,
            value: truncate_for_message(value),
            len: value.len(),
            max: rules.max,
        });
    }
    for (at, c) in value.char_indices() {
        let ok = if at == 0 {
            (rules.is_first)(c)
        } else {
            (rules.is_rest)(c)
        };
        if ok {
            continue;
        }
        if at == 0 && (rules.is_rest)(c) {
            return Err(IdError::BadStart {
                kind: rules.kind,
                value: value.to_owned(),
                first: rules.first,
            });
        }
        return Err(IdError::BadChar {
            kind: rules.kind,
            value: value.to_owned(),
            found: c,
            at,
            allowed: rules.allowed,
        });
    }
    Ok(())
}

/// Error messages quote the offending value; a megabyte of garbage should not become a
/// megabyte of log line.
fn truncate_for_message(value: &str) -> String {
    let mut end = value.len().min(40);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $rules:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            const RULES: Rules = $rules;

            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate(&value, &Self::RULES)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        /// Lets maps keyed by the id be queried with a plain `&str` on hot paths.
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A customer of the SaaS backend: 1–128 bytes of `A-Z a-z 0-9 _ . : -`, starting with a
    /// letter or digit. Wide enough for UUIDs, numeric ids and slugs; narrow enough to be
    /// safe in object-store keys and log lines. Tenant ids are always bound as SQL
    /// parameters, never spliced into statements.
    TenantId,
    Rules {
        kind: "tenant id",
        max: 128,
        allowed: "letters, digits, '_', '.', ':', '-'",
        first: "a letter or digit",
        is_first: |c| c.is_ascii_alphanumeric(),
        is_rest: |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'),
    }
);

string_id!(
    /// A named migration plan: 1–48 bytes of lowercase `a-z 0-9 _`, starting with a letter.
    /// Ferry derives SQL object names and object-store prefixes from it, so it is kept short
    /// enough that `ferry_<migration>_<suffix>` fits PostgreSQL's 63-byte identifier limit.
    MigrationId,
    Rules {
        kind: "migration id",
        max: 48,
        allowed: "lowercase letters, digits, '_'",
        first: "a lowercase letter",
        is_first: |c| c.is_ascii_lowercase(),
        is_rest: |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_',
    }
);

string_id!(
    /// A process embedding the router (or a worker), as registered in the control store for the
    /// acknowledgement barrier: the same character set as [`TenantId`], e.g. `api-7:4242@host`.
    RouterId,
    Rules {
        kind: "router id",
        max: 128,
        allowed: "letters, digits, '_', '.', ':', '-', '@'",
        first: "a letter or digit",
        is_first: |c| c.is_ascii_alphanumeric(),
        is_rest: |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-' | '@'),
    }
);

string_id!(
    /// A SQL identifier (schema, table, column) that Ferry will splice into a statement:
    /// 1–63 bytes of `A-Z a-z 0-9 _`, starting with a letter or `_`. Splice it only through
    /// [`SqlIdent::quoted`].
    SqlIdent,
    Rules {
        kind: "SQL identifier",
        max: 63,
        allowed: "letters, digits, '_'",
        first: "a letter or '_'",
        is_first: |c| c.is_ascii_alphabetic() || c == '_',
        is_rest: |c| c.is_ascii_alphanumeric() || c == '_',
    }
);

impl SqlIdent {
    /// The identifier in double quotes, safe to splice into SQL for PostgreSQL and SQLite.
    /// Validation already excludes `"`, but quoting doubles it anyway so the safety of this
    /// function does not depend on the validation rules staying as they are.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests;
