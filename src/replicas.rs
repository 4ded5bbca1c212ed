//! What replicas on one PostgreSQL share, so that three replicas behave as one server
//! (README, "Running several replicas"). Nothing here runs on SQLite, which one process
//! owns.
//!
//! - [`SharedCounter`]: sign-in limits and chat quotas counted in PostgreSQL, one
//!   statement per check (GCRA, the algorithm the in-memory limiter uses). While the
//!   database is unavailable or slow, each replica falls back to its own in-memory count.
//! - [`listen_for_ended_sessions`]: PostgreSQL `LISTEN` on the channel a trigger on
//!   `session` notifies (migration `m20261202_000005_replicas`), so a logout or revocation
//!   on any replica, or in Better Auth, closes that session's WebSockets on every replica.
//! - [`FinishedTurns`]: finished chat turns, so `chatTurn` and `resumeChat` find a turn on
//!   any replica.
//! - [`janitor`]: deletes counters nobody used for a while and turns past their retention.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{ConnectionTrait as _, DbBackend, DbErr, Statement, Value};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use crate::auth::SessionEvents;
use crate::chat::turns::TurnLog;
use crate::chat::{ChatError, ChatEvent, SourceRef, Stored};
use crate::config::{DatabaseKind, Secret};
use crate::db::Database;

/// Longest a limit check waits for PostgreSQL before counting in memory instead: a live
/// database answers in a millisecond, and a sign-in or a chat turn must not wait on a
/// slow one.
const SHARED_CHECK_TIMEOUT: Duration = Duration::from_millis(250);

/// One GCRA step for `key`: allowed when the new theoretical arrival time is at most one
/// window ahead; a refused attempt leaves the row as it was. Returns whether it was
/// allowed and, if not, how many seconds until it would be.
const GCRA: &str = "\
INSERT INTO lectern_rate_limit AS r (key, tat, allowed)
VALUES ($1, now() + make_interval(secs => $2), true)
ON CONFLICT (key) DO UPDATE SET
  allowed = greatest(r.tat, now()) + make_interval(secs => $2) <= now() + make_interval(secs => $3),
  tat = CASE
    WHEN greatest(r.tat, now()) + make_interval(secs => $2) <= now() + make_interval(secs => $3)
    THEN greatest(r.tat, now()) + make_interval(secs => $2)
    ELSE r.tat END
RETURNING allowed,
  extract(epoch FROM r.tat + make_interval(secs => $2) - make_interval(secs => $3) - now())::float8 AS wait";

/// Counts limited events in PostgreSQL, for every replica at once.
#[derive(Clone)]
pub struct SharedCounter {
    db: Database,
}

impl SharedCounter {
    /// `Some` on PostgreSQL only.
    pub fn for_database(db: &Database) -> Option<Self> {
        (db.kind() == DatabaseKind::Postgres).then(|| Self { db: db.clone() })
    }

    /// Counts one event for `key` within `scope`, `count` per `window`: `Some(Ok)` when
    /// allowed, `Some(Err(wait))` when not, `None` when PostgreSQL did not answer in time
    /// (the caller counts in memory instead).
    pub async fn check(
        &self,
        scope: &str,
        key: &str,
        count: u32,
        window: Duration,
    ) -> Option<Result<(), Duration>> {
        let mut hasher = Sha256::new();
        hasher.update(scope.as_bytes());
        hasher.update(b"\0");
        hasher.update(key.as_bytes());
        let digest: Vec<u8> = hasher.finalize().to_vec();
        let interval = window.as_secs_f64() / f64::from(count.max(1));
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            GCRA,
            [
                Value::from(digest),
                Value::from(interval),
                Value::from(window.as_secs_f64()),
            ],
        );
        let run = self.db.run(|conn| async move {
            let row = conn
                .query_one_raw(statement)
                .await?
                .ok_or_else(|| DbErr::RecordNotFound("the GCRA step returned no row".into()))?;
            let allowed: bool = row.try_get("", "allowed")?;
            let wait: f64 = row.try_get("", "wait")?;
            Ok::<_, DbErr>((allowed, wait))
        });
        match tokio::time::timeout(SHARED_CHECK_TIMEOUT, run).await {
            Ok(Ok((true, _))) => Some(Ok(())),
            Ok(Ok((false, wait))) => Some(Err(Duration::from_secs_f64(
                wait.clamp(0.001, window.as_secs_f64()),
            ))),
            Ok(Err(_)) | Err(_) => {
                metrics::counter!("lectern_shared_limit_fallback_total").increment(1);
                None
            }
        }
    }
}

