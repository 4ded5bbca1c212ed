//! Retrieval: finding the passages that answer a question.
//!
//! Ingest is a pipeline: [`site`] reads pages from a folder, a sitemap or a running site;
//! [`document`] takes each page's main content apart into sections under their heading
//! path (and skips pages that are not content); [`chunk`] cuts sections into passages;
//! [`embed`] turns them into BM25 sparse vectors (no model needed) and optional dense
//! embeddings; [`store`] (embedded Qdrant) or [`remote`] (a Qdrant server) keeps them.
//!
//! [`rank`] decides what a passage's and a question's sparse vectors weigh (fields,
//! [`synonyms`], the previous turn of a follow-up) and how much of a question a passage
//! holds; [`guardrail`] calibrates, per index, under which share a question is not in
//! the book.
//!
//! [`Retriever`] ties them together for the chat flow (`search`) and for `lectern ingest`
//! and first-start indexing (`ingest`).

pub mod chunk;
pub mod document;
pub mod embed;
pub mod guardrail;
pub mod rank;
pub mod remote;
pub mod site;
pub mod store;
pub mod synonyms;

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use crate::config::RetrievalSettings;

use chunk::chunk_sections;
use document::{Document, Skip};
use embed::{Bm25, DenseEmbedder, EmbedError, Side};
pub use guardrail::Guardrail;
pub use rank::Previous;
use rank::{Coverage, Ranker};
use site::{Fetched, Location, Page};
use store::{ChunkPayload, Hit, Point, QueryVectors, StoreError, VectorStore};

/// Namespace of chunk ids: `uuid5(NAMESPACE, "root\0path#index")`, so re-ingesting a page
/// writes the same ids.
const CHUNK_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c65_6374_6572_6e00_0000_0000_0000_0001);
/// Chunks embedded per request to the embeddings endpoint.
const EMBED_BATCH: usize = 64;
/// Part of every stored page hash: a change to what parsing and chunking make of a page
/// bumps it, so the next ingest indexes every page again instead of keeping passages cut
/// the old way.
const PIPELINE_VERSION: &str = "3";
/// Candidates fetched per search before at most `sources_per_page` per page are kept.
const CANDIDATES: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
}

/// A passage found for a question.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Passage {
    pub title: String,
    /// Relative to its ingest root.
    pub path: String,
    /// The heading path above the passage (`H1 › H2`).
    pub heading: String,
    /// The page's address as stored: absolute, or relative to `SITE_URL`, or "".
    pub url: String,
    /// The fragment of the passage's heading, or "".
    pub anchor: String,
    pub text: String,
    /// Its section's first sentence when the passage opens the section (else "").
    pub lead: String,
    pub score: f64,
}

impl From<Hit> for Passage {
    fn from(hit: Hit) -> Self {
        Self {
            title: hit.payload.title,
            path: hit.payload.path,
            heading: hit.payload.heading,
            url: hit.payload.url,
            anchor: hit.payload.anchor,
            text: hit.payload.text,
            lead: hit.payload.lead,
            score: f64::from(hit.score),
        }
    }
}

impl Passage {
    /// The link a reader clicks: the page's URL (made absolute with `site_url` when it
    /// is relative) and the heading's fragment; `None` when the page has no address.
    pub fn link(&self, site_url: Option<&str>) -> Option<String> {
        let page = if self.url.starts_with("http://") || self.url.starts_with("https://") {
            self.url.clone()
        } else {
            let site = site_url?;
            let relative = if self.url.is_empty() {
                &self.path
            } else {
                &self.url
            };
            format!("{site}{}", relative.trim_start_matches('/'))
        };
        Some(if self.anchor.is_empty() {
            page
        } else {
            format!("{page}#{}", self.anchor)
        })
    }
}

/// The passages found for a question, and how well the best of them matches it.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub passages: Vec<Passage>,
    /// How well the book matches the question, whatever ranked the passages: the
    /// largest share of the question's weight (each of its words weighted by its IDF in
    /// this index, a word the book never uses as much as its rarest) that one of the
    /// passages holds, from 0 to 1 ([`rank::Coverage`]). What decides whether the book
    /// covers the question at all.
    pub relevance: f64,
    /// The guardrail's threshold for this index (0: off).
    pub threshold: f64,
}

