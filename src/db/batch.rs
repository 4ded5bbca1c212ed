//! Reads of the same statement that share one round trip to PostgreSQL while they wait
//! for a read permit ([`super::Database::read_batched`]).
//!
//! A read that finds a permit free runs alone, as before. One that would wait instead
//! joins the batch of its statement that is already waiting, or starts one and leads it.
//! When the leader's permit comes, every read in its batch goes to PostgreSQL as one
//! statement on one connection:
//!
//! ```sql
//! SELECT p.*, b.i FROM unnest($1, $2, …) WITH ORDINALITY AS b(v1, v2, …, i)
//! CROSS JOIN LATERAL (<the statement, with b.vN for $N>) AS p
//! ```
//!
//! Each `$N` becomes an array of every read's N-th value, and `b.i` says whose each row
//! is. PostgreSQL runs the statement once per read (a nested loop over the arrays, in
//! their order), so each read gets exactly the rows it would have got alone, in the same
//! order. A saturated server then pays one send, one wake-up of PostgreSQL and one
//! result for a batch instead of for each read: under load the connection, not the
//! reads, is what is scarce (`docs/benchmarks.md` §8).
//!
//! Nothing waits to fill a batch: a read that can run at once runs alone, and a batch is
//! whatever gathered while its leader waited. A read whose leader is cancelled (its
//! request timed out or went away) before answering tries again; one whose batch failed
//! gets the batch's error, as it would have got its own.

use std::ops::{Deref, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sea_orm::sqlx::Arguments as _;
use sea_orm::sqlx::postgres::{PgArguments, PgRow};
use sea_orm::{DbErr, Value};
use tokio::sync::oneshot;

/// Reads in one batch at most: a batch answers when its last read's rows are in, so a
/// larger one would hold its first reads longer for little more saving.
pub const MAX_BATCH: usize = 32;

/// The kinds of a read's values, three bits each: reads batch together only when their
/// statement's text and these are the same, so each `$N` is an array of one type.
/// `None` for a value no array here can carry (a NULL, another type, too many values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature(u64);

const TEXT: u64 = 1;
const INT: u64 = 2;
const BIGINT: u64 = 3;
const TIME: u64 = 4;
const BITS: usize = 3;
const MAX_VALUES: usize = 64 / BITS;

impl Signature {
    pub fn of(values: &[Value]) -> Option<Self> {
        if values.is_empty() || values.len() > MAX_VALUES {
            return None;
        }
        values
            .iter()
            .enumerate()
            .try_fold(0u64, |sig, (n, value)| {
                let kind = match value {
                    Value::String(Some(_)) => TEXT,
                    Value::Int(Some(_)) => INT,
                    Value::BigInt(Some(_)) => BIGINT,
                    Value::BigUnsigned(Some(v)) if i64::try_from(*v).is_ok() => BIGINT,
                    Value::ChronoDateTimeUtc(Some(_)) => TIME,
                    _ => return None,
                };
                Some(sig | kind << (n * BITS))
            })
            .map(Self)
    }
}

/// One read's rows out of its batch's.
pub struct BatchRows {
    rows: Arc<Vec<PgRow>>,
    range: Range<usize>,
}

impl BatchRows {
    fn new(rows: Arc<Vec<PgRow>>, range: Range<usize>) -> Self {
        Self { rows, range }
    }

    /// All of `rows`: a read that ran alone.
    pub fn all(rows: Vec<PgRow>) -> Self {
        let range = 0..rows.len();
        Self::new(Arc::new(rows), range)
    }
}

impl Deref for BatchRows {
    type Target = [PgRow];

    fn deref(&self) -> &[PgRow] {
        &self.rows[self.range.clone()]
    }
}

/// A read that joined another's batch: its values, and where its rows go.
pub struct Member {
    values: Vec<Value>,
    reply: oneshot::Sender<Result<BatchRows, DbErr>>,
}

impl Member {
    /// Answers the read (which may have gone away meanwhile: then nobody is told).
    pub fn answer(self, result: Result<BatchRows, DbErr>) {
        let _ = self.reply.send(result);
    }
}

struct Batch {
    id: u64,
    sql: String,
    signature: Signature,
    members: Vec<Member>,
}

/// The batches waiting for a permit, oldest first.
#[derive(Default)]
pub struct Batches {
    waiting: Mutex<Vec<Batch>>,
    next_id: AtomicU64,
}

/// What a read that has to wait does.
pub enum Role {
    /// Waits for the answer of the batch it joined (`Err`: the leader went away).
    Follow(oneshot::Receiver<Result<BatchRows, DbErr>>),
    /// Leads a new batch: waits for a permit, then reads for all who joined.
    Lead(u64),
}

impl Batches {
    /// Joins the newest waiting batch of `sql` with room left, or starts one.
    pub fn join_or_lead(&self, sql: &str, signature: Signature, values: &[Value]) -> Role {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(batch) = waiting
            .iter_mut()
            .rev()
            .find(|b| b.signature == signature && b.sql == sql)
            .filter(|b| b.members.len() + 1 < MAX_BATCH)
        {
            let (reply, answer) = oneshot::channel();
            batch.members.push(Member {
                values: values.to_vec(),
                reply,
            });
            return Role::Follow(answer);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        waiting.push(Batch {
            id,
            sql: sql.to_owned(),
            signature,
            members: Vec::new(),
        });
        Role::Lead(id)
    }

    fn take(&self, id: u64) -> Vec<Member> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match waiting.iter().position(|b| b.id == id) {
            Some(at) => waiting.remove(at).members,
            None => Vec::new(),
        }
    }
}

/// A batch's leader while it waits for its permit. Dropped before
/// [`Leading::members`] (the leader's request went away), it takes the batch off the
/// waiting list, and its members try again.
pub struct Leading<'a> {
    batches: &'a Batches,
    id: u64,
    done: bool,
}

