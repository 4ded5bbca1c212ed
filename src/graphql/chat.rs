//! `chat` (mutation) and `chatStream` (subscription): answers for anyone, history for
//! signed-in readers. Both run the same turn (see `crate::chat`). Every turn has an
//! unguessable `turnId`; `resumeChat` and `chatTurn` pick a turn up again by it, so a
//! client whose connection dropped mid-answer gets the rest.

use std::sync::Arc;

use async_graphql::{Context, ID, InputObject, Object, SimpleObject, Subscription, Union};
use futures_util::{Stream, StreamExt as _};
use tokio::sync::OwnedSemaphorePermit;

use super::auth::{current_user_id, viewer};
use super::error::ApiError;
use super::guard::database;
use super::history::{Conversation, Source};
use crate::auth::ClientInfo;
use crate::auth::viewer::Viewer;
use crate::chat::turns::TurnLog;
use crate::chat::{
    Asker, ChatError, ChatEvent as TurnEvent, ChatRequest, ChatService, Claimed, SourceRef, Stored,
};

#[derive(InputObject)]
pub struct ChatInput {
    /// The question, 1 to 4,000 characters.
    pub message: String,
    /// Continue this conversation (signed-in readers; must be theirs).
    pub conversation_id: Option<ID>,
    /// A passage the reader selected and asks about, up to 10,000 characters.
    pub selected_text: Option<String>,
    /// Ask this as a follow-up to an earlier answer: the `turnId` of that answer (from
    /// `ChatPayload`, `ChatSources` or `ChatCompleted`). Retrieval then also leans on
    /// that turn's question and cited pages, and a model sees that turn. Works for
    /// anonymous readers too; a signed-in reader's turn can be followed only by that
    /// reader, an unknown or expired one is `NOT_FOUND`.
    pub previous_turn_id: Option<ID>,
}

/// The answer to one question.
pub struct ChatPayload {
    turn_id: String,
    answer: String,
    unanswered: bool,
    sources: Arc<[SourceRef]>,
    stored: Stored,
}

#[Object]
impl ChatPayload {
    /// The turn's id: `chatTurn` and `resumeChat` find it by this for
    /// `TURN_RETENTION_SECS` after it finished.
    async fn turn_id(&self) -> ID {
        ID(self.turn_id.clone())
    }

    async fn answer(&self) -> &str {
        &self.answer
    }

    async fn sources(&self) -> Vec<Source> {
        self.sources.iter().map(Source::from).collect()
    }

    /// True when the book does not seem to cover the question: no passage matched it
    /// well enough, so the answer says so and names the nearest sections (the sources)
    /// instead of answering.
    async fn unanswered(&self) -> bool {
        self.unanswered
    }

    /// The conversation the turn was stored in: null for anonymous readers, and null
    /// with a `DATABASE_UNAVAILABLE` error when it could not be stored; that error has
    /// `extensions.pending: true` when the turn is journaled and will be stored in the
    /// reader's history once the database is back.
    async fn conversation(&self) -> async_graphql::Result<Option<Conversation>> {
        stored_conversation(&self.stored)
    }
}

/// The passages an answer will cite; the first event of a stream.
#[derive(SimpleObject)]
pub struct ChatSources {
    pub sources: Vec<Source>,
    /// The turn's id, to resume it with `resumeChat` if the connection drops.
    pub turn_id: ID,
}

/// A piece of the answer as it is written.
#[derive(SimpleObject)]
pub struct ChatDelta {
    pub delta: String,
    /// 1 for the first piece, then 2, 3, …: resume after the last one seen.
    pub seq: i32,
}

/// The last event: the whole answer and where it was stored.
pub struct ChatCompleted {
    turn_id: String,
    answer: String,
    unanswered: bool,
    stored: Stored,
}

#[Object]
impl ChatCompleted {
    async fn turn_id(&self) -> ID {
        ID(self.turn_id.clone())
    }

    async fn answer(&self) -> &str {
        &self.answer
    }

    /// True when the book does not seem to cover the question (see `ChatPayload`).
    async fn unanswered(&self) -> bool {
        self.unanswered
    }

    async fn conversation(&self) -> async_graphql::Result<Option<Conversation>> {
        stored_conversation(&self.stored)
    }
}

#[derive(Union)]
pub enum ChatEvent {
    ChatSources(ChatSources),
    ChatDelta(ChatDelta),
    ChatCompleted(ChatCompleted),
}

impl From<&SourceRef> for Source {
    fn from(s: &SourceRef) -> Self {
        Source {
            title: s.title.clone(),
            heading: s.heading.clone(),
            path: s.path.clone(),
            url: s.url.clone(),
            snippet: s.snippet.clone(),
            score: s.score,
        }
    }
}