impl Found {
    /// Whether the book seems to cover the question.
    pub fn covered(&self) -> bool {
        self.relevance >= self.threshold
    }
}

/// BM25's IDF (Qdrant's: `ln(1 + (N - n + 0.5) / (n + 0.5))`) of a word found in one of
/// `passages` passages.
fn rare_word_idf(passages: usize) -> f64 {
    let n = passages as f64;
    if n < 2.0 {
        1.0
    } else {
        (1.0 + (n - 0.5) / 1.5).ln()
    }
}

/// Words whose IDF is remembered at most.
const IDF_CACHE: usize = 50_000;

/// How long a passage count is trusted before it is read again.
const COUNT_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// What an ingest run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestSummary {
    /// Pages found under the given locations.
    pub pages: usize,
    /// Pages (re)indexed because they were new or changed.
    pub indexed: usize,
    pub unchanged: usize,
    /// Pages indexed before but gone now (or no longer content), whose chunks were
    /// removed.
    pub removed: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Pages not indexed: not content (aggregate and utility pages, duplicates,
    /// redirects), unreadable, or refused (links out of the corpus, robots.txt).
    pub skipped: Vec<Skipped>,
}

/// A page an ingest run did not index, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
    /// For a duplicate, the page with the same content that was indexed.
    pub duplicate_of: Option<String>,
}

