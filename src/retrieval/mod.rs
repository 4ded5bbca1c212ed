//! Retrieval: finding the passages that answer a question.
//!
//! - [`chunk`]: files into heading-aware, overlapping passages.
//! - [`embed`]: BM25 sparse vectors (no model needed) and optional dense embeddings.
//! - [`store`]: the vector store interface and the embedded Qdrant engine.
//!
//! [`Retriever`] ties them together for the chat flow (`search`) and for `lectern ingest`
//! and first-start indexing (`ingest`).

pub mod chunk;
pub mod embed;
pub mod remote;
pub mod store;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use chunk::{Format, chunk_document};
use embed::{Bm25, DenseEmbedder, EmbedError};
use store::{ChunkPayload, Hit, Point, QueryVectors, StoreError, VectorStore};

/// Namespace of chunk ids: `uuid5(NAMESPACE, "path#index")`, so re-ingesting a file
/// writes the same ids.
const CHUNK_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c65_6374_6572_6e00_0000_0000_0000_0001);
/// Chunks embedded per request to the embeddings endpoint.
const EMBED_BATCH: usize = 64;

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
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub title: String,
    pub path: String,
    pub heading: String,
    pub text: String,
    pub score: f64,
}

impl From<Hit> for Passage {
    fn from(hit: Hit) -> Self {
        Self {
            title: hit.payload.title,
            path: hit.payload.path,
            heading: hit.payload.heading,
            text: hit.payload.text,
            score: f64::from(hit.score),
        }
    }
}

/// What an ingest run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestSummary {
    /// Supported files found under the given paths.
    pub files: usize,
    /// Files (re)indexed because they were new or changed.
    pub indexed: usize,
    pub unchanged: usize,
    /// Files indexed before but gone now, whose chunks were removed.
    pub removed: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Files that could not be read (not UTF-8, unreadable), with the reason.
    pub skipped: Vec<String>,
}

/// Told about ingest progress: a terminal progress bar, or nothing.
pub trait Progress: Send + Sync {
    fn start(&self, files: usize);
    fn file_done(&self, path: &str);
    fn finish(&self);
}

/// No progress output (the server indexing its corpus; tests).
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: usize) {}
    fn file_done(&self, _: &str) {}
    fn finish(&self) {}
}

pub struct Retriever {
    store: Arc<dyn VectorStore>,
    bm25: Bm25,
    dense: Option<DenseEmbedder>,
    /// Held while the process uses an embedded store: a second process cannot open it.
    _lock: Option<File>,
    /// Whether the last search succeeded (for `health`).
    last_search_ok: AtomicBool,
}

