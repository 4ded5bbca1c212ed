//! Qdrant server or Qdrant Cloud through `qdrant-client` (gRPC), with the same collection
//! layout as the embedded engine: a sparse `bm25` vector with the IDF modifier, an
//! optional dense `dense` vector, keyword payload indexes on `root` and `path`. The
//! collection is created on first use. Any number of Lectern processes can share it.

use std::collections::HashMap;

use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter, Fusion, Modifier, NamedVectors, PointId,
    PointStruct, PrefetchQueryBuilder, Query, QueryPointsBuilder, ScrollPointsBuilder,
    SparseVectorParamsBuilder, SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector,
    VectorInput, VectorParamsBuilder, VectorsConfigBuilder,
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
}

fn remote(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

impl RemoteStore {
    /// Connects and creates the collection if it does not exist yet.
    pub async fn open(
        service: &RemoteService,
        collection: &str,
        dense_dims: Option<usize>,
    ) -> Result<Self, StoreError> {
        let client = Qdrant::from_url(&service.url)
            .api_key(service.api_key.as_ref().map(|k| k.expose().to_owned()))
            .skip_compatibility_check()
            .build()
            .map_err(remote)?;
        let store = Self {
            client,
            collection: collection.to_owned(),
        };
        if !store
            .client
            .collection_exists(collection)
            .await
            .map_err(remote)?
        {
            store.create(dense_dims).await?;
        }
        Ok(store)
    }

    async fn create(&self, dense_dims: Option<usize>) -> Result<(), StoreError> {
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
        self.client
            .create_collection(builder)
            .await
            .map_err(remote)?;
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
        tracing::info!(collection = %self.collection, "created the Qdrant collection");
        Ok(())
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
        let mut files = HashMap::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut request = ScrollPointsBuilder::new(&self.collection)
                .filter(Filter::must([Condition::matches("root", root.to_owned())]))
                .limit(1000)
                .with_payload(true);
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

    async fn search(&self, query: QueryVectors, limit: usize) -> Result<Vec<Hit>, StoreError> {
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

    async fn count(&self) -> Result<usize, StoreError> {
        let response = self
            .client
            .count(CountPointsBuilder::new(&self.collection).exact(true))
            .await
            .map_err(remote)?;
        Ok(response.result.map_or(0, |r| r.count as usize))
    }
}
