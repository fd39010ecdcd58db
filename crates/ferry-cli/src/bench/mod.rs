//! `ferry bench …`: measurements that print a ratio against a baseline measured in the same
//! run, on this machine, so numbers mean something without a reference machine.

mod control_store;
mod copy;
mod live_load;
mod schema;
mod tier;

pub use schema::SchemaBench;

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;

use crate::args::BenchCmd;

pub async fn run(cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCmd::ControlStore(args) => control_store::run(args).await,
        BenchCmd::Copy(args) => copy::run(args).await,
        BenchCmd::Schema(args) => schema::run(args).await,
        BenchCmd::Tier(args) => tier::run(args).await,
    }
}

/// The request a bench's rollout makes: as `bench`, unforced, for real.
fn request() -> ferry_engine::Request {
    ferry_engine::Request {
        actor: "bench".into(),
        reason: "bench".into(),
        force: false,
        dry_run: false,
        expect_phase: None,
    }
}

/// What every bench prints with `--json`: `{"bench": …, "figures": {…}, "ratios": {…}}`.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub bench: String,
    pub figures: BTreeMap<String, f64>,
    pub ratios: BTreeMap<String, f64>,
}

impl Report {
    pub fn new(bench: &str) -> Report {
        Report {
            bench: bench.to_owned(),
            ..Report::default()
        }
    }

    pub fn figure(&mut self, name: impl Into<String>, value: f64) {
        self.figures.insert(name.into(), round(value));
    }

    pub fn ratio(&mut self, name: impl Into<String>, value: f64) {
        self.ratios.insert(name.into(), round(value));
    }

    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
            return Ok(());
        }
        println!("bench {}", self.bench);
        let figures: Vec<Vec<String>> = self
            .figures
            .iter()
            .map(|(k, v)| vec![k.clone(), format!("{v}")])
            .collect();
        crate::output::table(&["figure", "value"], &figures);
        println!();
        let ratios: Vec<Vec<String>> = self
            .ratios
            .iter()
            .map(|(k, v)| vec![k.clone(), format!("{v}")])
            .collect();
        crate::output::table(&["ratio", "value"], &ratios);
        Ok(())
    }
}

/// Four significant-ish decimals: enough to compare, not noise.
fn round(v: f64) -> f64 {
    if v.abs() >= 100.0 {
        v.round()
    } else {
        (v * 10_000.0).round() / 10_000.0
    }
}
