//! The database guard: the one way resolvers reach the database.
//!
//! While the database is known to be unavailable it answers `DATABASE_UNAVAILABLE` at
//! once, without touching the pool; when a query fails because the connection went away
//! it reports that to [`Database`] (so the next request is refused at once too) and
//! answers with the same code. Fields behind it are nullable where the rest of a response
//! is worth having, so clients get partial data plus an error with a `path`.

use std::future::Future;

use async_graphql::Context;
use sea_orm::{DatabaseConnection, DbErr};

use super::error::ApiError;
use crate::db::{AsDbErr, Database, RunError};

/// Runs `op` with a connection if the database is available, classifying its failure.
///
/// `op` gets an owned handle (a cheap clone of the pool) so its future may outlive the
/// borrow of the context. Service errors convert into [`ApiError`]; a `DbErr` among them
/// that means "connection lost" becomes `DATABASE_UNAVAILABLE`.
pub async fn with_database<T, E, F, Fut>(ctx: &Context<'_>, op: F) -> Result<T, ApiError>
where
    F: FnOnce(DatabaseConnection) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<ApiError>,
{
    guarded(ctx, op, true).await
}

/// [`with_database`] without the in-flight bound and timeout, for `register` and `login`
/// whose password hashing has its own concurrency limit.
pub async fn with_database_unbounded<T, E, F, Fut>(ctx: &Context<'_>, op: F) -> Result<T, ApiError>
where
    F: FnOnce(DatabaseConnection) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<ApiError>,
{
    guarded(ctx, op, false).await
}

async fn guarded<T, E, F, Fut>(ctx: &Context<'_>, op: F, bounded: bool) -> Result<T, ApiError>
where
    F: FnOnce(DatabaseConnection) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<ApiError>,
{
    let db = database(ctx)?;
    let op = |conn| async move { op(conn).await.map_err(Into::into) };
    let outcome = if bounded {
        db.run(op).await
    } else {
        db.run_unbounded(op).await
    };
    outcome.map_err(into_api_error)
}

fn into_api_error(err: RunError<ApiError>) -> ApiError {
    match err {
        RunError::Unavailable => ApiError::DatabaseUnavailable,
        RunError::Busy => ApiError::DatabaseBusy,
        RunError::Failed(e) => e,
    }
}

impl AsDbErr for ApiError {
    fn as_db_err(&self) -> Option<&DbErr> {
        match self {
            ApiError::Database(e) => Some(e),
            _ => None,
        }
    }
}

/// The shared [`Database`] handle from schema data.
pub fn database<'a>(ctx: &Context<'a>) -> Result<&'a Database, ApiError> {
    ctx.data::<Database>().map_err(|_| {
        tracing::error!("schema built without a Database in its data");
        ApiError::DatabaseUnavailable
    })
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        ApiError::Database(err)
    }
}
