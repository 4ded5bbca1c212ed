//! What the book's author learns from readers: ratings of answers, the questions asked
//! per day, those the book did not answer, thumbs-down answers, the pages cited most and
//! never, and the most frequent questions; and who the authors are (`ADMIN_EMAILS` and
//! `lectern admin grant`).
//!
//! **What is kept** (README, "Insights"): while `INSIGHTS` is on (the default), every chat
//! turn, anonymous or signed in, is recorded in `insight_turn` *without identity or
//! address*: the question, its normalised form, the best retrieval score, the "not in
//! this book" mark and the pages it cited. Ratings keep the rater's user id when signed in
//! (so a reader can change their own rating), nothing otherwise. Both are deleted after
//! `INSIGHTS_RETENTION_DAYS` by a background task.
//!
//! Every query here is plain SQL that both databases run, with `$n` placeholders that
//! [`statement`] turns into SQLite's `?n`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, Statement, Value,
};
use tokio_util::sync::CancellationToken;
use unicode_normalization::UnicodeNormalization as _;

use crate::chat::SourceRef;
use crate::db::Database;

/// Longest comment on a rating, in characters.
pub const COMMENT_MAX_CHARS: usize = 2_000;

/// A statement for `backend` from SQL written with PostgreSQL's `$n` placeholders.
pub fn statement(backend: DbBackend, sql: &str, values: Vec<Value>) -> Statement {
    let sql = match backend {
        DbBackend::Sqlite => sql.replace('$', "?"),
        _ => sql.to_owned(),
    };
    Statement::from_sql_and_values(backend, sql, values)
}

/// A question as grouped for "most frequent": NFKC, lower case, letters and digits only,
/// single spaces. "How do I log in?" and "how do i log in" are one question.
pub fn normalize(question: &str) -> String {
    let folded: String = question
        .nfkc()
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A thumbs up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rating {
    Up,
    Down,
}

impl Rating {
    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Up => "UP",
            Rating::Down => "DOWN",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "UP" => Some(Rating::Up),
            "DOWN" => Some(Rating::Down),
            _ => None,
        }
    }
}

/// A comment on a rating: trimmed, at most [`COMMENT_MAX_CHARS`], no control characters
/// but line breaks and tabs; empty is none.
pub fn parse_comment(comment: Option<String>) -> Result<Option<String>, String> {
    let Some(comment) = comment
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
    else {
        return Ok(None);
    };
    if comment.chars().count() > COMMENT_MAX_CHARS {
        return Err(format!(
            "comment must be at most {COMMENT_MAX_CHARS} characters"
        ));
    }
    if comment
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(
            "comment must not contain control characters other than tab and line breaks".into(),
        );
    }
    Ok(Some(comment))
}

/// A stored rating.
#[derive(Debug, Clone)]
pub struct StoredRating {
    pub turn_id: String,
    pub rating: Rating,
    pub comment: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug)]
pub enum RateError {
    /// No such answer, or not the rater's.
    NotFound,
    Database(DbErr),
}

impl From<DbErr> for RateError {
    fn from(e: DbErr) -> Self {
        RateError::Database(e)
    }
}

impl crate::db::AsDbErr for RateError {
    fn as_db_err(&self) -> Option<&DbErr> {
        match self {
            RateError::Database(e) => Some(e),
            RateError::NotFound => None,
        }
    }
}

/// Records one finished turn (no identity, no address). A turn recorded before (a
/// replay) is left as it is.
pub async fn record_turn(
    conn: &DatabaseConnection,
    turn_id: &str,
    question: &str,
    sources: &[SourceRef],
    best_score: f64,
    unanswered: bool,
) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    let now = Utc::now();
    let txn = sea_orm::TransactionTrait::begin(conn).await?;
    let inserted = txn
        .execute_raw(statement(
            backend,
            r#"INSERT INTO insight_turn ("turnId", question, normalized, "bestScore", unanswered, day, "createdAt")
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT ("turnId") DO NOTHING"#,
            vec![
                turn_id.into(),
                question.into(),
                normalize(question).into(),
                best_score.into(),
                unanswered.into(),
                now.format("%Y-%m-%d").to_string().into(),
                now.into(),
            ],
        ))
        .await?
        .rows_affected();
    if inserted == 1 {
        for (position, source) in sources.iter().enumerate() {
            txn.execute_raw(statement(
                backend,
                r#"INSERT INTO insight_citation ("turnId", position, path, url, title, heading)
                   VALUES ($1, $2, $3, $4, $5, $6)"#,
                vec![
                    turn_id.into(),
                    (position as i32).into(),
                    source.path.clone().into(),
                    source.url.clone().into(),
                    source.title.clone().into(),
                    Some(source.heading.clone())
                        .filter(|h| !h.is_empty())
                        .into(),
                ],
            ))
            .await?;
        }
    }
    txn.commit().await
}

