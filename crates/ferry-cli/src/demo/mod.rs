//! `ferry demo`: the end-to-end story, with nothing to set up.
//!
//! By default real rows move under live traffic (`real.rs`, `real_story.rs`): a throwaway
//! PostgreSQL cluster, a table of tenants of skewed sizes, the history checker's workload
//! writing through two routers while tenants move, and the checker's verdict at the end.
//! `--simulate` runs the phase story alone on a thousand tenants (`simulated.rs`,
//! `story.rs`). With `--serve ADDR`, `ferry serve`'s API, metrics and dashboard run over the
//! demo's store while it runs; `--step-delay-ms` slows the story down enough to watch it.

mod real;
mod real_story;
mod simulated;
mod story;
mod tier_act;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry_domain::TenantId;
use ferry_store::{ControlStore, TenantSize};

use crate::args::{DemoArgs, Global};

pub async fn run(global: &Global, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    if args.simulate {
        simulated::run(global, args).await
    } else {
        real::run(global, args).await
    }
}

/// A deterministic generator, so `--seed` reproduces a run exactly.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// Pareto-distributed row counts from `smallest` up to `largest`: most tenants are small, a
/// few are huge, as in real SaaS.
fn tenant_sizes(n: usize, seed: u64, smallest: f64, largest: f64) -> Vec<TenantSize> {
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|i| {
            let rows = (smallest / rng.unit().powf(1.0 / 1.1)).min(largest) as u64;
            TenantSize {
                tenant: TenantId::new(format!("tenant-{:04}", i + 1))
                    .expect("generated tenant ids are valid"),
                rows,
            }
        })
        .collect()
}

/// With `--linger`, keeps the dashboard up that many seconds, or until Ctrl-C.
async fn linger(seconds: u64) {
    if seconds > 0 {
        println!("still serving the dashboard for {seconds}s (--linger); Ctrl-C to stop");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
}

/// Starts `ferry serve` over the demo's store with a fresh operator token, and prints where.
async fn start_server(
    store: Arc<dyn ControlStore>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let ops = ferry_api::ops::Operations::new(store.clone());
    let (_, token) = ops
        .create_token("demo", "demo-operator", ferry_store::TokenScope::Operator)
        .await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let state = ferry_server::AppState::new(
        store,
        ferry_server::metrics::recorder(),
        ferry_server::ServeSettings {
            sample_every: Duration::from_secs(1),
            ..ferry_server::ServeSettings::default()
        },
    );
    println!("dashboard: http://{addr}/#token={token}");
    println!("api:       http://{addr}/api/v1/status (Authorization: Bearer {token})");
    Ok(tokio::spawn(async move {
        let never = std::future::pending::<()>();
        if let Err(e) = ferry_server::serve(listener, state, never).await {
            tracing::error!("the demo's server stopped: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::tenant_sizes;

    #[test]
    fn sizes_are_skewed_and_repeatable() {
        let a = tenant_sizes(1000, 42, 40.0, 5e6);
        assert_eq!(a, tenant_sizes(1000, 42, 40.0, 5e6));
        let mut rows: Vec<u64> = a.iter().map(|t| t.rows).collect();
        rows.sort_unstable();
        let median = rows[500];
        let largest = rows[999];
        assert!(rows[0] >= 40);
        assert!(largest > 50 * median, "median {median}, largest {largest}");
    }
}
