use crate::feedback::{Feedback, HistoryRecord, Verdict};
use crate::ApiState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use culprit_core::{IncidentStatus, RcaAlert};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// The OpenMetrics text format prometheus-client writes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The API's routes over `state`, for embedding in a larger router or for [`crate::serve`].
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/incidents", get(list_incidents))
        .route("/incidents/{id}", get(get_incident))
        .route("/incidents/{id}/feedback", post(post_feedback))
        .route("/incidents/{id}/similar", get(similar_incidents))
        .route("/history", get(history))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn unknown_incident(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("unknown incident {id:?}"))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<ApiState>) -> Response {
    let results = state.check_readiness().await;
    let failing: Vec<_> = results.iter().filter(|r| r.error.is_some()).collect();
    if failing.is_empty() {
        let checks: Vec<&str> = results.iter().map(|r| r.check.as_str()).collect();
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": checks })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "failing": failing })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    match state.encode_metrics() {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics"),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<IncidentStatus>,
    limit: Option<usize>,
}

fn limit(state: &ApiState, asked: Option<usize>) -> usize {
    asked
        .unwrap_or(state.config().default_limit)
        .min(state.config().max_limit)
}

async fn list_incidents(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} (status is open or resolved; limit is a number)",
                    e.body_text()
                ),
            )
        }
    };
    let alerts: Vec<Arc<RcaAlert>> = state.incidents().list(q.status, limit(&state, q.limit));
    Json(alerts).into_response()
}

async fn get_incident(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match state.incidents().get(&id) {
        Some(alert) => Json(alert).into_response(),
        None => unknown_incident(&id),
    }
}

async fn post_feedback(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(alert) = state.incidents().get(&id) else {
        return unknown_incident(&id);
    };
    // Parsed by hand rather than with the Json extractor to answer 400 with serde's own message.
    let feedback: Feedback = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid feedback JSON: {e}; expected {{\"root_cause_service\": string, \"verdict\": \"confirmed\"|\"rejected\", \"operator\": string, \"note\": string (optional)}}"
                ),
            )
        }
    };
    for (field, value) in [
        ("root_cause_service", &feedback.root_cause_service),
        ("operator", &feedback.operator),
    ] {
        if value.trim().is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid feedback: {field} must not be empty"),
            );
        }
    }
    let confirmed = feedback.verdict == Verdict::Confirmed;
    state.metrics().feedback(confirmed);
    // Whether culprit ranked the judged service, and where: the operator may name one it missed.
    let ranked = alert
        .root_causes
        .iter()
        .find(|c| c.service == feedback.root_cause_service)
        .map(|c| c.rank);
    tracing::info!(incident_id = %id, service = %feedback.root_cause_service, verdict = ?feedback.verdict, operator = %feedback.operator, ?ranked, "operator feedback");
    let record = if confirmed {
        let record = HistoryRecord::from_confirmation(&alert, &feedback, now_nanos());
        if let Err(e) = state.feedback().record(record.clone()).await {
            tracing::error!(error = %e, "cannot store confirmed root cause");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot store feedback: {e}"),
            );
        }
        Some(record)
    } else {
        None
    };
    let body = json!({ "incident_id": id, "verdict": feedback.verdict, "ranked": ranked, "history": record });
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    service: Option<String>,
    limit: Option<usize>,
}

async fn history(
    State(state): State<ApiState>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match state
        .feedback()
        .history(q.service.as_deref(), limit(&state, q.limit))
        .await
    {
        Ok(records) => Json(records).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Confirmed past incidents that resemble this one: same services and evidence signals.
async fn similar_incidents(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(alert) = state.incidents().get(&id) else {
        return unknown_incident(&id);
    };
    let mut terms: Vec<String> = alert
        .affected_services
        .values()
        .flatten()
        .cloned()
        .collect();
    terms.extend(alert.root_causes.iter().map(|c| c.service.clone()));
    terms.extend(
        alert
            .root_causes
            .iter()
            .flat_map(|c| &c.evidence)
            .map(|a| a.signal.clone()),
    );
    terms.sort();
    terms.dedup();
    let limit = state.config().default_limit;
    match state
        .feedback()
        .similar(&alert.environment, &terms, limit + 1)
        .await
    {
        Ok(mut records) => {
            records.retain(|r| r.incident_id != id);
            records.truncate(limit);
            Json(records).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn now_nanos() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}