/// Rates an answer of the signed-in reader `user_id`, named by its message id.
pub async fn rate_message(
    conn: &DatabaseConnection,
    user_id: &str,
    message_id: &str,
    rating: Rating,
    comment: Option<String>,
) -> Result<StoredRating, RateError> {
    let backend = conn.get_database_backend();
    if !crate::history::cursor::valid_id(message_id) {
        return Err(RateError::NotFound);
    }
    // The answer, in a conversation of this reader's, and the turn its question began.
    let found = conn
        .query_one_raw(statement(
            backend,
            r#"SELECT q."turnId" AS turn FROM message a
               JOIN conversation c ON c.id = a."conversationId"
               JOIN message q ON q."conversationId" = a."conversationId" AND q.role = 'user' AND q.id < a.id
               WHERE a.id = $1 AND a.role = 'assistant' AND c."userId" = $2
               ORDER BY q.id DESC LIMIT 1"#,
            vec![message_id.into(), user_id.into()],
        ))
        .await?;
    let turn_id: Option<String> = match found {
        Some(row) => row.try_get("", "turn")?,
        None => return Err(RateError::NotFound),
    };
    // Answers stored before turns had ids are rated by their message id.
    let turn_id = turn_id.unwrap_or_else(|| format!("message:{message_id}"));
    upsert(
        conn,
        &turn_id,
        Some(message_id),
        Some(user_id),
        rating,
        comment,
    )
    .await
}

/// Rates a turn by its id (anonymous readers; the unguessable id is the key). The turn
/// must be recorded; a rating a signed-in reader made is theirs alone to change.
pub async fn rate_turn(
    conn: &DatabaseConnection,
    rater: Option<&str>,
    turn_id: &str,
    rating: Rating,
    comment: Option<String>,
) -> Result<StoredRating, RateError> {
    let backend = conn.get_database_backend();
    if uuid::Uuid::parse_str(turn_id).is_err() {
        return Err(RateError::NotFound);
    }
    let recorded = conn
        .query_one_raw(statement(
            backend,
            r#"SELECT t."turnId", r."userId" AS rater FROM insight_turn t
               LEFT JOIN answer_rating r ON r."turnId" = t."turnId"
               WHERE t."turnId" = $1"#,
            vec![turn_id.into()],
        ))
        .await?
        .ok_or(RateError::NotFound)?;
    let earlier: Option<String> = recorded.try_get("", "rater")?;
    if earlier.is_some() && earlier.as_deref() != rater {
        return Err(RateError::NotFound);
    }
    upsert(conn, turn_id, None, rater, rating, comment).await
}

async fn upsert(
    conn: &DatabaseConnection,
    turn_id: &str,
    message_id: Option<&str>,
    user_id: Option<&str>,
    rating: Rating,
    comment: Option<String>,
) -> Result<StoredRating, RateError> {
    let now = Utc::now();
    conn.execute_raw(statement(
        conn.get_database_backend(),
        r#"INSERT INTO answer_rating ("turnId", "messageId", "userId", rating, comment, "createdAt", "updatedAt")
           VALUES ($1, $2, $3, $4, $5, $6, $6)
           ON CONFLICT ("turnId") DO UPDATE SET
             rating = excluded.rating, comment = excluded.comment, "updatedAt" = excluded."updatedAt",
             "messageId" = coalesce(excluded."messageId", answer_rating."messageId"),
             "userId" = coalesce(excluded."userId", answer_rating."userId")"#,
        vec![
            turn_id.into(),
            message_id.map(str::to_owned).into(),
            user_id.map(str::to_owned).into(),
            rating.as_str().into(),
            comment.clone().into(),
            now.into(),
        ],
    ))
    .await?;
    Ok(StoredRating {
        turn_id: turn_id.to_owned(),
        rating,
        comment,
        updated_at: now,
    })
}

