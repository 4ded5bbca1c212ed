//! Turns answered while the database could not take them, kept on disk until it can.
//!
//! A signed-in reader's turn that cannot be stored (the database is down, or too slow to
//! say whose session the request carries) is appended to `DATA_DIR/turn-journal.jsonl`,
//! one JSON object a line, and flushed to disk (`fsync`) before the reader is told it is
//! pending. A background task replays the journal into history whenever the database is
//! up, in order, and removes what it stored. Each turn carries its id, which is unique
//! among stored messages, so a replay interrupted between storing and removing (a crash,
//! a restart) stores nothing twice.
//!
//! A turn whose reader was not verified (only their signed access token was seen) is
//! stored only if that session is still live at replay time: a reader who signed out in
//! the meantime, or a revoked token, gets nothing written in their name.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::SessionRef;
use crate::db::{Availability, Database, RunError};
use crate::history::{self, HistoryError, NewTurn};

/// How often the replayer looks whether the database is back, when nothing wakes it.
const RECHECK: Duration = Duration::from_secs(2);

/// One pending turn, as written to the journal.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PendingTurn {
    pub turn_id: String,
    pub user_id: String,
    /// For a reader who was not verified: the session their access token named, which
    /// must still be live for the turn to be stored.
    pub session_id: Option<String>,
    pub conversation_id: Option<String>,
    pub question: String,
    pub answer: String,
    pub sources: serde_json::Value,
    /// Journals written before answers could be unanswered have no such field.
    #[serde(default)]
    pub unanswered: bool,
}

pub struct Journal {
    path: PathBuf,
    /// Appends and compactions take turns.
    file: Mutex<()>,
    /// Wakes the replayer after an append.
    appended: Notify,
}

