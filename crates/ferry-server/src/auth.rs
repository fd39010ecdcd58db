//! Bearer-token authentication and scopes. Reads need a `read` or `operator` token; anything
//! that changes state needs `operator`. Tokens are looked up per request (a revoked token
//! stops working at once), hashed, and compared in constant time against every stored hash.
//! Only a token's name ever reaches a log line or the audit trail.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_store::TokenScope;

use crate::AppState;
use crate::error::ApiError;

/// Who is calling, as the handlers see it (a request extension set by [`require_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub scope: TokenScope,
}

impl Caller {
    /// The actor written to the audit and operator logs.
    pub fn actor(&self) -> String {
        format!("token:{}", self.name)
    }
}

/// The scope a request needs: reads are `GET`/`HEAD`, everything else changes something.
pub fn required_scope(method: &Method) -> TokenScope {
    if method == Method::GET || method == Method::HEAD {
        TokenScope::Read
    } else {
        TokenScope::Operator
    }
}

pub async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|h| h.to_str().map(str::to_owned).unwrap_or_default());
    match authenticate(&state, header.as_deref()).await {
        Ok(caller) => {
            let needed = required_scope(req.method());
            if caller.scope < needed {
                tracing::info!(token = %caller.name, method = %req.method(), path = %req.uri().path(), "refused: scope too narrow");
                return ApiError::forbidden(format!(
                    "token {:?} has the {} scope; this call needs {}",
                    caller.name,
                    caller.scope.as_str(),
                    needed.as_str()
                ))
                .into_response();
            }
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn authenticate(state: &AppState, header: Option<&str>) -> Result<Caller, ApiError> {
    let header = header
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token> header"))?;
    let presented = Some(header)
        .and_then(|h| {
            let (scheme, token) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
        })?;
    let tokens = state.ops().store().tokens().await?;
    let Some(token) = ferry_api::tokens::find(presented, &tokens) else {
        tracing::info!("refused: unknown token");
        return Err(ApiError::unauthorized("unknown token"));
    };
    if token.revoked_at.is_some() {
        tracing::info!(token = %token.name, "refused: revoked token");
        return Err(ApiError::unauthorized(format!(
            "token {:?} was revoked",
            token.name
        )));
    }
    Ok(Caller {
        name: token.name.clone(),
        scope: token.scope,
    })
}