/// Whether the reader is one of the book's authors: their email is in `ADMIN_EMAILS`, or
/// they were granted the role with `lectern admin grant`.
pub async fn is_admin(
    conn: &DatabaseConnection,
    user_id: &str,
    admin_emails: &[String],
) -> Result<bool, DbErr> {
    let row = conn
        .query_one_raw(statement(
            conn.get_database_backend(),
            r#"SELECT u.email, (SELECT count(*) FROM lectern_admin a WHERE a."userId" = u.id) AS granted
               FROM "user" u WHERE u.id = $1"#,
            vec![user_id.into()],
        ))
        .await?;
    let Some(row) = row else { return Ok(false) };
    let email: String = row.try_get("", "email")?;
    let granted: i64 = row.try_get("", "granted")?;
    Ok(granted > 0 || admin_emails.iter().any(|e| e == &email))
}

/// Grants (`true`) or revokes the author role of the reader with this email; `false` when
/// there is no such reader.
pub async fn set_admin(conn: &DatabaseConnection, email: &str, admin: bool) -> Result<bool, DbErr> {
    let backend = conn.get_database_backend();
    let Some(row) = conn
        .query_one_raw(statement(
            backend,
            r#"SELECT id FROM "user" WHERE email = $1"#,
            vec![email.into()],
        ))
        .await?
    else {
        return Ok(false);
    };
    let user_id: String = row.try_get("", "id")?;
    let change = if admin {
        statement(
            backend,
            r#"INSERT INTO lectern_admin ("userId", "createdAt") VALUES ($1, $2) ON CONFLICT ("userId") DO NOTHING"#,
            vec![user_id.into(), Utc::now().into()],
        )
    } else {
        statement(
            backend,
            r#"DELETE FROM lectern_admin WHERE "userId" = $1"#,
            vec![user_id.into()],
        )
    };
    conn.execute_raw(change).await?;
    Ok(true)
}

/// The window an insights report covers: `[from, to)`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct DayCount {
    pub day: String,
    pub questions: i64,
    pub unanswered: i64,
}

/// A page an answer cited.
#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct Citation {
    pub path: String,
    pub url: Option<String>,
    pub title: String,
}

