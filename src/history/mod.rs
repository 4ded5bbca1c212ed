//! Conversation history: store, list, load, rename, delete, and keep each reader to
//! `HISTORY_LIMIT` conversations.
//!
//! **The limit under concurrency.** Every write that changes a reader's history (a new
//! conversation, a turn appended to one) runs in one transaction that first takes that
//! reader's write lock: `SELECT … FROM "user" WHERE id = $1 FOR UPDATE` on PostgreSQL, and
//! on SQLite the database's single writer lock, taken by the transaction's first
//! statement, which is always a write. So a reader's history writes happen one after
//! another: a new conversation is inserted, then everything past the newest
//! `HISTORY_LIMIT` by last activity is deleted, and the count can never exceed the limit.
//! A turn appended to a conversation makes it the most recently active, so a prune that
//! runs after it cannot pick it; a prune that ran before it deleted it, and the append then
//! finds no conversation and answers `NOT_FOUND` instead of writing into nothing.

pub mod cursor;
pub mod export;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Func, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QueryResult, QuerySelect, QueryTrait,
    Statement,
};

use crate::auth::SessionRef;
use crate::auth::new_id;
use crate::db::Database;
use crate::entities::{conversation, message, user};
use cursor::ConversationCursor;
use sea_orm::sqlx::postgres::PgRow;

/// The accepted page sizes, for conversations and for messages.
pub const PAGE_SIZES: std::ops::RangeInclusive<u64> = 1..=100;
const TITLE_MAX_CHARS: usize = 200;
/// Titles derived from a first question are cut to this many characters.
const DERIVED_TITLE_CHARS: usize = 80;

#[derive(Debug)]
pub enum HistoryError {
    /// The conversation does not exist or belongs to someone else (indistinguishable).
    NotFound,
    /// A turn with this id is stored already (a replay that had been done before).
    AlreadyRecorded,
    Database(DbErr),
}

impl crate::db::AsDbErr for HistoryError {
    fn as_db_err(&self) -> Option<&DbErr> {
        match self {
            Self::Database(e) => Some(e),
            Self::NotFound | Self::AlreadyRecorded => None,
        }
    }
}

impl From<DbErr> for HistoryError {
    fn from(err: DbErr) -> Self {
        Self::Database(err)
    }
}

/// One page of a keyset-paginated list.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next_page: bool,
}

/// A conversation title: trimmed, 1–200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationTitle(String);

impl ConversationTitle {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let title = raw.trim();
        let chars = title.chars().count();
        if (1..=TITLE_MAX_CHARS).contains(&chars) && !title.chars().any(char::is_control) {
            Ok(Self(title.to_owned()))
        } else {
            Err(format!(
                "title must be 1 to {TITLE_MAX_CHARS} characters without control characters"
            ))
        }
    }

    /// A title for a new conversation from its first question: whitespace collapsed,
    /// control characters dropped, cut at a word boundary near 80 characters.
    pub fn from_question(question: &str) -> Self {
        let words: Vec<&str> = question
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|w| !w.is_empty())
            .collect();
        let mut title = String::new();
        for word in words {
            let needed =
                title.chars().count() + usize::from(!title.is_empty()) + word.chars().count();
            if needed > DERIVED_TITLE_CHARS {
                if title.is_empty() {
                    title = word.chars().take(DERIVED_TITLE_CHARS).collect();
                }
                title.push('…');
                break;
            }
            if !title.is_empty() {
                title.push(' ');
            }
            title.push_str(word);
        }
        if title.is_empty() {
            title = "New conversation".to_owned();
        }
        Self(title)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What one chat turn adds to a conversation.
#[derive(Debug, Clone)]
pub struct NewTurn {
    /// The turn's id, stored on the question and unique: recording the same turn twice
    /// answers [`HistoryError::AlreadyRecorded`].
    pub turn_id: String,
    pub question: String,
    pub answer: String,
    /// JSON array of the cited sources.
    pub sources: serde_json::Value,
    /// The book did not seem to cover the question (stored on the answer).
    pub unanswered: bool,
}

/// A turn as stored.
#[derive(Debug, Clone)]
pub struct RecordedTurn {
    pub conversation: conversation::Model,
    pub question: message::Model,
    pub answer: message::Model,
}

