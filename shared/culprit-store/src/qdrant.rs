//! [`VectorStore`] over a Qdrant collection (gRPC, `qdrant-client`).
//!
//! Payload per point: `source_type`, `service`, `environment` (keyword), `timestamp` (integer,
//! unix nanos), `hour_of_week` (integer, 0..168 from Monday 00:00 UTC), `normal` and `reference`
//! (bool), `score` (float). Points written before `reference` and `hour_of_week` existed lack
//! them: they count as event points and match no hour-of-week filter. Qdrant's filter API carries range bounds as
//! f64, so time bounds are exact only for multiples of 256 ns at today's epoch (whole seconds
//! are); a point within 256 ns of a bound may fall on either side.

use crate::types::{hour_of_week, normalised_query, validate_point};
use crate::{Filter, Neighbour, PointEntry, PointId, StoreError, VectorStore, DIM};
use async_trait::async_trait;
use qdrant_client::qdrant::{
    point_id::PointIdOptions, value::Kind, vectors_config, Condition, CountPointsBuilder,
    CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeleteCollectionBuilder,
    DeletePointsBuilder, Distance, FieldType, Filter as QFilter, PayloadIncludeSelector,
    PointStruct, Query, QueryPointsBuilder, Range, ScoredPoint, SearchParamsBuilder,
    UpsertPointsBuilder, VectorParamsBuilder,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use std::time::Duration;

/// Points per upsert request: large enough to amortise the round trip, small enough to stay
/// well under gRPC message limits (256 * 64 floats is 64 KiB of vectors).
const UPSERT_CHUNK: usize = 256;

/// Payload fields and the index each gets at bootstrap.
const INDEXES: [(&str, FieldType); 7] = [
    ("source_type", FieldType::Keyword),
    ("service", FieldType::Keyword),
    ("environment", FieldType::Keyword),
    ("timestamp", FieldType::Integer),
    ("hour_of_week", FieldType::Integer),
    ("normal", FieldType::Bool),
    ("reference", FieldType::Bool),
];

/// Where and how to reach Qdrant.
#[derive(Clone)]
pub struct QdrantConfig {
    /// gRPC endpoint, e.g. `http://localhost:6334`.
    pub url: String,
    pub api_key: Option<String>,
    pub collection: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Components of every vector ([`DIM`] for event embeddings).
    pub dimension: usize,
    /// Ask Qdrant for an exact (brute-force) search instead of HNSW. Exact matches the embedded
    /// store's answers; HNSW is faster on large collections.
    pub exact: bool,
}

impl QdrantConfig {
    pub fn new(url: impl Into<String>, collection: impl Into<String>) -> QdrantConfig {
        QdrantConfig {
            url: url.into(),
            api_key: None,
            collection: collection.into(),
            timeout: Duration::from_secs(10),
            dimension: DIM,
            exact: false,
        }
    }
}

// Hand-written so the api key never reaches a log line.
impl std::fmt::Debug for QdrantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantConfig")
            .field("url", &self.url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("collection", &self.collection)
            .field("timeout", &self.timeout)
            .field("dimension", &self.dimension)
            .field("exact", &self.exact)
            .finish()
    }
}

/// A Qdrant collection as a [`VectorStore`].
pub struct QdrantStore {
    client: Qdrant,
    collection: String,
    dimension: usize,
    exact: bool,
}

fn backend(op: &'static str) -> impl FnOnce(QdrantError) -> StoreError {
    move |e| StoreError::Backend {
        backend: "qdrant",
        op,
        message: e.to_string(),
    }
}