#[derive(Debug, Clone)]
pub struct TurnInsight {
    pub turn_id: String,
    pub question: Option<String>,
    pub asked_at: Option<DateTime<Utc>>,
    pub best_score: Option<f64>,
    pub comment: Option<String>,
    pub rated_at: Option<DateTime<Utc>>,
    pub cited: Vec<Citation>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PageCount {
    pub page: Citation,
    pub citations: i64,
}

#[derive(Debug, Clone, PartialEq, FromQueryResult)]
pub struct QuestionCount {
    pub question: String,
    pub normalized: String,
    pub count: i64,
}

/// A row of [`most_cited`].
#[derive(FromQueryResult)]
struct CitedRow {
    path: String,
    url: Option<String>,
    title: String,
    citations: i64,
}

fn window_values(window: Window) -> Vec<Value> {
    vec![window.from.into(), window.to.into()]
}

/// `$1, $2` the window, `$3` the page size, `$4` the offset.
fn paged_values(window: Window, first: u64, offset: u64) -> Vec<Value> {
    vec![
        window.from.into(),
        window.to.into(),
        (first as i64).into(),
        (offset as i64).into(),
    ]
}

pub async fn questions_per_day(
    conn: &DatabaseConnection,
    window: Window,
) -> Result<Vec<DayCount>, DbErr> {
    DayCount::find_by_statement(statement(
        conn.get_database_backend(),
        r#"SELECT day, count(*) AS questions, sum(CASE WHEN unanswered THEN 1 ELSE 0 END) AS unanswered
           FROM insight_turn WHERE "createdAt" >= $1 AND "createdAt" < $2
           GROUP BY day ORDER BY day"#,
        window_values(window),
    ))
    .all(conn)
    .await
}

/// Turns the book did not answer, newest first.
pub async fn unanswered(
    conn: &DatabaseConnection,
    window: Window,
    first: u64,
    offset: u64,
) -> Result<Vec<TurnInsight>, DbErr> {
    let sql = r#"SELECT "turnId", question, "createdAt", "bestScore" FROM insight_turn
               WHERE unanswered AND "createdAt" >= $1 AND "createdAt" < $2
               ORDER BY "createdAt" DESC, "turnId" LIMIT $3 OFFSET $4"#;
    turns(conn, sql, paged_values(window, first, offset), false).await
}

/// Answers rated down within the window, most recent rating first, with their question
/// and cited pages where the turn was recorded.
pub async fn thumbs_down(
    conn: &DatabaseConnection,
    window: Window,
    first: u64,
    offset: u64,
) -> Result<Vec<TurnInsight>, DbErr> {
    let sql = r#"SELECT r."turnId", r.comment, r."updatedAt", t.question, t."createdAt", t."bestScore"
               FROM answer_rating r LEFT JOIN insight_turn t ON t."turnId" = r."turnId"
               WHERE r.rating = 'DOWN' AND r."updatedAt" >= $1 AND r."updatedAt" < $2
               ORDER BY r."updatedAt" DESC, r."turnId" LIMIT $3 OFFSET $4"#;
    turns(conn, sql, paged_values(window, first, offset), true).await
}

/// A page of turns read by `sql` (rows as [`turn_of`] reads them), with their cited pages.
async fn turns(
    conn: &DatabaseConnection,
    sql: &str,
    values: Vec<Value>,
    rated: bool,
) -> Result<Vec<TurnInsight>, DbErr> {
    let rows = conn
        .query_all_raw(statement(conn.get_database_backend(), sql, values))
        .await?;
    let turns = rows
        .iter()
        .map(|row| turn_of(row, rated))
        .collect::<Result<_, _>>()?;
    with_citations(conn, turns).await
}

/// A turn of [`unanswered`] or [`thumbs_down`]: its id, question, time and score (null
/// for a rated turn that was not recorded), and for a rated one the comment and when.
fn turn_of(row: &sea_orm::QueryResult, rated: bool) -> Result<TurnInsight, DbErr> {
    Ok(TurnInsight {
        turn_id: row.try_get("", "turnId")?,
        question: row.try_get("", "question")?,
        asked_at: row.try_get("", "createdAt")?,
        best_score: row.try_get("", "bestScore")?,
        comment: if rated {
            row.try_get("", "comment")?
        } else {
            None
        },
        rated_at: if rated {
            Some(row.try_get("", "updatedAt")?)
        } else {
            None
        },
        cited: Vec::new(),
    })
}

/// The pages each turn cited, in order: one query for the whole page of turns.
async fn with_citations(
    conn: &DatabaseConnection,
    mut turns: Vec<TurnInsight>,
) -> Result<Vec<TurnInsight>, DbErr> {
    if turns.is_empty() {
        return Ok(turns);
    }
    #[derive(FromQueryResult)]
    struct CitationRow {
        #[sea_orm(from_alias = "turnId")]
        turn_id: String,
        path: String,
        url: Option<String>,
        title: String,
    }
    let placeholders: Vec<String> = (1..=turns.len()).map(|n| format!("${n}")).collect();
    let rows = CitationRow::find_by_statement(statement(
        conn.get_database_backend(),
        &format!(
            r#"SELECT "turnId", path, url, title FROM insight_citation
               WHERE "turnId" IN ({}) ORDER BY "turnId", position"#,
            placeholders.join(", ")
        ),
        turns.iter().map(|t| t.turn_id.clone().into()).collect(),
    ))
    .all(conn)
    .await?;
    let mut cited: std::collections::HashMap<String, Vec<Citation>> = Default::default();
    for row in rows {
        cited.entry(row.turn_id).or_default().push(Citation {
            path: row.path,
            url: row.url,
            title: row.title,
        });
    }
    for turn in &mut turns {
        turn.cited = cited.remove(&turn.turn_id).unwrap_or_default();
    }
    Ok(turns)
}

/// The pages answers cited most within the window.
pub async fn most_cited(
    conn: &DatabaseConnection,
    window: Window,
    first: u64,
    offset: u64,
) -> Result<Vec<PageCount>, DbErr> {
    let values = paged_values(window, first, offset);
    let rows = CitedRow::find_by_statement(statement(
        conn.get_database_backend(),
        r#"SELECT c.path, max(c.url) AS url, max(c.title) AS title, count(*) AS citations
           FROM insight_citation c JOIN insight_turn t ON t."turnId" = c."turnId"
           WHERE t."createdAt" >= $1 AND t."createdAt" < $2
           GROUP BY c.path ORDER BY citations DESC, c.path LIMIT $3 OFFSET $4"#,
        values,
    ))
    .all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| PageCount {
            page: Citation {
                path: row.path,
                url: row.url,
                title: row.title,
            },
            citations: row.citations,
        })
        .collect())
}