/// Words to look for in a reader's conversations: titles and message text. PostgreSQL
/// matches them with its full-text search (`english` configuration: stemmed, stop words
/// ignored); SQLite with FTS5 (Porter stemmer) over `conversation_search`. Every word
/// must be found, in the title or in any message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    text: String,
    words: Vec<String>,
}

/// Longest search, in characters, and most words.
const SEARCH_MAX_CHARS: usize = 200;
const SEARCH_MAX_WORDS: usize = 16;

impl Search {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let text = raw.trim();
        if text.chars().count() > SEARCH_MAX_CHARS {
            return Err(format!(
                "search must be at most {SEARCH_MAX_CHARS} characters"
            ));
        }
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        if words.is_empty() {
            return Err("search must contain at least one word".into());
        }
        if words.len() > SEARCH_MAX_WORDS {
            return Err(format!("search must have at most {SEARCH_MAX_WORDS} words"));
        }
        Ok(Self {
            text: words.join(" "),
            words,
        })
    }

    /// The condition on `conversation` rows.
    fn condition(&self, backend: DatabaseBackend) -> sea_orm::sea_query::SimpleExpr {
        match backend {
            DatabaseBackend::Postgres => Expr::cust_with_values(
                r#"(to_tsvector('english', "conversation"."title") @@ plainto_tsquery('english', $1)
                   OR EXISTS (SELECT 1 FROM "message" m WHERE m."conversationId" = "conversation"."id"
                              AND to_tsvector('english', m."content") @@ plainto_tsquery('english', $1)))"#,
                [self.bound(backend)],
            ),
            _ => Expr::cust_with_values(
                r#""conversation"."id" IN (SELECT "conversationId" FROM conversation_search WHERE conversation_search MATCH ?)"#,
                [self.bound(backend)],
            ),
        }
    }

    /// The value [`Search::condition`] binds.
    fn bound(&self, backend: DatabaseBackend) -> String {
        match backend {
            DatabaseBackend::Postgres => self.text.clone(),
            // Each word as an FTS5 string, so nothing in it is query syntax.
            _ => self
                .words
                .iter()
                .map(|w| format!("\"{w}\""))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// A reader's conversations, most recently active first (only those that match `search`,
/// when given).
pub async fn list_conversations(
    db: &Database,
    user_id: &str,
    first: u64,
    after: Option<&ConversationCursor>,
    search: Option<&Search>,
) -> Result<Page<conversation::Model>, DbErr> {
    let page = PageRequest {
        user_id,
        first,
        after,
        search,
        session: None,
    };
    page_rows(db, &page)
        .await
        .map(|items| Page::of(items, first))
}

/// [`list_conversations`] for the reader behind session `session_id`, with the check that
/// the session is live folded into the same statement: one round trip instead of two on
/// the hottest read. `None` when the session is not live (expired, logged out, or not
/// this reader's). Only an empty page costs the separate check, to tell "no
/// conversations yet" from "no session".
pub async fn list_conversations_in_session(
    db: &Database,
    session: &SessionRef,
    user_id: &str,
    first: u64,
    after: Option<&ConversationCursor>,
    search: Option<&Search>,
) -> Result<Option<Page<conversation::Model>>, DbErr> {
    let page = PageRequest {
        user_id,
        first,
        after,
        search,
        session: Some(session),
    };
    let items = page_rows(db, &page).await?;
    let conn = db.connection();
    // The rare second query's future on the heap, so it does not enlarge every page's
    // (`Database::run_with` says why that matters).
    if items.is_empty()
        && Box::pin(crate::auth::user_id_of_session(conn, session))
            .await?
            .is_none()
    {
        return Ok(None);
    }
    Ok(Some(Page::of(items, first)))
}

/// The conversations a page's statement selects, each read by the position of its column
/// in [`PAGE_COLUMNS`] rather than by name: a page of 21 rows did 105 name lookups,
/// hashing each column's name (`docs/benchmarks.md` §8). Read through [`Database::read`],
/// on a connection kept warm on PostgreSQL.
async fn page_rows(
    db: &Database,
    page: &PageRequest<'_>,
) -> Result<Vec<conversation::Model>, DbErr> {
    let stmt = page.statement(db.connection().get_database_backend(), Utc::now());
    let rows: Vec<ByPosition> = db.read_batched(stmt).await?;
    Ok(rows.into_iter().map(|row| row.0).collect())
}

/// What one page of a reader's conversations is asked with.
struct PageRequest<'a> {
    user_id: &'a str,
    first: u64,
    after: Option<&'a ConversationCursor>,
    search: Option<&'a Search>,
    /// The session to check in the same statement ([`list_conversations_in_session`]).
    session: Option<&'a SessionRef>,
}

/// A page statement's SQL text by its shape ([`PageRequest::shape`]): sea-query builds
/// it for the first page of each shape, later pages bind their values to the same text.
/// Building the statement was a tenth of a history page's instructions
/// (`docs/benchmarks.md` §8).
static PAGE_SQL: [std::sync::OnceLock<String>; 24] = [const { std::sync::OnceLock::new() }; 24];

impl PageRequest<'_> {
    /// What the SQL text depends on: the backend, whether search and cursor are there,
    /// and the kind of session checked, if any. Everything else is a bound value.
    fn shape(&self, backend: DatabaseBackend) -> usize {
        let session = match self.session {
            None => 0,
            Some(SessionRef::Id { .. }) => 1,
            Some(SessionRef::BetterAuthToken(_)) => 2,
        };
        usize::from(backend == DatabaseBackend::Postgres)
            | usize::from(self.search.is_some()) << 1
            | usize::from(self.after.is_some()) << 2
            | session << 3
    }

    fn statement(&self, backend: DatabaseBackend, now: DateTime<Utc>) -> Statement {
        let sql = PAGE_SQL[self.shape(backend)].get_or_init(|| self.build(backend, now).sql);
        Statement::from_sql_and_values(backend, sql.as_str(), self.values(backend, now))
    }

    /// The statement as sea-query builds it: the reader's conversations, newest activity
    /// first, from `after` on, one more than asked for (to know whether there is a next
    /// page).
    fn build(&self, backend: DatabaseBackend, now: DateTime<Utc>) -> Statement {
        let mut query = conversation::Entity::find()
            .select_only()
            .columns(PAGE_COLUMNS)
            .filter(conversation::Column::UserId.eq(self.user_id));
        if let Some(search) = self.search {
            query = query.filter(search.condition(backend));
        }
        if let Some(after) = self.after {
            query = query.filter(
                Condition::any()
                    .add(conversation::Column::UpdatedAt.lt(after.updated_at))
                    .add(
                        Condition::all()
                            .add(conversation::Column::UpdatedAt.eq(after.updated_at))
                            .add(conversation::Column::Id.lt(after.id.as_str())),
                    ),
            );
        }
        query = query
            .order_by_desc(conversation::Column::UpdatedAt)
            .order_by_desc(conversation::Column::Id)
            .limit(self.first + 1);
        if let Some(session) = self.session {
            let live = session
                .live_at(now)
                .select_only()
                .expr(Expr::val(1))
                .into_query();
            query = query.filter(Expr::exists(live));
        }
        query.build(backend)
    }

    /// The values [`PageRequest::build`] binds, in the order its text asks for them (a
    /// test holds the two together for every shape).
    fn values(&self, backend: DatabaseBackend, now: DateTime<Utc>) -> Vec<sea_orm::Value> {
        let mut values = vec![sea_orm::Value::from(self.user_id)];
        if let Some(search) = self.search {
            // PostgreSQL's condition names its value twice, and each is bound.
            let times = if backend == DatabaseBackend::Postgres {
                2
            } else {
                1
            };
            let bound = search.bound(backend);
            values.extend(std::iter::repeat_n(bound, times).map(sea_orm::Value::from));
        }
        if let Some(after) = self.after {
            values.push(after.updated_at.into());
            values.push(after.updated_at.into());
            values.push(after.id.as_str().into());
        }
        if let Some(session) = self.session {
            // `SELECT 1` binds its 1, then the live session's values.
            values.push(1i32.into());
            values.push(now.into());
            values.extend(session.live_values());
        }
        values.push((self.first + 1).into());
        values
    }
}