impl Skipped {
    fn new(path: &str, reason: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_owned(),
            reason: reason.to_string(),
            duplicate_of: None,
        }
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Told about ingest progress: a terminal progress bar, or nothing.
pub trait Progress: Send + Sync {
    /// How many pages are known so far (a crawl finds more as it goes).
    fn found(&self, pages: usize);
    fn page_done(&self, path: &str);
    fn finish(&self);
}

/// No progress output (the server indexing its corpus; tests).
pub struct Quiet;

impl Progress for Quiet {
    fn found(&self, _: usize) {}
    fn page_done(&self, _: &str) {}
    fn finish(&self) {}
}

pub struct Retriever {
    store: Arc<dyn VectorStore>,
    ranker: Ranker,
    dense: Option<DenseEmbedder>,
    /// Passages of one page among the sources at most.
    sources_per_page: usize,
    /// `RETRIEVAL_MIN_SCORE`: a fixed guardrail threshold instead of the calibrated one.
    fixed_threshold: Option<f64>,
    /// The guardrail calibrated for the index as it was at that passage count.
    guardrail: tokio::sync::Mutex<Option<(usize, Guardrail)>>,
    /// Each word's IDF in the index (`None`: no passage holds it), while the passage
    /// count is the one it was read at: a question's words are looked up once.
    idf: std::sync::Mutex<(usize, HashMap<u32, Option<f64>>)>,
    /// Held while the process uses an embedded store: a second process cannot open it.
    _lock: Option<File>,
    /// Whether the last search or probe succeeded (for `health`).
    last_search_ok: AtomicBool,
    /// The number of passages and when it was read: the scale of BM25 scores.
    passages: std::sync::Mutex<Option<(std::time::Instant, usize)>>,
}

impl Retriever {
    /// The embedded store under `data_dir/qdrant`, locked for this process.
    pub fn embedded(
        data_dir: &Path,
        dense: Option<(DenseEmbedder, usize)>,
        tuning: &RetrievalSettings,
    ) -> Result<Self, RetrievalError> {
        let dir = data_dir.join("qdrant");
        std::fs::create_dir_all(&dir).map_err(|e| RetrievalError::Read {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let lock = lock_dir(data_dir, &dir)?;
        let (dense, dims) = split(dense);
        let store = store::EmbeddedStore::open(&dir, dims)?;
        Self::with_store(Arc::new(store), dense, tuning, Some(lock))
    }

    /// A Qdrant server or Qdrant Cloud collection, connected lazily: nothing is reached
    /// until the first call (or [`Retriever::probe`]), which sets the collection up.
    pub fn remote_lazy(
        service: &crate::config::RemoteService,
        collection: &str,
        dense: Option<(DenseEmbedder, usize)>,
        tuning: &RetrievalSettings,
    ) -> Result<Self, RetrievalError> {
        let (dense, dims) = split(dense);
        let store = remote::RemoteStore::lazy(service, collection, dims)?;
        Self::with_store(Arc::new(store), dense, tuning, None)
    }

    /// A Qdrant server or Qdrant Cloud collection, set up now.
    pub async fn remote(
        service: &crate::config::RemoteService,
        collection: &str,
        dense: Option<(DenseEmbedder, usize)>,
        tuning: &RetrievalSettings,
    ) -> Result<Self, RetrievalError> {
        let (dense, dims) = split(dense);
        let store = remote::RemoteStore::open(service, collection, dims).await?;
        Self::with_store(Arc::new(store), dense, tuning, None)
    }

    fn with_store(
        store: Arc<dyn VectorStore>,
        dense: Option<DenseEmbedder>,
        tuning: &RetrievalSettings,
        lock: Option<File>,
    ) -> Result<Self, RetrievalError> {
        let extra = tuning.synonyms.as_ref();
        let synonyms = synonyms::Synonyms::with_extra(extra.map(|(_, text)| text.as_str()))
            .map_err(|e| RetrievalError::Read {
                path: extra.map_or_else(
                    || "the built-in synonym table".to_owned(),
                    |(path, _)| format!("RETRIEVAL_SYNONYMS ({})", path.display()),
                ),
                reason: e,
            })?;
        Ok(Self {
            store,
            ranker: Ranker::new(Bm25::english().map_err(StoreError::Engine)?, synonyms),
            dense,
            sources_per_page: tuning.sources_per_page.max(1),
            fixed_threshold: tuning.min_relevance.map(f64::from),
            guardrail: tokio::sync::Mutex::new(None),
            idf: std::sync::Mutex::new((0, HashMap::new())),
            _lock: lock,
            last_search_ok: AtomicBool::new(true),
            passages: std::sync::Mutex::new(None),
        })
    }

    /// The number of passages stored, read at most once a [`COUNT_TTL`].
    async fn passage_count(&self) -> Result<usize, RetrievalError> {
        let cached = *self.passages.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((read, count)) = cached
            && read.elapsed() < COUNT_TTL
        {
            return Ok(count);
        }
        let count = self.store.count().await?;
        *self.passages.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), count));
        Ok(count)
    }

    /// Every indexed page's path, whatever folder or site it came from.
    pub async fn pages(&self) -> Result<std::collections::BTreeSet<String>, RetrievalError> {
        Ok(self.store.files("").await?.into_keys().collect())
    }

    pub async fn is_empty(&self) -> Result<bool, RetrievalError> {
        Ok(self.store.count().await? == 0)
    }

    /// The `limit` best passages for a question (hybrid when a dense embedder is set),
    /// at most `sources_per_page` of them from one page; a follow-up is searched with
    /// the turn before it (`previous`).
    pub async fn search(
        &self,
        question: &str,
        previous: Option<&Previous>,
        limit: usize,
    ) -> Result<Found, RetrievalError> {
        let found = self
            .search_unrecorded(question, previous, limit, Embed::Dense)
            .await;
        self.last_search_ok.store(found.is_ok(), Ordering::Relaxed);
        let mut found = found?;
        found.threshold = self.threshold().await?;
        Ok(found)
    }

    /// Whether the last search or probe succeeded.
    pub fn healthy(&self) -> bool {
        self.last_search_ok.load(Ordering::Relaxed)
    }

    /// Asks the store whether it answers (setting a remote collection up if that has
    /// not been done yet); `healthy` follows the answer.
    pub async fn probe(&self) -> Result<(), RetrievalError> {
        let answered = self.store.probe().await;
        self.last_search_ok
            .store(answered.is_ok(), Ordering::Relaxed);
        Ok(answered?)
    }