/// Every page cited at least once within the window.
pub async fn cited_paths(
    conn: &DatabaseConnection,
    window: Window,
) -> Result<std::collections::BTreeSet<String>, DbErr> {
    let rows = conn
        .query_all_raw(statement(
            conn.get_database_backend(),
            r#"SELECT DISTINCT c.path FROM insight_citation c JOIN insight_turn t ON t."turnId" = c."turnId"
               WHERE t."createdAt" >= $1 AND t."createdAt" < $2"#,
            window_values(window),
        ))
        .await?;
    rows.iter().map(|row| row.try_get("", "path")).collect()
}

/// The questions asked most within the window, grouped by [`normalize`]d text, each
/// shown as one of the ways it was asked.
pub async fn frequent_questions(
    conn: &DatabaseConnection,
    window: Window,
    first: u64,
    offset: u64,
) -> Result<Vec<QuestionCount>, DbErr> {
    let values = paged_values(window, first, offset);
    QuestionCount::find_by_statement(statement(
        conn.get_database_backend(),
        r#"SELECT normalized, min(question) AS question, count(*) AS count
           FROM insight_turn WHERE "createdAt" >= $1 AND "createdAt" < $2
           GROUP BY normalized ORDER BY count DESC, normalized LIMIT $3 OFFSET $4"#,
        values,
    ))
    .all(conn)
    .await
}

/// Ratings up and down within the window.
pub async fn rating_counts(conn: &DatabaseConnection, window: Window) -> Result<(i64, i64), DbErr> {
    let row = conn
        .query_one_raw(statement(
            conn.get_database_backend(),
            r#"SELECT sum(CASE WHEN rating = 'UP' THEN 1 ELSE 0 END) AS up,
                      sum(CASE WHEN rating = 'DOWN' THEN 1 ELSE 0 END) AS down
               FROM answer_rating WHERE "updatedAt" >= $1 AND "updatedAt" < $2"#,
            window_values(window),
        ))
        .await?;
    let Some(row) = row else { return Ok((0, 0)) };
    let up: Option<i64> = row.try_get("", "up")?;
    let down: Option<i64> = row.try_get("", "down")?;
    Ok((up.unwrap_or(0), down.unwrap_or(0)))
}

/// Deletes recorded turns (with their citations) and ratings older than `retention`.
/// Returns how many turns went.
pub async fn sweep(conn: &DatabaseConnection, retention: Duration) -> Result<u64, DbErr> {
    let backend = conn.get_database_backend();
    let cutoff = Utc::now()
        - chrono::Duration::from_std(retention).unwrap_or_else(|_| chrono::Duration::days(90));
    conn.execute_raw(statement(
        backend,
        r#"DELETE FROM insight_citation WHERE "turnId" IN (SELECT "turnId" FROM insight_turn WHERE "createdAt" < $1)"#,
        vec![cutoff.into()],
    ))
    .await?;
    let turns = conn
        .execute_raw(statement(
            backend,
            r#"DELETE FROM insight_turn WHERE "createdAt" < $1"#,
            vec![cutoff.into()],
        ))
        .await?
        .rows_affected();
    conn.execute_raw(statement(
        backend,
        r#"DELETE FROM answer_rating WHERE "updatedAt" < $1"#,
        vec![cutoff.into()],
    ))
    .await?;
    Ok(turns)
}

/// One part of the text report: its name, column names and rows.
type Section = (&'static str, Vec<&'static str>, Vec<Vec<String>>);

