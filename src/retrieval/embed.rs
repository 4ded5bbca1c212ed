//! Text to vectors. BM25 sparse vectors need no model: Qdrant's own BM25 embedder (the one
//! Qdrant server uses) tokenises, stems and hashes, and the collection's IDF modifier does
//! the rest, so indexing and querying share one tokenizer. Dense vectors come from an
//! OpenAI-compatible `/v1/embeddings` endpoint when one is configured.

use std::time::Duration;

use qdrant_edge::SparseVector;
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use serde::Deserialize;

use crate::config::{EmbeddingSides, ModelService};

pub struct Bm25(EdgeBm25);

impl Bm25 {
    pub fn english() -> Result<Self, String> {
        EdgeBm25::new(EdgeBm25Config {
            language: Some("english".to_owned()),
            ..Default::default()
        })
        .map(Self)
        .map_err(|e| format!("cannot build the BM25 embedder: {e:?}"))
    }

    pub fn document(&self, text: &str) -> SparseVector {
        self.0.embed_document(text)
    }

    pub fn query(&self, text: &str) -> SparseVector {
        self.0.embed_query(text)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding request failed: {0}")]
    Request(String),
    #[error("embedding endpoint answered {status}")]
    Status { status: u16 },
    #[error("embedding endpoint returned {got} vectors for {expected} inputs")]
    Count { expected: usize, got: usize },
}

/// An OpenAI-compatible embeddings client.
pub struct DenseEmbedder {
    http: reqwest::Client,
    service: ModelService,
    sides: EmbeddingSides,
}

/// Which side of a search a text is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Query,
    Document,
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

impl DenseEmbedder {
    pub fn new(service: ModelService, sides: EmbeddingSides) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("a TLS-capable HTTP client builds");
        Self {
            http,
            service,
            sides,
        }
    }

    /// Embeds a batch of one side, returning one vector per input in input order.
    pub async fn embed(&self, inputs: &[String], side: Side) -> Result<Vec<Vec<f32>>, EmbedError> {
        let (prefix, input_type) = match side {
            Side::Query => (
                &self.sides.query_prefix,
                self.sides.input_type.as_ref().map(|(query, _)| query),
            ),
            Side::Document => (
                &self.sides.document_prefix,
                self.sides.input_type.as_ref().map(|(_, document)| document),
            ),
        };
        let input: Vec<String> = inputs.iter().map(|i| format!("{prefix}{i}")).collect();
        let mut body = serde_json::json!({ "model": self.service.model, "input": input });
        if let Some(input_type) = input_type {
            body["input_type"] = serde_json::Value::from(input_type.as_str());
        }
        let mut request = self
            .http
            .post(format!("{}/embeddings", self.service.base_url))
            .json(&body);
        if let Some(key) = &self.service.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| EmbedError::Request(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(EmbedError::Status {
                status: response.status().as_u16(),
            });
        }
        let mut body: EmbeddingResponse = response
            .json()
            .await
            .map_err(|e| EmbedError::Request(e.without_url().to_string()))?;
        if body.data.len() != inputs.len() {
            return Err(EmbedError::Count {
                expected: inputs.len(),
                got: body.data.len(),
            });
        }
        body.data.sort_by_key(|item| item.index);
        Ok(body.data.into_iter().map(|item| item.embedding).collect())
    }
}
