//! Admin API tokens as operator actions: create (the secret is returned once and only its
//! hash is stored), list and revoke. Creating and revoking are logged like any other
//! mutating call, by name, never with the secret.

use super::{Operations, Result, Summary};
use crate::{OpsError, TokenView};

impl Operations {
    /// Creates an admin API token; returns it (the only time it is shown) and its listing.
    pub async fn create_token(
        &self,
        actor: &str,
        name: &str,
        scope: ferry_store::TokenScope,
    ) -> Result<(TokenView, String)> {
        let result = async {
            crate::tokens::check_name(name)?;
            let secret = crate::tokens::generate()?;
            let record = self
                .store
                .create_token(&crate::tokens::new_token(name, scope, &secret, actor))
                .await?;
            Ok((TokenView::from(&record), secret))
        }
        .await;
        let logged = result
            .as_ref()
            .map(|(view, _)| view.clone())
            .map_err(OpsError::clone);
        self.log(actor, "token.create", name, false, &logged).await;
        result
    }

    pub async fn tokens(&self) -> Result<Vec<TokenView>> {
        let all = self.store.tokens().await?;
        Ok(all.iter().map(TokenView::from).collect())
    }

    /// Revokes a token for good (its name is never reused).
    pub async fn revoke_token(&self, actor: &str, name: &str) -> Result<TokenView> {
        let result = async {
            if !self.store.revoke_token(name).await? {
                return Err(OpsError::NotFound(format!(
                    "no live token named {name:?} (see `ferry token list`)"
                )));
            }
            let all = self.store.tokens().await?;
            all.iter()
                .find(|t| t.name == name)
                .map(TokenView::from)
                .ok_or_else(|| OpsError::Internal(format!("token {name:?} vanished")))
        }
        .await;
        self.log(actor, "token.revoke", name, false, &result).await;
        result
    }
}

impl Summary for TokenView {
    fn summary(&self) -> String {
        format!("{} token {}", self.scope, self.name)
    }
}
