//! Qdrant server or Qdrant Cloud through `qdrant-client` (gRPC), with the same collection
//! layout as the embedded engine: a sparse `bm25` vector with the IDF modifier, an
//! optional dense `dense` vector, keyword payload indexes on `root` and `path`. Any number
//! of Lectern processes can share it, and set it up at the same moment: creating the
//! collection when another replica just did is success, the payload indexes are created
//! (idempotently) on every start, and a collection whose layout does not match the
//! settings stops start-up with one line saying what differs. Every call has a deadline
//! (`QDRANT_TIMEOUT_MS`).

use std::collections::HashMap;

use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, Fusion, Modifier, NamedVectors, PointId,
    PointStruct, PrefetchQueryBuilder, Query, QueryPointsBuilder, ScrollPointsBuilder,
    SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector,
    VectorInput, VectorParamsBuilder, VectorsConfigBuilder, vectors_config,
};

use super::store::{
    ChunkPayload, DENSE, Hit, Point, QueryVectors, SPARSE, StoreError, VectorStore,
};
use crate::config::RemoteService;

/// Each side of a hybrid query fetches this many candidates before fusion.
const PREFETCH: u64 = 40;

pub struct RemoteStore {
    client: Qdrant,
    collection: String,
    /// `EMBEDDING_DIMENSIONS`, the size of the `dense` vectors the collection must have.
    dense_dims: Option<usize>,
    /// Set once the collection is set up: until then every call tries again, so a
    /// server that starts while Qdrant is down serves as soon as it is up.
    ready: tokio::sync::OnceCell<()>,
    service_url: String,
}

fn remote(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl RemoteStore {
    /// A client for the collection, connecting to nothing yet: the collection is set up
    /// (created, or checked) by the first call that reaches Qdrant.
    pub fn lazy(
        service: &RemoteService,
        collection: &str,
        dense_dims: Option<usize>,
    ) -> Result<Self, StoreError> {
        let client = Qdrant::from_url(&service.url)
            .api_key(service.api_key.as_ref().map(|k| k.expose().to_owned()))
            .timeout(service.timeout)
            .connect_timeout(service.timeout)
            .skip_compatibility_check()
            .build()
            .map_err(remote)?;
        Ok(Self {
            client,
            collection: collection.to_owned(),
            dense_dims,
            ready: tokio::sync::OnceCell::new(),
            service_url: service.url.clone(),
        })
    }

    /// Connects and sets the collection up now.
    pub async fn open(
        service: &RemoteService,
        collection: &str,
        dense_dims: Option<usize>,
    ) -> Result<Self, StoreError> {
        let store = Self::lazy(service, collection, dense_dims)?;
        store.ready().await?;
        Ok(store)
    }

    /// Sets the collection up if that has not been done yet.
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.ready
            .get_or_try_init(|| async {
                match self.set_up(self.dense_dims).await {
                    Err(StoreError::Engine(e)) if answers_rest(&self.service_url).await => {
                        Err(StoreError::Engine(format!(
                            "QDRANT_URL {} is Qdrant's REST port; Lectern speaks gRPC: use the gRPC port (6334 by default) ({e})",
                            self.service_url
                        )))
                    }
                    set_up => set_up,
                }
            })
            .await
            .map(|_| ())
    }

    async fn set_up(&self, dense_dims: Option<usize>) -> Result<(), StoreError> {
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            SPARSE,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
        );
        let mut builder =
            CreateCollectionBuilder::new(&self.collection).sparse_vectors_config(sparse);
        if let Some(dims) = dense_dims {
            let mut dense = VectorsConfigBuilder::default();
            dense.add_named_vector_params(
                DENSE,
                VectorParamsBuilder::new(dims as u64, Distance::Cosine),
            );
            builder = builder.vectors_config(dense);
        }
        match self.client.create_collection(builder).await {
            Ok(_) => {
                tracing::info!(collection = %self.collection, "created the Qdrant collection")
            }
            // Another replica created it first (or it was there): check it below.
            Err(e) if e.to_string().contains("already exists") => {}
            Err(e) => return Err(remote(e)),
        }
        self.check_layout(dense_dims).await?;
        // Created on every start: a process that stopped between creating the collection
        // and its indexes leaves them to the next one; creating an index again is a no-op.
        for field in ["root", "path"] {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        &self.collection,
                        field,
                        FieldType::Keyword,
                    )
                    .wait(true),
                )
                .await
                .map_err(remote)?;
        }
        Ok(())
    }

    /// The collection's vectors against the settings: a sparse `bm25`, and a dense
    /// `dense` of `EMBEDDING_DIMENSIONS` exactly when embeddings are configured.
    async fn check_layout(&self, dense_dims: Option<usize>) -> Result<(), StoreError> {
        let info = self
            .client
            .collection_info(&self.collection)
            .await
            .map_err(remote)?;
        let params = info
            .result
            .and_then(|r| r.config)
            .and_then(|c| c.params)
            .unwrap_or_default();
        let has_sparse = params
            .sparse_vectors_config
            .is_some_and(|c| c.map.contains_key(SPARSE));
        let dense = match params.vectors_config.and_then(|v| v.config) {
            Some(vectors_config::Config::ParamsMap(map)) => {
                map.map.get(DENSE).map(|p| p.size as usize)
            }
            _ => None,
        };
        let mut differences = Vec::new();
        if !has_sparse {
            differences.push(format!("it has no sparse `{SPARSE}` vector"));
        }
        match (dense, dense_dims) {
            (Some(found), Some(wanted)) if found != wanted => differences.push(format!(
                "its `{DENSE}` vectors have {found} dimensions, EMBEDDING_DIMENSIONS is {wanted}"
            )),
            (Some(found), None) => differences.push(format!(
                "it has {found}-dimension `{DENSE}` vectors, but no EMBEDDING_BASE_URL is set"
            )),
            (None, Some(wanted)) => differences.push(format!(
                "it has no `{DENSE}` vectors, EMBEDDING_DIMENSIONS is {wanted}"
            )),
            _ => {}
        }
        if differences.is_empty() {
            return Ok(());
        }
        Err(StoreError::Layout(format!(
            "the Qdrant collection `{}` does not match the settings: {}; use another QDRANT_COLLECTION, or delete it and run `lectern ingest` again",
            self.collection,
            differences.join("; ")
        )))
    }
}

