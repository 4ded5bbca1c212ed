//! What authors learn from readers, and who the authors are:
//!
//! - `insight_turn`: every chat turn while insights are on (`INSIGHTS=on`, the default),
//!   without identity or address: the question, its normalised form (for grouping), the
//!   best retrieval score, the "not in this book" mark, and its UTC day. Kept for
//!   `INSIGHTS_RETENTION_DAYS`.
//! - `insight_citation`: the pages each of those answers cited, one row per source.
//! - `answer_rating`: one thumbs up or down (with an optional comment) per answer, keyed
//!   by its turn; `userId` is the signed-in rater, null for an anonymous one.
//! - `lectern_admin`: readers granted the author role with `lectern admin grant`.
//! - Full-text search over a reader's conversations: PostgreSQL searches with
//!   `to_tsvector` at query time (a reader has at most `HISTORY_LIMIT` conversations); on
//!   SQLite an FTS5 table `conversation_search` mirrors titles and message text, kept
//!   current by triggers.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000006_insights"
    }
}

const COMMON: &str = r#"
CREATE TABLE IF NOT EXISTS insight_turn (
    "turnId" text PRIMARY KEY,
    question text NOT NULL,
    normalized text NOT NULL,
    "bestScore" double precision NOT NULL,
    unanswered boolean NOT NULL,
    day text NOT NULL,
    "createdAt" timestamp with time zone NOT NULL
);
CREATE INDEX IF NOT EXISTS insight_turn_created_idx ON insight_turn ("createdAt");
CREATE TABLE IF NOT EXISTS insight_citation (
    "turnId" text NOT NULL REFERENCES insight_turn ("turnId") ON DELETE CASCADE,
    position integer NOT NULL,
    path text NOT NULL,
    url text,
    title text NOT NULL,
    heading text,
    PRIMARY KEY ("turnId", position)
);
CREATE INDEX IF NOT EXISTS insight_citation_path_idx ON insight_citation (path);
CREATE TABLE IF NOT EXISTS answer_rating (
    "turnId" text PRIMARY KEY,
    "messageId" text,
    "userId" text REFERENCES "user" (id) ON DELETE CASCADE,
    rating text NOT NULL,
    comment text,
    "createdAt" timestamp with time zone NOT NULL,
    "updatedAt" timestamp with time zone NOT NULL
);
CREATE INDEX IF NOT EXISTS answer_rating_updated_idx ON answer_rating ("updatedAt");
CREATE TABLE IF NOT EXISTS lectern_admin (
    "userId" text PRIMARY KEY REFERENCES "user" (id) ON DELETE CASCADE,
    "createdAt" timestamp with time zone NOT NULL
);
"#;

const SQLITE_SEARCH: &str = r#"
CREATE VIRTUAL TABLE IF NOT EXISTS conversation_search USING fts5(
    body, "conversationId" UNINDEXED, "messageId" UNINDEXED, tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO conversation_search (body, "conversationId", "messageId")
    SELECT title, id, NULL FROM conversation;
INSERT INTO conversation_search (body, "conversationId", "messageId")
    SELECT content, "conversationId", id FROM message;
CREATE TRIGGER IF NOT EXISTS conversation_search_new AFTER INSERT ON conversation BEGIN
    INSERT INTO conversation_search (body, "conversationId", "messageId") VALUES (new.title, new.id, NULL);
END;
CREATE TRIGGER IF NOT EXISTS conversation_search_renamed AFTER UPDATE OF title ON conversation BEGIN
    DELETE FROM conversation_search WHERE "conversationId" = old.id AND "messageId" IS NULL;
    INSERT INTO conversation_search (body, "conversationId", "messageId") VALUES (new.title, new.id, NULL);
END;
CREATE TRIGGER IF NOT EXISTS conversation_search_gone AFTER DELETE ON conversation BEGIN
    DELETE FROM conversation_search WHERE "conversationId" = old.id;
END;
CREATE TRIGGER IF NOT EXISTS conversation_search_message AFTER INSERT ON message BEGIN
    INSERT INTO conversation_search (body, "conversationId", "messageId") VALUES (new.content, new."conversationId", new.id);
END;
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS lectern_admin;
DROP TABLE IF EXISTS answer_rating;
DROP TABLE IF EXISTS insight_citation;
DROP TABLE IF EXISTS insight_turn;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared(COMMON).await?;
        if manager.get_database_backend() == DbBackend::Sqlite {
            conn.execute_unprepared(SQLITE_SEARCH).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Sqlite {
            for name in [
                "conversation_search_new",
                "conversation_search_renamed",
                "conversation_search_gone",
                "conversation_search_message",
            ] {
                conn.execute_unprepared(&format!("DROP TRIGGER IF EXISTS {name}"))
                    .await?;
            }
            conn.execute_unprepared("DROP TABLE IF EXISTS conversation_search")
                .await?;
        }
        conn.execute_unprepared(DOWN).await?;
        Ok(())
    }
}