impl<'a> Leading<'a> {
    pub fn new(batches: &'a Batches, id: u64) -> Self {
        Self {
            batches,
            id,
            done: false,
        }
    }

    /// Closes the batch to newcomers and hands over who joined it.
    pub fn members(mut self) -> Vec<Member> {
        self.done = true;
        self.batches.take(self.id)
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.done {
            drop(self.batches.take(self.id));
        }
    }
}

/// The one statement for the leader's read (`values`) and its members', with each
/// `$N` bound to an array of every read's N-th value.
pub fn statement(
    sql: &str,
    signature: Signature,
    values: Vec<Value>,
    members: &mut [Member],
) -> Result<(String, PgArguments), DbErr> {
    let count = values.len();
    let mut columns: Vec<Column> = (0..count)
        .map(|n| Column::new((signature.0 >> (n * BITS)) & 0b111, members.len() + 1))
        .collect();
    let reads =
        std::iter::once(values).chain(members.iter_mut().map(|m| std::mem::take(&mut m.values)));
    for read in reads {
        if read.len() != count {
            return Err(mismatch());
        }
        for (column, value) in columns.iter_mut().zip(read) {
            column.push(value)?;
        }
    }
    let mut args = PgArguments::default();
    for column in columns {
        column.bind(&mut args)?;
    }
    Ok((lateral(sql, count), args))
}

fn mismatch() -> DbErr {
    DbErr::Custom("reads batched together have values of different types".into())
}

/// Every read's value of one `$N`.
enum Column {
    Text(Vec<String>),
    Int(Vec<i32>),
    BigInt(Vec<i64>),
    Time(Vec<DateTime<Utc>>),
}

impl Column {
    fn new(kind: u64, reads: usize) -> Self {
        match kind {
            TEXT => Self::Text(Vec::with_capacity(reads)),
            INT => Self::Int(Vec::with_capacity(reads)),
            BIGINT => Self::BigInt(Vec::with_capacity(reads)),
            _ => Self::Time(Vec::with_capacity(reads)),
        }
    }

    fn push(&mut self, value: Value) -> Result<(), DbErr> {
        match (self, value) {
            (Self::Text(column), Value::String(Some(v))) => column.push(v),
            (Self::Int(column), Value::Int(Some(v))) => column.push(v),
            (Self::BigInt(column), Value::BigInt(Some(v))) => column.push(v),
            (Self::BigInt(column), Value::BigUnsigned(Some(v))) => {
                column.push(i64::try_from(v).map_err(|_| mismatch())?)
            }
            (Self::Time(column), Value::ChronoDateTimeUtc(Some(v))) => column.push(v),
            _ => return Err(mismatch()),
        }
        Ok(())
    }

    fn bind(self, args: &mut PgArguments) -> Result<(), DbErr> {
        let bound = match self {
            Self::Text(column) => args.add(column),
            Self::Int(column) => args.add(column),
            Self::BigInt(column) => args.add(column),
            Self::Time(column) => args.add(column),
        };
        bound.map_err(|e| DbErr::Custom(format!("binding a batch of reads: {e}")))
    }
}

/// `sql` run once per element of `count` arrays, each row followed by the ordinal of
/// the read it answers. `$N` outside quotes becomes `b.vN`.
pub fn lateral(sql: &str, count: usize) -> String {
    let mut inner = String::with_capacity(sql.len() + 32);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => {
                inner.push_str("b.v");
                continue;
            }
            _ => {}
        }
        inner.push(c);
    }
    let params: Vec<String> = (1..=count).map(|n| format!("${n}")).collect();
    let vars: Vec<String> = (1..=count).map(|n| format!("v{n}")).collect();
    format!(
        "SELECT p.*, b.i FROM unnest({}) WITH ORDINALITY AS b({}, i) CROSS JOIN LATERAL ({inner}) AS p",
        params.join(", "),
        vars.join(", "),
    )
}