/// Whether `url` answers like Qdrant's REST API (its root names Qdrant), which a gRPC
/// client cannot speak to.
async fn answers_rest(url: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(1))
        .build()
    else {
        return false;
    };
    match client.get(url).send().await {
        Ok(response) => response
            .text()
            .await
            .is_ok_and(|body| body.to_ascii_lowercase().contains("qdrant")),
        Err(_) => false,
    }
}

fn payload_of(map: HashMap<String, qdrant_client::qdrant::Value>) -> Option<ChunkPayload> {
    let json: serde_json::Map<String, serde_json::Value> = map
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::from(v)))
        .collect();
    serde_json::from_value(serde_json::Value::Object(json)).ok()
}

fn sparse_input(v: &qdrant_edge::SparseVector) -> VectorInput {
    VectorInput::new_sparse(v.indices.clone(), v.values.clone())
}

#[async_trait::async_trait]
impl VectorStore for RemoteStore {
    async fn upsert(&self, points: Vec<Point>) -> Result<(), StoreError> {
        self.ready().await?;
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|p| {
                let mut vectors = NamedVectors::default().add_vector(
                    SPARSE,
                    Vector::new_sparse(p.sparse.indices, p.sparse.values),
                );
                if let Some(dense) = p.dense {
                    vectors = vectors.add_vector(DENSE, Vector::new_dense(dense));
                }
                let payload = serde_json::to_value(&p.payload)
                    .ok()
                    .and_then(|v| qdrant_client::Payload::try_from(v).ok())
                    .unwrap_or_default();
                PointStruct::new(p.id.to_string(), vectors, payload)
            })
            .collect();
        self.client
            .upsert_points(UpsertPointsBuilder::new(&self.collection, points).wait(true))
            .await
            .map_err(remote)?;
        Ok(())
    }

    async fn delete_file(&self, root: &str, path: &str) -> Result<(), StoreError> {
        self.ready().await?;
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(Filter::must([
                        Condition::matches("root", root.to_owned()),
                        Condition::matches("path", path.to_owned()),
                    ]))
                    .wait(true),
            )
            .await
            .map_err(remote)?;
        Ok(())
    }

    async fn files(&self, root: &str) -> Result<HashMap<String, String>, StoreError> {
        self.ready().await?;
        let mut files = HashMap::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut request = ScrollPointsBuilder::new(&self.collection)
                .limit(1000)
                .with_payload(true);
            if !root.is_empty() {
                request =
                    request.filter(Filter::must([Condition::matches("root", root.to_owned())]));
            }
            if let Some(o) = offset.take() {
                request = request.offset(o);
            }
            let page = self.client.scroll(request).await.map_err(remote)?;
            for point in page.result {
                if let Some(payload) = payload_of(point.payload) {
                    files.insert(payload.path, payload.file_hash);
                }
            }
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => break,
            }
        }
        Ok(files)
    }

    async fn sample(&self, limit: usize) -> Result<Vec<ChunkPayload>, StoreError> {
        self.ready().await?;
        let request = ScrollPointsBuilder::new(&self.collection)
            .limit(limit as u32)
            .with_payload(true);
        let page = self.client.scroll(request).await.map_err(remote)?;
        Ok(page
            .result
            .into_iter()
            .filter_map(|point| payload_of(point.payload))
            .collect())
    }

    async fn search(&self, query: QueryVectors, limit: usize) -> Result<Vec<Hit>, StoreError> {
        self.ready().await?;
        let request = match &query.dense {
            Some(dense) => QueryPointsBuilder::new(&self.collection)
                .add_prefetch(
                    PrefetchQueryBuilder::default()
                        .query(Query::new_nearest(sparse_input(&query.sparse)))
                        .using(SPARSE)
                        .limit(PREFETCH),
                )
                .add_prefetch(
                    PrefetchQueryBuilder::default()
                        .query(Query::new_nearest(VectorInput::new_dense(dense.clone())))
                        .using(DENSE)
                        .limit(PREFETCH),
                )
                .query(Query::new_fusion(Fusion::Rrf)),
            None => QueryPointsBuilder::new(&self.collection)
                .query(Query::new_nearest(sparse_input(&query.sparse)))
                .using(SPARSE),
        };
        let response = self
            .client
            .query(request.limit(limit as u64).with_payload(true))
            .await
            .map_err(remote)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| {
                Some(Hit {
                    score: p.score,
                    payload: payload_of(p.payload)?,
                })
            })
            .collect())
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.ready().await?;
        self.client.health_check().await.map_err(remote)?;
        Ok(())
    }

    async fn count(&self) -> Result<usize, StoreError> {
        self.ready().await?;
        let response = self
            .client
            .count(CountPointsBuilder::new(&self.collection).exact(true))
            .await
            .map_err(remote)?;
        Ok(response.result.map_or(0, |r| r.count as usize))
    }
}
