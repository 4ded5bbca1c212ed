//! Turns as first-class things: each gets an unguessable id when it starts, and its
//! events (sources, numbered deltas, completed or failed) are written to a log that any
//! number of listeners follow, from the start or from where they left off. A client whose
//! connection dropped mid-answer resumes with the turn id and the last delta it saw.
//!
//! The registry is memory, bounded two ways: a finished turn is kept for
//! `TURN_RETENTION_SECS`, and at most `TURN_REGISTRY_MAX` turns are kept at all (the
//! oldest go first). A turn holds its answer twice (the deltas as one string with where
//! each ends, and whole) and its five sources with their 300-character snippets: a few KB
//! for a typical answer, so the default 1,000 turns stay within roughly 10 MB. Resuming a turn still in progress must
//! reach the replica that runs it (README, "Running several replicas").

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::sync::watch;

use super::ChatEvent;

/// One turn's events, in order, as they were written.
pub struct TurnLog {
    pub id: String,
    /// The signed-in reader the turn belongs to; `None` for anonymous and unverified
    /// askers. Only the owner is shown the conversation a resumed turn was stored in.
    pub owner: Option<String>,
    /// The question asked: a follow-up that names this turn (`previousTurnId`) is
    /// retrieved with it.
    pub question: String,
    events: Mutex<Events>,
    /// How many events are written; listeners wait on it.
    written: watch::Sender<usize>,
    finished_at: Mutex<Option<Instant>>,
}

/// A turn's events, compactly: the deltas of an answer are kept as one string and where
/// each ends, not as one event each (an answer of 300 deltas took ~25 KB as events, and a
/// server keeps up to `TURN_REGISTRY_MAX` finished turns). In order: the sources (if
/// retrieval got that far), the deltas, the terminal event.
#[derive(Default)]
struct Events {
    sources: Option<Arc<[super::SourceRef]>>,
    text: String,
    /// Where each delta ends in `text` (as `u32`: half the size, and an answer is never
    /// near 4 GB; a delta that would pass it is dropped).
    ends: Vec<u32>,
    last: Option<ChatEvent>,
}

impl Events {
    fn len(&self) -> usize {
        usize::from(self.sources.is_some()) + self.ends.len() + usize::from(self.last.is_some())
    }

    fn push(&mut self, event: ChatEvent) {
        match event {
            // Sources come first; a turn never sends them after a delta.
            ChatEvent::Sources(sources) => self.sources = Some(sources),
            ChatEvent::Delta(delta) => {
                let Ok(end) = u32::try_from(self.text.len() + delta.len()) else {
                    return;
                };
                self.text.push_str(&delta);
                self.ends.push(end);
            }
            terminal => {
                self.last = Some(terminal);
                self.text.shrink_to_fit();
                self.ends.shrink_to_fit();
            }
        }
    }

    fn get(&self, position: usize) -> Option<ChatEvent> {
        let mut i = position;
        if let Some(sources) = &self.sources {
            if i == 0 {
                return Some(ChatEvent::Sources(sources.clone()));
            }
            i -= 1;
        }
        if let Some(delta) = self.deltas().get(i) {
            return Some(ChatEvent::Delta(delta.to_owned()));
        }
        if i == self.ends.len() {
            return self.last.clone();
        }
        None
    }

    fn deltas(&self) -> Deltas<'_> {
        Deltas {
            text: &self.text,
            ends: &self.ends,
        }
    }
}

/// A turn's events, borrowed in their compact form (see [`TurnLog::with_parts`]).
pub struct Parts<'a> {
    pub sources: &'a [super::SourceRef],
    pub deltas: Deltas<'a>,
    /// `Completed` or `Failed`, once the turn has ended.
    pub last: Option<&'a ChatEvent>,
}

/// An answer's deltas, in order, borrowed from the log; serialises as a list of strings.
#[derive(Clone, Copy)]
pub struct Deltas<'a> {
    text: &'a str,
    ends: &'a [u32],
}

