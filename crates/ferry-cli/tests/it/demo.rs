use ferry_testkit::TempDir;

use crate::{ferry, ok};

#[test]
fn demo_moves_every_tenant_and_verifies_the_audit_log() {
    let dir = TempDir::new("demo");
    let store = dir.path().join("demo.db");
    let out = ok(ferry("unused")
        .args(["demo", "--tenants", "300", "--store"])
        .arg(&store));
    assert!(out.contains("300 tenants registered"), "{out}");
    assert!(out.contains("canary"), "{out}");
    assert!(out.contains("rollback"), "{out}");
    assert!(out.contains("pause"), "{out}");
    assert!(
        out.contains("verified: every phase is explained by the audit log"),
        "{out}"
    );
    // The kept store is a normal store: the CLI reads the same story from it.
    let status = ok(ferry(&format!("sqlite://{}", store.display())).args(["status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let complete = status["migrations"][0]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "complete")
        .unwrap()["tenants"]
        .as_u64()
        .unwrap();
    assert_eq!(complete, 300);
    // A second demo refuses to reuse the store rather than mixing runs.
    let again = crate::run(ferry("unused").args(["demo", "--store"]).arg(&store));
    assert_eq!(again.status.code(), Some(1));
}