    /// The guardrail's threshold: `RETRIEVAL_MIN_SCORE` when set, else the index's own
    /// calibration.
    async fn threshold(&self) -> Result<f64, RetrievalError> {
        match self.fixed_threshold {
            Some(fixed) => Ok(fixed),
            None => Ok(self.guardrail().await?.threshold),
        }
    }

    /// The guardrail as calibrated for the index as it is now (computed again when the
    /// passage count changes), or as fixed by `RETRIEVAL_MIN_SCORE`.
    pub async fn guardrail(&self) -> Result<Guardrail, RetrievalError> {
        let count = self.passage_count().await?;
        let mut cached = self.guardrail.lock().await;
        if let Some((at, guardrail)) = &*cached
            && *at == count
        {
            return Ok(guardrail.clone());
        }
        let guardrail = guardrail::calibrate(self, self.fixed_threshold).await?;
        *cached = Some((count, guardrail.clone()));
        Ok(guardrail)
    }

    async fn search_unrecorded(
        &self,
        question: &str,
        previous: Option<&Previous>,
        limit: usize,
        embed: Embed,
    ) -> Result<Found, RetrievalError> {
        let query = self.ranker.query(question, previous);
        let dense = match (&self.dense, embed) {
            (None, _) | (_, Embed::SparseOnly) => None,
            (Some(embedder), Embed::Dense) => {
                let text = match previous {
                    Some(previous) => format!("{}\n{question}", previous.question),
                    None => question.to_owned(),
                };
                embedder.embed(&[text], Side::Query).await?.pop()
            }
        };
        let mut candidates = self
            .store
            .search(
                QueryVectors {
                    sparse: query.sparse.clone(),
                    dense,
                },
                CANDIDATES.max(limit),
            )
            .await?;
        for hit in &mut candidates {
            hit.score *= self.ranker.adjustment(&query, &hit.payload, previous);
        }
        candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
        let passages = diverse(candidates, limit, self.sources_per_page);
        let relevance = self.coverage(&query.terms, &passages).await?;
        Ok(Found {
            passages,
            relevance,
            threshold: 0.0,
        })
    }

    /// How much of the question the best-covering passage holds ([`Coverage`]).
    async fn coverage(
        &self,
        terms: &[rank::Term],
        passages: &[Passage],
    ) -> Result<f64, RetrievalError> {
        if passages.is_empty() || terms.is_empty() {
            return Ok(0.0);
        }
        let count = self.passage_count().await?;
        let mut idf = Vec::with_capacity(terms.len());
        for term in terms {
            idf.push(self.idf(term.id, count).await?);
        }
        let coverage = Coverage {
            terms,
            idf: &idf,
            rare: rare_word_idf(count),
        };
        Ok(passages
            .iter()
            .map(|p| coverage.of(&self.ranker.passage(&p.title, &p.heading, &p.text, &p.lead)))
            .fold(0.0, f64::max))
    }

    /// One word's IDF in the index: the best passage for the word alone scores its
    /// IDF times the word's weight in that passage, which is computed again from the
    /// passage. `None` when no passage holds the word.
    async fn idf(&self, term: u32, count: usize) -> Result<Option<f64>, RetrievalError> {
        {
            let mut cache = self.idf.lock().unwrap_or_else(|e| e.into_inner());
            if cache.0 != count {
                *cache = (count, HashMap::new());
            }
            if let Some(known) = cache.1.get(&term) {
                return Ok(*known);
            }
        }
        let best = self
            .store
            .search(
                QueryVectors {
                    sparse: qdrant_edge::SparseVector {
                        indices: vec![term],
                        values: vec![1.0],
                    },
                    dense: None,
                },
                1,
            )
            .await?;
        let idf = best.first().and_then(|hit| {
            let weight = rank::value_of(&self.ranker.payload(&hit.payload), term);
            (weight > 0.0).then(|| f64::from(hit.score) / f64::from(weight))
        });
        let mut cache = self.idf.lock().unwrap_or_else(|e| e.into_inner());
        if cache.1.len() < IDF_CACHE {
            cache.1.insert(term, idf);
        }
        Ok(idf)
    }

