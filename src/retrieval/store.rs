//! Where passages live: one interface, [`VectorStore`], and the embedded Qdrant engine
//! behind it (data under `DATA_DIR/qdrant`). Every point is one chunk: a sparse `bm25`
//! vector, optionally a dense `dense` vector, and a payload with `root`, `path`,
//! `fileHash`, `title`, `heading`, `url`, `anchor`, `text`, `index`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qdrant_edge::external::serde_json::{Value as EdgeJson, json};
use qdrant_edge::{
    Condition, CreateIndex, EdgeConfig, EdgeShard, EdgeSparseVectorParams, EdgeVectorParamsBuilder,
    FieldCondition, FieldIndexOperations, Filter, Fusion, Match, Modifier, NamedQuery,
    PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations, PointOperations,
    PointStruct, Prefetch, QueryEnum, QueryRequest, ScoringQuery, ScrollRequest, SparseVector,
    UpdateOperation, ValueVariants, VectorInternal, Vectors, WithPayloadInterface, WithVector,
};

/// The file the engine keeps its collection configuration in.
const EDGE_CONFIG_FILE: &str = "edge_config.json";
pub const SPARSE: &str = "bm25";
pub const DENSE: &str = "dense";
/// Each side of a hybrid query fetches this many candidates before fusion.
const PREFETCH: usize = 40;

/// One chunk to store.
#[derive(Debug, Clone)]
pub struct Point {
    pub id: uuid::Uuid,
    pub sparse: SparseVector,
    pub dense: Option<Vec<f32>>,
    pub payload: ChunkPayload,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkPayload {
    /// The ingest root the file was found under (what `lectern ingest` was given).
    pub root: String,
    pub path: String,
    /// SHA-256 of the whole file: unchanged files are skipped on re-ingest.
    pub file_hash: String,
    pub title: String,
    /// The heading path above the passage (`H1 › H2 › H3`).
    pub heading: String,
    /// Where a reader opens the page: absolute for pages fetched from the web, relative
    /// to `SITE_URL` for files (indexes written before citations had links have none).
    #[serde(default)]
    pub url: String,
    /// The fragment of the passage's heading on that page.
    #[serde(default)]
    pub anchor: String,
    pub text: String,
    /// The section's first sentence, on the section's first chunk (ranking weighs it).
    #[serde(default)]
    pub lead: String,
    pub index: usize,
}

/// A retrieved chunk with its score.
#[derive(Debug, Clone)]
pub struct Hit {
    pub score: f32,
    pub payload: ChunkPayload,
}

/// What a query searches with.
pub struct QueryVectors {
    pub sparse: SparseVector,
    pub dense: Option<Vec<f32>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("vector store error: {0}")]
    Engine(String),
    #[error(
        "the embedded vector store at {0} is in use by another process (a running `lectern serve`?): stop that process and run the command again, or set QDRANT_URL to a Qdrant server, which any number of processes can share"
    )]
    Locked(PathBuf),
    #[error("the vector store task failed: {0}")]
    Task(String),
    /// The collection there cannot serve these settings: retrying will not help.
    #[error("{0}")]
    Layout(String),
}

#[async_trait::async_trait]
pub trait VectorStore: Send + Sync {
    async fn upsert(&self, points: Vec<Point>) -> Result<(), StoreError>;
    /// Removes every chunk of one file: `path` (relative) under `root`.
    async fn delete_file(&self, root: &str, path: &str) -> Result<(), StoreError>;
    /// `path → fileHash` of every file indexed under `root` (under every root for "").
    async fn files(&self, root: &str) -> Result<HashMap<String, String>, StoreError>;
    async fn search(&self, query: QueryVectors, limit: usize) -> Result<Vec<Hit>, StoreError>;
    async fn count(&self) -> Result<usize, StoreError>;
    /// Up to `limit` passages, the first the store lists (ids are hashes, so they are
    /// spread over the pages): what the guardrail calibrates with.
    async fn sample(&self, limit: usize) -> Result<Vec<ChunkPayload>, StoreError>;
    /// Whether the store answers (and is set up); the embedded one always does.
    async fn probe(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The embedded Qdrant engine. Synchronous underneath, so every call runs on the blocking
/// pool; one instance per directory (the engine locks it).
pub struct EmbeddedStore {
    shard: Arc<EdgeShard>,
}

impl EmbeddedStore {
    /// Opens the store in `dir`, creating it (with `dense_dims` dense dimensions when
    /// hybrid search is configured) on first use.
    pub fn open(dir: &Path, dense_dims: Option<usize>) -> Result<Self, StoreError> {
        let has_data = dir.join(EDGE_CONFIG_FILE).exists();
        let shard = if has_data {
            EdgeShard::load(dir, None).map_err(|e| classify_open_error(dir, e.to_string()))?
        } else {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Engine(format!("cannot create {}: {e}", dir.display())))?;
            let mut config = EdgeConfig {
                sparse_vectors: HashMap::from([(
                    SPARSE.to_owned(),
                    EdgeSparseVectorParams {
                        modifier: Some(Modifier::Idf),
                        ..Default::default()
                    },
                )]),
                ..Default::default()
            };
            if let Some(dims) = dense_dims {
                config.vectors.insert(
                    DENSE.to_owned(),
                    EdgeVectorParamsBuilder::new(dims, qdrant_edge::Distance::Cosine).build(),
                );
            }
            let shard =
                EdgeShard::new(dir, config).map_err(|e| classify_open_error(dir, e.to_string()))?;
            for field in ["root", "path"] {
                shard
                    .update(UpdateOperation::FieldIndexOperation(
                        FieldIndexOperations::CreateIndex(CreateIndex {
                            field_name: field
                                .try_into()
                                .expect("a plain field name is a JSON path"),
                            field_schema: Some(PayloadFieldSchema::FieldType(
                                PayloadSchemaType::Keyword,
                            )),
                        }),
                    ))
                    .map_err(engine)?;
            }
            shard
        };
        Ok(Self {
            shard: Arc::new(shard),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&EdgeShard) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shard = self.shard.clone();
        tokio::task::spawn_blocking(move || work(&shard))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn classify_open_error(dir: &Path, message: String) -> StoreError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("lock") || lower.contains("would block") || lower.contains("in use") {
        StoreError::Locked(dir.to_owned())
    } else {
        StoreError::Engine(message)
    }
}

fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn match_keyword(field: &str, value: &str) -> Filter {
    Filter::new_must(keyword(field, value))
}

fn keyword(field: &str, value: &str) -> Condition {
    Condition::Field(FieldCondition::new_match(
        field.try_into().expect("a plain field name is a JSON path"),
        Match::new_value(ValueVariants::String(value.to_owned())),
    ))
}

fn nearest(using: &str, query: VectorInternal) -> ScoringQuery {
    ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
        query,
        using: Some(using.to_owned()),
    }))
}

