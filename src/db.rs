//! The database connection and what the server knows about its availability.
//!
//! The pool is created lazily, so the server boots while the database is still starting.
//! A supervisor task owns the availability state: it probes with capped exponential
//! backoff while the database is away, runs pending migrations the first time it gets
//! through, and keeps probing while it is up. Request handlers never wait for it: their
//! work goes through [`Database::run`], which refuses at once from the last known state,
//! bounds the wait, and reports connection-level failures back (`observe`) so an outage is
//! known after the first failed query instead of at the next probe.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, RuntimeErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseKind, DatabaseSettings};

/// Database operations allowed to wait for a pooled connection, per connection. Past
/// `max_connections × this`, requests are refused at once (load shedding) instead of
/// queueing without bound behind a slow or saturated database.
const PENDING_PER_CONNECTION: u32 = 64;
/// How long opening one connection (TCP + TLS + auth) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pooled connections idle longer than this are pinged before use.
const IDLE_BEFORE_PING: Duration = Duration::from_millis(500);
/// The first retry after a failed probe; doubled after each further failure...
const BACKOFF_START: Duration = Duration::from_millis(100);
/// ...up to this cap, so recovery is noticed within a few seconds.
const BACKOFF_CAP: Duration = Duration::from_secs(3);
/// How often a healthy database is probed, to notice an outage nobody's query hit.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Upper bound of applying migrations on first contact, the wait for another replica's
/// migrations included.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);
/// Work slower than this makes the supervisor probe at once (see
/// `Database::outage_noticed`); a live database answers in milliseconds.
const SLOW_OPERATION: Duration = Duration::from_millis(250);
/// The PostgreSQL advisory lock replicas take turns on to migrate ("lectern" in ASCII).
const MIGRATION_LOCK: i64 = 0x006c_6563_7465_726e;
/// Upper bound of the probe's ping, on its own connection: a live database answers in
/// milliseconds, so a second of silence is an outage (or a database too slow to use).
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// What the server believes about the database right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// No probe has finished yet (start-up).
    Connecting,
    /// Reachable, and migrations have been applied.
    Up,
    /// The last probe or query failed at the connection level.
    Down,
}

/// A cheap-to-clone handle shared by the schema, the HTTP layer and the supervisor.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    /// The lazy pool; it connects on first use and reconnects on its own.
    conn: DatabaseConnection,
    /// A one-connection pool of the supervisor's own, so a probe never queues behind
    /// requests for a pooled connection (a saturated pool is not an outage) and never
    /// waits out the request pool's acquire timeout (an outage is noticed in a second).
    probe: DatabaseConnection,
    kind: DatabaseKind,
    /// The availability state, written by the supervisor and by [`Database::observe`].
    state: watch::Sender<Availability>,
    /// Wakes the supervisor early when a request saw the connection fail.
    wake: Notify,
    /// Bounds the database operations in flight (running or waiting for a connection).
    in_flight: Semaphore,
    /// Bounds one operation, the wait for a connection included.
    timeout: Duration,
}

/// Why [`Database::run`] did not get an answer from the database.
#[derive(Debug)]
pub enum RunError<E> {
    /// Known to be down, or the operation lost its connection: fail fast.
    Unavailable,
    /// Too many operations already waiting, or this one outlived the timeout: the
    /// database is up but cannot keep pace right now.
    Busy,
    /// The database answered with an error that is not about availability.
    Failed(E),
}