    /// Passages of the index to calibrate with (the first `limit` the store lists).
    pub(crate) async fn sample(&self, limit: usize) -> Result<Vec<ChunkPayload>, RetrievalError> {
        Ok(self.store.sample(limit).await?)
    }

    /// Indexes every page under `locations`. Unchanged pages are skipped, changed ones
    /// replaced, and pages that disappeared (or are no longer content) have their chunks
    /// removed; a page that could not be read this time keeps what was indexed before.
    pub async fn ingest(
        &self,
        locations: &[Location],
        progress: &dyn Progress,
    ) -> Result<IngestSummary, RetrievalError> {
        let mut summary = IngestSummary::default();
        for location in locations {
            let root = location.root_key();
            let (mut pages, mut found) =
                site::read(location)
                    .await
                    .map_err(|reason| RetrievalError::Read {
                        path: root.clone(),
                        reason,
                    })?;
            let known = self.store.files(&root).await?;
            let mut run = IngestRun {
                root: &root,
                known: &known,
                present: BTreeSet::new(),
                contents: HashMap::new(),
            };
            let before = summary.pages;
            while let Some(fetched) = pages.recv().await {
                while let Ok(total) = found.try_recv() {
                    progress.found(before + total);
                }
                let path = match fetched {
                    Fetched::Page(page) => {
                        summary.pages += 1;
                        let path = page.path.clone();
                        self.ingest_page(&mut run, page, &mut summary).await?;
                        path
                    }
                    Fetched::Failed { path, reason } => {
                        summary.pages += 1;
                        summary.skipped.push(Skipped::new(
                            &path,
                            format!("{reason} (what was indexed before is kept)"),
                        ));
                        run.present.insert(path.clone());
                        path
                    }
                    Fetched::Refused { path, reason } => {
                        summary.skipped.push(Skipped::new(&path, reason));
                        path
                    }
                };
                progress.page_done(&path);
            }
            for gone in known.keys().filter(|p| !run.present.contains(*p)) {
                self.store.delete_file(&root, gone).await?;
                summary.removed += 1;
            }
        }
        progress.finish();
        *self.passages.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.guardrail.lock().await = None;
        Ok(summary)
    }

    async fn ingest_page(
        &self,
        run: &mut IngestRun<'_>,
        page: Page,
        summary: &mut IngestSummary,
    ) -> Result<(), RetrievalError> {
        let document = match document::parse(&page.content, page.format, &page.path) {
            Ok(document) => document,
            Err(skip) => {
                summary.skipped.push(Skipped::new(&page.path, skip));
                return Ok(());
            }
        };
        let content = hex_sha256(content_of(&document).as_bytes());
        if let Some(first) = run.contents.get(&content) {
            summary.skipped.push(Skipped {
                duplicate_of: Some(first.clone()),
                ..Skipped::new(&page.path, Skip::Duplicate(first.clone()))
            });
            return Ok(());
        }
        run.contents.insert(content, page.path.clone());
        run.present.insert(page.path.clone());
        let hash = hex_sha256(format!("{PIPELINE_VERSION}\0{}", page.content).as_bytes());
        if run.known.get(&page.path) == Some(&hash) {
            summary.unchanged += 1;
            return Ok(());
        }
        summary.chunks += self.index_page(run.root, &page, &hash, &document).await?;
        summary.indexed += 1;
        Ok(())
    }