impl<'a> Deltas<'a> {
    /// The `i`th delta.
    pub fn get(self, i: usize) -> Option<&'a str> {
        let end = *self.ends.get(i)? as usize;
        let start = i
            .checked_sub(1)
            .map_or(0, |before| self.ends[before] as usize);
        Some(&self.text[start..end])
    }

    pub fn iter(self) -> impl Iterator<Item = &'a str> {
        (0..self.ends.len()).filter_map(move |i| self.get(i))
    }

    /// Every delta so far, in one piece.
    pub fn joined(self) -> &'a str {
        self.text
    }
}

impl serde::Serialize for Deltas<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl ChatEvent {
    /// The last event of a turn.
    pub fn is_terminal(&self) -> bool {
        matches!(self, ChatEvent::Completed { .. } | ChatEvent::Failed(_))
    }
}

impl TurnLog {
    fn new(owner: Option<String>, question: String) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            owner,
            question,
            events: Mutex::new(Events::default()),
            written: watch::channel(0).0,
            finished_at: Mutex::new(None),
        }
    }

    /// A log for a turn that ran elsewhere (another replica), to be filled with its
    /// events.
    pub fn finished(id: String, owner: Option<String>, question: String) -> Self {
        Self {
            id,
            ..Self::new(owner, question)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Events> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an event and wakes every listener.
    pub fn push(&self, event: ChatEvent) {
        let terminal = event.is_terminal();
        let written = {
            let mut events = self.lock();
            events.push(event);
            events.len()
        };
        if terminal {
            *self.finished_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
        self.written.send_replace(written);
    }

    /// Runs `f` on the events written so far, without copying them (one event per delta
    /// would be 300 strings for a typical answer).
    pub fn with_parts<R>(&self, f: impl FnOnce(Parts<'_>) -> R) -> R {
        let events = self.lock();
        f(Parts {
            sources: events.sources.as_deref().unwrap_or_default(),
            deltas: events.deltas(),
            last: events.last.as_ref(),
        })
    }

    /// The events written so far, each on its own.
    #[cfg(test)]
    fn snapshot(&self) -> Vec<ChatEvent> {
        let events = self.lock();
        (0..events.len()).filter_map(|i| events.get(i)).collect()
    }

    fn expired(&self, retention: Duration) -> bool {
        self.finished_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() > retention)
    }

    /// Every event from the first, as they are written, ending after the last one. Each
    /// comes with its position: a delta's position is its sequence number (the sources
    /// are always first, at 0).
    pub fn follow(self: Arc<Self>) -> impl Stream<Item = (usize, ChatEvent)> + Send + 'static {
        let written = self.written.subscribe();
        futures_util::stream::unfold(
            (self, 0usize, written, false),
            |(log, position, mut written, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let next = log.lock().get(position);
                    if let Some(event) = next {
                        let terminal = event.is_terminal();
                        return Some(((position, event), (log, position + 1, written, terminal)));
                    }
                    // The sender lives in the log, which this stream holds.
                    written.changed().await.ok()?;
                }
            },
        )
    }
}

/// The turns of the last `retention`, at most `max` of them.
pub struct TurnRegistry {
    turns: Mutex<Registry>,
    retention: Duration,
    max: usize,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, Arc<TurnLog>>,
    /// Ids, oldest first.
    order: VecDeque<String>,
}