impl Database {
    /// Builds the pool without connecting. Fails only on a URL the driver cannot parse.
    pub async fn connect_lazy(settings: &DatabaseSettings) -> Result<Self, DbErr> {
        let mut options = pool_options(settings, settings.max_connections, settings.timeout);
        options
            .connect_timeout(CONNECT_TIMEOUT)
            // A ping before every checkout would double the round trips of every request,
            // so only connections idle for a while are pinged: under load they go through
            // untouched, and after an outage the stale ones are replaced instead of being
            // handed to requests one by one.
            .test_before_acquire_if_idle_for(IDLE_BEFORE_PING);
        let conn = sea_orm::Database::connect(options).await?;
        let mut probe_options = pool_options(settings, 1, PING_TIMEOUT);
        probe_options
            .connect_timeout(PING_TIMEOUT)
            .test_before_acquire(false);
        let probe = sea_orm::Database::connect(probe_options).await?;
        let (state, _) = watch::channel(Availability::Connecting);
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                probe,
                kind: settings.backend(),
                state,
                wake: Notify::new(),
                in_flight: Semaphore::new(
                    (settings.max_connections * PENDING_PER_CONNECTION) as usize,
                ),
                timeout: settings.timeout,
            }),
        })
    }

    /// Whether request work may go to the database: the last known state, read at once.
    fn is_up(&self) -> bool {
        *self.inner.state.borrow() == Availability::Up
    }

    /// Runs one unit of database work for a request through the guard, with the bounds
    /// every request gets: refused at once while the database is known to be down or when
    /// too many operations are already pending, and cut off after the database timeout (a
    /// transaction cut off this way is rolled back, never half-applied). Failures that
    /// mean the database is gone mark it down.
    ///
    pub async fn run<T, E, F, Fut>(&self, op: F) -> Result<T, RunError<E>>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: AsDbErr,
    {
        self.run_with(op, true).await
    }

    /// [`Database::run`] without the in-flight bound and the timeout, for work whose own
    /// cost dwarfs its queries and is bounded elsewhere: password hashing in `register`
    /// and `login` has its own bounded queue.
    pub async fn run_unbounded<T, E, F, Fut>(&self, op: F) -> Result<T, RunError<E>>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: AsDbErr,
    {
        self.run_with(op, false).await
    }

    async fn run_with<T, E, F, Fut>(&self, op: F, bounded: bool) -> Result<T, RunError<E>>
    where
        F: FnOnce(DatabaseConnection) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: AsDbErr,
    {
        if !self.is_up() {
            return Err(RunError::Unavailable);
        }
        let conn = self.inner.conn.clone();
        let outcome = if bounded {
            let Ok(_permit) = self.inner.in_flight.try_acquire() else {
                metrics::counter!("lectern_database_shed_total", "reason" => "pending")
                    .increment(1);
                return Err(RunError::Busy);
            };
            let work = tokio::time::timeout(self.inner.timeout, op(conn));
            tokio::pin!(work);
            tokio::select! {
                biased;
                outcome = &mut work => outcome,
                () = self.outage_noticed() => return Err(RunError::Unavailable),
            }
        } else {
            Ok(op(conn).await)
        };
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => match e.as_db_err() {
                Some(db_err) if self.observe(db_err) => Err(RunError::Unavailable),
                Some(db_err) if is_pool_timeout(db_err) => Err(self.timed_out()),
                _ => Err(RunError::Failed(e)),
            },
            Err(_elapsed) => Err(self.timed_out()),
        }
    }

    /// Resolves if, while some work is slow, the database turns out to be gone. An
    /// abrupt stop is not seen by the work itself: the driver retries refused connections
    /// until the timeout. So slow work wakes the supervisor, whose probe knows within a
    /// second, and gives up as soon as it says the database is down.
    async fn outage_noticed(&self) {
        tokio::time::sleep(SLOW_OPERATION).await;
        self.inner.wake.notify_one();
        let mut state = self.inner.state.subscribe();
        // The sender lives as long as `self`.
        let _ = state.wait_for(|a| *a == Availability::Down).await;
    }

    /// Work that outlived the timeout (or found no free connection within it) is shed as
    /// busy; the supervisor is woken to find out whether it is slowness or an outage.
    fn timed_out<E>(&self) -> RunError<E> {
        metrics::counter!("lectern_database_shed_total", "reason" => "timeout").increment(1);
        self.inner.wake.notify_one();
        RunError::Busy
    }

    /// Pool size and idle connections, for `/metrics`.
    pub fn pool_usage(&self) -> (u32, usize) {
        let conn = &self.inner.conn;
        match self.inner.kind {
            DatabaseKind::Postgres => {
                let pool = conn.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DatabaseKind::Sqlite => {
                let pool = conn.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
        }
    }

    /// Looks at a failed query: when the failure means the database is gone, marks it
    /// down and wakes the supervisor. Returns whether it was such a failure. A pool
    /// timeout is not one: it means busy, and the supervisor's probe decides.
    fn observe(&self, err: &DbErr) -> bool {
        if !is_connection_error(err) {
            return false;
        }
        let was_up = self.inner.state.send_replace(Availability::Down) == Availability::Up;
        if was_up {
            tracing::warn!(error = %err, "database connection lost");
        }
        self.inner.wake.notify_one();
        true
    }

    pub fn availability(&self) -> Availability {
        *self.inner.state.borrow()
    }

    /// Resolves once the database is up; for callers that must wait, like `lectern migrate`
    /// or a test, never for request handlers.
    pub async fn wait_until_up(&self) {
        let mut rx = self.inner.state.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we hold it.
        let _ = rx.wait_for(|a| *a == Availability::Up).await;
    }

    pub fn kind(&self) -> DatabaseKind {
        self.inner.kind
    }

    /// The connection regardless of availability: for the CLI and tests that manage
    /// their own waiting. Request handlers use [`Database::run`].
    pub fn connection(&self) -> &DatabaseConnection {
        &self.inner.conn
    }

    /// Runs until `shutdown` fires: probes, migrates on first contact, tracks availability
    /// and logs every transition (connecting, connected, lost, recovered).
    ///
    /// Returns an error, after logging it once, when the schema cannot be migrated for a
    /// reason other than reaching the database (a table in the way with other columns,
    /// say): no retry will fix that, so the server stops instead of answering
    /// `DATABASE_UNAVAILABLE` for ever.
    pub async fn supervise(self, shutdown: CancellationToken) -> Result<(), DbErr> {
        let mut migrated = false;
        let mut backoff = BACKOFF_START;
        let mut failures: u32 = 0;
        tracing::info!(backend = ?self.inner.kind, "connecting to the database");
        loop {
            let outcome = self.probe(&mut migrated).await;
            let previous = self.availability();
            let delay = match outcome {
                Err(Probe::Schema(e)) => {
                    tracing::error!(error = %e, "the database schema cannot be migrated; fix the database or run `lectern migrate` to see why, then start again");
                    self.inner.conn.close_by_ref().await.ok();
                    self.inner.probe.close_by_ref().await.ok();
                    return Err(e);
                }
                Ok(()) => {
                    self.inner.state.send_replace(Availability::Up);
                    match previous {
                        Availability::Connecting => tracing::info!("database connected"),
                        Availability::Down => {
                            tracing::info!(failed_probes = failures, "database recovered")
                        }
                        Availability::Up => {}
                    }
                    failures = 0;
                    backoff = BACKOFF_START;
                    PROBE_INTERVAL
                }
                Err(Probe::Unreachable(reason)) => {
                    self.inner.state.send_replace(Availability::Down);
                    failures += 1;
                    if previous == Availability::Up {
                        tracing::warn!(error = %reason, "database connection lost");
                    } else if failures == 1 || failures.is_power_of_two() {
                        // Quieter as an outage drags on: attempt 1, 2, 4, 8, ...
                        tracing::warn!(error = %reason, attempt = failures, retry_in = ?backoff, "database unavailable, retrying");
                    }
                    let delay = backoff;
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    delay
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
                _ = self.inner.wake.notified() => {}
            }
        }
        self.inner.conn.close_by_ref().await.ok();
        self.inner.probe.close_by_ref().await.ok();
        tracing::info!("database pool closed");
        Ok(())
    }

    async fn probe(&self, migrated: &mut bool) -> Result<(), Probe> {
        match tokio::time::timeout(PING_TIMEOUT, self.inner.probe.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Probe::Unreachable(e.to_string())),
            Err(_) => {
                return Err(Probe::Unreachable(format!(
                    "no answer to a ping within {PING_TIMEOUT:?}"
                )));
            }
        }
        if !*migrated {
            match tokio::time::timeout(MIGRATE_TIMEOUT, self.migrate()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) if is_connection_error(&e) || is_pool_timeout(&e) => {
                    return Err(Probe::Unreachable(e.to_string()));
                }
                Ok(Err(e)) => return Err(Probe::Schema(e)),
                Err(_) => {
                    return Err(Probe::Unreachable(format!(
                        "migrations did not finish within {MIGRATE_TIMEOUT:?}"
                    )));
                }
            }
            *migrated = true;
        }
        Ok(())
    }

    /// Applies pending migrations. On PostgreSQL, replicas that start together take turns
    /// through an advisory lock held on the probe's own connection for the duration, so
    /// two never create the same table at once (which failed one of them with a
    /// duplicate key in `pg_type`); the one that waited then finds nothing to do.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        if self.inner.kind != DatabaseKind::Postgres {
            return run_migrations(&self.inner.conn).await;
        }
        let lock = self.inner.probe.begin().await?;
        lock.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
            .await?;
        let migrated = run_migrations(&self.inner.conn).await;
        // Ending the transaction releases the lock (also if the connection drops).
        lock.commit().await?;
        migrated
    }
}

