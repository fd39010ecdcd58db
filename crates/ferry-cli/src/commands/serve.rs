//! `ferry serve` and `ferry token`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use ferry_server::{AppState, ServeSettings};
use ferry_store::TokenScope;

use crate::args::{ScopeArg, ServeArgs, TokenCmd};
use crate::context::Context;
use crate::output;

pub async fn serve(ctx: &Context, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("read the listening address")?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening beyond loopback: put a TLS proxy in front, tokens travel in a header");
    }
    let tokens = ctx.ops.tokens().await?;
    if !tokens.iter().any(|t| t.revoked_at.is_none()) {
        eprintln!(
            "no API tokens yet: create one with `ferry token create NAME --scope read` (or operator)"
        );
    }
    let state = AppState::new(
        ctx.store.clone(),
        ferry_server::metrics::recorder(),
        ServeSettings {
            body_limit: args.body_limit,
            sample_every: Duration::from_secs(args.sample_every.max(1)),
        },
    );
    println!("serving {} on http://{addr}", ctx.store.describe());
    println!("  dashboard  http://{addr}/");
    println!("  API        http://{addr}/api/v1/  (OpenAPI: /api/v1/openapi.json)");
    println!("  metrics    http://{addr}/metrics");
    ferry_server::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("serve HTTP")?;
    Ok(ExitCode::SUCCESS)
}

pub async fn token(ctx: &Context, cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCmd::Create { name, scope, json } => {
            let scope = match scope {
                ScopeArg::Read => TokenScope::Read,
                ScopeArg::Operator => TokenScope::Operator,
            };
            let (view, secret) = ctx.ops.create_token(&ctx.actor, &name, scope).await?;
            if json {
                output::json(&serde_json::json!({
                    "token": secret,
                    "name": view.name,
                    "scope": view.scope,
                }))?;
            } else {
                println!("{secret}");
                eprintln!(
                    "created {} token {:?}; it is shown only now. Use it as `Authorization: Bearer TOKEN`.",
                    view.scope, view.name
                );
            }
        }
        TokenCmd::List(flag) => {
            let tokens = ctx.ops.tokens().await?;
            if flag.json {
                output::json(&tokens)?;
            } else if tokens.is_empty() {
                println!("no tokens; create one with `ferry token create NAME --scope read`");
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.name.clone(),
                            t.scope.clone(),
                            t.created_at.format("%Y-%m-%d %H:%M").to_string(),
                            t.created_by.clone(),
                            t.revoked_at.map_or_else(String::new, |r| {
                                format!("revoked {}", r.format("%Y-%m-%d %H:%M"))
                            }),
                        ]
                    })
                    .collect();
                output::table(&["name", "scope", "created", "by", ""], &rows);
            }
        }
        TokenCmd::Revoke { name } => {
            ctx.ops.revoke_token(&ctx.actor, &name).await?;
            println!("token {name:?} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