impl TurnRegistry {
    pub fn new(retention: Duration, max: usize) -> Self {
        Self {
            turns: Mutex::new(Registry::default()),
            retention,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.turns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new turn, registered; older turns past their time or the cap are forgotten.
    pub fn start(&self, owner: Option<String>, question: String) -> Arc<TurnLog> {
        let log = Arc::new(TurnLog::new(owner, question));
        let mut registry = self.lock();
        while let Some(oldest) = registry.order.front().cloned() {
            let expired = registry
                .by_id
                .get(&oldest)
                .is_none_or(|turn| turn.expired(self.retention));
            if !expired && registry.order.len() < self.max {
                break;
            }
            registry.order.pop_front();
            registry.by_id.remove(&oldest);
        }
        registry.order.push_back(log.id.clone());
        registry.by_id.insert(log.id.clone(), log.clone());
        log
    }

    /// The turn with this id, while it is kept.
    pub fn get(&self, id: &str) -> Option<Arc<TurnLog>> {
        self.lock()
            .by_id
            .get(id)
            .filter(|turn| !turn.expired(self.retention))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Stored;
    use futures_util::StreamExt as _;

    fn completed() -> ChatEvent {
        ChatEvent::Completed {
            answer: "a".into(),
            unanswered: false,
            stored: Stored::NotKept,
        }
    }

    #[test]
    fn parts_lend_the_deltas_in_order_as_written() {
        let registry = TurnRegistry::new(Duration::from_secs(60), 10);
        let log = registry.start(None, String::new());
        for delta in ["Bees ", "", "make ", "hon\u{e9}y."] {
            log.push(ChatEvent::Delta(delta.into()));
        }
        log.push(completed());
        let json = log.with_parts(|parts| {
            assert!(parts.sources.is_empty());
            assert!(matches!(parts.last, Some(ChatEvent::Completed { .. })));
            serde_json::to_string(&parts.deltas).unwrap()
        });
        assert_eq!(json, "[\"Bees \",\"\",\"make \",\"hon\u{e9}y.\"]");
    }

    #[tokio::test]
    async fn followers_get_every_event_whenever_they_join() {
        let registry = TurnRegistry::new(Duration::from_secs(60), 10);
        let log = registry.start(None, String::new());
        log.push(ChatEvent::Sources(Arc::new([])));
        log.push(ChatEvent::Delta("a".into()));
        let early = tokio::spawn(log.clone().follow().collect::<Vec<_>>());
        log.push(ChatEvent::Delta("b".into()));
        log.push(completed());
        let late: Vec<_> = log.clone().follow().collect().await;
        let early = early.await.unwrap();
        assert_eq!(early.len(), 4);
        assert_eq!(late.len(), 4);
        assert!(matches!(&late[2], (2, ChatEvent::Delta(d)) if d == "b"));
        assert!(registry.get(&log.id).is_some());
    }

    #[test]
    fn a_log_gives_back_every_event_as_written() {
        let registry = TurnRegistry::new(Duration::from_secs(60), 10);
        let log = registry.start(None, String::new());
        log.push(ChatEvent::Sources(Arc::new([])));
        for piece in ["Tides ", "follow ", "the moon."] {
            log.push(ChatEvent::Delta(piece.into()));
        }
        log.push(completed());
        let events = log.snapshot();
        assert_eq!(events.len(), 5);
        assert!(matches!(&events[0], ChatEvent::Sources(s) if s.is_empty()));
        let deltas: Vec<String> = events[1..4]
            .iter()
            .map(|e| match e {
                ChatEvent::Delta(d) => d.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(deltas, ["Tides ", "follow ", "the moon."]);
        assert!(events[4].is_terminal());
        // A turn that failed before retrieval has no sources.
        let failed = registry.start(None, String::new());
        failed.push(ChatEvent::Failed(
            crate::chat::ChatError::RetrievalUnavailable,
        ));
        assert!(matches!(failed.snapshot()[..], [ChatEvent::Failed(_)]));
    }

    #[test]
    fn the_registry_is_bounded_in_count_and_time() {
        let registry = TurnRegistry::new(Duration::from_millis(50), 3);
        let first = registry.start(None, String::new());
        first.push(completed());
        let ids: Vec<String> = (0..3)
            .map(|_| registry.start(None, String::new()).id.clone())
            .collect();
        assert!(registry.get(&first.id).is_none(), "the oldest went first");
        assert!(ids.iter().all(|id| registry.get(id).is_some()));
        let finished = registry.get(&ids[2]).unwrap();
        finished.push(completed());
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            registry.get(&ids[2]).is_none(),
            "expired after its retention"
        );
        assert!(registry.get(&ids[0]).is_some(), "unfinished turns are kept");
    }
}
