//! One chat turn: check the input, load the conversation's last turns, retrieve passages,
//! write the answer (streamed), and store the turn for a signed-in reader.
//!
//! The turn runs in a task of its own and writes its events to a log ([`turns`]), so the
//! `chat` mutation (which collects the events), the `chatStream` subscription (which
//! forwards them) and `resumeChat` (which picks them up again) share one flow, and a
//! client that disconnects mid-answer does not stop the answer from being finished and
//! stored. The database is touched at the start (history
//! for the prompt) and at the end (storing the turn); when it is unavailable the answer
//! still comes back and only the stored conversation is missing.

pub mod journal;
pub mod turns;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::auth::rate_limit::Limiter;
use crate::replicas::{FinishedTurns, SharedCounter};

use crate::db::{Database, RunError};
use crate::entities::conversation;
use crate::history::{self, HistoryError, NewTurn};
use crate::llm::{Generator, PromptInput};
use crate::retrieval::{Passage, Previous, RetrievalError, Retriever};

pub const MESSAGE_MAX_CHARS: usize = 4_000;
pub const SELECTED_TEXT_MAX_CHARS: usize = 10_000;
/// Passages retrieved per question.
const PASSAGES: usize = 5;
/// Earlier messages of the conversation included in the prompt (three turns).
const HISTORY_MESSAGES: u64 = 6;
/// Characters of a passage shown as a source's snippet.
const SNIPPET_CHARS: usize = 300;

/// NUL and other control characters cannot be stored (PostgreSQL refuses NUL in text)
/// and mean nothing in a question; tabs and line breaks are fine.
fn refuse_control(field: &str, text: &str) -> Result<(), String> {
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(format!(
            "{field} must not contain control characters other than tab and line breaks"
        ));
    }
    Ok(())
}

/// A question as the reader sent it, checked.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub message: String,
    pub conversation_id: Option<String>,
    pub selected_text: Option<String>,
    /// A follow-up to this turn (`previousTurnId`): retrieved and answered with it, for
    /// anonymous readers as for signed-in ones.
    pub previous_turn_id: Option<String>,
}

impl ChatRequest {
    pub fn parse(
        message: &str,
        conversation_id: Option<String>,
        selected_text: Option<String>,
    ) -> Result<Self, String> {
        let message = message.trim();
        let chars = message.chars().count();
        if chars == 0 || chars > MESSAGE_MAX_CHARS {
            return Err(format!(
                "message must be 1 to {MESSAGE_MAX_CHARS} characters"
            ));
        }
        refuse_control("message", message)?;
        let selected_text = selected_text
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(selected) = &selected_text {
            refuse_control("selectedText", selected)?;
        }
        if selected_text
            .as_ref()
            .is_some_and(|s| s.chars().count() > SELECTED_TEXT_MAX_CHARS)
        {
            return Err(format!(
                "selectedText must be at most {SELECTED_TEXT_MAX_CHARS} characters"
            ));
        }
        Ok(Self {
            message: message.to_owned(),
            conversation_id,
            selected_text,
            previous_turn_id: None,
        })
    }

    /// The same request as a follow-up to turn `id`, which must look like a turn id.
    pub fn following(mut self, id: Option<String>) -> Result<Self, String> {
        if let Some(id) = &id
            && uuid::Uuid::parse_str(id).is_err()
        {
            return Err("previousTurnId is not a turn id (the turnId of an earlier answer)".into());
        }
        self.previous_turn_id = id;
        Ok(self)
    }
}

/// Who asks: nobody in particular, or a reader whose turns are kept.
#[derive(Debug, Clone)]
pub enum Asker {
    Anonymous,
    Reader(String),
    /// Signed in, but the session could not be checked because the database is down:
    /// answered like anyone. When the credentials were one of our signed access tokens,
    /// what it claims is kept, so the turn can be journaled and stored later if that
    /// session is still live then.
    Unverified(Option<Claimed>),
}

/// What a signed, unexpired access token says about its bearer, unchecked against the
/// database.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub user_id: String,
    pub session_id: String,
}

/// A source as clients see it and as it is stored with the answer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceRef {
    /// The page's title.
    pub title: String,
    /// The heading path of the passage on its page (`H1 › H2`); answers stored before
    /// sources had headings have the heading in `title` instead.
    #[serde(default)]
    pub heading: String,
    /// Relative to the ingest root.
    pub path: String,
    /// The page and the passage's heading on it, for a reader to click.
    #[serde(default)]
    pub url: Option<String>,
    pub snippet: String,
    pub score: f64,
}