/// The channel the `session` trigger notifies, with the ended session's id.
const SESSION_ENDED_CHANNEL: &str = "lectern_session_ended";
/// Waits between attempts to (re)connect the listener.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// Forwards every session ended anywhere (this replica, another, Better Auth) to this
/// replica's [`SessionEvents`], until `stop`. Reconnects by itself; notifications sent
/// while it was disconnected are missed, and the WebSockets' periodic session check
/// covers those.
pub async fn listen_for_ended_sessions(
    url: Secret,
    events: SessionEvents,
    stop: CancellationToken,
) {
    use sea_orm::sqlx::postgres::PgListener;
    let mut connected = false;
    loop {
        let listener = async {
            let mut listener = PgListener::connect(url.expose()).await?;
            listener.listen(SESSION_ENDED_CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            () = stop.cancelled() => return,
            listener = listener => match listener {
                Ok(listener) => listener,
                Err(e) => {
                    if connected {
                        tracing::warn!(error = %e, "the session listener lost PostgreSQL; retrying");
                        connected = false;
                    }
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(LISTEN_RETRY) => continue,
                    }
                }
            },
        };
        connected = true;
        tracing::debug!("listening for ended sessions");
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                notification = listener.try_recv() => match notification {
                    Ok(Some(notification)) => events.ended(notification.payload().to_owned()),
                    // The connection was lost: start over with a new one.
                    Ok(None) | Err(_) => break,
                },
            }
        }
    }
}

/// A finished turn as kept in `lectern_turn`.
#[derive(serde::Deserialize)]
struct TurnRecord {
    /// Absent in turns kept before follow-ups named them.
    #[serde(default)]
    question: String,
    sources: Vec<SourceRef>,
    deltas: Vec<String>,
    /// `None` for a turn that failed.
    answer: Option<String>,
    unanswered: bool,
    /// The conversation it was stored in, for its reader.
    conversation_id: Option<String>,
    /// For a failed turn: `retrieval` (the only failure a turn reports after it started).
    failed: Option<String>,
}

/// [`TurnRecord`] as written, borrowed from the log.
#[derive(serde::Serialize)]
struct TurnRecordRef<'a> {
    question: &'a str,
    sources: &'a [SourceRef],
    deltas: crate::chat::turns::Deltas<'a>,
    answer: Option<&'a str>,
    unanswered: bool,
    conversation_id: Option<&'a str>,
    failed: Option<&'static str>,
}

/// Finished turns in PostgreSQL, readable by every replica.
#[derive(Clone)]
pub struct FinishedTurns {
    db: Database,
    retention: Duration,
}

impl FinishedTurns {
    /// `Some` on PostgreSQL only.
    pub fn for_database(db: &Database, retention: Duration) -> Option<Self> {
        (db.kind() == DatabaseKind::Postgres).then(|| Self {
            db: db.clone(),
            retention,
        })
    }

