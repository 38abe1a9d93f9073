//! OAuth access tokens for the Compute API ([`Tokens`]): the scanner VM's own, from the
//! metadata server (`instance/service-accounts/default/token`), cached until shortly before it
//! expires and dropped when the Compute API refuses it (`401`), so the next request fetches a
//! fresh one; or, for `snapscan launch` run anywhere, Application Default Credentials through
//! `gcp_auth` (a key file named by `GOOGLE_APPLICATION_CREDENTIALS`, `gcloud auth
//! application-default login`, the metadata server, or the `gcloud` CLI), which caches its own.
//!
//! Not here: what the token is used for ([`super::Client`]), identity tokens.

use std::sync::Arc;
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
    /// No Application Default Credentials, or they gave no token.
    #[error("no Google credentials (run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a key file): {0}")]
    Adc(String),
}

/// The scope asked of Application Default Credentials.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Where a client's tokens come from.
pub enum Tokens {
    /// The VM's own service account.
    Metadata(TokenSource),
    /// Application Default Credentials.
    Adc(Arc<dyn gcp_auth::TokenProvider>),
    /// None (a dry run without credentials): why, for any request that needs one.
    Unavailable(String),
}

impl Tokens {
    /// Application Default Credentials, found as `gcloud` and the client libraries find them.
    ///
    /// # Errors
    ///
    /// None are set up.
    pub async fn adc() -> Result<Tokens, TokenError> {
        gcp_auth::provider()
            .await
            .map(Tokens::Adc)
            .map_err(|e| TokenError::Adc(crate::error_chain(&e)))
    }

    /// A token to send now.
    ///
    /// # Errors
    ///
    /// None could be had.
    pub async fn token(&self) -> Result<String, TokenError> {
        match self {
            Tokens::Metadata(t) => t.token().await,
            Tokens::Adc(p) => p
                .token(&[CLOUD_PLATFORM])
                .await
                .map(|t| t.as_str().to_owned())
                .map_err(|e| TokenError::Adc(crate::error_chain(&e))),
            Tokens::Unavailable(why) => Err(TokenError::Adc(why.clone())),
        }
    }

    /// `token` was refused (a `401`): a metadata token is fetched again; ADC tokens are cached
    /// by their provider until they expire.
    pub async fn invalidate(&self, token: &str) {
        if let Tokens::Metadata(t) = self {
            t.invalidate(token).await;
        }
    }
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