#[async_trait::async_trait]
impl VectorStore for EmbeddedStore {
    async fn upsert(&self, points: Vec<Point>) -> Result<(), StoreError> {
        self.run(move |shard| {
            let points = points
                .into_iter()
                .map(|p| {
                    let mut vectors: Vec<(String, qdrant_edge::Vector)> =
                        vec![(SPARSE.to_owned(), p.sparse.into())];
                    if let Some(dense) = p.dense {
                        vectors.push((DENSE.to_owned(), dense.as_slice().into()));
                    }
                    let payload: EdgeJson = json!(p.payload);
                    PointStruct::new(PointId::Uuid(p.id), Vectors::new_named(vectors), payload)
                        .into()
                })
                .collect();
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                ))
                .map_err(engine)
        })
        .await
    }

    async fn delete_file(&self, root: &str, path: &str) -> Result<(), StoreError> {
        let mut filter = match_keyword("root", root);
        filter
            .must
            .get_or_insert_with(Vec::new)
            .push(keyword("path", path));
        self.run(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePointsByFilter(filter),
                ))
                .map_err(engine)
        })
        .await
    }

    async fn files(&self, root: &str) -> Result<HashMap<String, String>, StoreError> {
        let filter = (!root.is_empty()).then(|| match_keyword("root", root));
        self.run(move |shard| {
            let mut files = HashMap::new();
            let mut offset = None;
            loop {
                let (records, next) = shard
                    .scroll(ScrollRequest {
                        offset,
                        limit: Some(1000),
                        filter: filter.clone(),
                        with_payload: Some(WithPayloadInterface::Bool(true)),
                        with_vector: WithVector::Bool(false),
                        order_by: None,
                    })
                    .map_err(engine)?;
                for record in records {
                    if let Some(payload) = record.payload
                        && let (Some(path), Some(hash)) = (
                            payload.0.get("path").and_then(|v| v.as_str()),
                            payload.0.get("fileHash").and_then(|v| v.as_str()),
                        )
                    {
                        files.insert(path.to_owned(), hash.to_owned());
                    }
                }
                match next {
                    Some(id) => offset = Some(id),
                    None => break,
                }
            }
            Ok(files)
        })
        .await
    }

    async fn search(&self, query: QueryVectors, limit: usize) -> Result<Vec<Hit>, StoreError> {
        self.run(move |shard| {
            let sparse = nearest(SPARSE, VectorInternal::from(query.sparse));
            let (prefetches, scoring) = match query.dense {
                Some(dense) => (
                    vec![
                        Prefetch {
                            prefetches: vec![],
                            query: Some(sparse),
                            limit: PREFETCH,
                            params: None,
                            filter: None,
                            score_threshold: None,
                        },
                        Prefetch {
                            prefetches: vec![],
                            query: Some(nearest(DENSE, VectorInternal::from(dense))),
                            limit: PREFETCH,
                            params: None,
                            filter: None,
                            score_threshold: None,
                        },
                    ],
                    ScoringQuery::Fusion(Fusion::Rrf {
                        k: 60,
                        weights: None,
                    }),
                ),
                None => (vec![], sparse),
            };
            let points = shard
                .query(QueryRequest {
                    prefetches,
                    query: Some(scoring),
                    filter: None,
                    score_threshold: None,
                    limit,
                    offset: 0,
                    params: None,
                    with_vector: WithVector::Bool(false),
                    with_payload: WithPayloadInterface::Bool(true),
                })
                .map_err(engine)?;
            Ok(points
                .into_iter()
                .filter_map(|p| {
                    let payload = p.payload?;
                    let payload = serde_json::to_value(payload.0).ok()?;
                    Some(Hit {
                        score: p.score,
                        payload: serde_json::from_value(payload).ok()?,
                    })
                })
                .collect())
        })
        .await
    }

    async fn count(&self) -> Result<usize, StoreError> {
        self.run(|shard| Ok(shard.info().points_count)).await
    }

    async fn sample(&self, limit: usize) -> Result<Vec<ChunkPayload>, StoreError> {
        self.run(move |shard| {
            let (records, _) = shard
                .scroll(ScrollRequest {
                    offset: None,
                    limit: Some(limit),
                    filter: None,
                    with_payload: Some(WithPayloadInterface::Bool(true)),
                    with_vector: WithVector::Bool(false),
                    order_by: None,
                })
                .map_err(engine)?;
            Ok(records
                .into_iter()
                .filter_map(|r| {
                    let payload = serde_json::to_value(r.payload?.0).ok()?;
                    serde_json::from_value(payload).ok()
                })
                .collect())
        })
        .await
    }
}