/// The whole report as text for `lectern insights`: aligned tables, or CSV (each section
/// a `# name` line, a header row and its rows, then a blank line). `pages` are the
/// indexed pages, for "never cited" (left out when the store could not be read).
pub async fn report(
    conn: &DatabaseConnection,
    window: Window,
    pages: Option<&std::collections::BTreeSet<String>>,
    limit: u64,
    csv: bool,
) -> Result<String, DbErr> {
    let mut sections: Vec<Section> = Vec::new();
    let days = questions_per_day(conn, window).await?;
    sections.push((
        "questions per day",
        vec!["day", "questions", "unanswered"],
        days.iter()
            .map(|d| {
                vec![
                    d.day.clone(),
                    d.questions.to_string(),
                    d.unanswered.to_string(),
                ]
            })
            .collect(),
    ));
    let (up, down) = rating_counts(conn, window).await?;
    sections.push((
        "ratings",
        vec!["up", "down"],
        vec![vec![up.to_string(), down.to_string()]],
    ));
    let turn_rows = |turns: Vec<TurnInsight>| -> Vec<Vec<String>> {
        turns
            .into_iter()
            .map(|t| {
                vec![
                    t.asked_at.map(|a| a.to_rfc3339()).unwrap_or_default(),
                    t.question.unwrap_or_default(),
                    t.comment.unwrap_or_default(),
                    t.cited
                        .iter()
                        .map(|c| c.path.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            })
            .collect()
    };
    sections.push((
        "unanswered questions",
        vec!["asked", "question", "comment", "nearest pages"],
        turn_rows(unanswered(conn, window, limit, 0).await?),
    ));
    sections.push((
        "thumbs down",
        vec!["asked", "question", "comment", "cited pages"],
        turn_rows(thumbs_down(conn, window, limit, 0).await?),
    ));
    sections.push((
        "most cited pages",
        vec!["path", "citations", "title"],
        most_cited(conn, window, limit, 0)
            .await?
            .into_iter()
            .map(|p| vec![p.page.path, p.citations.to_string(), p.page.title])
            .collect(),
    ));
    if let Some(pages) = pages {
        let cited = cited_paths(conn, window).await?;
        sections.push((
            "pages never cited",
            vec!["path"],
            pages
                .iter()
                .filter(|p| !cited.contains(*p))
                .take(limit as usize)
                .map(|p| vec![p.clone()])
                .collect(),
        ));
    }
    sections.push((
        "frequent questions",
        vec!["count", "question"],
        frequent_questions(conn, window, limit, 0)
            .await?
            .into_iter()
            .map(|q| vec![q.count.to_string(), q.question])
            .collect(),
    ));
    let mut out = String::new();
    if !csv {
        out.push_str(&format!(
            "Insights from {} to {}\n",
            window.from.to_rfc3339(),
            window.to.to_rfc3339()
        ));
    }
    for (name, header, rows) in sections {
        if csv {
            out.push_str(&format!("# {name}\r\n"));
            out.push_str(&csv_line(
                &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
            ));
            for row in &rows {
                out.push_str(&csv_line(row));
            }
            out.push_str("\r\n");
        } else {
            out.push_str(&format!("\n{name}\n"));
            if rows.is_empty() {
                out.push_str("  (none)\n");
                continue;
            }
            out.push_str(&format!("  {}\n", header.join(" | ")));
            for row in rows {
                out.push_str(&format!("  {}\n", row.join(" | ").replace('\n', " ")));
            }
        }
    }
    Ok(out)
}

/// One CSV record (RFC 4180): fields with a comma, quote or line break are quoted.
fn csv_line(fields: &[String]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect();
    format!("{}\r\n", quoted.join(","))
}

/// How often the retention sweep runs (and once at start).
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Until `stop`: deletes insights past their retention, at start and then hourly.
pub async fn retention_task(db: Database, retention: Duration, stop: CancellationToken) {
    db.wait_until_up().await;
    loop {
        match db
            .run(|conn| async move { sweep(&conn, retention).await })
            .await
        {
            Ok(0) => {}
            Ok(turns) => tracing::info!(turns, "insights past their retention deleted"),
            Err(_) => tracing::debug!("the insights sweep could not reach the database"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_are_grouped_by_their_words() {
        assert_eq!(normalize("How do I log in?"), "how do i log in");
        assert_eq!(normalize("  how do i   LOG in"), "how do i log in");
        assert_eq!(normalize("Ｈow do I log-in!"), "how do i log in");
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(
            csv_line(&["a".into(), "b,c".into(), "say \"hi\"".into()]),
            "a,\"b,c\",\"say \"\"hi\"\"\"\r\n"
        );
    }

    #[test]
    fn comments_are_checked() {
        assert_eq!(parse_comment(Some("  ".into())), Ok(None));
        assert_eq!(parse_comment(Some(" ok ".into())), Ok(Some("ok".into())));
        assert!(parse_comment(Some("a\u{0}".into())).is_err());
        assert!(parse_comment(Some("x".repeat(COMMENT_MAX_CHARS + 1))).is_err());
    }
}
