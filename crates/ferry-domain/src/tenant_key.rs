//! The SQL type of a table's tenant column, and whether a tenant id is a value of it.
//!
//! Tenant ids travel as text everywhere in Ferry (control store, object-store keys, logs), but
//! a table's tenant column is often `bigint`, `integer` or `uuid`. Statements bind the id as
//! text and cast it to the column's type, so an index on the column is used and
//! `bigint = text` never reaches PostgreSQL; this module decides, before anything is copied,
//! which column types Ferry accepts and whether an id is a value of one in its canonical
//! form. Canonical matters: `007` and `7` are one `bigint` but would be two tenants in the
//! control store, each with its own phase.

use std::fmt;

use crate::id::TenantId;

/// The base type of a tenant column, as far as Ferry cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantKeyKind {
    /// `text`, or `character varying` with an optional length limit in characters.
    Text {
        max_chars: Option<u32>,
    },
    SmallInt,
    Integer,
    BigInt,
    Uuid,
}

/// A tenant column's type: its kind, and the type to cast a bound id to (the column's own
/// type, which may be a domain over the kind, so the domain's checks apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKeyType {
    pub kind: TenantKeyKind,
    cast_to: String,
}

/// A tenant column type Ferry does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a tenant column of type {found} is not supported; Ferry accepts text, varchar, smallint, integer, bigint and uuid (or a domain over one of them)"
)]
pub struct UnsupportedTenantType {
    pub found: String,
}

/// A tenant id that is not a value of the tenant column's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant id {tenant:?} is not {expected}")]
pub struct TenantKeyMismatch {
    pub tenant: String,
    /// What it should have been, e.g. "a bigint written without leading zeros".
    pub expected: String,
}

impl TenantKeyKind {
    /// The kind of a base type as `format_type` prints it (`bigint`, `character varying(64)`).
    pub fn from_base_type(base: &str) -> Option<TenantKeyKind> {
        let kind = match base {
            "text" | "character varying" => TenantKeyKind::Text { max_chars: None },
            "smallint" => TenantKeyKind::SmallInt,
            "integer" => TenantKeyKind::Integer,
            "bigint" => TenantKeyKind::BigInt,
            "uuid" => TenantKeyKind::Uuid,
            other => {
                let limit = other
                    .strip_prefix("character varying(")?
                    .strip_suffix(')')?
                    .parse()
                    .ok()?;
                TenantKeyKind::Text {
                    max_chars: Some(limit),
                }
            }
        };
        Some(kind)
    }

    fn describe(self) -> String {
        match self {
            TenantKeyKind::Text { max_chars: None } => "text".into(),
            TenantKeyKind::Text { max_chars: Some(n) } => format!("text of at most {n} characters"),
            TenantKeyKind::SmallInt => "a smallint written without leading zeros".into(),
            TenantKeyKind::Integer => "an integer written without leading zeros".into(),
            TenantKeyKind::BigInt => "a bigint written without leading zeros".into(),
            TenantKeyKind::Uuid => {
                "a uuid in PostgreSQL's form (lowercase, 8-4-4-4-12 hex digits)".into()
            }
        }
    }

    fn accepts(self, id: &str) -> bool {
        fn canonical_int<T: std::str::FromStr + ToString>(id: &str) -> bool {
            id.parse::<T>().is_ok_and(|n| n.to_string() == id)
        }
        match self {
            TenantKeyKind::Text { max_chars } => {
                max_chars.is_none_or(|max| id.chars().count() <= max as usize)
            }
            TenantKeyKind::SmallInt => canonical_int::<i16>(id),
            TenantKeyKind::Integer => canonical_int::<i32>(id),
            TenantKeyKind::BigInt => canonical_int::<i64>(id),
            TenantKeyKind::Uuid => is_canonical_uuid(id),
        }
    }
}

fn is_canonical_uuid(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
        })
}