impl SourceRef {
    fn new(p: &Passage, site_url: Option<&str>) -> Self {
        let mut snippet: String = p.text.chars().take(SNIPPET_CHARS).collect();
        if p.text.chars().count() > SNIPPET_CHARS {
            snippet.push('…');
        }
        Self {
            title: p.title.clone(),
            heading: p.heading.clone(),
            path: p.path.clone(),
            url: p.link(site_url),
            snippet,
            score: p.score,
        }
    }

    /// How a reader would name it: the page, and the section when there is one.
    fn name(&self) -> String {
        match self
            .heading
            .rsplit(crate::retrieval::chunk::HEADING_SEPARATOR)
            .next()
        {
            Some(section) if !section.is_empty() && section != self.title => {
                format!("{} › {section}", self.title)
            }
            _ => self.title.clone(),
        }
    }
}

/// The first line of the answer to a question the book does not seem to cover.
pub const NOT_COVERED: &str = "The book does not seem to cover this question.";

/// The answer to a question the book does not seem to cover: it says so, and names the
/// nearest sections (cited, so a reader can still look).
fn not_covered(sources: &[SourceRef]) -> String {
    if sources.is_empty() {
        return NOT_COVERED.to_owned();
    }
    let nearest: Vec<String> = sources
        .iter()
        .enumerate()
        .map(|(n, source)| format!("- {} [{}]", source.name(), n + 1))
        .collect();
    format!(
        "{NOT_COVERED} The nearest sections are:\n\n{}",
        nearest.join("\n")
    )
}

/// What became of the turn in the reader's history.
#[derive(Debug, Clone)]
pub enum Stored {
    /// Anonymous: nothing is kept.
    NotKept,
    /// Boxed: a turn's log holds one event per delta, each as large as the largest
    /// variant, and the conversation's fields would make every delta cost ~130 bytes.
    Kept(Box<conversation::Model>),
    DatabaseUnavailable,
    /// The database could not take it; it is in the journal and will be stored when the
    /// database is back.
    Pending,
    /// The conversation was deleted while the answer was being written.
    ConversationGone,
    /// Storing failed for another reason (logged).
    Failed,
}

/// The events of one turn, in order: sources, deltas, completed (or failed).
#[derive(Debug, Clone)]
pub enum ChatEvent {
    /// Shared: the turn keeps them, and so does its log, for as long as it streams.
    Sources(Arc<[SourceRef]>),
    Delta(String),
    Completed {
        answer: String,
        /// The book did not seem to cover the question.
        unanswered: bool,
        stored: Stored,
    },
    Failed(ChatError),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ChatError {
    #[error("the conversation does not exist or is not yours")]
    NotFound,
    #[error("the vector store is unavailable")]
    RetrievalUnavailable,
}

pub struct ChatService {
    pub retriever: Arc<Retriever>,
    pub generator: Arc<Generator>,
    /// Makes sources' relative page addresses links (`SITE_URL`).
    pub site_url: Option<String>,
    pub history_limit: u32,
    pub quotas: ChatQuotas,
    /// Every turn in flight, so shutdown can wait for them to be answered and stored
    /// before the database pool closes.
    pub tasks: TaskTracker,
    /// Recent turns by id, for clients that resume.
    pub turns: turns::TurnRegistry,
    /// Turns that wait for the database.
    pub journal: Arc<journal::Journal>,
    /// On PostgreSQL: finished turns shared with the other replicas.
    pub finished: Option<FinishedTurns>,
    /// `INSIGHTS`: record every turn, without identity, for the authors' report.
    pub record_insights: bool,
}

/// What one asker may cost: turns per minute per client address (anonymous readers) and
/// per reader (signed in), counted when a turn starts so that turns whose client left
/// still count; and a server-wide cap on model calls running at once. Past any of them a
/// turn is refused with `RATE_LIMITED` rather than queued: with a paid model, every turn
/// is a bill.
pub struct ChatQuotas {
    per_ip: Option<Limiter<IpAddr>>,
    per_reader: Option<Limiter<String>>,
    /// `None` without a model: extractive answers cost next to nothing.
    model_calls: Option<Arc<Semaphore>>,
    /// On PostgreSQL: the quotas counted once for all replicas.
    shared: Option<SharedCounter>,
}

/// The window chat quotas are counted over.
pub const QUOTA_WINDOW: Duration = Duration::from_secs(60);

impl ChatQuotas {
    /// `shared` counts the per-address and per-reader quotas in PostgreSQL; the cap on
    /// model calls is each replica's own (it protects this process and its model quota).
    pub fn new(
        per_ip: u32,
        per_reader: u32,
        model_calls: Option<u32>,
        shared: Option<SharedCounter>,
    ) -> Self {
        Self {
            per_ip: Limiter::new("chat-ip", per_ip, QUOTA_WINDOW),
            per_reader: Limiter::new("chat-reader", per_reader, QUOTA_WINDOW),
            model_calls: model_calls.map(|n| Arc::new(Semaphore::new(n as usize))),
            shared,
        }
    }

