//! End-to-end tests of the `ferry` binary: real processes, real stores.
//!
//! - `buffer.rs`: `ferry buffer apply` applies a tenant move's parked changes.
//! - `cli.rs`: operator workflows and bad input, on SQLite and PostgreSQL.
//! - `demo.rs`: `ferry demo` runs and verifies itself.
//! - `examples.rs`: the scripts under `examples/` run as documented (`check.sh`: `ferry check`,
//!   `schema_change.sh`: `ferry schema`).
//! - `kill.rs`: `kill -9` of the real copier, many times; it resumes to an exact target.
//! - `schema.rs`: `ferry schema` runs expand–contract changes through the phases; bad plans
//!   are refused naming `operations[i].field`; the plans' JSON Schema matches the parser.
//! - `bench.rs`: each bench's `--json` output has the promised shape.
//! - `serve.rs`: `ferry serve` answers what the CLI prints; the dashboard in headless Chromium
//!   shows the API's numbers during a running demo.
//! - `tidy.rs`: the docs stay true to the code.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod bench;
mod buffer;
mod cli;
mod demo;
mod examples;
mod kill;
mod schema;
mod serve;
mod tidy;
mod tier_kill;

use std::process::{Command, Output};

/// A `ferry` command on the given store, as an operator named `tester`.
pub fn ferry(store_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env("FERRY_DATABASE_URL", store_url)
        .env("FERRY_ACTOR", "tester")
        .env_remove("RUST_LOG");
    cmd
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run the ferry binary")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs and asserts success, returning stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}
