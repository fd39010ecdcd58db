//! Typed columns whose values follow from a row's last token, so the checker knows what every
//! column must hold without remembering it: NULL and empty text, a numeric with three
//! decimals, a timestamp and a `json` document whose key order is part of its value. A table
//! that has them catches the defects a copy can make in a column (NULL vs empty string,
//! trailing space, a timezone shift, a numeric's last digit, json key order).

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The columns' definitions, for a workload table that carries them.
pub const FIELD_COLUMNS: &str = "note text, amount numeric, at timestamptz, doc json";

/// What the typed columns hold, as the checker compares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub note: Option<String>,
    /// The numeric as PostgreSQL prints it.
    pub amount: String,
    /// Microseconds since the epoch, UTC: a timezone shift is a different instant.
    pub at: i64,
    /// The `json` document's text, key order kept.
    pub doc: String,
}

fn hash(token: &str) -> u64 {
    // FNV-1a: stable across runs and platforms, which std's hasher is not promised to be.
    token.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Fields {
    /// The values a write of `appends` gives the row (they follow its last token).
    pub fn for_appends(appends: &str) -> Fields {
        let h = hash(appends.rsplit(' ').next().unwrap_or(appends));
        let note = match h % 3 {
            0 => None,
            1 => Some(String::new()),
            _ => Some(format!("note {}", h % 1000)),
        };
        Fields {
            note,
            amount: format!("{}.{:03}", h % 100_000, (h >> 20) % 1000),
            at: 1_764_547_200_000_000 + (h % 1_000_000_000) as i64 * 1000,
            doc: format!(r#"{{"b":{},"a":"x{}"}}"#, h % 97, h % 13),
        }
    }

    /// The columns of a row to write, as JSON values.
    pub fn to_row(&self) -> Vec<(&'static str, Value)> {
        let at = DateTime::<Utc>::from_timestamp_micros(self.at)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        vec![
            ("note", self.note.clone().map_or(Value::Null, Value::String)),
            (
                "amount",
                serde_json::from_str(&self.amount).unwrap_or(Value::Null),
            ),
            ("at", Value::String(at)),
            (
                "doc",
                serde_json::from_str(&self.doc).unwrap_or(Value::Null),
            ),
        ]
    }

    /// The columns as read from a row (`None` if the row does not have them).
    pub fn from_row(row: &serde_json::Map<String, Value>) -> Option<Result<Fields, String>> {
        let amount = row.get("amount")?;
        Some(read(row, amount))
    }
}

fn read(row: &serde_json::Map<String, Value>, amount: &Value) -> Result<Fields, String> {
    let note = match row.get("note") {
        Some(Value::Null) | None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(format!("note: {other}")),
    };
    let at = match row.get("at") {
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map_err(|e| format!("at {s:?}: {e}"))?
            .timestamp_micros(),
        other => return Err(format!("at: {other:?}")),
    };
    let doc = row.get("doc").map(Value::to_string).unwrap_or_default();
    Ok(Fields {
        note,
        amount: amount.to_string(),
        at,
        doc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_the_last_token_and_round_trip_through_a_row() {
        let a = Fields::for_appends("c1.1 c1.7");
        assert_eq!(a, Fields::for_appends("c2.3 c1.7"));
        let row: serde_json::Map<String, Value> = a
            .to_row()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(Fields::from_row(&row), Some(Ok(a)));
    }

    #[test]
    fn every_kind_of_note_occurs() {
        let notes: Vec<Option<String>> = (0..30)
            .map(|i| Fields::for_appends(&format!("c0.{i}")).note)
            .collect();
        assert!(notes.iter().any(Option::is_none));
        assert!(notes.iter().any(|n| n.as_deref() == Some("")));
        assert!(
            notes
                .iter()
                .any(|n| n.as_deref().is_some_and(|s| !s.is_empty()))
        );
    }
}