    /// Counts a turn against its asker and reserves a model call; `Err(wait)` when the
    /// turn must not start. The permit is held until the turn ends.
    pub async fn admit(
        &self,
        asker: &Asker,
        ip: Option<IpAddr>,
    ) -> Result<Option<OwnedSemaphorePermit>, Duration> {
        let shared = self.shared.as_ref();
        match asker {
            Asker::Reader(user_id) => {
                if let Some(limiter) = &self.per_reader {
                    limiter.check_shared(shared, user_id).await?;
                }
            }
            Asker::Anonymous | Asker::Unverified(_) => {
                if let (Some(limiter), Some(ip)) = (&self.per_ip, ip) {
                    limiter.check_shared(shared, &ip).await?;
                }
            }
        }
        match &self.model_calls {
            None => Ok(None),
            Some(calls) => calls.clone().try_acquire_owned().map(Some).map_err(|_| {
                metrics::counter!("lectern_chat_shed_total", "reason" => "model_busy").increment(1);
                Duration::from_secs(1)
            }),
        }
    }
}

impl ChatService {
    /// Starts the turn in its own task and returns its log, which the caller follows.
    /// `model_call` (from [`ChatQuotas::admit`]) is held until the turn ends.
    pub fn start(
        self: &Arc<Self>,
        db: Database,
        asker: Asker,
        request: ChatRequest,
        model_call: Option<OwnedSemaphorePermit>,
    ) -> Arc<turns::TurnLog> {
        let owner = match &asker {
            Asker::Reader(user_id) => Some(user_id.clone()),
            Asker::Anonymous | Asker::Unverified(_) => None,
        };
        let log = self.turns.start(owner, request.message.clone());
        let service = self.clone();
        let span = tracing::info_span!("chat_turn", signed_in = matches!(asker, Asker::Reader(_)));
        let writer = log.clone();
        self.tasks.spawn(tracing::Instrument::instrument(
            async move {
                // The log outlives any client: a turn whose client left carries on.
                let send = |event: ChatEvent| writer.push(event);
                if let Err(e) = service.run(&db, &writer.id, asker, request, &send).await {
                    send(ChatEvent::Failed(e));
                }
                // The model call ends with the turn, before it is shared.
                drop(model_call);
                if let Some(finished) = &service.finished {
                    Box::pin(finished.save(&writer)).await;
                }
            },
            span,
        ));
        log
    }

