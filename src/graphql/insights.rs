//! For the book's authors: `rateAnswer` (any reader), and the `insights` report (authors
//! only: `ADMIN_EMAILS` or `lectern admin grant`; everyone else gets `FORBIDDEN`).

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::auth::{current_user_id, viewer};
use super::error::ApiError;
use super::guard::with_database;
use crate::auth::viewer::Viewer;
use crate::chat::ChatService;
use crate::config::Settings;
use crate::insights::{self, RateError, Rating, Window};

/// The longest window one report covers.
const MAX_WINDOW_DAYS: i64 = 366;
/// The window when none is given: the last 30 days.
const DEFAULT_WINDOW_DAYS: i64 = 30;

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum AnswerRating {
    Up,
    Down,
}

impl From<AnswerRating> for Rating {
    fn from(r: AnswerRating) -> Self {
        match r {
            AnswerRating::Up => Rating::Up,
            AnswerRating::Down => Rating::Down,
        }
    }
}

impl From<Rating> for AnswerRating {
    fn from(r: Rating) -> Self {
        match r {
            Rating::Up => AnswerRating::Up,
            Rating::Down => AnswerRating::Down,
        }
    }
}

/// A rating as stored.
#[derive(SimpleObject)]
pub struct RatedAnswer {
    /// The turn the answer belongs to.
    pub turn_id: ID,
    pub rating: AnswerRating,
    pub comment: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<RateError> for ApiError {
    fn from(e: RateError) -> Self {
        match e {
            RateError::NotFound => ApiError::NotFound,
            RateError::Database(e) => ApiError::Database(e),
        }
    }
}

#[derive(Default)]
pub struct InsightsMutation;

#[Object]
impl InsightsMutation {
    /// Rates an answer, thumbs up or down, with an optional comment (at most 2,000
    /// characters). Signed-in readers name one of their own answers by `messageId`;
    /// anyone names a turn by its `turnId` (the unguessable id is the key; a rating a
    /// signed-in reader made stays theirs). One rating per answer: rating again replaces
    /// it. Another reader's message, or an unknown one, is `NOT_FOUND`. Turns are rated by
    /// id only while `INSIGHTS` records them.
    async fn rate_answer(
        &self,
        ctx: &Context<'_>,
        message_id: Option<ID>,
        turn_id: Option<ID>,
        rating: AnswerRating,
        comment: Option<String>,
    ) -> async_graphql::Result<RatedAnswer> {
        let comment = insights::parse_comment(comment).map_err(ApiError::BadUserInput)?;
        let stored = match (message_id, turn_id) {
            (Some(message_id), None) => {
                let user_id = current_user_id(ctx).await?;
                with_database(ctx, |conn| async move {
                    insights::rate_message(&conn, &user_id, &message_id, rating.into(), comment)
                        .await
                })
                .await?
            }
            (None, Some(turn_id)) => {
                let rater = match viewer(ctx) {
                    Viewer::Anonymous => None,
                    _ => Some(current_user_id(ctx).await?),
                };
                with_database(ctx, |conn| async move {
                    insights::rate_turn(&conn, rater.as_deref(), &turn_id, rating.into(), comment)
                        .await
                })
                .await?
            }
            _ => {
                return Err(ApiError::BadUserInput(
                    "give exactly one of messageId (an answer in your history) and turnId".into(),
                )
                .into());
            }
        };
        Ok(RatedAnswer {
            turn_id: ID(stored.turn_id),
            rating: stored.rating.into(),
            comment: stored.comment,
            updated_at: stored.updated_at,
        })
    }
}

#[derive(Default)]
pub struct InsightsQuery;

#[Object]
impl InsightsQuery {
    /// What readers asked between `from` (inclusive) and `to` (exclusive): by default the
    /// last 30 days, at most 366. For the book's authors only: `UNAUTHENTICATED` when
    /// signed out, `FORBIDDEN` for other readers.
    async fn insights(
        &self,
        ctx: &Context<'_>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Insights> {
        require_admin(ctx).await?;
        let window = window(from, to).map_err(ApiError::BadUserInput)?;
        Ok(Insights { window })
    }