/// What a page's statement selects, in this order: [`ByPosition`] reads them by position.
const PAGE_COLUMNS: [conversation::Column; 5] = [
    conversation::Column::Id,
    conversation::Column::UserId,
    conversation::Column::Title,
    conversation::Column::CreatedAt,
    conversation::Column::UpdatedAt,
];

struct ByPosition(conversation::Model);

impl crate::db::ReadRow for ByPosition {
    fn from_pg_rows(rows: &[PgRow]) -> Result<Vec<Self>, DbErr> {
        use crate::db::{pg_column, pg_time};
        rows.iter()
            .enumerate()
            .map(|(i, row)| {
                let check = i == 0;
                Ok(Self(conversation::Model {
                    id: pg_column(row, 0, check)?,
                    user_id: pg_column(row, 1, check)?,
                    title: pg_column(row, 2, check)?,
                    created_at: pg_time(row, 3, check)?,
                    updated_at: pg_time(row, 4, check)?,
                }))
            })
            .collect()
    }
}

impl FromQueryResult for ByPosition {
    fn from_query_result(row: &QueryResult, _prefix: &str) -> Result<Self, DbErr> {
        Ok(Self(conversation::Model {
            id: row.try_get_by_index(0)?,
            user_id: row.try_get_by_index(1)?,
            title: row.try_get_by_index(2)?,
            created_at: row.try_get_by_index(3)?,
            updated_at: row.try_get_by_index(4)?,
        }))
    }
}