impl TenantKeyType {
    /// A column of type `column_type` (as `format_type` prints it, already checked safe to
    /// splice into SQL) whose base type, after unwrapping domains, is `base_type`.
    pub fn new(column_type: &str, base_type: &str) -> Result<TenantKeyType, UnsupportedTenantType> {
        let kind =
            TenantKeyKind::from_base_type(base_type).ok_or_else(|| UnsupportedTenantType {
                found: if column_type == base_type {
                    column_type.to_owned()
                } else {
                    format!("{column_type} (a domain over {base_type})")
                },
            })?;
        Ok(TenantKeyType {
            kind,
            cast_to: column_type.to_owned(),
        })
    }

    /// `CAST($n AS <type>)`: a bound tenant id as a value of the column's type.
    pub fn cast_param(&self, n: usize) -> String {
        format!("CAST(${n} AS {})", self.cast_to)
    }

    /// Whether `tenant` is a value of this type, in the form PostgreSQL prints it.
    pub fn check(&self, tenant: &TenantId) -> Result<(), TenantKeyMismatch> {
        if self.kind.accepts(tenant.as_str()) {
            Ok(())
        } else {
            Err(TenantKeyMismatch {
                tenant: tenant.as_str().to_owned(),
                expected: self.kind.describe(),
            })
        }
    }
}

impl fmt::Display for TenantKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cast_to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(column: &str, base: &str, id: &str) -> bool {
        TenantKeyType::new(column, base)
            .unwrap()
            .check(&TenantId::new(id).unwrap())
            .is_ok()
    }

    #[test]
    fn integers_in_range_and_canonical_only() {
        assert!(accepts("bigint", "bigint", "9223372036854775807"));
        assert!(!accepts("bigint", "bigint", "9223372036854775808"));
        assert!(!accepts("bigint", "bigint", "007"));
        assert!(accepts("bigint", "bigint", "0"));
        assert!(!accepts("bigint", "bigint", "acme"));
        assert!(accepts("integer", "integer", "2147483647"));
        assert!(!accepts("integer", "integer", "2147483648"));
        assert!(accepts("smallint", "smallint", "32767"));
        assert!(!accepts("smallint", "smallint", "32768"));
    }

    #[test]
    fn uuids_in_postgres_form_only() {
        let id = "0b1e6a5c-3f0e-4c1a-9d2b-7e8f9a0b1c2d";
        assert!(accepts("uuid", "uuid", id));
        assert!(!accepts("uuid", "uuid", &id.to_uppercase()));
        assert!(!accepts("uuid", "uuid", &id.replace('-', "")));
        assert!(!accepts("uuid", "uuid", "acme"));
    }

    #[test]
    fn text_and_varchar_limits_count_characters() {
        assert!(accepts("text", "text", "acme"));
        assert!(accepts("character varying", "character varying", "acme"));
        assert!(accepts(
            "character varying(4)",
            "character varying(4)",
            "acme"
        ));
        assert!(!accepts(
            "character varying(3)",
            "character varying(3)",
            "acme"
        ));
    }

    #[test]
    fn domains_cast_to_the_domain_and_check_by_the_base() {
        let ty = TenantKeyType::new("public.tenant_ref", "bigint").unwrap();
        assert_eq!(ty.cast_param(1), "CAST($1 AS public.tenant_ref)");
        assert!(ty.check(&TenantId::new("42").unwrap()).is_ok());
    }

    #[test]
    fn other_types_are_refused_with_the_type_named() {
        let err = TenantKeyType::new("numeric", "numeric").unwrap_err();
        assert!(
            err.to_string().contains("type numeric is not supported"),
            "{err}"
        );
        let err = TenantKeyType::new("public.t", "character(8)").unwrap_err();
        assert!(
            err.to_string()
                .contains("public.t (a domain over character(8))"),
            "{err}"
        );
        let err = TenantKeyType::new("bigint", "bigint")
            .unwrap()
            .check(&TenantId::new("007").unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "tenant id \"007\" is not a bigint written without leading zeros"
        );
    }
}