fn stored_conversation(stored: &Stored) -> async_graphql::Result<Option<Conversation>> {
    match stored {
        Stored::NotKept => Ok(None),
        Stored::Kept(model) => Ok(Some((**model).clone().into())),
        Stored::DatabaseUnavailable => Err(ApiError::DatabaseUnavailable.into()),
        Stored::Pending => Err(ApiError::TurnPending.into()),
        Stored::ConversationGone => Err(ApiError::NotFound.into()),
        Stored::Failed => Err(ApiError::Internal("the turn could not be stored").into()),
    }
}

impl From<ChatError> for ApiError {
    fn from(err: ChatError) -> Self {
        match err {
            ChatError::NotFound => ApiError::NotFound,
            ChatError::RetrievalUnavailable => ApiError::UpstreamUnavailable,
        }
    }
}

/// Longest a chat waits to learn whose session it carries. A live database answers in
/// milliseconds; past this the turn is answered as unverified rather than waiting out
/// `DATABASE_TIMEOUT_MS` (an immediate PostgreSQL stop is only known after that).
const SESSION_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Checks the input, works out who asks and counts the turn against their quota, before
/// anything is retrieved.
async fn begin(ctx: &Context<'_>, input: ChatInput) -> Result<Turn, ApiError> {
    let request = ChatRequest::parse(
        &input.message,
        input.conversation_id.map(|id| id.0),
        input.selected_text,
    )
    .and_then(|request| request.following(input.previous_turn_id.map(|id| id.0)))
    .map_err(ApiError::BadUserInput)?;
    let asker = match viewer(ctx) {
        Viewer::Anonymous => Asker::Anonymous,
        _ => match tokio::time::timeout(SESSION_CHECK, current_user_id(ctx)).await {
            Ok(Ok(user_id)) => Asker::Reader(user_id),
            // Answers flow during an outage, and while the database is too slow to say
            // who asks (an outage not known yet looks like that); only storing the turn
            // is impossible.
            Ok(Err(ApiError::DatabaseUnavailable | ApiError::DatabaseBusy)) | Err(_) => {
                Asker::Unverified(match viewer(ctx) {
                    Viewer::Token(claims) => Some(Claimed {
                        user_id: claims.sub.clone(),
                        session_id: claims.sid.clone(),
                    }),
                    _ => None,
                })
            }
            Ok(Err(other)) => return Err(other),
        },
    };
    if request.conversation_id.is_some() && matches!(asker, Asker::Anonymous) {
        return Err(ApiError::Unauthenticated);
    }
    let ip = ctx.data_opt::<ClientInfo>().and_then(|client| client.ip);
    let model_call = service(ctx)?
        .quotas
        .admit(&asker, ip)
        .await
        .map_err(ApiError::RateLimited)?;
    Ok(Turn {
        asker,
        request,
        model_call,
    })
}

/// A turn that may start: who asks, what, and its reserved model call.
struct Turn {
    asker: Asker,
    request: ChatRequest,
    model_call: Option<OwnedSemaphorePermit>,
}

impl Turn {
    fn start(self, ctx: &Context<'_>) -> Result<Arc<TurnLog>, ApiError> {
        let db = database(ctx)?.clone();
        Ok(service(ctx)?.start(db, self.asker, self.request, self.model_call))
    }
}

/// A turn's events as the schema shows them, from the log: deltas numbered, and the
/// deltas up to `after` left out (a client resuming has them). `show_conversation`
/// is false for a resumer who is not the turn's reader.
fn events(
    log: Arc<TurnLog>,
    after: usize,
    show_conversation: bool,
) -> impl Stream<Item = async_graphql::Result<ChatEvent>> + use<> {
    let turn_id = log.id.clone();
    log.follow().filter_map(move |(position, event)| {
        let turn_id = turn_id.clone();
        async move {
            match event {
                TurnEvent::Sources(s) => Some(Ok(ChatEvent::ChatSources(ChatSources {
                    sources: s.iter().map(Source::from).collect(),
                    turn_id: ID(turn_id),
                }))),
                TurnEvent::Delta(_) if position <= after => None,
                TurnEvent::Delta(delta) => Some(Ok(ChatEvent::ChatDelta(ChatDelta {
                    delta,
                    seq: i32::try_from(position).unwrap_or(i32::MAX),
                }))),
                TurnEvent::Completed {
                    answer,
                    unanswered,
                    stored,
                } => {
                    let stored = match stored {
                        Stored::Kept(_) if !show_conversation => Stored::NotKept,
                        stored => stored,
                    };
                    Some(Ok(ChatEvent::ChatCompleted(ChatCompleted {
                        turn_id,
                        answer,
                        unanswered,
                        stored,
                    })))
                }
                TurnEvent::Failed(e) => Some(Err(ApiError::from(e).into())),
            }
        }
    })
}

