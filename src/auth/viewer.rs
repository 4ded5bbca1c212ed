//! Who is calling: worked out once per request from the `Authorization` header (or Better
//! Auth's cookie) and placed in the request's GraphQL data.

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};

use super::better_auth::BetterAuthVerifier;
use super::tokens::{AccessClaims, TokenKeys};

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// No credentials: may chat, has no history.
    Anonymous,
    /// A valid access token issued by this server.
    Token(AccessClaims),
    /// A correctly signed Better Auth session token; whether the session still exists is
    /// checked against the database when a user is needed.
    BetterAuth(String),
    /// Credentials were sent but are expired, tampered with or not ours: fields that need a
    /// user answer `UNAUTHENTICATED`, so clients know to refresh or sign in again.
    Rejected,
}

impl Viewer {
    pub fn from_headers(
        headers: &HeaderMap,
        keys: &TokenKeys,
        better_auth: Option<&BetterAuthVerifier>,
    ) -> Self {
        if let Some(value) = headers.get(AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim);
            return match token {
                Some(t) if t.matches('.').count() == 2 => {
                    keys.verify(t).map_or(Self::Rejected, Self::Token)
                }
                Some(t) => better_auth
                    .and_then(|v| v.verify(t))
                    .map_or(Self::Rejected, Self::BetterAuth),
                None => Self::Rejected,
            };
        }
        let Some(verifier) = better_auth else {
            return Self::Anonymous;
        };
        match session_cookie(headers, verifier) {
            Some(value) => verifier
                .verify(&value)
                .map_or(Self::Rejected, Self::BetterAuth),
            None => Self::Anonymous,
        }
    }
}

fn session_cookie(headers: &HeaderMap, verifier: &BetterAuthVerifier) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| verifier.is_session_cookie(name))
        .map(|(_, value)| value.to_owned())
}
