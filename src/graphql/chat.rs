//! `chat` (mutation) and `chatStream` (subscription): answers for anyone, history for
//! signed-in readers. Both run the same turn (see `crate::chat`).

use std::sync::Arc;

use async_graphql::{Context, ID, InputObject, Object, SimpleObject, Subscription, Union};
use futures_util::Stream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::UnboundedReceiver;

use super::auth::{current_user_id, viewer};
use super::error::ApiError;
use super::guard::database;
use super::history::{Conversation, Source};
use crate::auth::ClientInfo;
use crate::auth::viewer::Viewer;
use crate::chat::{
    Asker, ChatError, ChatEvent as TurnEvent, ChatRequest, ChatService, SourceRef, Stored,
};

#[derive(InputObject)]
pub struct ChatInput {
    /// The question, 1 to 4,000 characters.
    pub message: String,
    /// Continue this conversation (signed-in readers; must be theirs).
    pub conversation_id: Option<ID>,
    /// A passage the reader selected and asks about, up to 10,000 characters.
    pub selected_text: Option<String>,
}

/// The answer to one question.
pub struct ChatPayload {
    answer: String,
    sources: Vec<SourceRef>,
    stored: Stored,
}

#[Object]
impl ChatPayload {
    async fn answer(&self) -> &str {
        &self.answer
    }

    async fn sources(&self) -> Vec<Source> {
        self.sources.iter().map(Source::from).collect()
    }

    /// The conversation the turn was stored in: null for anonymous readers, and null
    /// with a `DATABASE_UNAVAILABLE` error when it could not be stored.
    async fn conversation(&self) -> async_graphql::Result<Option<Conversation>> {
        stored_conversation(&self.stored)
    }
}

/// The passages an answer will cite; the first event of a stream.
#[derive(SimpleObject)]
pub struct ChatSources {
    pub sources: Vec<Source>,
}

/// A piece of the answer as it is written.
#[derive(SimpleObject)]
pub struct ChatDelta {
    pub delta: String,
}

/// The last event: the whole answer and where it was stored.
pub struct ChatCompleted {
    answer: String,
    stored: Stored,
}

#[Object]
impl ChatCompleted {
    async fn answer(&self) -> &str {
        &self.answer
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
            path: s.path.clone(),
            snippet: s.snippet.clone(),
            score: s.score,
        }
    }
}

fn stored_conversation(stored: &Stored) -> async_graphql::Result<Option<Conversation>> {
    match stored {
        Stored::NotKept => Ok(None),
        Stored::Kept(model) => Ok(Some(model.clone().into())),
        Stored::DatabaseUnavailable => Err(ApiError::DatabaseUnavailable.into()),
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
    .map_err(ApiError::BadUserInput)?;
    let asker = match viewer(ctx) {
        Viewer::Anonymous => Asker::Anonymous,
        _ => match tokio::time::timeout(SESSION_CHECK, current_user_id(ctx)).await {
            Ok(Ok(user_id)) => Asker::Reader(user_id),
            // Answers flow during an outage, and while the database is too slow to say
            // who asks (an outage not known yet looks like that); only storing the turn
            // is impossible.
            Ok(Err(ApiError::DatabaseUnavailable | ApiError::DatabaseBusy)) | Err(_) => {
                Asker::Unverified
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
    fn start(self, ctx: &Context<'_>) -> Result<UnboundedReceiver<TurnEvent>, ApiError> {
        let db = database(ctx)?.clone();
        Ok(service(ctx)?.start(db, self.asker, self.request, self.model_call))
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
        let mut events = begin(ctx, input).await?.start(ctx)?;
        let mut sources = Vec::new();
        while let Some(event) = events.recv().await {
            match event {
                TurnEvent::Sources(s) => sources = s,
                TurnEvent::Delta(_) => {}
                TurnEvent::Completed { answer, stored } => {
                    return Ok(ChatPayload {
                        answer,
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
        let events = begin(ctx, input).await?.start(ctx)?;
        Ok(futures_util::stream::unfold(
            (events, false),
            |(mut events, done)| async move {
                if done {
                    return None;
                }
                let item = match events.recv().await? {
                    TurnEvent::Sources(s) => Ok(ChatEvent::ChatSources(ChatSources {
                        sources: s.iter().map(Source::from).collect(),
                    })),
                    TurnEvent::Delta(delta) => Ok(ChatEvent::ChatDelta(ChatDelta { delta })),
                    TurnEvent::Completed { answer, stored } => {
                        return Some((
                            Ok(ChatEvent::ChatCompleted(ChatCompleted { answer, stored })),
                            (events, true),
                        ));
                    }
                    TurnEvent::Failed(e) => {
                        return Some((Err(ApiError::from(e).into()), (events, true)));
                    }
                };
                Some((item, (events, false)))
            },
        ))
    }
}