impl Retriever {
    /// The embedded store under `data_dir/qdrant`, locked for this process.
    pub fn embedded(
        data_dir: &Path,
        dense: Option<(DenseEmbedder, usize)>,
    ) -> Result<Self, RetrievalError> {
        let dir = data_dir.join("qdrant");
        std::fs::create_dir_all(&dir).map_err(|e| RetrievalError::Read {
            path: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let lock = lock_dir(data_dir, &dir)?;
        let (dense, dims) = match dense {
            Some((embedder, dims)) => (Some(embedder), Some(dims)),
            None => (None, None),
        };
        let store = store::EmbeddedStore::open(&dir, dims)?;
        Ok(Self {
            store: Arc::new(store),
            bm25: Bm25::english().map_err(StoreError::Engine)?,
            dense,
            _lock: Some(lock),
            last_search_ok: AtomicBool::new(true),
        })
    }

    /// A Qdrant server or Qdrant Cloud collection, created on first use.
    pub async fn remote(
        service: &crate::config::RemoteService,
        collection: &str,
        dense: Option<(DenseEmbedder, usize)>,
    ) -> Result<Self, RetrievalError> {
        let (dense, dims) = match dense {
            Some((embedder, dims)) => (Some(embedder), Some(dims)),
            None => (None, None),
        };
        let store = remote::RemoteStore::open(service, collection, dims).await?;
        Ok(Self {
            store: Arc::new(store),
            bm25: Bm25::english().map_err(StoreError::Engine)?,
            dense,
            _lock: None,
            last_search_ok: AtomicBool::new(true),
        })
    }

    pub fn hybrid(&self) -> bool {
        self.dense.is_some()
    }

    pub async fn is_empty(&self) -> Result<bool, RetrievalError> {
        Ok(self.store.count().await? == 0)
    }

    /// The `limit` best passages for a question (hybrid when a dense embedder is set).
    pub async fn search(
        &self,
        question: &str,
        limit: usize,
    ) -> Result<Vec<Passage>, RetrievalError> {
        let found = self.search_unrecorded(question, limit).await;
        self.last_search_ok.store(found.is_ok(), Ordering::Relaxed);
        found
    }

    /// Whether the last search succeeded.
    pub fn healthy(&self) -> bool {
        self.last_search_ok.load(Ordering::Relaxed)
    }

    async fn search_unrecorded(
        &self,
        question: &str,
        limit: usize,
    ) -> Result<Vec<Passage>, RetrievalError> {
        let dense = match &self.dense {
            Some(embedder) => embedder.embed(&[question.to_owned()]).await?.pop(),
            None => None,
        };
        let query = QueryVectors {
            sparse: self.bm25.query(question),
            dense,
        };
        Ok(self
            .store
            .search(query, limit)
            .await?
            .into_iter()
            .map(Passage::from)
            .collect())
    }

    /// Indexes every supported file under `roots`. Unchanged files are skipped, changed
    /// ones replaced, and files that disappeared from a root have their chunks removed.
    pub async fn ingest(
        &self,
        roots: &[PathBuf],
        progress: &dyn Progress,
    ) -> Result<IngestSummary, RetrievalError> {
        let mut summary = IngestSummary::default();
        let mut plan = Vec::new();
        for root in roots {
            let found = find_files(root).map_err(|reason| RetrievalError::Read {
                path: root.display().to_string(),
                reason,
            })?;
            summary.skipped.extend(found.refused);
            plan.push((root_key(root), found.files));
        }
        summary.files = plan.iter().map(|(_, files)| files.len()).sum();
        progress.start(summary.files);
        for (root, files) in plan {
            let known = self.store.files(&root).await?;
            let mut present = BTreeSet::new();
            for (file, path) in files {
                present.insert(path.clone());
                match std::fs::read(&file).map(String::from_utf8) {
                    Ok(Ok(content)) => {
                        let hash = hex_sha256(content.as_bytes());
                        if known.get(&path) == Some(&hash) {
                            summary.unchanged += 1;
                        } else {
                            summary.chunks += self
                                .index_file(&root, &path, &hash, &content, &file)
                                .await?;
                            summary.indexed += 1;
                        }
                    }
                    Ok(Err(_)) => summary.skipped.push(format!("{path}: not UTF-8 text")),
                    Err(e) => summary.skipped.push(format!("{path}: {e}")),
                }
                progress.file_done(&path);
            }
            for gone in known.keys().filter(|p| !present.contains(*p)) {
                self.store.delete_file(&root, gone).await?;
                summary.removed += 1;
            }
        }
        progress.finish();
        Ok(summary)
    }

    async fn index_file(
        &self,
        root: &str,
        path: &str,
        hash: &str,
        content: &str,
        file: &Path,
    ) -> Result<usize, RetrievalError> {
        let format = Format::of(file).unwrap_or(Format::Text);
        let fallback_title = file
            .file_stem()
            .map(|s| s.to_string_lossy().replace(['-', '_'], " "))
            .unwrap_or_else(|| path.to_owned());
        let chunks = chunk_document(content, format, &fallback_title);
        self.store.delete_file(root, path).await?;
        let mut written = 0;
        for batch in chunks.chunks(EMBED_BATCH) {
            let dense = match &self.dense {
                Some(embedder) => {
                    let texts: Vec<String> = batch.iter().map(embedding_text).collect();
                    Some(embedder.embed(&texts).await?)
                }
                None => None,
            };
            let points: Vec<Point> = batch
                .iter()
                .enumerate()
                .map(|(i, c)| Point {
                    id: uuid::Uuid::new_v5(
                        &CHUNK_NAMESPACE,
                        format!("{root}\0{path}#{}", c.index).as_bytes(),
                    ),
                    sparse: self.bm25.document(&embedding_text(c)),
                    dense: dense.as_ref().map(|d| d[i].clone()),
                    payload: ChunkPayload {
                        root: root.to_owned(),
                        path: path.to_owned(),
                        file_hash: hash.to_owned(),
                        title: c.title.clone(),
                        heading: c.heading.clone(),
                        text: c.text.clone(),
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

/// The heading travels with the text into both vectors, so a question that names a
/// section finds its passages.
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

fn root_key(root: &Path) -> String {
    display_path(root).trim_end_matches('/').to_owned()
}

/// Paths as readers see them in sources: forward slashes, no leading `./`.
fn display_path(path: &Path) -> String {
    let text = path.to_string_lossy().replace('\\', "/");
    text.strip_prefix("./").unwrap_or(&text).to_owned()
}

/// What [`find_files`] found under a root.
struct Found {
    /// Each supported file with its path relative to the root (forward slashes), sorted.
    files: Vec<(PathBuf, String)>,
    /// Links that lead out of the root, as `path: why` lines for the summary.
    refused: Vec<String>,
}

/// Supported files under `root` (or `root` itself), skipping hidden entries and
/// `node_modules`. A symbolic link is followed only when its target lies inside the root:
/// a link to a file elsewhere on the server would make that file quotable by anyone who
/// can chat. Linked directories are not descended into (their files are reached, if they
/// belong to the corpus, through their real place).
fn find_files(root: &Path) -> Result<Found, String> {
    let meta = std::fs::metadata(root).map_err(|e| e.to_string())?;
    let mut found = Found {
        files: Vec::new(),
        refused: Vec::new(),
    };
    if meta.is_file() {
        if Format::of(root).is_some() {
            let name = root.file_name().map(|n| n.to_string_lossy().into_owned());
            found
                .files
                .push((root.to_owned(), name.unwrap_or_default()));
        }
        return Ok(found);
    }
    let real_root = root.canonicalize().map_err(|e| e.to_string())?;
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let entry = entry.map_err(|e| e.to_string())?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name == "node_modules" {
                continue;
            }
            let path = entry.path();
            let relative = display_path(path.strip_prefix(root).unwrap_or(&path));
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            if Format::of(&path).is_none() {
                continue;
            }
            if kind.is_symlink() {
                match path.canonicalize() {
                    Ok(target) if target.starts_with(&real_root) && target.is_file() => {}
                    Ok(target) if target.is_dir() => continue,
                    _ => {
                        found
                            .refused
                            .push(format!("{relative}: a link that leads out of the corpus"));
                        continue;
                    }
                }
            }
            found.files.push((path, relative));
        }
    }
    found.files.sort();
    Ok(found)
}

fn hex_sha256(bytes: &[u8]) -> String {
    crate::auth::password::hex(&Sha256::digest(bytes))
}
