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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::{PgPool, Postgres};
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr,
    FromQueryResult, RuntimeErr, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait,
};
use tokio::sync::{Notify, Semaphore, SemaphorePermit, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseKind, DatabaseSettings};

mod batch;

use batch::BatchRows;

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
/// How long one PostgreSQL connection may stay warm (see [`Warm`]) before it goes back
/// through the pool's own checks on release.
const WARM_FOR: Duration = Duration::from_secs(30);
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
    /// PostgreSQL connections kept checked out between hot reads ([`Database::read`]).
    warm: Warm,
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
                // Half the pool at most; a pool of one keeps none warm.
                warm: Warm::new((settings.max_connections / 2) as usize),
            }),
        })
    }

    /// Rows of one read, run inside [`Database::run`]'s `op` (it adds no bound of its own).
    ///
    /// On PostgreSQL the read goes to a connection kept warm: sqlx pings every connection
    /// that goes back into its pool (a Sync and a wait for PostgreSQL's ReadyForQuery, in
    /// a task of its own), a second round trip per request that cost the history page
    /// about a tenth of its CPU (`docs/benchmarks.md` §8). A connection that has just
    /// answered a read in full is known to be ready, so it is kept for the next read
    /// instead. See [`Warm`] for the bounds. SQLite goes through the pool as before.
    pub async fn read<M: ReadRow>(&self, stmt: Statement) -> Result<Vec<M>, DbErr> {
        match self.inner.kind {
            DatabaseKind::Postgres => {
                let pool = self.inner.conn.get_postgres_connection_pool();
                M::from_pg_rows(&self.inner.warm.read(pool, stmt).await?)
            }
            DatabaseKind::Sqlite => self.read_sqlite(stmt).await,
        }
    }

    /// [`Database::read`], sharing its round trip with other reads of the same statement
    /// text when it would otherwise wait for a connection (see [`batch`]). For reads
    /// that are many, alike and small: a page of a reader's conversations.
    pub async fn read_batched<M: ReadRow>(&self, stmt: Statement) -> Result<Vec<M>, DbErr> {
        match self.inner.kind {
            DatabaseKind::Postgres => {
                let pool = self.inner.conn.get_postgres_connection_pool();
                M::from_pg_rows(&self.inner.warm.read_batched(pool, stmt).await?)
            }
            DatabaseKind::Sqlite => self.read_sqlite(stmt).await,
        }
    }

    async fn read_sqlite<M: ReadRow>(&self, stmt: Statement) -> Result<Vec<M>, DbErr> {
        // On the heap for the reason given in `run_with`.
        let rows = Box::pin(self.inner.conn.query_all_raw(stmt)).await?;
        rows.iter()
            .map(|row| M::from_query_result(row, ""))
            .collect()
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
        // `op`'s future goes on the heap: a future holds every future it awaits, so one
        // kept inline here made every caller's future as large again, and each layer is
        // moved whole (memcpy) on its way into the task. A history page's reached 252 KB
        // this way, and the copies were 7% of the server's CPU (docs/benchmarks.md §8,
        // "Futures on the heap").
        let outcome = if bounded {
            let Ok(_permit) = self.inner.in_flight.try_acquire() else {
                metrics::counter!("lectern_database_shed_total", "reason" => "pending")
                    .increment(1);
                return Err(RunError::Busy);
            };
            let work = tokio::time::timeout(self.inner.timeout, Box::pin(op(conn)));
            tokio::pin!(work);
            tokio::select! {
                biased;
                outcome = &mut work => outcome,
                () = self.outage_noticed() => return Err(RunError::Unavailable),
            }
        } else {
            Ok(Box::pin(op(conn)).await)
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
                (pool.size(), pool.num_idle() + self.inner.warm.idle())
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
                    self.inner.warm.close();
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
            // Warm connections nobody has read from lately go back to the pool, which pings
            // them and closes them after its idle timeout like any other.
            self.inner.warm.evict();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
                _ = self.inner.wake.notified() => {}
            }
        }
        // The pool's close waits for every connection checked out: the warm ones first.
        self.inner.warm.close();
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