impl QdrantStore {
    /// Connects, checks the server answers, and creates the collection (`config.dimension`,
    /// cosine) and its payload indexes when missing. An existing collection of another shape is an error.
    pub async fn connect(config: QdrantConfig) -> Result<QdrantStore, StoreError> {
        let client = Qdrant::from_url(&config.url)
            .api_key(config.api_key.clone())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            // The built-in check prints to stdout from a helper thread; `health` covers it.
            .skip_compatibility_check()
            .build()
            .map_err(backend("connect"))?;
        let store = QdrantStore {
            client,
            collection: config.collection,
            dimension: config.dimension,
            exact: config.exact,
        };
        store.health().await?;
        store.bootstrap().await?;
        Ok(store)
    }

    pub fn collection(&self) -> &str {
        &self.collection
    }

    async fn bootstrap(&self) -> Result<(), StoreError> {
        let name = &self.collection;
        let exists = self
            .client
            .collection_exists(name)
            .await
            .map_err(backend("bootstrap"))?;
        if !exists {
            let created = self
                .client
                .create_collection(CreateCollectionBuilder::new(name).vectors_config(
                    VectorParamsBuilder::new(self.dimension as u64, Distance::Cosine),
                ))
                .await;
            // Another instance may have created it in the meantime; that is fine.
            if let Err(e) = created {
                if !self
                    .client
                    .collection_exists(name)
                    .await
                    .map_err(backend("bootstrap"))?
                {
                    return Err(backend("create collection")(e));
                }
            }
        }
        let info = self
            .client
            .collection_info(name)
            .await
            .map_err(backend("bootstrap"))?
            .result
            .ok_or_else(|| self.incompatible("qdrant returned no collection info"))?;
        let params = info
            .config
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        match params {
            Some(vectors_config::Config::Params(p)) => {
                if p.size != self.dimension as u64 {
                    return Err(self.incompatible(format!(
                        "vectors have {} dimensions, expected {}",
                        p.size, self.dimension
                    )));
                }
                if p.distance != Distance::Cosine as i32 {
                    return Err(self.incompatible("distance is not cosine"));
                }
            }
            _ => return Err(self.incompatible("expected one unnamed dense vector per point")),
        }
        for (field, kind) in INDEXES {
            if !info.payload_schema.contains_key(field) {
                self.client
                    .create_field_index(
                        CreateFieldIndexCollectionBuilder::new(name, field, kind).wait(true),
                    )
                    .await
                    .map_err(backend("create payload index"))?;
            }
        }
        Ok(())
    }

    fn incompatible(&self, reason: impl Into<String>) -> StoreError {
        StoreError::IncompatibleCollection {
            collection: self.collection.clone(),
            reason: reason.into(),
        }
    }

    /// Drops the whole collection (tests, teardown).
    pub async fn delete_collection(&self) -> Result<(), StoreError> {
        self.client
            .delete_collection(DeleteCollectionBuilder::new(&self.collection))
            .await
            .map_err(backend("delete collection"))?;
        Ok(())
    }
}

fn to_point_struct(entry: PointEntry) -> PointStruct {
    let p = entry.point;
    let mut payload = Payload::new();
    payload.insert("source_type", p.source.as_str());
    payload.insert("service", p.service);
    payload.insert("environment", p.environment);
    payload.insert("timestamp", p.timestamp);
    payload.insert("hour_of_week", i64::from(hour_of_week(p.timestamp)));
    payload.insert("normal", p.normal);
    payload.insert("reference", entry.reference);
    payload.insert("score", f64::from(p.score));
    PointStruct::new(p.id.0, p.vector, payload)
}

fn to_qdrant_filter(f: &Filter) -> QFilter {
    let mut must = Vec::new();
    if let Some(s) = f.source {
        must.push(Condition::matches("source_type", s.as_str().to_string()));
    }
    if let Some(s) = &f.service {
        must.push(Condition::matches("service", s.clone()));
    }
    if let Some(e) = &f.environment {
        must.push(Condition::matches("environment", e.clone()));
    }
    if f.time_from.is_some() || f.time_to.is_some() {
        must.push(Condition::range(
            "timestamp",
            Range {
                gte: f.time_from.map(|t| t as f64),
                lt: f.time_to.map(|t| t as f64),
                ..Range::default()
            },
        ));
    }
    if f.normal_only {
        must.push(Condition::matches("normal", true));
    }
    if let Some(h) = f.hour_of_week {
        must.push(Condition::matches("hour_of_week", i64::from(h)));
    }
    match f.reference {
        Some(true) => must.push(Condition::matches("reference", true)),
        // Not `reference == false`: points written before the marker existed lack the field.
        Some(false) => {
            return QFilter {
                must,
                must_not: vec![Condition::matches("reference", true)],
                ..QFilter::default()
            }
        }
        None => {}
    }
    QFilter::must(must)
}

