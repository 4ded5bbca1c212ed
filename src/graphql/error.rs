//! What a GraphQL client sees when something fails: a message meant for people and an
//! `extensions.code` meant for programs. Internal causes are logged here, once, with
//! their detail, and replaced by a generic message before they leave the server.

use async_graphql::ErrorExtensions;
use sea_orm::DbErr;

use crate::db::Unavailable;

/// The `extensions.code` values of the contract in DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    BadUserInput,
    EmailTaken,
    InvalidCredentials,
    NotFound,
    RateLimited,
    DatabaseUnavailable,
    UpstreamUnavailable,
    InternalServerError,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::EmailTaken => "EMAIL_TAKEN",
            Self::InvalidCredentials => "INVALID_CREDENTIALS",
            Self::NotFound => "NOT_FOUND",
            Self::RateLimited => "RATE_LIMITED",
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
    /// `DATABASE_UNAVAILABLE`: the guard refused, or the query lost its connection.
    DatabaseUnavailable,
    /// `INTERNAL_SERVER_ERROR`: a database failure that is not an outage (a bug, a
    /// constraint we did not expect). Logged with its detail, sent without it.
    Database(DbErr),
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::DatabaseUnavailable => ErrorCode::DatabaseUnavailable,
            Self::Database(_) => ErrorCode::InternalServerError,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::DatabaseUnavailable => {
                "the database is unavailable right now; try again shortly".into()
            }
            Self::Database(_) => "internal server error".into(),
        }
    }
}

impl From<Unavailable> for ApiError {
    fn from(_: Unavailable) -> Self {
        Self::DatabaseUnavailable
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(err: ApiError) -> Self {
        if let ApiError::Database(cause) = &err {
            tracing::error!(error = %cause, "database query failed");
        }
        let code = err.code();
        async_graphql::Error::new(err.message())
            .extend_with(|_, ext| ext.set("code", code.as_str()))
    }
}
