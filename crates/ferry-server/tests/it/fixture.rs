use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use ferry_api::ops::Operations;
use ferry_domain::{MigrationId, TenantId};
use ferry_server::{AppState, ServeSettings};
use ferry_store::{MigrationKind, NewMigration, TenantSize, TokenScope};
use ferry_testkit::TestStore;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// A store with one migration of tenants, an app over it, and one token per scope.
pub struct Fixture {
    pub store: TestStore,
    pub state: AppState,
    pub read: String,
    pub operator: String,
    pub migration: MigrationId,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON error body's code, asserting the shape.
    pub fn error_code(&self) -> String {
        let v = self.json();
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "an error says what was wrong: {v}");
        v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {v}"))
            .to_owned()
    }
}

pub fn id(s: &str) -> MigrationId {
    MigrationId::new(s).unwrap()
}

pub fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

impl Fixture {
    pub async fn new(store: TestStore, migration: &str, tenants: &[(&str, u64)]) -> Fixture {
        Self::with_settings(store, migration, tenants, ServeSettings::default()).await
    }

    pub async fn with_settings(
        store: TestStore,
        migration: &str,
        tenants: &[(&str, u64)],
        settings: ServeSettings,
    ) -> Fixture {
        let m = id(migration);
        store
            .store
            .create_migration(&NewMigration {
                id: m.clone(),
                kind: MigrationKind::TenantMove,
                description: "api test".into(),
                config: serde_json::json!({}),
                created_by: "test".into(),
            })
            .await
            .unwrap();
        let sizes: Vec<TenantSize> = tenants
            .iter()
            .map(|(t, rows)| TenantSize {
                tenant: tenant(t),
                rows: *rows,
            })
            .collect();
        store.store.register_tenants(&m, &sizes).await.unwrap();
        let ops = Operations::new(store.store.clone());
        let (_, read) = ops
            .create_token("admin", "grafana", TokenScope::Read)
            .await
            .unwrap();
        let (_, operator) = ops
            .create_token("admin", "oncall", TokenScope::Operator)
            .await
            .unwrap();
        let state = AppState::new(
            store.store.clone(),
            ferry_server::metrics::recorder(),
            settings,
        );
        Fixture {
            store,
            state,
            read,
            operator,
            migration: m,
        }
    }

    pub fn store(&self) -> &Arc<dyn ferry_store::ControlStore> {
        &self.store.store
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_owned())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let response = ferry_server::app(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            content_type,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, Some(&self.read), None).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.call(Method::POST, path, Some(&self.operator), Some(body))
            .await
    }
}