/// PostgreSQL connections kept checked out of the pool between reads, so a read does not
/// pay for sqlx's ping on release (see [`Database::read`]).
///
/// - At most `cap` (half the pool) reads run at once, each holding a permit of a fair
///   (first come, first served) semaphore; the connections kept are never more than the
///   reads that ran at once, so other work always has the rest of the pool. Reads queue
///   in arrival order, so none overtakes another that waits (a stash that any read could
///   take from, beside the pool's own queue, tripled the 95th percentile at 1000
///   clients).
/// - Only a connection that has just answered a read in full is kept: an error, a timeout
///   or a cancelled request drops it, and the pool pings it (and closes it if broken) as
///   it always did. A connection goes back to the pool after [`WARM_FOR`], so the pool's
///   own checks still see every connection now and then.
/// - A read takes the most recently used warm connection, and only one used within
///   [`IDLE_BEFORE_PING`]: the rule the pool applies before handing out an idle one
///   unpinged. Older ones go back to the pool, at the latest on the supervisor's next
///   round ([`Warm::evict`]).
struct Warm {
    /// One permit per read at once; `None` for a pool of one, which keeps nothing warm.
    permits: Option<Semaphore>,
    stash: Mutex<Vec<WarmConnection>>,
    /// Reads waiting for a permit together ([`Warm::read_batched`]).
    batches: batch::Batches,
    /// Set on shutdown: nothing is kept any more, so the pool can close.
    closed: AtomicBool,
}

struct WarmConnection {
    conn: Kept,
    /// When it was first kept warm.
    since: Instant,
    idle_since: Instant,
}

impl WarmConnection {
    /// Used within [`IDLE_BEFORE_PING`], so a read may have it unpinged.
    fn fresh(&self) -> bool {
        self.idle_since.elapsed() < IDLE_BEFORE_PING
    }
}

/// A connection kept out of the pool. Dropped, a connection goes back to the pool by a
/// task spawned on the runtime; outside one (a process ending) it is closed here instead.
struct Kept(Option<PoolConnection<Postgres>>);

impl Drop for Kept {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take()
            && tokio::runtime::Handle::try_current().is_err()
        {
            drop(conn.detach());
        }
    }
}

impl Warm {
    fn new(cap: usize) -> Self {
        Self {
            permits: (cap > 0).then(|| Semaphore::new(cap)),
            stash: Mutex::new(Vec::new()),
            batches: batch::Batches::default(),
            closed: AtomicBool::new(false),
        }
    }

    async fn read(&self, pool: &PgPool, stmt: Statement) -> Result<Vec<PgRow>, DbErr> {
        let values = stmt.values.map_or_else(Vec::new, |v| v.0);
        let query = single(stmt.sql, values);
        let Some(permits) = &self.permits else {
            return query.fetch_all(pool).await.map_err(query_error);
        };
        let permit = permits.acquire().await.map_err(|_| closed())?;
        self.fetch(pool, permit, query).await
    }

    /// [`Warm::read`], sharing one round trip with the reads of the same statement that
    /// gather while it waits for a permit ([`batch`]).
    async fn read_batched(&self, pool: &PgPool, stmt: Statement) -> Result<BatchRows, DbErr> {
        let signature = stmt
            .values
            .as_ref()
            .and_then(|values| batch::Signature::of(&values.0));
        let (Some(permits), Some(signature)) = (&self.permits, signature) else {
            return self.read(pool, stmt).await.map(BatchRows::all);
        };
        let Statement { sql, values, .. } = stmt;
        let values = values.map_or_else(Vec::new, |v| v.0);
        loop {
            // A permit free at once: nothing to wait for, so nothing to share.
            if let Ok(permit) = permits.try_acquire() {
                let rows = self.fetch(pool, permit, single(sql, values)).await;
                return rows.map(BatchRows::all);
            }
            match self.batches.join_or_lead(&sql, signature, &values) {
                batch::Role::Follow(answer) => match answer.await {
                    Ok(answer) => return answer,
                    // Its leader went away before reading: try again.
                    Err(_) => continue,
                },
                batch::Role::Lead(id) => {
                    let leading = batch::Leading::new(&self.batches, id);
                    return self
                        .lead(pool, permits, leading, sql, signature, values)
                        .await;
                }
            }
        }
    }

