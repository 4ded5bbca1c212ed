//! Lectern: the GraphQL backend of a retrieval-augmented chatbot beside a book.
//!
//! Reading order for a newcomer:
//! 1. [`config`]: every setting, parsed and validated once into [`config::Settings`].
//! 2. [`db`]: the lazily connected pool, the supervisor that tracks whether the database
//!    is there and migrates it, and the availability state the guard reads.
//! 3. [`graphql`]: the schema, one root per feature; [`graphql::guard`] is the one way
//!    resolvers reach the database, [`graphql::error`] the codes clients see.
//! 4. [`auth`]: accounts, passwords, tokens, and the viewer of a request;
//!    [`entities`] the tables they live in; [`history`] conversations and messages.
//! 5. [`retrieval`] finds passages, [`llm`] writes answers, [`chat`] runs one turn.
//! 6. [`http`]: routes and middleware around the schema; [`metering`] what `/metrics` shows.
//! 7. [`Application`] below ties them together; `main.rs` and every test call
//!    [`Application::build`].

pub mod auth;
pub mod chat;
pub mod config;
pub mod db;
pub mod entities;
pub mod graphql;
pub mod history;
pub mod http;
pub mod insights;
pub mod json;
pub mod llm;
pub mod metering;
pub mod replicas;
pub mod retrieval;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use config::{DatabaseKind, Settings};
use db::Database;

/// A built server: bound to its port, with its database supervisor ready to start.
pub struct Application {
    listener: TcpListener,
    /// `HEALTH_BIND_ADDR`'s listener, served by a thread of its own.
    health_listener: Option<std::net::TcpListener>,
    state: http::AppState,
}

/// The vector store and embedders the settings ask for.
pub async fn open_retriever(settings: &Settings) -> anyhow::Result<retrieval::Retriever> {
    let dense = settings.embedding.clone().map(|(service, dims)| {
        let sides = settings.retrieval.embedding_sides.clone();
        (retrieval::embed::DenseEmbedder::new(service, sides), dims)
    });
    let tuning = &settings.retrieval;
    match &settings.qdrant {
        Some(service) => {
            retrieval::Retriever::remote(service, &settings.qdrant_collection, dense, tuning)
                .await
                .context("the Qdrant server at QDRANT_URL cannot be used")
        }
        None => retrieval::Retriever::embedded(&settings.data_dir, dense, tuning)
            .context("the vector store cannot be opened"),
    }
}

/// The store `serve` uses. A Qdrant server is connected lazily, as the database is: the
/// server starts and serves while Qdrant is down (chat answers `UPSTREAM_UNAVAILABLE`,
/// health says so) and sets the collection up when it answers. A collection that is there
/// but does not fit the settings stops start-up.
async fn retriever_for_serving(settings: &Settings) -> anyhow::Result<retrieval::Retriever> {
    let Some(service) = &settings.qdrant else {
        return open_retriever(settings).await;
    };
    let dense = settings.embedding.clone().map(|(service, dims)| {
        let sides = settings.retrieval.embedding_sides.clone();
        (retrieval::embed::DenseEmbedder::new(service, sides), dims)
    });
    let retriever = retrieval::Retriever::remote_lazy(
        service,
        &settings.qdrant_collection,
        dense,
        &settings.retrieval,
    )
    .context("QDRANT_URL cannot be used")?;
    match retriever.probe().await {
        Ok(()) => {}
        Err(retrieval::RetrievalError::Store(retrieval::store::StoreError::Layout(line))) => {
            anyhow::bail!(line)
        }
        Err(e) => tracing::warn!(
            error = %e,
            "the Qdrant server at QDRANT_URL does not answer yet; serving without it, and setting the collection up when it answers"
        ),
    }
    Ok(retriever)
}

/// Waits for Qdrant to answer, then indexes the corpus if the collection is empty.
async fn index_corpus_when_qdrant_answers(
    retriever: Arc<retrieval::Retriever>,
    corpus: std::path::PathBuf,
) {
    while retriever.probe().await.is_err() {
        tokio::time::sleep(QDRANT_PROBE_DOWN).await;
    }
    index_corpus_on_first_start(&retriever, &corpus).await;
}

/// How often Qdrant is probed while it does not answer, and while it does.
const QDRANT_PROBE_DOWN: Duration = Duration::from_secs(1);
const QDRANT_PROBE_UP: Duration = Duration::from_secs(5);