impl<T> Page<T> {
    /// From up to `first + 1` rows: the first `first`, and whether there were more.
    fn of(mut items: Vec<T>, first: u64) -> Self {
        let has_next_page = items.len() as u64 > first;
        items.truncate(first as usize);
        Self {
            items,
            has_next_page,
        }
    }
}

/// One conversation, if it exists and belongs to `user_id`.
pub async fn find_conversation(
    conn: &DatabaseConnection,
    user_id: &str,
    id: &str,
) -> Result<Option<conversation::Model>, DbErr> {
    if !cursor::valid_id(id) {
        return Ok(None);
    }
    conversation::Entity::find_by_id(id)
        .filter(conversation::Column::UserId.eq(user_id))
        .one(conn)
        .await
}

/// Every message of a conversation, oldest first. The caller has checked ownership.
pub async fn all_messages(
    conn: &DatabaseConnection,
    conversation_id: &str,
) -> Result<Vec<message::Model>, DbErr> {
    message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .order_by_asc(message::Column::Id)
        .all(conn)
        .await
}

/// A conversation's messages, oldest first. The caller has checked ownership.
pub async fn list_messages(
    conn: &DatabaseConnection,
    conversation_id: &str,
    first: u64,
    after: Option<&str>,
) -> Result<Page<message::Model>, DbErr> {
    let mut query =
        message::Entity::find().filter(message::Column::ConversationId.eq(conversation_id));
    if let Some(after) = after {
        query = query.filter(message::Column::Id.gt(after));
    }
    let mut items = query
        .order_by_asc(message::Column::Id)
        .limit(first + 1)
        .all(conn)
        .await?;
    let has_next_page = items.len() as u64 > first;
    items.truncate(first as usize);
    Ok(Page {
        items,
        has_next_page,
    })
}

#[derive(FromQueryResult)]
struct LatestId {
    id: Option<String>,
}

/// The newest message of each given conversation, in two queries whatever their number.
pub async fn latest_messages(
    conn: &DatabaseConnection,
    conversation_ids: &[String],
) -> Result<HashMap<String, message::Model>, DbErr> {
    if conversation_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let newest_ids: Vec<String> = LatestId::find_by_statement(
        conn.get_database_backend().build(
            Query::select()
                .expr_as(Func::max(Expr::col(message::Column::Id)), "id")
                .from(message::Entity)
                .and_where(message::Column::ConversationId.is_in(conversation_ids.iter().cloned()))
                .group_by_col(message::Column::ConversationId),
        ),
    )
    .all(conn)
    .await?
    .into_iter()
    .filter_map(|row| row.id)
    .collect();
    let messages = message::Entity::find()
        .filter(message::Column::Id.is_in(newest_ids))
        .all(conn)
        .await?;
    Ok(messages
        .into_iter()
        .map(|m| (m.conversation_id.clone(), m))
        .collect())
}

/// The last `turns` user/assistant pairs of a conversation, oldest first, for a prompt.
pub async fn last_messages(
    conn: &DatabaseConnection,
    user_id: &str,
    conversation_id: &str,
    count: u64,
) -> Result<Vec<message::Model>, HistoryError> {
    if find_conversation(conn, user_id, conversation_id)
        .await?
        .is_none()
    {
        return Err(HistoryError::NotFound);
    }
    let mut newest = message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .order_by_desc(message::Column::Id)
        .limit(count)
        .all(conn)
        .await?;
    newest.reverse();
    Ok(newest)
}