    /// Waits for a permit, then reads for the leader (`sql` with `values`) and everyone
    /// who joined its batch meanwhile, and answers them.
    async fn lead(
        &self,
        pool: &PgPool,
        permits: &Semaphore,
        leading: batch::Leading<'_>,
        sql: String,
        signature: batch::Signature,
        values: Vec<sea_orm::Value>,
    ) -> Result<BatchRows, DbErr> {
        let permit = permits.acquire().await.map_err(|_| closed())?;
        let mut members = leading.members();
        if members.is_empty() {
            let rows = self.fetch(pool, permit, single(sql, values)).await;
            return rows.map(BatchRows::all);
        }
        let reads = members.len() + 1;
        let rows = async {
            let (text, args) = batch::statement(&sql, signature, values, &mut members)?;
            let query = sea_orm::sqlx::query_with(sea_orm::sqlx::AssertSqlSafe(text), args);
            batch::split(self.fetch(pool, permit, query).await?, reads)
        };
        let mut split = match rows.await {
            Ok(split) => split.into_iter(),
            Err(e) => {
                for member in members {
                    member.answer(Err(e.clone()));
                }
                return Err(e);
            }
        };
        metrics::counter!("lectern_database_read_batches_total").increment(1);
        metrics::counter!("lectern_database_batched_reads_total").increment(reads as u64);
        let own = split.next();
        for (member, rows) in members.into_iter().zip(split) {
            member.answer(Ok(rows));
        }
        own.ok_or_else(|| DbErr::Custom("a batch without its leader's rows".into()))
    }

    /// Runs `query` on a warm connection (or one from the pool) while `permit` is held.
    async fn fetch<'q, A>(
        &self,
        pool: &PgPool,
        permit: SemaphorePermit<'_>,
        query: sea_orm::sqlx::query::Query<'q, Postgres, A>,
    ) -> Result<Vec<PgRow>, DbErr>
    where
        A: sea_orm::sqlx::IntoArguments<Postgres> + 'q,
    {
        let _permit = permit;
        let (mut conn, since) = match self.take() {
            Some(warm) => warm,
            // sqlx's acquire future (with the connect it may do) is several kilobytes:
            // on the heap, and only when no warm connection was at hand.
            None => (Box::pin(acquire(pool)).await?, Instant::now()),
        };
        match query.fetch_all(&mut *conn).await {
            Ok(rows) => {
                self.put(conn, since);
                Ok(rows)
            }
            // Dropped, `conn` goes back through the pool's ping, which closes it if broken.
            Err(e) => Err(query_error(e)),
        }
    }

    /// The most recently used warm connection, if it was used within
    /// [`IDLE_BEFORE_PING`]; older ones on the way are let go to the pool.
    fn take(&self) -> Option<(PoolConnection<Postgres>, Instant)> {
        let mut stale = Vec::new();
        let taken = {
            let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                match stash.pop() {
                    Some(warm) if warm.fresh() => break Some(warm),
                    Some(warm) => stale.push(warm),
                    None => break None,
                }
            }
        };
        drop(stale);
        let mut warm = taken?;
        Some((warm.conn.0.take()?, warm.since))
    }

    /// Keeps a connection that has just answered a read in full, unless it has been warm
    /// for [`WARM_FOR`] already or the server is shutting down: then it goes back to the
    /// pool.
    fn put(&self, conn: PoolConnection<Postgres>, since: Instant) {
        if since.elapsed() >= WARM_FOR {
            return;
        }
        let warm = WarmConnection {
            conn: Kept(Some(conn)),
            since,
            idle_since: Instant::now(),
        };
        let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
        if !self.closed.load(Ordering::Relaxed) {
            stash.push(warm);
        }
    }

    /// Lets go of the warm connections no read may take any more.
    fn evict(&self) {
        let stale: Vec<WarmConnection> = {
            let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
            let (keep, stale) = std::mem::take(&mut *stash)
                .into_iter()
                .partition(WarmConnection::fresh);
            *stash = keep;
            stale
        };
        drop(stale);
    }

    /// Lets go of every warm connection and keeps none from now on; reads still waiting
    /// for a permit are told the pool is closed.
    fn close(&self) {
        let all = {
            let mut stash = self.stash.lock().unwrap_or_else(|e| e.into_inner());
            self.closed.store(true, Ordering::Relaxed);
            std::mem::take(&mut *stash)
        };
        drop(all);
        if let Some(permits) = &self.permits {
            permits.close();
        }
    }

    /// Warm connections waiting for a read, for `/metrics`.
    fn idle(&self) -> usize {
        self.stash.lock().map_or(0, |stash| stash.len())
    }
}

