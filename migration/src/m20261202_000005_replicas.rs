//! What replicas share through PostgreSQL (nothing on SQLite, which one process owns):
//!
//! - `lectern_rate_limit`: sign-in limits and chat quotas counted once for all replicas,
//!   one row per limited key (a SHA-256 of what is limited, never an address or email in
//!   clear) holding its GCRA "theoretical arrival time". Unlogged: counters are not worth
//!   a WAL write, and losing them in a crash only resets the limits.
//! - `lectern_turn`: finished chat turns, so `chatTurn` and `resumeChat` find one on any
//!   replica for `TURN_RETENTION_SECS`.
//! - A trigger on `session` that announces every ended session (logout, revocation, refresh
//!   token reuse, a Better Auth sign-out, a deleted user) on the `lectern_session_ended`
//!   channel with the session's id, so each replica closes that session's WebSockets.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000005_replicas"
    }
}

const UP: &str = r#"
CREATE UNLOGGED TABLE IF NOT EXISTS lectern_rate_limit (
    key bytea PRIMARY KEY,
    tat timestamptz NOT NULL,
    allowed boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS lectern_turn (
    id text PRIMARY KEY,
    owner text,
    record jsonb NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS lectern_turn_finished_idx ON lectern_turn (finished_at);
CREATE OR REPLACE FUNCTION lectern_session_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lectern_session_ended', OLD.id);
    RETURN OLD;
END
$$;
DROP TRIGGER IF EXISTS lectern_session_ended ON session;
CREATE TRIGGER lectern_session_ended AFTER DELETE ON session
    FOR EACH ROW EXECUTE FUNCTION lectern_session_ended();
"#;

const DOWN: &str = r#"
DROP TRIGGER IF EXISTS lectern_session_ended ON session;
DROP FUNCTION IF EXISTS lectern_session_ended();
DROP TABLE IF EXISTS lectern_turn;
DROP TABLE IF EXISTS lectern_rate_limit;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
