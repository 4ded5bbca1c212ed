//! What a GraphQL client sees when something fails: a message meant for people and an
//! `extensions.code` meant for programs. Internal causes are logged here, once, with
//! their detail, and replaced by a generic message before they leave the server.

use std::time::Duration;

use async_graphql::ErrorExtensions;
use sea_orm::DbErr;

use crate::auth::AuthError;

/// The `extensions.code` values of the contract in DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    BadUserInput,
    EmailTaken,
    InvalidCredentials,
    NotFound,
    RateLimited,
    EmailNotVerified,
    DatabaseUnavailable,
    UpstreamUnavailable,
    InternalServerError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::EmailTaken => "EMAIL_TAKEN",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::NotFound => "NOT_FOUND",
            Self::RateLimited => "RATE_LIMITED",
            Self::EmailNotVerified => "EMAIL_NOT_VERIFIED",
            Self::DatabaseUnavailable => "DATABASE_UNAVAILABLE",
            Self::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
        }
    }
}

/// An error on its way to a GraphQL client.
///
/// It deliberately has no `Display`: async-graphql turns anything displayable into an
/// error without a code, so the only way out is the `From` impl below, which sets one.
#[derive(Debug)]
pub enum ApiError {
    /// `UNAUTHENTICATED`: the field needs a signed-in reader and the credentials are
    /// missing, expired, revoked or invalid.
    Unauthenticated,
    /// `FORBIDDEN`: signed in, but the field is for the book's authors (admins) only.
    Forbidden,
    /// `BAD_USER_INPUT`: says what is accepted.
    BadUserInput(String),
    /// `EMAIL_TAKEN`.
    EmailTaken,
    /// `INVALID_CREDENTIALS`: unknown email and wrong password alike.
    InvalidCredentials,
    /// `NOT_FOUND`: does not exist, or is not the caller's (indistinguishable).
    NotFound,
    /// `RATE_LIMITED`: with `extensions.retryAfter` in whole seconds.
    RateLimited(Duration),
    /// `EMAIL_NOT_VERIFIED`: `REQUIRE_EMAIL_VERIFICATION` is on and this account's email
    /// is not verified yet.
    EmailNotVerified,
    /// `UPSTREAM_UNAVAILABLE`: the vector store (or another upstream service) failed.
    UpstreamUnavailable,
    /// `INTERNAL_SERVER_ERROR` for a cause that is not the database's; logged.
    Internal(&'static str),
    /// `DATABASE_UNAVAILABLE`: the guard refused, or the query lost its connection.
    DatabaseUnavailable,
    /// `DATABASE_UNAVAILABLE` with `extensions.reason = "busy"` and `retryAfter`: the
    /// database is up but too slow or too loaded; the request was shed rather than queued.
    DatabaseBusy,
    /// `DATABASE_UNAVAILABLE` with `extensions.pending = true`: a chat turn the database
    /// could not take is journaled and will be stored when it is back.
    TurnPending,
    /// `INTERNAL_SERVER_ERROR`: a database failure that is not an outage (a bug, a
    /// constraint we did not expect). Logged with its detail, sent without it.
    Database(DbErr),
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::Forbidden => ErrorCode::Forbidden,
            Self::BadUserInput(_) => ErrorCode::BadUserInput,
            Self::EmailTaken => ErrorCode::EmailTaken,
            Self::InvalidCredentials => ErrorCode::InvalidCredentials,
            Self::NotFound => ErrorCode::NotFound,
            Self::UpstreamUnavailable => ErrorCode::UpstreamUnavailable,
            Self::RateLimited(_) => ErrorCode::RateLimited,
            Self::EmailNotVerified => ErrorCode::EmailNotVerified,
            Self::DatabaseUnavailable | Self::DatabaseBusy | Self::TurnPending => {
                ErrorCode::DatabaseUnavailable
            }
            Self::Database(_) | Self::Internal(_) => ErrorCode::InternalServerError,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Unauthenticated => {
                "sign in first: credentials are missing, expired or invalid".into()
            }
            Self::Forbidden => "this field is for the book's authors (admins) only".into(),
            Self::BadUserInput(why) => why.clone(),
            Self::EmailTaken => "an account with this email already exists".into(),
            Self::InvalidCredentials => "email or password is wrong".into(),
            Self::NotFound => "not found".into(),
            Self::UpstreamUnavailable => {
                "a service the answer depends on is unavailable; try again shortly".into()
            }
            Self::EmailNotVerified => {
                "verify your email address first (see the message you were sent)".into()
            }
            Self::RateLimited(wait) => {
                format!("too many attempts; retry in {} s", retry_after_secs(*wait))
            }
            Self::DatabaseUnavailable => {
                "the database is unavailable right now; try again shortly".into()
            }
            Self::DatabaseBusy => {
                "the database is too busy to answer right now; try again shortly".into()
            }
            Self::TurnPending => "the database is unavailable right now; this turn is saved and will appear in your history when it is back".into(),
            Self::Database(_) | Self::Internal(_) => "internal server error".into(),
        }
    }
}

fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::InvalidInput(why) => Self::BadUserInput(why),
            AuthError::EmailTaken => Self::EmailTaken,
            AuthError::InvalidCredentials => Self::InvalidCredentials,
            AuthError::InvalidSession => Self::Unauthenticated,
            AuthError::RateLimited(wait) => Self::RateLimited(wait),
            AuthError::EmailNotVerified => Self::EmailNotVerified,
            AuthError::Database(e) => Self::Database(e),
            AuthError::Hashing(crate::auth::password::HashError::Busy) => {
                Self::RateLimited(Duration::from_secs(1))
            }
            AuthError::Hashing(e) => {
                tracing::error!(error = %e, "password hashing failed");
                Self::Internal("password hashing failed")
            }
        }
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(err: ApiError) -> Self {
        match &err {
            ApiError::Database(cause) => tracing::error!(error = %cause, "database query failed"),
            ApiError::Internal(what) => tracing::error!(cause = what, "internal error"),
            _ => {}
        }
        let code = err.code();
        let retry_after = match &err {
            ApiError::RateLimited(wait) => Some(retry_after_secs(*wait)),
            ApiError::DatabaseBusy => Some(1),
            _ => None,
        };
        let busy = matches!(err, ApiError::DatabaseBusy);
        let pending = matches!(err, ApiError::TurnPending);
        async_graphql::Error::new(err.message()).extend_with(|_, ext| {
            ext.set("code", code.as_str());
            if let Some(secs) = retry_after {
                ext.set("retryAfter", secs);
            }
            if busy {
                ext.set("reason", "busy");
            }
            if pending {
                ext.set("pending", true);
            }
        })
    }
}