    async fn run(
        &self,
        db: &Database,
        turn_id: &str,
        asker: Asker,
        request: ChatRequest,
        send: &(impl Fn(ChatEvent) + Sync),
    ) -> Result<(), ChatError> {
        let mut history_unavailable = false;
        let mut earlier: Vec<(String, String)> = Vec::new();
        let mut previous: Option<Previous> = None;
        if let (Asker::Reader(user_id), Some(conversation_id)) = (&asker, &request.conversation_id)
        {
            let loaded = Box::pin(db.run(|conn| async move {
                history::last_messages(&conn, user_id, conversation_id, HISTORY_MESSAGES).await
            }))
            .await;
            match loaded {
                Ok(messages) => {
                    previous = previous_in(&messages);
                    earlier = messages.into_iter().map(|m| (m.role, m.content)).collect()
                }
                Err(RunError::Failed(HistoryError::NotFound)) => return Err(ChatError::NotFound),
                Err(failure) => {
                    if let RunError::Failed(HistoryError::Database(e)) = &failure {
                        tracing::warn!(error = %e, "could not load the conversation; answering without it");
                    }
                    history_unavailable = true;
                }
            }
        }

        if let Some(id) = &request.previous_turn_id {
            let (turn, answer) = self.previous_turn(id, &asker).await?;
            if earlier.is_empty() {
                earlier = vec![
                    ("user".to_owned(), turn.question.clone()),
                    ("assistant".to_owned(), answer),
                ];
            }
            previous = Some(turn);
        }
        // With a model, a follow-up is first rewritten as a question that stands alone.
        let standalone = match (&previous, &request.selected_text) {
            (Some(previous), None) => {
                let started = std::time::Instant::now();
                let rewritten = self
                    .generator
                    .standalone(&previous.question, &request.message)
                    .await;
                if rewritten.is_some() {
                    metrics::histogram!("lectern_follow_up_rewrite_duration_seconds")
                        .record(started.elapsed());
                }
                rewritten
            }
            _ => None,
        };
        let query = match (&request.selected_text, &standalone) {
            (Some(selected), _) => format!("{}\n{}", request.message, selected),
            (None, Some(rewritten)) => rewritten.clone(),
            (None, None) => request.message.clone(),
        };
        let started = std::time::Instant::now();
        let found = Box::pin(self.retriever.search(&query, previous.as_ref(), PASSAGES))
            .await
            .map_err(|e: RetrievalError| {
                tracing::error!(error = %e, "retrieval failed");
                ChatError::RetrievalUnavailable
            })?;
        metrics::histogram!("lectern_retrieval_duration_seconds").record(started.elapsed());
        let covered = found.covered();
        let passages = found.passages;
        let sources: Arc<[SourceRef]> = passages
            .iter()
            .map(|p| SourceRef::new(p, self.site_url.as_deref()))
            .collect();
        send(ChatEvent::Sources(sources.clone()));

        // A question about a selection is answered from the selection, whatever the
        // book's passages say.
        let unanswered = request.selected_text.is_none() && !covered;
        let answer = if unanswered {
            let answer = not_covered(&sources);
            send(ChatEvent::Delta(answer.clone()));
            metrics::counter!("lectern_chat_unanswered_total").increment(1);
            tracing::info!(
                relevance = found.relevance,
                "the book does not cover the question"
            );
            answer
        } else {
            let input = PromptInput {
                question: &request.message,
                selected_text: request.selected_text.as_deref(),
                passages: &passages,
                history: &earlier,
            };
            let started = std::time::Instant::now();
            let (answer, kind) = self
                .generator
                .answer(&input, |delta| send(ChatEvent::Delta(delta.to_owned())))
                .await;
            metrics::histogram!("lectern_answer_duration_seconds", "kind" => kind.label())
                .record(started.elapsed());
            tracing::info!(answer = ?kind, passages = passages.len(), "answer written");
            answer
        };

        let turn = NewTurn {
            turn_id: turn_id.to_owned(),
            question: request.message.clone(),
            answer: answer.clone(),
            sources: serde_json::to_value(&sources).unwrap_or_else(|_| serde_json::json!([])),
            unanswered,
        };
        // The awaits before and after the answer are boxed: this future lives as long as
        // the turn streams, and unboxed it would keep their state (several KB) all along.
        let conversation_id = request.conversation_id.as_deref();
        let stored = match asker {
            Asker::Anonymous => Stored::NotKept,
            // A Better Auth session cannot be named without the database.
            Asker::Unverified(None) => Stored::DatabaseUnavailable,
            Asker::Unverified(Some(claimed)) => {
                Box::pin(self.keep_for_later(
                    turn,
                    claimed.user_id,
                    Some(claimed.session_id),
                    conversation_id,
                ))
                .await
            }
            Asker::Reader(user_id) if history_unavailable => {
                Box::pin(self.keep_for_later(turn, user_id, None, conversation_id)).await
            }
            Asker::Reader(user_id) => {
                match Box::pin(self.store(db, &user_id, conversation_id, turn.clone())).await {
                    Stored::DatabaseUnavailable => {
                        Box::pin(self.keep_for_later(turn, user_id, None, conversation_id)).await
                    }
                    stored => stored,
                }
            }
        };
        if self.record_insights {
            // Before `Completed`, so the turn can be rated as soon as it is answered.
            let (question, relevance) = (request.message.as_str(), found.relevance);
            let recorded = Box::pin(db.run(|conn| async move {
                crate::insights::record_turn(
                    &conn, turn_id, question, &sources, relevance, unanswered,
                )
                .await
            }))
            .await;
            if recorded.is_err() {
                tracing::debug!("the turn could not be recorded for insights");
            }
        }
        send(ChatEvent::Completed {
            answer,
            unanswered,
            stored,
        });
        Ok(())
    }