/// Stores one turn: into `conversation_id` when given (it must be the reader's), else
/// into a new conversation titled after the question, pruning the reader's history to
/// `limit` in the same transaction. Both messages are written or neither is.
pub async fn record_turn(
    conn: &DatabaseConnection,
    user_id: &str,
    conversation_id: Option<&str>,
    turn: NewTurn,
    limit: u32,
) -> Result<RecordedTurn, HistoryError> {
    let txn = crate::db::begin_write(conn).await?;
    lock_reader(&txn, user_id).await?;
    let seen = message::Entity::find()
        .filter(message::Column::TurnId.eq(&turn.turn_id))
        .one(&txn)
        .await?;
    if seen.is_some() {
        return Err(HistoryError::AlreadyRecorded);
    }
    let now = Utc::now();
    let conversation = match conversation_id {
        Some(id) => {
            if !cursor::valid_id(id) {
                return Err(HistoryError::NotFound);
            }
            let touched = conversation::Entity::update_many()
                .col_expr(conversation::Column::UpdatedAt, Expr::value(now))
                .filter(conversation::Column::Id.eq(id))
                .filter(conversation::Column::UserId.eq(user_id))
                .exec(&txn)
                .await?
                .rows_affected;
            if touched == 0 {
                return Err(HistoryError::NotFound);
            }
            conversation::Entity::find_by_id(id)
                .one(&txn)
                .await?
                .ok_or(HistoryError::NotFound)?
        }
        None => {
            let created = conversation::Model {
                id: new_id(),
                user_id: user_id.to_owned(),
                title: ConversationTitle::from_question(&turn.question).0,
                created_at: now,
                updated_at: now,
            };
            conversation::Entity::insert(conversation::ActiveModel::from(created.clone()))
                .exec_without_returning(&txn)
                .await?;
            prune(&txn, user_id, limit).await?;
            tracing::info!(conversation_id = %created.id, user_id, "conversation created");
            created
        }
    };
    let question = message::Model {
        turn_id: Some(turn.turn_id),
        ..new_message(
            &conversation.id,
            "user",
            turn.question,
            serde_json::json!([]),
        )
    };
    let answer = message::Model {
        unanswered: turn.unanswered,
        ..new_message(&conversation.id, "assistant", turn.answer, turn.sources)
    };
    let inserted = message::Entity::insert_many([
        message::ActiveModel::from(question.clone()),
        message::ActiveModel::from(answer.clone()),
    ])
    .exec_without_returning(&txn)
    .await;
    if let Err(e) = inserted {
        // Two replays of one turn at once: the unique index lets one through.
        return Err(match e.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => HistoryError::AlreadyRecorded,
            _ => HistoryError::Database(e),
        });
    }
    txn.commit().await?;
    Ok(RecordedTurn {
        conversation,
        question,
        answer,
    })
}

fn new_message(
    conversation_id: &str,
    role: &str,
    content: String,
    sources: serde_json::Value,
) -> message::Model {
    message::Model {
        id: new_id(),
        conversation_id: conversation_id.to_owned(),
        role: role.to_owned(),
        content,
        sources,
        created_at: Utc::now(),
        turn_id: None,
        unanswered: false,
    }
}

/// Serialises a reader's history writes (see the module docs). SQLite needs nothing here:
/// the transaction's first write takes the database's writer lock.
async fn lock_reader(txn: &impl ConnectionTrait, user_id: &str) -> Result<(), DbErr> {
    if txn.get_database_backend() == DatabaseBackend::Postgres {
        user::Entity::find_by_id(user_id)
            .select_only()
            .column(user::Column::Id)
            .lock_exclusive()
            .into_tuple::<String>()
            .one(txn)
            .await?;
    }
    Ok(())
}

/// Deletes the reader's conversations beyond the `limit` most recently active.
async fn prune(txn: &impl ConnectionTrait, user_id: &str, limit: u32) -> Result<(), DbErr> {
    let doomed: Vec<String> = conversation::Entity::find()
        .select_only()
        .column(conversation::Column::Id)
        .filter(conversation::Column::UserId.eq(user_id))
        .order_by_desc(conversation::Column::UpdatedAt)
        .order_by_desc(conversation::Column::Id)
        .offset(u64::from(limit))
        // SQLite accepts OFFSET only after a LIMIT; this one limits nothing.
        .limit(i64::MAX as u64)
        .into_tuple()
        .all(txn)
        .await?;
    if doomed.is_empty() {
        return Ok(());
    }
    conversation::Entity::delete_many()
        .filter(conversation::Column::Id.is_in(doomed.iter().cloned()))
        .exec(txn)
        .await?;
    tracing::info!(user_id, pruned = ?doomed, "conversations pruned to the history limit");
    Ok(())
}

