//! The handlers: each parses and validates its input, calls `ferry_api::ops` (the same code
//! the CLI runs), and answers JSON.

use std::time::Duration;

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_api::ops::{ChangeOptions, CopyChange};
use ferry_domain::{Action, Cohort, Percent, Phase, TenantId};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{self, Ids, JsonBody, query};

type ApiResult = Result<Response, ApiError>;

fn json<T: Serialize>(value: &T) -> ApiResult {
    let body = serde_json::to_vec(value)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Runs an action to its end even if the client goes away mid-call (hyper drops a handler
/// whose connection closed), so a committed change is always in the operator log.
async fn detached<T: Send + 'static>(
    action: impl std::future::Future<Output = Result<T, ferry_api::OpsError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(action)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the action stopped: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

/// The longest a change may wait for routers to acknowledge before answering.
const MAX_WAIT_S: u64 = 60;

// --- reads ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    migration: Option<String>,
}

pub async fn status(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q: StatusQuery = query(raw)?;
    let only = q.migration.as_deref().map(extract::migration).transpose()?;
    json(&state.ops().status(only.as_ref()).await?)
}

pub async fn migrations(State(state): State<AppState>) -> ApiResult {
    json(&state.ops().migrations().await?)
}

pub async fn migration(State(state): State<AppState>, Ids(m): Ids<String>) -> ApiResult {
    json(&state.ops().migration(&extract::migration(&m)?).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsQuery {
    phase: Option<String>,
    paused: Option<bool>,
    after: Option<String>,
    limit: Option<u64>,
}

pub async fn tenants(
    State(state): State<AppState>,
    Ids(m): Ids<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q: TenantsQuery = query(raw)?;
    let query = ferry_store::TenantQuery {
        phase: q.phase.as_deref().map(phase).transpose()?,
        paused: q.paused,
        after: q
            .after
            .as_deref()
            .map(|a| TenantId::new(a).map_err(|e| ApiError::bad_request(format!("after: {e}"))))
            .transpose()?,
        limit: Some(q.limit.unwrap_or(100)),
    };
    if query.limit.is_some_and(|l| l > ferry_api::ops::MAX_PAGE) {
        return Err(ApiError::bad_request(format!(
            "limit is at most {}; page with after",
            ferry_api::ops::MAX_PAGE
        )));
    }
    json(
        &state
            .ops()
            .tenants(&extract::migration(&m)?, &query)
            .await?,
    )
}

pub async fn tenant(
    State(state): State<AppState>,
    Ids((m, t)): Ids<(String, String)>,
) -> ApiResult {
    let (m, t) = (extract::migration(&m)?, extract::tenant(&t)?);
    json(&state.ops().tenant(&m, &t).await?)
}

pub async fn history(
    State(state): State<AppState>,
    Ids((m, t)): Ids<(String, String)>,
) -> ApiResult {
    let (m, t) = (extract::migration(&m)?, extract::tenant(&t)?);
    json(&state.ops().history(&m, &t).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<i64>,
    limit: Option<u64>,
}

pub async fn audit(
    State(state): State<AppState>,
    Ids(m): Ids<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let q: PageQuery = query(raw)?;
    let m = extract::migration(&m)?;
    json(
        &state
            .ops()
            .audit(&m, q.after.unwrap_or(0), q.limit.unwrap_or(50))
            .await?,
    )
}

pub async fn progress(State(state): State<AppState>, Ids(m): Ids<String>) -> ApiResult {
    json(&state.ops().progress(&extract::migration(&m)?).await?)
}

pub async fn buffer(State(state): State<AppState>, Ids(m): Ids<String>) -> ApiResult {
    json(&state.ops().buffer(&extract::migration(&m)?).await?)
}

pub async fn routers(State(state): State<AppState>) -> ApiResult {
    json(&state.ops().routers().await?)
}

pub async fn operations(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q: PageQuery = query(raw)?;
    json(
        &state
            .ops()
            .operations(q.after.unwrap_or(0), q.limit.unwrap_or(50))
            .await?,
    )
}

pub async fn rates(State(state): State<AppState>) -> ApiResult {
    json(&state.rates().samples())
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> ApiResult {
    let status = state.ops().status(None).await?;
    let mut text = crate::metrics::render_status(&status);
    if let Some(handle) = state.metrics() {
        text.push_str(&handle.render());
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

// --- actions ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeBody {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    dry_run: bool,
    from_phase: Option<String>,
    /// Seconds to wait for routers to acknowledge (default 5, at most 60).
    wait_s: Option<u64>,
}

fn phase(s: &str) -> Result<Phase, ApiError> {
    s.parse()
        .map_err(|e: ferry_domain::ParsePhaseError| ApiError::bad_request(e.to_string()))
}

fn options(
    reason: String,
    force: bool,
    dry_run: bool,
    from_phase: Option<&str>,
    wait_s: Option<u64>,
) -> Result<ChangeOptions, ApiError> {
    let wait_s = wait_s.unwrap_or(5);
    if wait_s > MAX_WAIT_S {
        return Err(ApiError::bad_request(format!(
            "wait_s is at most {MAX_WAIT_S}"
        )));
    }
    Ok(ChangeOptions {
        reason,
        force,
        dry_run,
        from_phase: from_phase.map(phase).transpose()?,
        wait: Duration::from_secs(wait_s),
    })
}

async fn change(
    state: AppState,
    caller: Caller,
    (m, t): (String, String),
    action: Action,
    body: ChangeBody,
) -> ApiResult {
    let (m, t) = (extract::migration(&m)?, extract::tenant(&t)?);
    let opts = options(
        body.reason,
        body.force,
        body.dry_run,
        body.from_phase.as_deref(),
        body.wait_s,
    )?;
    let actor = caller.actor();
    let view =
        detached(async move { state.ops().change(&actor, &m, &t, action, &opts).await }).await?;
    json(&view)
}

macro_rules! change_handler {
    ($name:ident, $action:expr) => {
        pub async fn $name(
            State(state): State<AppState>,
            Extension(caller): Extension<Caller>,
            Ids(ids): Ids<(String, String)>,
            JsonBody(body): JsonBody<ChangeBody>,
        ) -> ApiResult {
            change(state, caller, ids, $action, body).await
        }
    };
}

change_handler!(advance, Action::Advance);
change_handler!(rollback, Action::Rollback);
change_handler!(pause, Action::Pause);
change_handler!(resume, Action::Resume);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortBody {
    tenants: Option<Vec<String>>,
    percent: Option<String>,
    smallest: Option<u64>,
    all: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutBody {
    action: String,
    cohort: CohortBody,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    dry_run: bool,
    from_phase: Option<String>,
    wait_s: Option<u64>,
}

fn cohort(body: CohortBody) -> Result<Cohort, ApiError> {
    let given = [
        body.tenants.is_some(),
        body.percent.is_some(),
        body.smallest.is_some(),
        body.all == Some(true),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(ApiError::bad_request(
            "cohort: give exactly one of tenants, percent, smallest or all: true",
        ));
    }
    if let Some(tenants) = body.tenants {
        if tenants.is_empty() {
            return Err(ApiError::bad_request("cohort.tenants is empty"));
        }
        let ids = tenants
            .iter()
            .map(|t| {
                TenantId::new(t.as_str())
                    .map_err(|e| ApiError::bad_request(format!("cohort.tenants: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Cohort::Explicit(ids));
    }
    if let Some(p) = body.percent {
        return Percent::parse(&p)
            .map(Cohort::Percent)
            .map_err(|e| ApiError::bad_request(format!("cohort.percent: {e}")));
    }
    if let Some(n) = body.smallest {
        return Ok(Cohort::SmallestFirst(n));
    }
    Ok(Cohort::All)
}

pub async fn rollout(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Ids(m): Ids<String>,
    JsonBody(body): JsonBody<RolloutBody>,
) -> ApiResult {
    let m = extract::migration(&m)?;
    let action = Action::parse(&body.action).ok_or_else(|| {
        ApiError::bad_request(format!(
            "action {:?}: expected advance, rollback, pause or resume",
            body.action
        ))
    })?;
    let cohort = cohort(body.cohort)?;
    let opts = options(
        body.reason,
        body.force,
        body.dry_run,
        body.from_phase.as_deref(),
        body.wait_s,
    )?;
    let actor = caller.actor();
    let view = detached(async move {
        state
            .ops()
            .rollout(&actor, &m, &cohort, action, &opts, |_, _| {})
            .await
    })
    .await?;
    json(&view)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

pub async fn buffer_retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Ids((m, seq)): Ids<(String, String)>,
    JsonBody(_): JsonBody<EmptyBody>,
) -> ApiResult {
    let (m, seq) = (extract::migration(&m)?, extract::seq(&seq)?);
    let actor = caller.actor();
    json(&detached(async move { state.ops().buffer_retry(&actor, &m, seq).await }).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropBody {
    reason: Option<String>,
}

pub async fn buffer_drop(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Ids((m, seq)): Ids<(String, String)>,
    JsonBody(body): JsonBody<DropBody>,
) -> ApiResult {
    let (m, seq) = (extract::migration(&m)?, extract::seq(&seq)?);
    let reason = body.reason.unwrap_or_default();
    let actor = caller.actor();
    json(&detached(async move { state.ops().buffer_drop(&actor, &m, seq, &reason).await }).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyBody {
    tenant: Option<String>,
    rows_per_s: Option<u64>,
}

pub async fn copy_control(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Ids((m, control)): Ids<(String, String)>,
    JsonBody(body): JsonBody<CopyBody>,
) -> ApiResult {
    let m = extract::migration(&m)?;
    let change = match (control.as_str(), body.rows_per_s) {
        ("pause", None) => CopyChange::Pause,
        ("resume", None) => CopyChange::Resume,
        ("cancel", None) => CopyChange::Cancel,
        ("throttle", Some(r)) => CopyChange::Throttle(r),
        ("throttle", None) => {
            return Err(ApiError::bad_request(
                "throttle needs rows_per_s (0 removes the limit)",
            ));
        }
        ("pause" | "resume" | "cancel", Some(_)) => {
            return Err(ApiError::bad_request(format!(
                "rows_per_s only goes with throttle, not {control}"
            )));
        }
        _ => {
            return Err(ApiError::not_found(format!(
                "no copy control {control:?}: expected pause, resume, cancel or throttle"
            )));
        }
    };
    let tenant = body.tenant.as_deref().map(extract::tenant).transpose()?;
    let actor = caller.actor();
    json(
        &detached(async move {
            state
                .ops()
                .copy_control(&actor, &m, tenant.as_ref(), change)
                .await
        })
        .await?,
    )
}
