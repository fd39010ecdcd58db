//! The admin API in process (`tower::ServiceExt::oneshot` against `ferry_server::app`), on
//! real control stores.
//!
//! - `auth.rs`: every route walked with every kind of credential; the OpenAPI document lists
//!   exactly those routes.
//! - `bad_input.rs`: client mistakes are 4xx with a JSON error, and change nothing.
//! - `api.rs`: actions through the API do what the CLI does, and are logged.
//! - `metrics.rs`: `/metrics` after a known sequence of operations.

#![allow(clippy::unwrap_used)]

mod api;
mod auth;
mod bad_input;
mod fixture;
mod metrics;
