//! `ferry serve`: the admin HTTP API, `/metrics`, and the live dashboard, over one control
//! store.
//!
//! - `/api/v1/…`: status, migrations, tenants, history, audit, progress, the update buffer,
//!   routers, the operator log, and the operator actions; every call needs a bearer token
//!   (`read` for GET, `operator` for the rest). The OpenAPI document is
//!   `/api/v1/openapi.json` (checked in as `crates/ferry-server/openapi.json`).
//! - `/metrics`: Prometheus text (needs a `read` token).
//! - `/`: the dashboard, a static page that calls the API with a token the operator pastes.
//!
//! Handlers are thin: the work is `ferry_api::ops`, which the CLI runs too.

mod auth;
mod dashboard;
mod error;
mod extract;
pub mod metrics;
mod rates;
mod routes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use ferry_api::ops::Operations;
use metrics_exporter_prometheus::PrometheusHandle;

pub use auth::{Caller, required_scope};
pub use error::ApiError;
pub use rates::{MigrationSample, Rates, Sample};

/// The checked-in OpenAPI document, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Request bodies larger than this are refused with 413.
    pub body_limit: usize,
    /// How often the dashboard's history is sampled.
    pub sample_every: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            body_limit: 64 * 1024,
            sample_every: Duration::from_secs(5),
        }
    }
}

struct Inner {
    ops: Operations,
    metrics: Option<PrometheusHandle>,
    rates: Rates,
    settings: ServeSettings,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(
        store: Arc<dyn ferry_store::ControlStore>,
        metrics: Option<PrometheusHandle>,
        settings: ServeSettings,
    ) -> AppState {
        let settings = ServeSettings {
            // A zero period would make the sampler's timer panic.
            sample_every: settings.sample_every.max(Duration::from_millis(100)),
            ..settings
        };
        AppState(Arc::new(Inner {
            ops: Operations::new(store),
            metrics,
            rates: Rates::default(),
            settings,
        }))
    }

    pub fn ops(&self) -> &Operations {
        &self.0.ops
    }

    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.0.metrics.as_ref()
    }

    pub fn rates(&self) -> &Rates {
        &self.0.rates
    }

    pub fn settings(&self) -> &ServeSettings {
        &self.0.settings
    }

    /// Takes one sample of the status for the dashboard's charts.
    pub async fn sample(&self) -> Result<(), ferry_api::OpsError> {
        let status = self.ops().status(None).await?;
        self.rates().record(&status);
        if let Some(handle) = self.metrics() {
            handle.run_upkeep();
        }
        Ok(())
    }
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/status", get(routes::status))
        .route("/api/v1/migrations", get(routes::migrations))
        .route("/api/v1/migrations/{migration}", get(routes::migration))
        .route(
            "/api/v1/migrations/{migration}/tenants",
            get(routes::tenants),
        )
        .route(
            "/api/v1/migrations/{migration}/tenants/{tenant}",
            get(routes::tenant),
        )
        .route(
            "/api/v1/migrations/{migration}/tenants/{tenant}/history",
            get(routes::history),
        )
        .route(
            "/api/v1/migrations/{migration}/tenants/{tenant}/advance",
            post(routes::advance),
        )
        .route(
            "/api/v1/migrations/{migration}/tenants/{tenant}/rollback",
            post(routes::rollback),
        )
        .route(
            "/api/v1/migrations/{migration}/tenants/{tenant}/pause",
            post(routes::pause),
        )
        .route(
            "/api/v1/migrations/{migration}/tenants/{tenant}/resume",
            post(routes::resume),
        )
        .route(
            "/api/v1/migrations/{migration}/rollouts",
            post(routes::rollout),
        )
        .route("/api/v1/migrations/{migration}/audit", get(routes::audit))
        .route(
            "/api/v1/migrations/{migration}/progress",
            get(routes::progress),
        )
        .route("/api/v1/migrations/{migration}/buffer", get(routes::buffer))
        .route(
            "/api/v1/migrations/{migration}/buffer/{seq}/retry",
            post(routes::buffer_retry),
        )
        .route(
            "/api/v1/migrations/{migration}/buffer/{seq}/drop",
            post(routes::buffer_drop),
        )
        .route(
            "/api/v1/migrations/{migration}/copy/{control}",
            post(routes::copy_control),
        )
        .route("/api/v1/routers", get(routes::routers))
        .route("/api/v1/operations", get(routes::operations))
        .route("/api/v1/rates", get(routes::rates))
        .route("/api/v1/openapi.json", get(routes::openapi))
        .route("/metrics", get(routes::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(api)
        .merge(dashboard::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(count_requests))
        .with_state(state)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("no route {} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// `ferry_http_requests_total` and `ferry_http_request_duration_seconds`, by route template
/// (never the concrete path, which holds tenant ids).
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // Only standard methods become label values: a client inventing methods must not
    // invent series.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    ::metrics::counter!("ferry_http_requests_total", "method" => method, "route" => route.clone(), "status" => status).increment(1);
    ::metrics::histogram!("ferry_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Serves until `shutdown` completes, sampling the dashboard's history in the background.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _sampler = AbortOnDrop({
        let state = state.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(state.settings().sample_every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(e) = state.sample().await {
                    tracing::warn!("could not sample the status for the dashboard: {e}");
                }
            }
        })
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Stops the sampler however `serve` ends, cancelled included.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
