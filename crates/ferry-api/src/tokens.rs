//! Admin API tokens: generated here, shown once, stored as SHA-256 only, and matched in
//! constant time against every stored hash.

use ferry_store::{NewToken, TokenRecord, TokenScope};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::OpsError;

/// Every token starts with this, so a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "ferry_";

/// A fresh token: the prefix and 32 random bytes in hex (256 bits of entropy).
pub fn generate() -> Result<String, OpsError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| OpsError::Internal(format!("no randomness for a token: {e}")))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// Lowercase hex SHA-256 of a token, as the store keeps it.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The stored token `presented` is, if any (revoked ones included: the caller says why it
/// refuses). Every stored hash is compared, in constant time, whatever matches first.
pub fn find<'a>(presented: &str, tokens: &'a [TokenRecord]) -> Option<&'a TokenRecord> {
    let wanted = hash(presented);
    let mut found = None;
    for token in tokens {
        let equal: bool = wanted.as_bytes().ct_eq(token.sha256.as_bytes()).into();
        if equal {
            found = Some(token);
        }
    }
    found
}

/// Names are shown in logs and the audit trail: short, printable, no spaces.
pub fn check_name(name: &str) -> Result<(), OpsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(OpsError::Invalid(format!(
            "token name {name:?}: use 1 to 64 letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

/// What a new token is stored as.
pub fn new_token(name: &str, scope: TokenScope, secret: &str, created_by: &str) -> NewToken {
    NewToken {
        name: name.to_owned(),
        scope,
        sha256: hash(secret),
        created_by: created_by.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, secret: &str) -> TokenRecord {
        TokenRecord {
            name: name.into(),
            scope: TokenScope::Read,
            sha256: hash(secret),
            created_by: "test".into(),
            created_at: chrono::Utc::now(),
            revoked_at: None,
        }
    }

    #[test]
    fn tokens_are_random_prefixed_and_found_only_by_their_own_secret() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        let stored = [record("a", &a), record("b", &b)];
        assert_eq!(find(&a, &stored).map(|t| t.name.as_str()), Some("a"));
        assert_eq!(find(&b, &stored).map(|t| t.name.as_str()), Some("b"));
        assert!(find("ferry_guess", &stored).is_none());
        assert!(find("", &stored).is_none());
        // The stored form is not the token.
        assert!(!stored[0].sha256.contains(&a[TOKEN_PREFIX.len()..]));
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("grafana-ro").is_ok());
        assert!(check_name("alice@example.com").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("has space").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
