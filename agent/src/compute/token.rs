//! The scanner VM's own OAuth access token, from the metadata server
//! (`instance/service-accounts/default/token`), cached until shortly before it expires and
//! dropped when the Compute API refuses it (`401`), so the next request fetches a fresh one.
//!
//! Not here: what the token is used for ([`super::Client`]), other accounts, identity tokens.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::metadata;

/// The metadata path of the default account's token.
pub const TOKEN_PATH: &str = "instance/service-accounts/default/token";

/// A token is refreshed this long before it expires.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The metadata server did not give one (no service account: a 404).
    #[error("no access token from the metadata server: {0}")]
    Metadata(#[from] metadata::MetadataError),
    /// It answered something that is not a token.
    #[error("the metadata server's token answer is not a token: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct Answer {
    access_token: String,
    expires_in: u64,
    #[serde(default)]
    token_type: String,
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Tokens of the VM's default service account.
pub struct TokenSource {
    metadata: metadata::Client,
    cached: Mutex<Option<Cached>>,
}

impl TokenSource {
    /// Tokens from the metadata server `metadata` talks to.
    #[must_use]
    pub fn new(metadata: metadata::Client) -> TokenSource {
        TokenSource {
            metadata,
            cached: Mutex::new(None),
        }
    }

    /// A token valid for at least [`REFRESH_BEFORE`] (one fetch at a time).
    ///
    /// # Errors
    ///
    /// The metadata server gave none.
    pub async fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if Instant::now() < c.refresh_at {
                return Ok(c.token.clone());
            }
        }
        let text = self.metadata.get_text(TOKEN_PATH).await?;
        let answer: Answer =
            serde_json::from_str(&text).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if answer.access_token.is_empty()
            || !(answer.token_type.is_empty() || answer.token_type.eq_ignore_ascii_case("bearer"))
        {
            return Err(TokenError::Malformed(format!(
                "token_type '{}' or an empty token",
                answer.token_type
            )));
        }
        let lifetime = Duration::from_secs(answer.expires_in);
        *cached = Some(Cached {
            token: answer.access_token.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(REFRESH_BEFORE),
        });
        Ok(answer.access_token)
    }

    /// `token` was refused: forget it (unless a newer one replaced it already).
    pub async fn invalidate(&self, token: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == token) {
            *cached = None;
        }
    }
}