fn to_neighbour(p: ScoredPoint) -> Result<Neighbour, StoreError> {
    let malformed = |what: &str| StoreError::Backend {
        backend: "qdrant",
        op: "search",
        message: format!("result point {what}"),
    };
    let id = match p.id.and_then(|i| i.point_id_options) {
        Some(PointIdOptions::Num(n)) => PointId(n),
        _ => return Err(malformed("has no numeric id")),
    };
    let service = match p.payload.get("service").and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => s.clone(),
        _ => return Err(malformed(&format!("{id} has no service"))),
    };
    let timestamp = match p.payload.get("timestamp").and_then(|v| v.kind.as_ref()) {
        Some(Kind::IntegerValue(t)) => *t,
        _ => return Err(malformed(&format!("{id} has no timestamp"))),
    };
    Ok(Neighbour {
        id,
        distance: (1.0 - p.score).clamp(0.0, 2.0),
        service,
        timestamp,
    })
}

#[async_trait]
impl VectorStore for QdrantStore {
    async fn upsert_entries(&self, mut points: Vec<PointEntry>) -> Result<(), StoreError> {
        for e in &mut points {
            validate_point(&mut e.point, self.dimension)?;
        }
        let mut points = points.into_iter().peekable();
        while points.peek().is_some() {
            let chunk: Vec<PointStruct> = points
                .by_ref()
                .take(UPSERT_CHUNK)
                .map(to_point_struct)
                .collect();
            self.client
                .upsert_points(UpsertPointsBuilder::new(&self.collection, chunk).wait(true))
                .await
                .map_err(backend("upsert"))?;
        }
        Ok(())
    }

    async fn search(
        &self,
        query: &[f32],
        filter: &Filter,
        k: usize,
    ) -> Result<Vec<Neighbour>, StoreError> {
        let query = normalised_query(query, self.dimension)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let request = QueryPointsBuilder::new(&self.collection)
            .query(Query::new_nearest(query))
            .filter(to_qdrant_filter(filter))
            .limit(k as u64)
            .with_payload(PayloadIncludeSelector::new(vec![
                "service".to_string(),
                "timestamp".to_string(),
            ]))
            .params(SearchParamsBuilder::default().exact(self.exact));
        let response = self
            .client
            .query(request)
            .await
            .map_err(backend("search"))?;
        response.result.into_iter().map(to_neighbour).collect()
    }

    async fn delete_matching(&self, filter: &Filter) -> Result<u64, StoreError> {
        // Qdrant's delete does not report how many points it removed, so count first; a point
        // written in between may make the figure slightly off, never the deletion.
        let doomed = self.count(filter).await?;
        if doomed == 0 {
            return Ok(0);
        }
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(to_qdrant_filter(filter))
                    .wait(true),
            )
            .await
            .map_err(backend("delete"))?;
        Ok(doomed)
    }

    async fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
        let response = self
            .client
            .count(
                CountPointsBuilder::new(&self.collection)
                    .filter(to_qdrant_filter(filter))
                    .exact(true),
            )
            .await
            .map_err(backend("count"))?;
        Ok(response.result.map_or(0, |r| r.count))
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // Every write already waited for Qdrant to apply it (wait=true).
        Ok(())
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.client
            .health_check()
            .await
            .map_err(backend("health check"))?;
        Ok(())
    }
}