    async fn index_page(
        &self,
        root: &str,
        page: &Page,
        hash: &str,
        document: &Document,
    ) -> Result<usize, RetrievalError> {
        let chunks = chunk_sections(document, &fallback_title(&page.path));
        self.store.delete_file(root, &page.path).await?;
        let mut written = 0;
        for batch in chunks.chunks(EMBED_BATCH) {
            let dense = match &self.dense {
                Some(embedder) => {
                    let texts: Vec<String> = batch.iter().map(embedding_text).collect();
                    Some(embedder.embed(&texts, Side::Document).await?)
                }
                None => None,
            };
            let points: Vec<Point> = batch
                .iter()
                .enumerate()
                .map(|(i, c)| Point {
                    id: uuid::Uuid::new_v5(
                        &CHUNK_NAMESPACE,
                        format!("{root}\0{}#{}", page.path, c.index).as_bytes(),
                    ),
                    sparse: self.ranker.passage(&c.title, &c.heading, &c.text, &c.lead),
                    dense: dense.as_ref().map(|d| d[i].clone()),
                    payload: ChunkPayload {
                        root: root.to_owned(),
                        path: page.path.clone(),
                        file_hash: hash.to_owned(),
                        title: c.title.clone(),
                        heading: c.heading.clone(),
                        url: page.url.clone(),
                        anchor: c.anchor.clone(),
                        text: c.text.clone(),
                        lead: c.lead.clone(),
                        index: c.index,
                    },
                })
                .collect();
            written += points.len();
            self.store.upsert(points).await?;
        }
        Ok(written)
    }
}

/// Whether a search embeds its question with the dense model too (when there is one):
/// calibrating the guardrail asks dozens of questions and reads only their BM25 coverage,
/// so it never spends the embedding endpoint's quota.
#[derive(Clone, Copy)]
enum Embed {
    Dense,
    SparseOnly,
}

/// What one ingest of one location keeps track of.
struct IngestRun<'a> {
    root: &'a str,
    /// `path → hash` of the pages indexed before under this root.
    known: &'a HashMap<String, String>,
    /// Pages that are (still) part of the index.
    present: BTreeSet<String>,
    /// The hash of each indexed page's content, and the page that has it: a page with
    /// the same content (mdBook's `index.html` beside its first chapter) is skipped.
    contents: HashMap<String, String>,
}

fn split(dense: Option<(DenseEmbedder, usize)>) -> (Option<DenseEmbedder>, Option<usize>) {
    match dense {
        Some((embedder, dims)) => (Some(embedder), Some(dims)),
        None => (None, None),
    }
}

/// At most `per_page` passages of one page, best first, `limit` in all.
fn diverse(candidates: Vec<Hit>, limit: usize, per_page: usize) -> Vec<Passage> {
    let mut taken: HashMap<(String, String), usize> = HashMap::new();
    // Into a vector of its own: collecting in place would keep the candidates' whole
    // buffer (about 10 KB) for the five passages a chat turn holds while it streams.
    let mut passages = Vec::with_capacity(limit.min(candidates.len()));
    passages.extend(
        candidates
            .into_iter()
            .filter(|hit| {
                let count = taken
                    .entry((hit.payload.root.clone(), hit.payload.path.clone()))
                    .or_insert(0);
                *count += 1;
                *count <= per_page
            })
            .take(limit)
            .map(Passage::from),
    );
    passages
}

/// A page's words, whatever its markup: what makes two pages duplicates.
fn content_of(document: &Document) -> String {
    let mut content = String::new();
    for section in &document.sections {
        for heading in &section.headings {
            content.push_str(heading);
            content.push('\n');
        }
        for word in section.text.split_whitespace() {
            content.push_str(word);
            content.push(' ');
        }
    }
    content
}

/// The page's file name in words, for a page that names no title.
fn fallback_title(path: &str) -> String {
    let name = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path);
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    stem.replace(['-', '_'], " ")
}

/// The heading path travels with the text into the dense vector, so a question that names
/// a section finds its passages (the sparse vector weighs it as a field of its own,
/// [`Ranker::passage`]).
fn embedding_text(chunk: &chunk::Chunk) -> String {
    if chunk.heading.is_empty() {
        chunk.text.clone()
    } else {
        format!("{}\n{}", chunk.heading, chunk.text)
    }
}

/// Locks `dir` for this process through a lock file beside it (`qdrant.lock`).
fn lock_dir(data_dir: &Path, dir: &Path) -> Result<File, RetrievalError> {
    let path = data_dir.join("qdrant.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| RetrievalError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_owned()).into()),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Engine(format!("cannot lock {}: {e}", path.display())).into())
        }
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    crate::auth::password::hex(&Sha256::digest(bytes))
}
