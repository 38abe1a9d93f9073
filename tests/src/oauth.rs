//! A fake OAuth 2.0 token endpoint (what `oauth2.googleapis.com/token` is to a service-account
//! key), real HTTP/1.1 on `127.0.0.1`, so that `snapscan launch` gets its credentials the way a
//! CI job does: `GOOGLE_APPLICATION_CREDENTIALS` names a key file ([`FakeOauth::key_file`],
//! with a fresh RSA key from `openssl` and this endpoint as its `token_uri`).
//!
//! `POST /token` with the form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and an
//! `assertion` JWT whose claims name the key's `client_email` (`iss`), this endpoint (`aud`),
//! the `cloud-platform` scope and a future `exp` answers `{"access_token", "expires_in",
//! "token_type"}` with a token the fake metadata server's authority issued, so the fake Compute
//! API accepts it ([`crate::gce_metadata::Handle::mint_token`]); anything else is a `400` as
//! Google answers it (`invalid_grant`). The tokens granted are listed ([`FakeOauth::granted`]).
//!
//! Not here: checking the JWT's signature (the key is the test's own), user credentials,
//! refresh tokens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};

use crate::gce_metadata;
use crate::server::Background;

/// The service account the key file is of.
pub const CLIENT_EMAIL: &str = "launcher@scan-project.iam.gserviceaccount.com";

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

struct Shared {
    authority: gce_metadata::Handle,
    token_uri: std::sync::OnceLock<String>,
    granted: std::sync::Mutex<Vec<String>>,
}

/// A running fake token endpoint; stopped on drop.
pub struct FakeOauth {
    server: Background,
    shared: Arc<Shared>,
}

impl FakeOauth {
    /// Start, issuing tokens of `authority`.
    ///
    /// # Panics
    /// When it cannot start: a test cannot go on.
    pub fn start(authority: gce_metadata::Handle) -> FakeOauth {
        let shared = Arc::new(Shared {
            authority,
            token_uri: std::sync::OnceLock::new(),
            granted: std::sync::Mutex::new(Vec::new()),
        });
        let served = Arc::clone(&shared);
        let server = Background::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "fake-oauth",
            move |listener, stop| {
                crate::server::serve_http(listener, served, stop, |req, shared| async move {
                    handle(req, &shared).await
                })
            },
        )
        .unwrap_or_else(|e| panic!("cannot start the fake OAuth endpoint: {e:#}"));
        let _ = shared
            .token_uri
            .set(format!("http://{}/token", server.addr()));
        FakeOauth { server, shared }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn token_uri(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// Write a service-account key file for [`CLIENT_EMAIL`] with this endpoint as its
    /// `token_uri` into `dir`; its path.
    ///
    /// # Errors
    /// `openssl` cannot make a key, or the file cannot be written.
    pub fn key_file(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let pem = dir.join("key.pem");
        let status = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&pem)
            .stderr(std::process::Stdio::null())
            .status()
            .context("cannot run openssl")?;
        anyhow::ensure!(status.success(), "openssl genpkey failed: {status}");
        let private_key = std::fs::read_to_string(&pem)?;
        let key = json!({
            "type": "service_account",
            "project_id": "scan-project",
            "private_key_id": "0123456789abcdef",
            "private_key": private_key,
            "client_email": CLIENT_EMAIL,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri(),
        });
        let path = dir.join("launcher-key.json");
        std::fs::write(&path, key.to_string())?;
        Ok(path)
    }

    /// The access tokens granted so far.
    pub fn granted(&self) -> Vec<String> {
        self.shared
            .granted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn reply(status: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::POST || req.uri().path() != "/token" {
        return reply(404, &json!({"error": "not_found"}));
    }
    let body = crate::server::body(req).await;
    let form: std::collections::BTreeMap<String, String> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    match check(&form, shared.token_uri.get().map_or("", String::as_str)) {
        Ok(()) => {
            let (token, lifetime) = shared.authority.mint_token();
            shared
                .granted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(token.clone());
            reply(
                200,
                &json!({"access_token": token, "expires_in": lifetime.as_secs(),
                        "token_type": "Bearer"}),
            )
        }
        Err(why) => reply(
            400,
            &json!({"error": "invalid_grant", "error_description": why}),
        ),
    }
}

/// Whether the form is a JWT-bearer grant of [`CLIENT_EMAIL`] for `aud`.
fn check(form: &std::collections::BTreeMap<String, String>, aud: &str) -> Result<(), String> {
    if form.get("grant_type").map(String::as_str) != Some(GRANT_TYPE) {
        return Err(format!("grant_type is not {GRANT_TYPE}"));
    }
    let assertion = form.get("assertion").ok_or("no assertion")?;
    let parts: Vec<&str> = assertion.split('.').collect();
    // base64url, padded or not (both are seen in the wild).
    let [_, claims, signature] = parts.as_slice() else {
        return Err("the assertion is not a JWT".into());
    };
    if signature.is_empty() {
        return Err("the assertion is not signed".into());
    }
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .map_err(|e| format!("claims: {e}"))?;
    let claims: Value = serde_json::from_slice(&claims).map_err(|e| format!("claims: {e}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if claims["iss"] != CLIENT_EMAIL {
        return Err(format!("iss {} is not the key's account", claims["iss"]));
    }
    if claims["aud"] != aud {
        return Err(format!("aud {} is not {aud}", claims["aud"]));
    }
    if !claims["scope"]
        .as_str()
        .is_some_and(|s| s.split(' ').any(|s| s == CLOUD_PLATFORM))
    {
        return Err(format!("scope {} lacks cloud-platform", claims["scope"]));
    }
    if claims["exp"].as_u64().is_none_or(|exp| exp <= now) {
        return Err("expired assertion".into());
    }
    Ok(())
}