/// Renames a reader's conversation; `None` when it is not theirs or does not exist.
pub async fn rename(
    conn: &DatabaseConnection,
    user_id: &str,
    id: &str,
    title: &ConversationTitle,
) -> Result<Option<conversation::Model>, DbErr> {
    if !cursor::valid_id(id) {
        return Ok(None);
    }
    let renamed = conversation::Entity::update_many()
        .col_expr(conversation::Column::Title, Expr::value(title.as_str()))
        .filter(conversation::Column::Id.eq(id))
        .filter(conversation::Column::UserId.eq(user_id))
        .exec(conn)
        .await?
        .rows_affected;
    if renamed == 0 {
        return Ok(None);
    }
    tracing::info!(conversation_id = id, user_id, "conversation renamed");
    find_conversation(conn, user_id, id).await
}

/// Deletes a reader's conversation and its messages; `false` when it is not theirs.
pub async fn delete(conn: &DatabaseConnection, user_id: &str, id: &str) -> Result<bool, DbErr> {
    if !cursor::valid_id(id) {
        return Ok(false);
    }
    let deleted = conversation::Entity::delete_many()
        .filter(conversation::Column::Id.eq(id))
        .filter(conversation::Column::UserId.eq(user_id))
        .exec(conn)
        .await?
        .rows_affected
        > 0;
    if deleted {
        tracing::info!(conversation_id = id, user_id, "conversation deleted");
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_shape_binds_what_sea_query_binds_in_its_order() {
        let now = Utc::now();
        let after = ConversationCursor {
            updated_at: now - chrono::Duration::minutes(5),
            id: "0193a0a0-0000-7000-8000-000000000001".into(),
        };
        let search = Search::parse("tides and currents").unwrap();
        let sessions = [
            SessionRef::Id {
                id: "session-1".into(),
                user_id: "reader-1".into(),
            },
            SessionRef::BetterAuthToken("token-1".into()),
        ];
        let mut shapes = std::collections::HashSet::new();
        for backend in [DatabaseBackend::Postgres, DatabaseBackend::Sqlite] {
            for bits in 0..8 {
                for session in &sessions {
                    let page = PageRequest {
                        user_id: "reader-1",
                        first: 20,
                        after: (bits & 1 != 0).then_some(&after),
                        search: (bits & 2 != 0).then_some(&search),
                        session: (bits & 4 != 0).then_some(session),
                    };
                    let built = page.build(backend, now);
                    assert_eq!(
                        built.values.as_ref().map(|v| &v.0),
                        Some(&page.values(backend, now)),
                        "{}",
                        built.sql
                    );
                    shapes.insert(page.shape(backend));
                    // Cached or not, the statement is the one sea-query builds.
                    assert_eq!(page.statement(backend, now), built);
                    assert_eq!(page.statement(backend, now), built);
                }
            }
        }
        assert_eq!(shapes.len(), PAGE_SQL.len());
    }

    #[test]
    fn titles_are_trimmed_and_bounded() {
        assert_eq!(
            ConversationTitle::parse("  Chapter 3 ").unwrap().as_str(),
            "Chapter 3"
        );
        assert!(ConversationTitle::parse(" ").is_err());
        assert!(ConversationTitle::parse(&"x".repeat(201)).is_err());
        assert!(ConversationTitle::parse(&"é".repeat(200)).is_ok());
        assert!(ConversationTitle::parse("a\nb").is_err());
    }

    #[test]
    fn titles_from_questions_are_short_and_clean() {
        assert_eq!(
            ConversationTitle::from_question("  What is\n\ta borrow   checker? ").as_str(),
            "What is a borrow checker?"
        );
        let long = "word ".repeat(40);
        let title = ConversationTitle::from_question(&long);
        assert!(title.as_str().chars().count() <= DERIVED_TITLE_CHARS + 1);
        assert!(title.as_str().ends_with('…'));
        assert_eq!(
            ConversationTitle::from_question(" \n ").as_str(),
            "New conversation"
        );
        let one_long_word = "x".repeat(500);
        assert!(
            ConversationTitle::from_question(&one_long_word)
                .as_str()
                .chars()
                .count()
                <= DERIVED_TITLE_CHARS + 1
        );
    }
}