    /// The turn a follow-up names, with its answer, under the rules that show a turn's
    /// conversation: a signed-in reader's turn is theirs alone to follow; an anonymous
    /// turn is anyone's who holds its unguessable id. Unknown, expired or someone
    /// else's: `NOT_FOUND`.
    async fn previous_turn(
        &self,
        id: &str,
        asker: &Asker,
    ) -> Result<(Previous, String), ChatError> {
        let log = match self.turns.get(id) {
            Some(log) => log,
            None => match &self.finished {
                Some(finished) => finished.load(id).await.ok_or(ChatError::NotFound)?,
                None => return Err(ChatError::NotFound),
            },
        };
        let asker_id = match asker {
            Asker::Reader(user_id) => Some(user_id.as_str()),
            Asker::Unverified(Some(claimed)) => Some(claimed.user_id.as_str()),
            Asker::Anonymous | Asker::Unverified(None) => None,
        };
        if log.owner.is_some() && log.owner.as_deref() != asker_id {
            return Err(ChatError::NotFound);
        }
        Ok(log.with_parts(|parts| {
            let answer = match parts.last {
                Some(ChatEvent::Completed { answer, .. }) => answer.clone(),
                _ => parts.deltas.joined().to_owned(),
            };
            (
                Previous {
                    question: log.question.clone(),
                    pages: parts.sources.iter().map(|s| s.path.clone()).collect(),
                },
                answer,
            )
        }))
    }

    /// Journals a turn the database cannot take now.
    async fn keep_for_later(
        &self,
        turn: NewTurn,
        user_id: String,
        session_id: Option<String>,
        conversation_id: Option<&str>,
    ) -> Stored {
        let pending = journal::PendingTurn {
            turn_id: turn.turn_id,
            user_id,
            session_id,
            conversation_id: conversation_id.map(str::to_owned),
            question: turn.question,
            answer: turn.answer,
            sources: turn.sources,
            unanswered: turn.unanswered,
        };
        match self.journal.append(&pending).await {
            Ok(()) => Stored::Pending,
            Err(e) => {
                tracing::error!(error = %e, "cannot journal a turn; it is lost");
                Stored::DatabaseUnavailable
            }
        }
    }

    async fn store(
        &self,
        db: &Database,
        user_id: &str,
        conversation_id: Option<&str>,
        turn: NewTurn,
    ) -> Stored {
        let limit = self.history_limit;
        let recorded = db
            .run(|conn| async move {
                history::record_turn(&conn, user_id, conversation_id, turn, limit).await
            })
            .await;
        match recorded {
            Ok(recorded) => Stored::Kept(Box::new(recorded.conversation)),
            Err(RunError::Failed(HistoryError::NotFound)) => Stored::ConversationGone,
            Err(RunError::Unavailable | RunError::Busy) => Stored::DatabaseUnavailable,
            Err(RunError::Failed(HistoryError::Database(e))) => {
                tracing::error!(error = %e, "could not store the turn");
                Stored::Failed
            }
            Err(RunError::Failed(HistoryError::AlreadyRecorded)) => {
                tracing::error!("a new turn's id was already stored");
                Stored::Failed
            }
        }
    }
}

/// The last question of a stored conversation and the pages its answer cited.
fn previous_in(messages: &[crate::entities::message::Model]) -> Option<Previous> {
    let question = messages.iter().rev().find(|m| m.role == "user")?;
    let pages = messages
        .iter()
        .rev()
        .find(|m| m.role == "assistant")
        .and_then(|m| serde_json::from_value::<Vec<SourceRef>>(m.sources.clone()).ok())
        .map(|sources| sources.into_iter().map(|s| s.path).collect())
        .unwrap_or_default();
    Some(Previous {
        question: question.content.clone(),
        pages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_trimmed_and_bounded() {
        assert_eq!(
            ChatRequest::parse("  hi  ", None, None).unwrap().message,
            "hi"
        );
        assert!(ChatRequest::parse("   ", None, None).is_err());
        assert!(ChatRequest::parse(&"x".repeat(4001), None, None).is_err());
        assert!(ChatRequest::parse(&"é".repeat(4000), None, None).is_ok());
        assert!(ChatRequest::parse("q", None, Some("y".repeat(10_001))).is_err());
        assert!(ChatRequest::parse("nul\0byte", None, None).is_err());
        assert!(ChatRequest::parse("bell\u{7}", None, None).is_err());
        assert!(ChatRequest::parse("q", None, Some("a\0b".into())).is_err());
        assert!(ChatRequest::parse("two\nlines\tand a tab", None, None).is_ok());
        assert_eq!(
            ChatRequest::parse("q", None, Some("  ".into()))
                .unwrap()
                .selected_text,
            None
        );
    }
}
