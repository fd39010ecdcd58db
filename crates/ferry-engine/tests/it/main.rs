//! Integration tests of the phase engine, each run against SQLite and PostgreSQL.
//! New engine behaviour gets its test in `engine.rs`.

mod engine;