/// A connection from the pool, its failures reported as sea-orm reports them, so
/// `Database::run` reads them alike.
async fn acquire(pool: &PgPool) -> Result<PoolConnection<Postgres>, DbErr> {
    pool.acquire().await.map_err(|e| match e {
        sea_orm::sqlx::Error::PoolTimedOut => {
            DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout)
        }
        sea_orm::sqlx::Error::PoolClosed => {
            DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed)
        }
        e => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(e))),
    })
}

/// A row type [`Database::read`] reads: from sea-orm's rows on SQLite, and straight from
/// sqlx's on PostgreSQL (with [`pg_column`]). There sqlx checked each value's type against
/// its column's (about a twentieth of a history page's instructions); a result's columns
/// have the same types in every row, so checking the first row does for all of them.
pub trait ReadRow: FromQueryResult {
    fn from_pg_rows(rows: &[PgRow]) -> Result<Vec<Self>, DbErr>;
}

/// Column `index` of a row, its type checked against the column's when `check` (for the
/// first row of a result: the others have the same column types).
pub fn pg_column<'r, T>(row: &'r PgRow, index: usize, check: bool) -> Result<T, DbErr>
where
    T: sea_orm::sqlx::Decode<'r, Postgres> + sea_orm::sqlx::Type<Postgres>,
{
    use sea_orm::sqlx::Row as _;
    if check {
        row.try_get(index)
    } else {
        row.try_get_unchecked(index)
    }
    .map_err(query_error)
}

/// Column `index` as a time: [`pg_column`]'s `DateTime<Utc>`, read straight from its
/// binary form (microseconds since 2000-01-01) on rows after the first. sqlx decodes a
/// `timestamptz` through three types, `NaiveDateTime`, `DateTime<FixedOffset>` and
/// `DateTime<Utc>`: a page's forty times were a twentieth of its instructions. Anything
/// but eight binary bytes of a time chrono can hold goes to sqlx.
pub fn pg_time(
    row: &PgRow,
    index: usize,
    check: bool,
) -> Result<chrono::DateTime<chrono::Utc>, DbErr> {
    use sea_orm::sqlx::Row as _;
    use sea_orm::sqlx::postgres::PgValueFormat;
    /// 2000-01-01T00:00:00Z in microseconds since the Unix epoch.
    const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    if !check {
        let value = row.try_get_raw(index).map_err(query_error)?;
        if value.format() == PgValueFormat::Binary
            && let Ok(bytes) = value.as_bytes()
            && let Ok(bytes) = <[u8; 8]>::try_from(bytes)
            && let Some(micros) = i64::from_be_bytes(bytes).checked_add(POSTGRES_EPOCH_MICROS)
            && let Some(time) = chrono::DateTime::from_timestamp_micros(micros)
        {
            return Ok(time);
        }
    }
    pg_column(row, index, check)
}

/// One statement's query, its values bound as sea-orm binds them.
fn single(
    sql: String,
    values: Vec<sea_orm::Value>,
) -> sea_orm::sqlx::query::Query<'static, Postgres, sea_query_sqlx::SqlxValues> {
    sea_orm::sqlx::query_with(
        sea_orm::sqlx::AssertSqlSafe(sql),
        sea_query_sqlx::SqlxValues(sea_orm::Values(values)),
    )
}

/// What a read waiting for a permit gets when the pool is closed (shutdown).
fn closed() -> DbErr {
    DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::ConnectionClosed)
}

fn query_error(e: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(e)))
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