/// Keeps `vectorStore` health current in both directions while the server runs.
async fn probe_qdrant(retriever: Arc<retrieval::Retriever>, stop: CancellationToken) {
    loop {
        let wait = match retriever.probe().await {
            Ok(()) => QDRANT_PROBE_UP,
            Err(_) => QDRANT_PROBE_DOWN,
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Indexes the bundled corpus when the store is empty, so chat answers from the first
/// start. A missing corpus or a failure is logged, not fatal: chat then answers that it
/// found nothing until `lectern ingest` is run.
async fn index_corpus_on_first_start(retriever: &retrieval::Retriever, corpus: &std::path::Path) {
    match retriever.is_empty().await {
        Ok(true) if corpus.is_dir() => {
            let started = std::time::Instant::now();
            match retriever
                .ingest(
                    &[retrieval::site::Location::Folder(corpus.to_owned())],
                    &retrieval::Quiet,
                )
                .await
            {
                Ok(summary) => tracing::info!(
                    corpus = %corpus.display(),
                    pages = summary.pages,
                    chunks = summary.chunks,
                    seconds = started.elapsed().as_secs_f64(),
                    "indexed the corpus on first start"
                ),
                Err(e) => tracing::error!(error = %e, "indexing the corpus failed"),
            }
        }
        Ok(true) => {
            tracing::warn!(corpus = %corpus.display(), "the vector store is empty and CORPUS_DIR is not a directory; run `lectern ingest PATH`")
        }
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, "cannot read the vector store"),
    }
    // Calibrated before the first question, which would otherwise wait for it.
    match retriever.guardrail().await {
        Ok(guardrail) => tracing::info!("{guardrail}"),
        Err(e) => tracing::warn!(error = %e, "the guardrail is calibrated at the first question"),
    }
}

impl Application {
    /// Binds the listener and prepares everything; connects to nothing yet, so it works
    /// with the database down. Port 0 in `BIND_ADDR` picks a free port (see
    /// [`Application::local_addr`]).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.database.backend() == DatabaseKind::Sqlite {
            std::fs::create_dir_all(&settings.data_dir).with_context(|| {
                format!("cannot create DATA_DIR {}", settings.data_dir.display())
            })?;
        }
        metering::handle();
        let db = Database::connect_lazy(&settings.database)
            .await
            .context("DATABASE_URL cannot be used")?;
        let listener = TcpListener::bind(settings.bind_addr)
            .await
            .with_context(|| format!("cannot listen on BIND_ADDR {}", settings.bind_addr))?;
        let jwt_secret = settings.jwt_secret.clone().unwrap_or_else(|| {
            tracing::warn!("JWT_SECRET is not set: using a random one, so sign-ins end at restart");
            auth::tokens::TokenKeys::generated()
        });
        let auth = auth::AuthService {
            hasher: auth::password::PasswordHasher::new(
                settings.limits.hash_queue as usize,
                settings.password_hash,
            )?,
            keys: auth::tokens::TokenKeys::new(&jwt_secret),
            limits: auth::rate_limit::AuthRateLimits::new(
                settings.auth_rate_limit_per_ip,
                settings.auth_rate_limit_per_email,
                &jwt_secret,
            )
            .shared(replicas::SharedCounter::for_database(&db)),
            sessions: auth::SessionEvents::default(),
            reuse_grace: settings.limits.refresh_reuse_grace,
            require_email_verification: settings.require_email_verification,
        };
        let better_auth = settings.better_auth_secret.clone().map(|secret| {
            Arc::new(auth::better_auth::BetterAuthVerifier::new(
                secret,
                &settings.better_auth_cookie_prefix,
            ))
        });
        let retriever = Arc::new(retriever_for_serving(&settings).await?);
        if retriever.healthy() {
            index_corpus_on_first_start(&retriever, &settings.corpus_dir).await;
        } else {
            tokio::spawn(index_corpus_when_qdrant_answers(
                retriever.clone(),
                settings.corpus_dir.clone(),
            ));
        }
        let generator = Arc::new(llm::Generator::new(
            settings.llm.clone().map(llm::openai::ChatModel::new),
        ));
        let quotas = chat::ChatQuotas::new(
            settings.limits.chat_per_ip,
            settings.limits.chat_per_reader,
            settings
                .llm
                .as_ref()
                .map(|_| settings.limits.model_concurrency),
            replicas::SharedCounter::for_database(&db),
        );
        let chat = Arc::new(chat::ChatService {
            retriever,
            generator,
            site_url: settings.retrieval.site_url.clone(),
            history_limit: settings.history_limit,
            quotas,
            tasks: tokio_util::task::TaskTracker::new(),
            journal: Arc::new(chat::journal::Journal::new(&settings.data_dir)),
            turns: chat::turns::TurnRegistry::new(
                settings.limits.turn_retention,
                settings.limits.turn_registry_max,
            ),
            finished: replicas::FinishedTurns::for_database(&db, settings.limits.turn_retention),
            record_insights: settings.insights.record,
        });
        let admission = http::admission::Admission::new(settings.limits.admission_per_ip);
        let settings = Arc::new(settings);
        let schema =
            graphql::build_schema(db.clone(), settings.clone(), auth.clone(), chat.clone());
        let validated_schema = graphql::build_schema_for_validated_documents(
            db.clone(),
            settings.clone(),
            auth.clone(),
            chat.clone(),
        );
        let health_listener = settings
            .health_addr
            .map(|addr| {
                std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .with_context(|| format!("cannot listen on HEALTH_BIND_ADDR {addr}"))
            })
            .transpose()?;
        Ok(Self {
            listener,
            health_listener,
            state: http::AppState {
                schema,
                validated_schema,
                db,
                settings,
                chat,
                auth: Arc::new(auth),
                better_auth,
                shutdown: CancellationToken::new(),
                stopping: CancellationToken::new(),
                ws_connections: http::ws::ConnectionCounts::default(),
                admission: admission.map(Arc::new),
                large_bodies: Arc::new(tokio::sync::Semaphore::new(http::LARGE_BODY_READS)),
                documents: Arc::default(),
                websockets: tokio_util::task::TaskTracker::new(),
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Where `HEALTH_BIND_ADDR` listens, when set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    pub fn database(&self) -> Database {
        self.state.db.clone()
    }

    /// Serves until `stop` resolves, then drains: `/readyz` answers 503 while the
    /// listener still accepts, chat turns in flight are answered and stored (for at most
    /// `SHUTDOWN_TIMEOUT_SECS`), WebSockets are closed (1001) once they have had their
    /// last event, in-flight requests finish, and only then is the pool closed.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let draining = self.state.shutdown.clone();
        let stopping = self.state.stopping.clone();
        let supervisor_stop = CancellationToken::new();
        let supervisor = tokio::spawn(self.state.db.clone().supervise(supervisor_stop.clone()));
        if self.state.settings.qdrant.is_some() {
            tokio::spawn(probe_qdrant(
                self.state.chat.retriever.clone(),
                supervisor_stop.clone(),
            ));
        }
        if self.state.db.kind() == DatabaseKind::Postgres {
            tokio::spawn(replicas::listen_for_ended_sessions(
                self.state.settings.database.url.clone(),
                self.state.auth.sessions.clone(),
                supervisor_stop.clone(),
            ));
            tokio::spawn(replicas::janitor(
                self.state.db.clone(),
                self.state.settings.limits.turn_retention,
                supervisor_stop.clone(),
            ));
        }
        tokio::spawn(insights::retention_task(
            self.state.db.clone(),
            self.state.settings.insights.retention,
            supervisor_stop.clone(),
        ));
        let replayer = tokio::spawn(self.state.chat.journal.clone().run(
            self.state.db.clone(),
            self.state.chat.history_limit,
            supervisor_stop.clone(),
        ));
        tracing::info!(address = %self.local_addr(), "listening; GraphQL at /graphql");
        let settings = self.state.settings.clone();
        let turns = self.state.chat.tasks.clone();
        let websockets = self.state.websockets.clone();
        let probes_stop = CancellationToken::new();
        if let Some(listener) = self.health_listener {
            http::probes::serve_on_own_thread(listener, self.state.clone(), probes_stop.clone())?;
        }
        let _probes_stop = probes_stop.drop_guard();
        let app = http::router(self.state);
        // Resolves when the listener should close: after the drain, or at once when the
        // supervisor gave up on the schema.
        let listener_closes = drain(
            stop,
            draining.clone(),
            stopping,
            turns,
            settings.limits.shutdown_timeout,
        );
        let served = http::serve::serve(self.listener, app, &settings.limits, listener_closes);
        tokio::pin!(served);
        let mut supervisor = supervisor;
        // The supervisor ends early only when the schema cannot be migrated: then the
        // server stops too, rather than answering DATABASE_UNAVAILABLE for ever.
        let (served, supervised) = tokio::select! {
            served = &mut served => {
                supervisor_stop.cancel();
                (served, supervisor.await)
            }
            supervised = &mut supervisor => {
                draining.cancel();
                (served.await, supervised)
            }
        };
        supervisor_stop.cancel();
        if let Err(e) = replayer.await {
            tracing::error!(error = %e, "the turn journal's replayer ended abnormally");
        }
        websockets.close();
        if tokio::time::timeout(Duration::from_secs(5), websockets.wait())
            .await
            .is_err()
        {
            tracing::warn!("WebSocket connections still open at shutdown are cut off");
        }
        served?;
        match supervised {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(std::io::Error::other(format!(
                    "the database schema cannot be migrated: {e}"
                )));
            }
            Err(e) => tracing::error!(error = %e, "database supervisor ended abnormally"),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Once `stop` resolves (or `draining` is fired elsewhere): fires `draining`, so
/// `/readyz` answers 503, waits for the chat turns in flight (for at most `timeout`),
/// then fires `stopping`, so WebSockets send their last events and close.
async fn drain(
    stop: impl Future<Output = ()>,
    draining: CancellationToken,
    stopping: CancellationToken,
    turns: tokio_util::task::TaskTracker,
    timeout: Duration,
) {
    tokio::select! {
        () = stop => {}
        () = draining.cancelled() => {}
    }
    draining.cancel();
    tracing::info!(
        turns = turns.len(),
        "draining: finishing the chat turns in flight"
    );
    turns.close();
    if tokio::time::timeout(timeout, turns.wait()).await.is_err() {
        tracing::warn!(
            turns = turns.len(),
            "shutdown timeout: turns still running are cut off"
        );
    }
    stopping.cancel();
}