/// A kept turn by id, or `NOT_FOUND` (unknown, expired, or not an id at all), with
/// whether the caller is its reader.
async fn find_turn(ctx: &Context<'_>, turn_id: &ID) -> Result<(Arc<TurnLog>, bool), ApiError> {
    let service = service(ctx)?;
    let log = match service.turns.get(turn_id.as_str()) {
        Some(log) => log,
        // Finished on another replica, perhaps.
        None => match &service.finished {
            Some(finished) => finished.load(turn_id.as_str()).await,
            None => None,
        }
        .ok_or(ApiError::NotFound)?,
    };
    let is_owner = match (&log.owner, viewer(ctx)) {
        (Some(owner), Viewer::Token(_) | Viewer::BetterAuth(_)) => {
            current_user_id(ctx).await.is_ok_and(|me| &me == owner)
        }
        _ => false,
    };
    Ok((log, is_owner))
}

/// A turn as it stands: what has been written so far, and whether it is finished.
#[derive(SimpleObject)]
pub struct ChatTurn {
    pub turn_id: ID,
    /// The answer so far; the whole answer once `completed`.
    pub answer: String,
    pub sources: Vec<Source>,
    pub completed: bool,
}

#[derive(Default)]
pub struct ChatQuery;

#[Object]
impl ChatQuery {
    /// A recent turn by its id (anonymous readers' too: the id is the key), for
    /// `TURN_RETENTION_SECS` after it finished. `NOT_FOUND` when unknown or expired.
    async fn chat_turn(&self, ctx: &Context<'_>, turn_id: ID) -> async_graphql::Result<ChatTurn> {
        let (log, _) = find_turn(ctx, &turn_id).await?;
        // Read in place: the answer so far is the deltas joined, as the log keeps them.
        let turn = log.with_parts(|parts| {
            let (answer, completed) = match parts.last {
                Some(TurnEvent::Failed(e)) => return Err(ApiError::from(e.clone())),
                Some(TurnEvent::Completed { answer, .. }) => (answer.clone(), true),
                _ => (parts.deltas.joined().to_owned(), false),
            };
            Ok(ChatTurn {
                turn_id,
                answer,
                sources: parts.sources.iter().map(Source::from).collect(),
                completed,
            })
        })?;
        Ok(turn)
    }
}

fn service<'a>(ctx: &Context<'a>) -> Result<&'a Arc<ChatService>, ApiError> {
    ctx.data::<Arc<ChatService>>()
        .map_err(|_| ApiError::Internal("schema built without a ChatService"))
}

#[derive(Default)]
pub struct ChatMutation;

#[Object]
impl ChatMutation {
    /// Answers a question from the book, with sources. Signed-in readers' turns are kept
    /// in their history (a new conversation unless `conversationId` is given).
    #[graphql(complexity = "super::EXPENSIVE + child_complexity")]
    async fn chat(
        &self,
        ctx: &Context<'_>,
        input: ChatInput,
    ) -> async_graphql::Result<ChatPayload> {
        let log = begin(ctx, input).await?.start(ctx)?;
        let turn_id = log.id.clone();
        let mut events = std::pin::pin!(log.follow());
        let mut sources: Arc<[SourceRef]> = Arc::new([]);
        while let Some((_, event)) = events.next().await {
            match event {
                TurnEvent::Sources(s) => sources = s,
                TurnEvent::Delta(_) => {}
                TurnEvent::Completed {
                    answer,
                    unanswered,
                    stored,
                } => {
                    return Ok(ChatPayload {
                        turn_id,
                        answer,
                        unanswered,
                        sources,
                        stored,
                    });
                }
                TurnEvent::Failed(e) => return Err(ApiError::from(e).into()),
            }
        }
        Err(ApiError::Internal("the chat turn ended without an answer").into())
    }
}

#[derive(Default)]
pub struct ChatSubscription;

#[Subscription]
impl ChatSubscription {
    /// The same turn as `chat`, streamed: `ChatSources`, then `ChatDelta`s, then
    /// `ChatCompleted`. If the client goes away mid-answer, the answer is still finished
    /// and stored.
    #[graphql(complexity = "super::EXPENSIVE + child_complexity")]
    async fn chat_stream(
        &self,
        ctx: &Context<'_>,
        input: ChatInput,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<ChatEvent>> + use<>> {
        // Boxed: the subscription's stream keeps its resolver's state for as long as it
        // runs, and the checks before a turn starts are most of that state.
        let log = Box::pin(begin(ctx, input)).await?.start(ctx)?;
        Ok(events(log, 0, true))
    }

    /// Picks up a turn again by its id: `ChatSources`, the `ChatDelta`s after
    /// `afterSeq` (all of them when null or absent), then `ChatCompleted`, as the turn goes on or
    /// at once if it is finished. Works for anonymous readers (the id is the key); the
    /// stored `conversation` is shown to the turn's own reader only. `NOT_FOUND` when the
    /// id is unknown or its turn finished more than `TURN_RETENTION_SECS` ago.
    async fn resume_chat(
        &self,
        ctx: &Context<'_>,
        turn_id: ID,
        after_seq: Option<i32>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<ChatEvent>> + use<>> {
        let (log, is_owner) = Box::pin(find_turn(ctx, &turn_id)).await?;
        let after = usize::try_from(after_seq.unwrap_or(0)).unwrap_or(0);
        Ok(events(log, after, is_owner))
    }
}