    /// Whether the signed-in reader is one of the book's authors.
    async fn viewer_is_admin(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        match require_admin(ctx).await {
            Ok(()) => Ok(true),
            Err(ApiError::Forbidden) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// The window a report covers, checked.
pub fn window(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<Window, String> {
    let to = to.unwrap_or_else(Utc::now);
    let from = from.unwrap_or(to - chrono::Duration::days(DEFAULT_WINDOW_DAYS));
    if from >= to {
        return Err("from must be before to".into());
    }
    if to - from > chrono::Duration::days(MAX_WINDOW_DAYS) {
        return Err(format!("a report covers at most {MAX_WINDOW_DAYS} days"));
    }
    Ok(Window { from, to })
}

async fn require_admin(ctx: &Context<'_>) -> Result<(), ApiError> {
    let user_id = current_user_id(ctx).await?;
    let admins = ctx
        .data::<Arc<Settings>>()
        .map_err(|_| ApiError::Internal("schema built without settings"))?
        .insights
        .admin_emails
        .clone();
    let admin = with_database(ctx, |conn| async move {
        insights::is_admin(&conn, &user_id, &admins).await
    })
    .await?;
    if admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// One report.
pub struct Insights {
    window: Window,
}

#[derive(SimpleObject)]
pub struct DayCount {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub questions: i64,
    /// Of those, the questions the book did not seem to cover.
    pub unanswered: i64,
}

#[derive(SimpleObject)]
pub struct CitedPage {
    pub path: String,
    pub url: Option<String>,
    pub title: String,
}

#[derive(SimpleObject)]
pub struct PageCitations {
    pub page: CitedPage,
    pub citations: i64,
}

#[derive(SimpleObject)]
pub struct QuestionCount {
    /// One of the ways it was asked.
    pub question: String,
    /// The form questions were grouped by: lower case, letters and digits only.
    pub normalized: String,
    pub count: i64,
}

#[derive(SimpleObject)]
pub struct RatingCounts {
    pub up: i64,
    pub down: i64,
}

/// A turn in a report: an unanswered question, or an answer rated down.
#[derive(SimpleObject)]
pub struct TurnInsight {
    pub turn_id: ID,
    /// Null for a rated answer whose turn was not recorded (`INSIGHTS=off` then).
    pub question: Option<String>,
    pub asked_at: Option<DateTime<Utc>>,
    /// The best passage's relevance (see `RETRIEVAL_MIN_SCORE`).
    pub best_score: Option<f64>,
    /// The pages the answer cited (for an unanswered question: the nearest sections).
    pub cited: Vec<CitedPage>,
    /// For a rated answer: the reader's comment and when they rated it.
    pub comment: Option<String>,
    pub rated_at: Option<DateTime<Utc>>,
}

impl From<insights::TurnInsight> for TurnInsight {
    fn from(t: insights::TurnInsight) -> Self {
        Self {
            turn_id: ID(t.turn_id),
            question: t.question,
            asked_at: t.asked_at,
            best_score: t.best_score,
            cited: t.cited.into_iter().map(CitedPage::from).collect(),
            comment: t.comment,
            rated_at: t.rated_at,
        }
    }
}

impl From<insights::Citation> for CitedPage {
    fn from(c: insights::Citation) -> Self {
        Self {
            path: c.path,
            url: c.url,
            title: c.title,
        }
    }
}

/// `first` from 1 to 100 and `offset` from 0.
fn paging(first: i32, offset: i32) -> Result<(u64, u64), ApiError> {
    let first = u64::try_from(first)
        .ok()
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| ApiError::BadUserInput("first must be from 1 to 100".into()))?;
    let offset = u64::try_from(offset)
        .map_err(|_| ApiError::BadUserInput("offset must be 0 or more".into()))?;
    Ok((first, offset))
}

impl Insights {
    /// One page of a list section: `first` and `offset` checked, then `query` run on the
    /// window through the database guard.
    async fn page<T, F, Fut>(
        &self,
        ctx: &Context<'_>,
        first: i32,
        offset: i32,
        query: F,
    ) -> Result<Vec<T>, ApiError>
    where
        F: FnOnce(sea_orm::DatabaseConnection, Window, u64, u64) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<T>, sea_orm::DbErr>>,
    {
        let (first, offset) = paging(first, offset)?;
        let window = self.window;
        with_database(ctx, |conn| query(conn, window, first, offset)).await
    }
}

#[Object]
impl Insights {
    async fn from(&self) -> DateTime<Utc> {
        self.window.from
    }

    async fn to(&self) -> DateTime<Utc> {
        self.window.to
    }

    /// Questions asked per UTC day, and how many of them the book did not cover.
    async fn questions_per_day(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<DayCount>> {
        let window = self.window;
        let days = with_database(ctx, |conn| async move {
            insights::questions_per_day(&conn, window).await
        })
        .await?;
        Ok(days
            .into_iter()
            .map(|d| DayCount {
                day: d.day,
                questions: d.questions,
                unanswered: d.unanswered,
            })
            .collect())
    }

    /// Ratings given within the window.
    async fn ratings(&self, ctx: &Context<'_>) -> async_graphql::Result<RatingCounts> {
        let window = self.window;
        let (up, down) = with_database(ctx, |conn| async move {
            insights::rating_counts(&conn, window).await
        })
        .await?;
        Ok(RatingCounts { up, down })
    }

    /// Questions the book did not seem to cover, newest first.
    async fn unanswered(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> async_graphql::Result<Vec<TurnInsight>> {
        let turns = self
            .page(
                ctx,
                first,
                offset,
                |conn, window, first, offset| async move {
                    insights::unanswered(&conn, window, first, offset).await
                },
            )
            .await?;
        Ok(turns.into_iter().map(TurnInsight::from).collect())
    }

    /// Answers rated down, most recently rated first, with their questions, comments
    /// and cited pages.
    async fn thumbs_down(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> async_graphql::Result<Vec<TurnInsight>> {
        let turns = self
            .page(
                ctx,
                first,
                offset,
                |conn, window, first, offset| async move {
                    insights::thumbs_down(&conn, window, first, offset).await
                },
            )
            .await?;
        Ok(turns.into_iter().map(TurnInsight::from).collect())
    }

    /// The pages answers cited most.
    async fn most_cited_pages(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> async_graphql::Result<Vec<PageCitations>> {
        let pages = self
            .page(
                ctx,
                first,
                offset,
                |conn, window, first, offset| async move {
                    insights::most_cited(&conn, window, first, offset).await
                },
            )
            .await?;
        Ok(pages
            .into_iter()
            .map(|p| PageCitations {
                page: p.page.into(),
                citations: p.citations,
            })
            .collect())
    }

    /// Indexed pages no answer cited within the window, by path.
    async fn pages_never_cited(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> async_graphql::Result<Vec<String>> {
        let (first, offset) = paging(first, offset)?;
        let window = self.window;
        let cited = with_database(ctx, |conn| async move {
            insights::cited_paths(&conn, window).await
        })
        .await?;
        let chat = ctx
            .data::<Arc<ChatService>>()
            .map_err(|_| ApiError::Internal("schema built without a ChatService"))?;
        let pages = chat
            .retriever
            .pages()
            .await
            .map_err(|_| ApiError::UpstreamUnavailable)?;
        Ok(pages
            .into_iter()
            .filter(|p| !cited.contains(p))
            .skip(offset as usize)
            .take(first as usize)
            .collect())
    }

    /// The questions asked most, grouped by their words (case and punctuation aside).
    async fn frequent_questions(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        #[graphql(default = 0)] offset: i32,
    ) -> async_graphql::Result<Vec<QuestionCount>> {
        let questions = self
            .page(
                ctx,
                first,
                offset,
                |conn, window, first, offset| async move {
                    insights::frequent_questions(&conn, window, first, offset).await
                },
            )
            .await?;
        Ok(questions
            .into_iter()
            .map(|q| QuestionCount {
                question: q.question,
                normalized: q.normalized,
                count: q.count,
            })
            .collect())
    }
}