impl Journal {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("turn-journal.jsonl"),
            file: Mutex::new(()),
            appended: Notify::new(),
        }
    }

    /// Appends a turn and flushes it to disk; only then is it pending.
    pub async fn append(self: &Arc<Self>, turn: &PendingTurn) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(turn).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let journal = self.clone();
        tokio::task::spawn_blocking(move || {
            let _file = journal.file.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(dir) = journal.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::File::options()
                .create(true)
                .append(true)
                .open(&journal.path)?;
            file.write_all(&line)?;
            file.sync_data()
        })
        .await
        .map_err(std::io::Error::other)??;
        self.appended.notify_one();
        Ok(())
    }

    /// The journal's lines in order; `None` for a line that does not parse (the torn
    /// last line of a crash mid-append).
    fn read(&self) -> std::io::Result<Vec<Option<PendingTurn>>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).ok())
            .collect())
    }

    /// Removes the first `count` lines, keeping whatever was appended meanwhile: the rest
    /// is written to a new file that replaces the old one atomically.
    fn remove_first(&self, count: usize) -> std::io::Result<()> {
        let _file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let text = std::fs::read_to_string(&self.path)?;
        let rest: Vec<&str> = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .skip(count)
            .collect();
        if rest.is_empty() {
            return std::fs::remove_file(&self.path);
        }
        let fresh = self.path.with_extension("jsonl.new");
        let mut file = std::fs::File::create(&fresh)?;
        for line in rest {
            file.write_all(line.as_bytes())?;
            file.write_all(b"\n")?;
        }
        file.sync_all()?;
        std::fs::rename(&fresh, &self.path)
    }

    /// Stores what the journal holds, in order, until it is empty or the database
    /// stops answering; returns how many turns were stored.
    pub async fn replay(&self, db: &Database, history_limit: u32) -> usize {
        let pending = match self.read() {
            Ok(pending) => pending,
            Err(e) => {
                tracing::error!(error = %e, path = %self.path.display(), "cannot read the turn journal");
                return 0;
            }
        };
        let mut done = 0;
        let mut stored = 0;
        for turn in &pending {
            match turn {
                None => tracing::warn!("skipped a torn line of the turn journal"),
                Some(turn) => match store(db, turn, history_limit).await {
                    Outcome::Stored => stored += 1,
                    Outcome::Dropped => {}
                    Outcome::Later => break,
                },
            }
            done += 1;
        }
        if done > 0 {
            let journal_file = self.path.clone();
            if let Err(e) = self.remove_first(done) {
                tracing::error!(error = %e, path = %journal_file.display(), "cannot compact the turn journal; its turns will be checked again");
            }
        }
        if stored > 0 {
            tracing::info!(stored, "pending turns stored in history");
        }
        stored
    }

    /// Replays whenever the database is up and something is pending, until `stop`.
    pub async fn run(self: Arc<Self>, db: Database, history_limit: u32, stop: CancellationToken) {
        loop {
            if db.availability() == Availability::Up && self.path.exists() {
                self.replay(&db, history_limit).await;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.appended.notified() => {}
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }
}

enum Outcome {
    Stored,
    /// Not to be stored, ever (the session ended, the reader is gone): forgotten.
    Dropped,
    /// The database is away again: stop here and keep the rest.
    Later,
}

async fn store(db: &Database, turn: &PendingTurn, history_limit: u32) -> Outcome {
    if let Some(session_id) = &turn.session_id {
        let session = SessionRef::Id {
            id: session_id.clone(),
            user_id: turn.user_id.clone(),
        };
        let live = db
            .run(|conn| async move { crate::auth::user_id_of_session(&conn, &session).await })
            .await;
        match live {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::info!(turn_id = %turn.turn_id, "the session ended before its pending turn could be stored; dropped");
                return Outcome::Dropped;
            }
            Err(_) => return Outcome::Later,
        }
    }
    let mut conversation_id = turn.conversation_id.clone();
    loop {
        let new_turn = NewTurn {
            turn_id: turn.turn_id.clone(),
            question: turn.question.clone(),
            answer: turn.answer.clone(),
            sources: turn.sources.clone(),
            unanswered: turn.unanswered,
        };
        let (user_id, into) = (turn.user_id.as_str(), conversation_id.as_deref());
        let recorded = db
            .run(|conn| async move {
                history::record_turn(&conn, user_id, into, new_turn, history_limit).await
            })
            .await;
        return match recorded {
            Ok(_) | Err(RunError::Failed(HistoryError::AlreadyRecorded)) => Outcome::Stored,
            // The conversation was deleted meanwhile: the turn starts a new one.
            Err(RunError::Failed(HistoryError::NotFound)) if conversation_id.is_some() => {
                conversation_id = None;
                continue;
            }
            Err(RunError::Unavailable | RunError::Busy) => Outcome::Later,
            Err(RunError::Failed(e)) => {
                tracing::error!(error = ?e, turn_id = %turn.turn_id, "a pending turn cannot be stored; dropped");
                Outcome::Dropped
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(n: u32) -> PendingTurn {
        PendingTurn {
            turn_id: format!("turn-{n}"),
            user_id: "u".into(),
            session_id: None,
            conversation_id: None,
            question: format!("q{n}"),
            answer: "a".into(),
            sources: serde_json::json!([]),
            unanswered: n % 2 == 1,
        }
    }

    #[tokio::test]
    async fn appends_survive_a_torn_line_and_compaction_keeps_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::new(dir.path()));
        journal.append(&turn(1)).await.unwrap();
        // A crash mid-append leaves half a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&journal.path)
            .unwrap()
            .write_all(b"{\"turn_id\":\"half\n")
            .unwrap();
        journal.append(&turn(2)).await.unwrap();
        let read = journal.read().unwrap();
        assert_eq!(read, vec![Some(turn(1)), None, Some(turn(2))]);
        journal.remove_first(2).unwrap();
        assert_eq!(journal.read().unwrap(), vec![Some(turn(2))]);
        journal.remove_first(1).unwrap();
        assert!(journal.read().unwrap().is_empty());
    }
}