/// Each read's rows out of the batch's, in the order the reads were bound (the
/// leader's first). The ordinal of a row's read is its last column.
pub fn split(mut rows: Vec<PgRow>, reads: usize) -> Result<Vec<BatchRows>, DbErr> {
    let mut ordinals: Vec<usize> = rows
        .iter()
        .enumerate()
        .map(|(n, row)| {
            use sea_orm::sqlx::Row as _;
            let last = row.len().saturating_sub(1);
            let ordinal: i64 = super::pg_column(row, last, n == 0)?;
            usize::try_from(ordinal)
                .ok()
                .filter(|o| (1..=reads).contains(o))
                .ok_or_else(|| DbErr::Custom(format!("a batched row names read {ordinal}")))
        })
        .collect::<Result<_, DbErr>>()?;
    if !ordinals.is_sorted() {
        // Not what PostgreSQL's nested loop does; a stable sort keeps each read's rows in
        // their order.
        let mut pairs: Vec<(usize, PgRow)> = ordinals.into_iter().zip(rows).collect();
        pairs.sort_by_key(|(ordinal, _)| *ordinal);
        (ordinals, rows) = pairs.into_iter().unzip();
    }
    let rows = Arc::new(rows);
    let mut start = 0;
    let split = (1..=reads)
        .map(|read| {
            let end = start + ordinals[start..].iter().take_while(|&&o| o == read).count();
            let range = start..end;
            start = end;
            BatchRows::new(rows.clone(), range)
        })
        .collect();
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_lateral_references_outside_quotes() {
        let sql = r#"SELECT "a$1" FROM t WHERE x = $1 AND y = '$2' AND z > $10 LIMIT $2"#;
        assert_eq!(
            lateral(sql, 2),
            r#"SELECT p.*, b.i FROM unnest($1, $2) WITH ORDINALITY AS b(v1, v2, i) CROSS JOIN LATERAL (SELECT "a$1" FROM t WHERE x = b.v1 AND y = '$2' AND z > b.v10 LIMIT b.v2) AS p"#
        );
    }

    #[test]
    fn only_values_an_array_can_carry_batch() {
        let page = [
            Value::from("reader"),
            Value::from(1i32),
            Value::from(Utc::now()),
            Value::from(21u64),
        ];
        assert!(Signature::of(&page).is_some());
        assert_ne!(Signature::of(&page), Signature::of(&page[..3]));
        assert_eq!(Signature::of(&[Value::String(None)]), None);
        assert_eq!(Signature::of(&[Value::Bool(Some(true))]), None);
        assert_eq!(Signature::of(&[Value::BigUnsigned(Some(u64::MAX))]), None);
        assert_eq!(Signature::of(&[]), None);
    }

    fn text(v: &str) -> Vec<Value> {
        vec![Value::from(v)]
    }

    #[tokio::test]
    async fn reads_join_the_waiting_batch_of_their_statement_until_it_is_full() {
        let batches = Batches::default();
        let sig = Signature::of(&text("a")).unwrap();
        let Role::Lead(first) = batches.join_or_lead("SELECT $1", sig, &text("a")) else {
            panic!("the first read leads");
        };
        let leading = Leading::new(&batches, first);
        let mut answers = Vec::new();
        for n in 1..MAX_BATCH {
            match batches.join_or_lead("SELECT $1", sig, &text(&n.to_string())) {
                Role::Follow(answer) => answers.push(answer),
                Role::Lead(_) => panic!("read {n} joins"),
            }
        }
        // Full, and another statement: batches of their own.
        let Role::Lead(second) = batches.join_or_lead("SELECT $1", sig, &text("x")) else {
            panic!("a full batch takes no more");
        };
        assert!(matches!(
            batches.join_or_lead("SELECT $1 || 'y'", sig, &text("y")),
            Role::Lead(_)
        ));
        let members = leading.members();
        assert_eq!(members.len(), MAX_BATCH - 1);
        // Taken off the list: the next read joins the batch still waiting.
        assert!(matches!(
            batches.join_or_lead("SELECT $1", sig, &text("z")),
            Role::Follow(_)
        ));
        assert_eq!(Leading::new(&batches, second).members().len(), 1);
        drop(members);
        for answer in answers {
            assert!(answer.await.is_err(), "a dropped batch tells its members");
        }
    }

    #[tokio::test]
    async fn members_of_a_leader_that_went_away_are_told_and_the_batch_is_gone() {
        let batches = Batches::default();
        let sig = Signature::of(&text("a")).unwrap();
        let Role::Lead(id) = batches.join_or_lead("SELECT $1", sig, &text("a")) else {
            panic!("the first read leads");
        };
        let leading = Leading::new(&batches, id);
        let Role::Follow(answer) = batches.join_or_lead("SELECT $1", sig, &text("b")) else {
            panic!("the second read follows");
        };
        drop(leading);
        assert!(answer.await.is_err());
        assert!(matches!(
            batches.join_or_lead("SELECT $1", sig, &text("c")),
            Role::Lead(_)
        ));
    }
}
