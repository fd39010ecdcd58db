use super::*;

#[test]
fn tenant_ids_accept_common_shapes() {
    for ok in [
        "acme",
        "42",
        "0b6f7a3c-1d2e-4f5a-9b8c-7d6e5f4a3b2c",
        "org:acme.eu_1",
    ] {
        assert_eq!(TenantId::new(ok).unwrap().as_str(), ok);
    }
}

#[test]
fn tenant_ids_refuse_what_could_escape() {
    let cases = [
        ("", "tenant id is empty"),
        (
            "a/b",
            "tenant id \"a/b\" has '/' at byte 1; allowed: letters, digits, '_', '.', ':', '-'",
        ),
        (
            "a'; drop table x;--",
            "tenant id \"a'; drop table x;--\" has '\\'' at byte 1; allowed: letters, digits, '_', '.', ':', '-'",
        ),
        ("..", "tenant id \"..\" must start with a letter or digit"),
        ("-x", "tenant id \"-x\" must start with a letter or digit"),
        (
            "é",
            "tenant id \"é\" has 'é' at byte 0; allowed: letters, digits, '_', '.', ':', '-'",
        ),
    ];
    for (input, message) in cases {
        let err = TenantId::new(input).unwrap_err();
        assert_eq!(err.to_string(), message, "input {input:?}");
    }
    let long = "a".repeat(129);
    assert!(matches!(
        TenantId::new(long),
        Err(IdError::TooLong {
            len: 129,
            max: 128,
            ..
        })
    ));
    assert!(TenantId::new("a".repeat(128)).is_ok());
}

#[test]
fn migration_ids_are_lowercase_snake() {
    assert!(MigrationId::new("orders_tiering_2026").is_ok());
    for bad in ["Orders", "1st", "_x", "a-b", "a b", ""] {
        assert!(MigrationId::new(bad).is_err(), "{bad:?} must be refused");
    }
    assert!(MigrationId::new("a".repeat(48)).is_ok());
    assert!(MigrationId::new("a".repeat(49)).is_err());
}

#[test]
fn long_values_are_truncated_in_messages() {
    let err = TenantId::new("é".repeat(100)).unwrap_err();
    // The value is not allowed anyway; what matters is that a multi-byte cut does not panic.
    assert!(err.to_string().len() < 400);
    let err = MigrationId::new("a".repeat(1000)).unwrap_err();
    assert!(err.to_string().contains("1000 bytes long; the limit is 48"));
    assert!(err.to_string().len() < 200);
}

#[test]
fn sql_identifiers_quote() {
    let ident = SqlIdent::new("Orders_2026").unwrap();
    assert_eq!(ident.quoted(), "\"Orders_2026\"");
    for bad in ["a\"b", "a.b", "1a", "", "a;b"] {
        assert!(SqlIdent::new(bad).is_err(), "{bad:?} must be refused");
    }
    assert!(SqlIdent::new("a".repeat(64)).is_err());
}

#[test]
fn ids_borrow_as_str_for_map_lookups() {
    let mut map = std::collections::HashMap::new();
    map.insert(TenantId::new("acme").unwrap(), 1);
    assert_eq!(map.get("acme"), Some(&1));
}