    /// Keeps a finished turn; best effort (a turn that cannot be kept is still found on
    /// its own replica).
    pub async fn save(&self, log: &TurnLog) {
        // Written straight from the log to one JSON string: a JSON value tree of the
        // turn (and sea-orm's copy of it) took ~40 KB per 300-delta turn while a burst
        // of finished turns waited for a connection (docs/benchmarks.md §9).
        let json = log.with_parts(|parts| {
            let (answer, unanswered, conversation_id, failed) = match parts.last {
                Some(ChatEvent::Completed {
                    answer,
                    unanswered,
                    stored,
                }) => {
                    let conversation = match stored {
                        Stored::Kept(conversation) => Some(conversation.id.as_str()),
                        _ => None,
                    };
                    (Some(answer.as_str()), *unanswered, conversation, None)
                }
                Some(ChatEvent::Failed(ChatError::NotFound)) => {
                    (None, false, None, Some("not_found"))
                }
                Some(ChatEvent::Failed(ChatError::RetrievalUnavailable)) => {
                    (None, false, None, Some("retrieval"))
                }
                _ => (None, false, None, None),
            };
            serde_json::to_string(&TurnRecordRef {
                question: &log.question,
                sources: parts.sources,
                deltas: parts.deltas,
                answer,
                unanswered,
                conversation_id,
                failed,
            })
        });
        let Ok(json) = json else {
            return;
        };
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO lectern_turn (id, owner, record) VALUES ($1, $2, $3::jsonb) ON CONFLICT (id) DO NOTHING",
            [
                Value::from(log.id.clone()),
                Value::from(log.owner.clone()),
                Value::from(json),
            ],
        );
        let saved = self
            .db
            .run(|conn| async move { conn.execute_raw(statement).await })
            .await;
        if saved.is_err() {
            tracing::debug!("a finished turn could not be shared with other replicas");
        }
    }

    /// A turn another replica finished within the retention, as a finished log.
    pub async fn load(&self, id: &str) -> Option<Arc<TurnLog>> {
        uuid::Uuid::parse_str(id).ok()?;
        let statement = Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT owner, record::text AS record FROM lectern_turn \
             WHERE id = $1 AND finished_at > now() - make_interval(secs => $2)",
            [
                Value::from(id.to_owned()),
                Value::from(self.retention.as_secs_f64()),
            ],
        );
        let row = self
            .db
            .run(|conn| async move {
                let Some(row) = conn.query_one_raw(statement).await? else {
                    return Ok(None);
                };
                let owner: Option<String> = row.try_get("", "owner")?;
                let record: String = row.try_get("", "record")?;
                Ok::<_, DbErr>(Some((owner, record)))
            })
            .await
            .ok()??;
        let (owner, record) = row;
        let record: TurnRecord = serde_json::from_str(&record).ok()?;
        let stored = match (&record.conversation_id, &owner) {
            (Some(conversation_id), Some(_)) => self.conversation(conversation_id).await,
            _ => Stored::NotKept,
        };
        let log = Arc::new(TurnLog::finished(id.to_owned(), owner, record.question));
        log.push(ChatEvent::Sources(record.sources.into()));
        for delta in record.deltas {
            log.push(ChatEvent::Delta(delta));
        }
        log.push(match (record.answer, record.failed) {
            (Some(answer), _) => ChatEvent::Completed {
                answer,
                unanswered: record.unanswered,
                stored,
            },
            (None, Some(failed)) if failed == "not_found" => ChatEvent::Failed(ChatError::NotFound),
            (None, _) => ChatEvent::Failed(ChatError::RetrievalUnavailable),
        });
        Some(log)
    }

    async fn conversation(&self, id: &str) -> Stored {
        use sea_orm::EntityTrait as _;
        let id = id.to_owned();
        match self
            .db
            .run(|conn| async move {
                crate::entities::conversation::Entity::find_by_id(id)
                    .one(&conn)
                    .await
            })
            .await
        {
            Ok(Some(conversation)) => Stored::Kept(Box::new(conversation)),
            _ => Stored::NotKept,
        }
    }
}

/// How often the janitor runs.
const JANITOR_EVERY: Duration = Duration::from_secs(60);

/// Until `stop`: now and then deletes counters whose window has passed (their keys start
/// afresh anyway) and turns past `retention`. Any replica may run it; the deletes are
/// idempotent.
pub async fn janitor(db: Database, retention: Duration, stop: CancellationToken) {
    let retention = retention.as_secs_f64();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(JANITOR_EVERY) => {}
        }
        let swept = db
            .run(|conn| async move {
                conn.execute_unprepared("DELETE FROM lectern_rate_limit WHERE tat < now()")
                    .await?;
                conn.execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "DELETE FROM lectern_turn WHERE finished_at < now() - make_interval(secs => $1)",
                    [Value::from(retention)],
                ))
                .await
            })
            .await;
        if swept.is_err() {
            tracing::debug!("the janitor could not reach the database; trying again later");
        }
    }
}