/// Why a probe did not succeed.
enum Probe {
    /// The database could not be reached (or not in time): retry.
    Unreachable(String),
    /// It was reached, but its schema cannot be migrated: retrying will not help.
    Schema(DbErr),
}

/// What both pools share: the URL, lazy connection, idle reaping, no statement logging.
fn pool_options(settings: &DatabaseSettings, max: u32, acquire: Duration) -> ConnectOptions {
    let mut options = ConnectOptions::new(settings.url.expose());
    options
        .max_connections(max)
        .min_connections(0)
        .acquire_timeout(acquire)
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy(true)
        .sqlx_logging(false)
        // SQLite only (PostgreSQL ignores it): WAL lets readers carry on beside the one
        // writer, and a writer that finds the lock taken waits for it instead of failing
        // with "database is locked".
        .map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
        });
    options
}

/// How long a SQLite writer waits for the write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a transaction that will write. On SQLite it takes the write lock up front
/// (`BEGIN IMMEDIATE`): a transaction that reads first and upgrades its lock later cannot
/// wait for the lock (SQLite refuses at once to avoid a deadlock), which under 20
/// concurrent refreshes failed 17 of them. On PostgreSQL it is a plain `BEGIN`.
pub async fn begin_write(
    conn: &impl TransactionTrait<Transaction = DatabaseTransaction>,
) -> Result<DatabaseTransaction, DbErr> {
    conn.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// Applies every pending migration. On PostgreSQL each migration runs in its own
/// transaction, so an interrupted run leaves the schema at a migration boundary.
pub async fn run_migrations(conn: &DatabaseConnection) -> Result<(), DbErr> {
    let pending = Migrator::get_pending_migrations(conn).await?.len();
    if pending > 0 {
        tracing::info!(pending, "applying database migrations");
        Migrator::up(conn, None).await?;
        tracing::info!(pending, "database migrations applied");
    }
    Ok(())
}

/// Errors that may carry a [`DbErr`], so [`Database::run`] can classify them.
pub trait AsDbErr {
    fn as_db_err(&self) -> Option<&DbErr>;
}

impl AsDbErr for DbErr {
    fn as_db_err(&self) -> Option<&DbErr> {
        Some(self)
    }
}

/// Every pooled connection was busy for the whole acquire timeout.
fn is_pool_timeout(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(e.as_ref(), sea_orm::sqlx::Error::PoolTimedOut)
        }
        _ => false,
    }
}

/// Whether an error means "the database cannot be reached" rather than "this query failed".
fn is_connection_error(err: &DbErr) -> bool {
    if is_pool_timeout(err) {
        return false;
    }
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            use sea_orm::sqlx::Error as E;
            match e.as_ref() {
                E::Io(_) | E::Tls(_) | E::Protocol(_) | E::PoolClosed | E::WorkerCrashed => true,
                // SQLSTATE class 08 (connection exception) and 57P0x (server shutting
                // down, crashed, or not accepting connections yet).
                E::Database(db) => db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            }
        }
        _ => false,
    }
}
