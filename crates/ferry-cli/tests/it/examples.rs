use std::process::Command;

use ferry_testkit::TempDir;

use crate::ok;

#[test]
fn canary_rollout_example_runs_as_documented() {
    let dir = TempDir::new("example");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/canary_rollout.sh"
    );
    let out = ok(Command::new("bash")
        .arg(script)
        .env("FERRY", env!("CARGO_BIN_EXE_ferry"))
        .env(
            "FERRY_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("canary.db").display()),
        )
        .env("TMPDIR", dir.path())
        .env("FERRY_ACTOR", "example"));
    assert!(
        out.contains("registered 50 tenant(s) in orders_move: 50 new, 0 updated"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert!(
        out.contains("blocked: guards failed: backfill not complete"),
        "{out}"
    );
    assert!(out.contains("dual_write -> legacy"), "{out}");
    assert!(
        out.contains("consistent: every phase is explained by the audit log"),
        "{out}"
    );
}
