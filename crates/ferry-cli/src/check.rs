//! `ferry check`: the workload and its history checker against the user's own database.
//!
//! Everything Ferry creates is scratch: the schemas `ferry_check_<pid>` and
//! `ferry_check_<pid>_moved` in the given database (dropped at the end unless `--keep`, also
//! after a failure) and an embedded control store in a temp directory.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry_check::{AppPools, RunOutcome, Scenario, ScenarioSettings};
use ferry_domain::SqlIdent;
use ferry_store::StoreOptions;

use crate::args::CheckArgs;
use crate::{exit, output};

pub async fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.moving <= args.tenants,
        "--moving ({}) cannot exceed --tenants ({})",
        args.moving,
        args.tenants
    );
    // Checked before anything is created or connected to.
    let pid = std::process::id();
    let schema = SqlIdent::new(format!("ferry_check_{pid}")).context("name the scratch schema")?;
    let dir = std::env::temp_dir().join(format!("ferry-check-{pid}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let store_url = format!("sqlite://{}", dir.join("ferry.db").display());
    let store = ferry_store::open(&store_url, &StoreOptions::default())
        .await
        .context("open the scratch control store")?;
    let connect = async |what: &str| {
        ferry_copier::connect(&args.data_url, "connect to --data-url")
            .await
            .with_context(|| format!("connect {what} to --data-url"))
    };
    let pool = connect("the driver's pool").await?;
    let app = AppPools {
        source: connect("the application's source pool").await?,
        target: connect("the application's target pool").await?,
    };
    let settings = ScenarioSettings {
        schema,
        tenants: args.tenants as usize,
        routers: args.routers as usize,
        clients: args.clients,
        moving: args.moving as usize,
        keys_per_tenant: args.keys_per_tenant,
        duration: Duration::from_secs(args.duration),
        fields: true,
    };
    let router_store = store.clone();
    let scenario = Scenario::setup(
        pool,
        app,
        store,
        async || Ok(router_store.clone()),
        settings,
    )
    .await
    .context("set up the scratch table and its move")?;
    let scenario = Arc::new(scenario);
    let outcome = drive(&scenario, args).await;
    if args.keep {
        eprintln!(
            "kept: schemas {0} and {0}_moved, control store {store_url}",
            scenario.settings.schema
        );
    } else {
        if let Err(e) = scenario.drop_schemas().await {
            eprintln!("warning: could not drop the scratch schemas: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    let outcome = outcome?;
    if args.json {
        output::json(&serde_json::json!({
            "passed": outcome.report.passed(),
            "report": outcome.report,
            "phase_changes": outcome.phase_changes,
            "tenants_completed": outcome.tenants_completed,
        }))?;
    } else {
        print_outcome(&outcome);
    }
    Ok(if outcome.report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::ANOMALIES)
    })
}

/// Runs the scenario with a progress bar over its duration.
async fn drive(scenario: &Arc<Scenario>, args: &CheckArgs) -> anyhow::Result<RunOutcome> {
    let bar = output::progress(args.duration, "seconds");
    if !args.json {
        eprintln!(
            "ferry check: {} clients on {} routers over {} tenants for {} s, {} of them moving",
            args.clients, args.routers, args.tenants, args.duration, args.moving
        );
    }
    let outcome = scenario
        .run(|p| {
            bar.set_position(p.elapsed.as_secs().min(args.duration));
            bar.set_message(format!(
                "{} changes, {} done",
                p.phase_changes, p.tenants_completed
            ));
        })
        .await;
    bar.finish_and_clear();
    Ok(outcome?)
}

pub(crate) fn print_outcome(outcome: &RunOutcome) {
    let r = &outcome.report;
    let a = &r.anomalies;
    let rows: Vec<Vec<String>> = [
        ("lost", a.lost),
        ("duplicated", a.duplicated),
        ("resurrected", a.resurrected),
        ("stale_read", a.stale_read),
        ("version_regression", a.version_regression),
        ("cross_tenant", a.cross_tenant),
        ("corrupted", a.corrupted),
        ("phantom", a.phantom),
    ]
    .iter()
    .map(|(kind, n)| vec![(*kind).to_owned(), n.to_string()])
    .collect();
    output::table(&["ANOMALY", "COUNT"], &rows);
    println!(
        "\n{} operations ({} of unknown outcome, {} refused), {} keys checked, {} phase changes, {} tenants completed",
        output::count(r.operations),
        r.unknown_outcomes,
        r.refused,
        output::count(r.keys_checked),
        outcome.phase_changes,
        outcome.tenants_completed
    );
    if r.passed() {
        println!("PASSED: nothing lost, duplicated, resurrected or misrouted");
    } else {
        println!("FAILED: {} anomalies; examples:", a.total());
        for e in &r.examples {
            println!("  {e}");
        }
    }
}
