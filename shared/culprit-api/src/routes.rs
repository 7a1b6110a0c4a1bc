//! The JSON API and the access rule of every route.

use crate::auth::{bearer, Caller, Scope};
use crate::baselines::{BaselineError, RecalcRange};
use crate::feedback::{Cause, FeedbackRequest};
use crate::history::{FeedbackRecord, HistoryEntry, HistoryFilter, HistoryKind};
use crate::incidents::IncidentFilter;
use crate::ApiState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use culprit_core::{IncidentStatus, RcaAlert, Severity, SourceKind, UnixNanos};
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;

/// The OpenMetrics text format prometheus-client writes.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The API's routes over `state`, for embedding in a larger router or for [`crate::serve`].
pub fn router(state: ApiState) -> Router {
    let read = |m: MethodRouter<ApiState>| guard(m, &state, Scope::Read);
    let write = |m: MethodRouter<ApiState>| guard(m, &state, Scope::Write);
    Router::new()
        // Open: probes, scrapes and the dashboard's shell, which asks for a token itself.
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::ui::open_routes())
        // Read scope.
        .route("/whoami", read(get(whoami)))
        .route("/incidents", read(get(list_incidents)))
        .route("/incidents/{id}", read(get(get_incident)))
        .route("/incidents/{id}/similar", read(get(similar_incidents)))
        .route(
            "/incidents/{id}/feedback",
            read(get(incident_feedback)).merge(write(post(post_feedback))),
        )
        .route("/events", read(get(events)))
        .route("/history", read(get(history)))
        .route("/baselines", read(get(baseline_services)))
        .route("/baselines/{service}", read(get(service_baselines)))
        .merge(crate::ui::read_routes(&read))
        // Write scope.
        .route("/baselines/{service}/recalculate", write(post(recalculate)))
        .layer(middleware::map_response(nosniff))
        .with_state(state)
}

/// `m` answers only callers whose token allows `scope`: 401 without a valid token, 403 with too
/// small a scope, both counted on `/metrics`.
fn guard(m: MethodRouter<ApiState>, state: &ApiState, scope: Scope) -> MethodRouter<ApiState> {
    m.route_layer(middleware::from_fn_with_state(
        (state.clone(), scope),
        authorize,
    ))
}

async fn authorize(
    State((state, needed)): State<(ApiState, Scope)>,
    mut request: Request,
    next: Next,
) -> Response {
    let caller = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .and_then(|token| state.tokens().authenticate(token));
    let Some(caller) = caller else {
        state.metrics().auth_failure(401);
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "this request needs a valid API token: send `Authorization: Bearer <token>`",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"culprit\""),
        );
        return response;
    };
    if !caller.scope.allows(needed) {
        state.metrics().auth_failure(403);
        tracing::info!(token = %caller.name, needed = needed.as_str(), path = %request.uri().path(), "refused: scope too small");
        let mut response = error(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} has the {} scope; this request needs {}",
                caller.name,
                caller.scope.as_str(),
                needed.as_str()
            ),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"culprit\", error=\"insufficient_scope\""),
        );
        return response;
    }
    request.extensions_mut().insert(caller);
    let mut response = next.run(request).await;
    // What a token can read is not for shared caches.
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn nosniff(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
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

async fn whoami(Extension(caller): Extension<Caller>) -> Json<Caller> {
    Json(caller)
}

/// Query of `GET /incidents`: an [`IncidentFilter`] and a limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    pub status: Option<IncidentStatus>,
    pub severity: Option<Severity>,
    pub environment: Option<String>,
    pub service: Option<String>,
    pub limit: Option<usize>,
}

impl ListQuery {
    /// The filter; empty values (a form's "any") filter nothing.
    pub(crate) fn filter(&self) -> IncidentFilter {
        let given = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        IncidentFilter {
            status: self.status,
            severity: self.severity,
            environment: given(&self.environment),
            service: given(&self.service),
        }
    }
}

pub(crate) const LIST_QUERY_HELP: &str =
    "status is open or resolved; severity SEV1..SEV5; environment and service are names; limit is a number";

/// The list filters of a request, or the 400 that explains them.
// The error is the handler's own response, returned at once: boxing it would buy nothing.
#[allow(clippy::result_large_err)]
pub(crate) fn list_query(
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<ListQuery, Response> {
    query.map(|Query(q)| q).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("{} ({LIST_QUERY_HELP})", e.body_text()),
        )
    })
}

pub(crate) fn limit(state: &ApiState, asked: Option<usize>) -> usize {
    asked
        .unwrap_or(state.config().default_limit)
        .min(state.config().max_limit)
}

async fn list_incidents(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match list_query(query) {
        Ok(q) => q,
        Err(response) => return response,
    };
    let alerts: Vec<Arc<RcaAlert>> = state
        .incidents()
        .filtered(&q.filter(), limit(&state, q.limit));
    Json(alerts).into_response()
}

async fn get_incident(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match state.incidents().get(&id) {
        Some(alert) => Json(alert).into_response(),
        None => unknown_incident(&id),
    }
}

/// Every post on one incident, newest first; the first is the one that counts.
async fn incident_feedback(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let filter = HistoryFilter {
        incident: Some(id),
        kind: Some(HistoryKind::Feedback),
        ..HistoryFilter::default()
    };
    match state
        .history()
        .entries(&filter, state.config().max_limit)
        .await
    {
        Ok(items) => Json(items).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

const FEEDBACK_SHAPE: &str = r#"expected {"cause": "<a service of the incident's graph>" or "other: <what it was>", "note": "<text>" (optional)}; the author is the token's name"#;

async fn post_feedback(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(alert) = state.incidents().get(&id) else {
        return unknown_incident(&id);
    };
    // Parsed by hand rather than with the Json extractor to answer 400 with serde's own message.
    let request: FeedbackRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid feedback JSON: {e}; {FEEDBACK_SHAPE}"),
            )
        }
    };
    let (cause, note) = match request.validate(&alert) {
        Ok(valid) => valid,
        Err(message) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid feedback: {message}"),
            )
        }
    };
    let record = FeedbackRecord::new(&alert, cause, &caller.name, state.now(), note);
    state
        .metrics()
        .feedback(record.rank, matches!(record.cause, Cause::Other(_)));
    tracing::info!(incident_id = %id, cause = %record.cause, author = %record.author, rank = ?record.rank, provisional = record.provisional, "operator feedback");
    if let Err(e) = state
        .history()
        .append(HistoryEntry::Feedback(record.clone()))
        .await
    {
        tracing::error!(error = %e, "cannot store feedback");
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot store feedback: {e}"),
        );
    }
    // The incident may have resolved while this post was stored; its resolution then ran
    // before the post existed, so finalise it here.
    let mut record = record;
    if record.provisional
        && state
            .incidents()
            .get(&id)
            .is_some_and(|a| a.status == IncidentStatus::Resolved)
    {
        if let Err(e) = state.history().resolve(&id, state.now()).await {
            tracing::error!(incident_id = %id, error = %e, "cannot finalise feedback");
        } else {
            record.provisional = false;
        }
    }
    (
        StatusCode::CREATED,
        Json(json!({ "feedback": record, "latest": true })),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    service: Option<String>,
    incident: Option<String>,
    kind: Option<HistoryKind>,
    limit: Option<usize>,
}

async fn history(
    State(state): State<ApiState>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} (service and incident are names; kind is feedback or recalculation; limit is a number)",
                    e.body_text()
                ),
            )
        }
    };
    let filter = HistoryFilter {
        service: q.service,
        incident: q.incident,
        kind: q.kind,
    };
    match state
        .history()
        .entries(&filter, limit(&state, q.limit))
        .await
    {
        Ok(items) => Json(items).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Confirmed past incidents that resemble `alert`: by evidence profile (services and signals
/// for records without one).
pub(crate) async fn similar_to(
    state: &ApiState,
    alert: &RcaAlert,
) -> Result<Vec<FeedbackRecord>, crate::ApiError> {
    let limit = state.config().default_limit;
    let mut records = state
        .history()
        .similar(&crate::SimilarQuery::of_alert(alert), limit + 1)
        .await?;
    records.retain(|r| r.incident_id != alert.incident_id);
    records.truncate(limit);
    Ok(records)
}

async fn similar_incidents(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(alert) = state.incidents().get(&id) else {
        return unknown_incident(&id);
    };
    match similar_to(&state, &alert).await {
        Ok(records) => Json(records).into_response(),
        // Not an error of the request: an empty answer, with the reason in a header.
        Err(e @ crate::ApiError::IncidentSearch(_)) => {
            let mut response = Json(Vec::<FeedbackRecord>::new()).into_response();
            let reason = HeaderValue::from_str(&e.to_string())
                .unwrap_or(HeaderValue::from_static("incidents collection unavailable"));
            response.headers_mut().insert(SIMILAR_UNAVAILABLE, reason);
            response
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The header of an empty `/incidents/{id}/similar` that says why the search could not run.
pub const SIMILAR_UNAVAILABLE: &str = "culprit-similar-unavailable";

/// Server-sent events: `incidents` each time the incident list changed (bursts coalesce into
/// one), after a first `ready`. Ends when the server shuts down.
async fn events(State(state): State<ApiState>) -> Response {
    let mut changes = state.incidents().subscribe();
    let generation = *changes.borrow_and_update();
    let closing = state.closing();
    let ready = futures_util::stream::once(async move {
        Ok::<_, Infallible>(Event::default().event("ready").data(generation.to_string()))
    });
    let updates = futures_util::stream::unfold(
        (changes, closing),
        |(mut changes, mut closing)| async move {
            if *closing.borrow() {
                return None;
            }
            let changed = tokio::select! {
                changed = changes.changed() => changed.is_ok(),
                _ = closing.wait_for(|c| *c) => false,
            };
            if !changed {
                return None;
            }
            let n = *changes.borrow_and_update();
            let event = Event::default().event("incidents").data(n.to_string());
            Some((Ok(event), (changes, closing)))
        },
    );
    use futures_util::StreamExt;
    Sse::new(ready.chain(updates))
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub(crate) fn baseline_error(e: &BaselineError) -> StatusCode {
    match e {
        BaselineError::NotExposed => StatusCode::NOT_IMPLEMENTED,
        BaselineError::UnknownService(_) => StatusCode::NOT_FOUND,
        BaselineError::Unsupported(_) => StatusCode::UNPROCESSABLE_ENTITY,
        BaselineError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
        BaselineError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Whether a request comes from another culprit's [`crate::PeerBaselines`].
fn from_peer(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(crate::PEER_HEADER)
}

async fn baseline_services(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let Some(view) = state.baseline_view_for(from_peer(&headers)) else {
        let e = BaselineError::NotExposed;
        return error(baseline_error(&e), e.to_string());
    };
    match view.services().await {
        Ok(services) => Json(json!({ "services": services })).into_response(),
        Err(e) => error(baseline_error(&e), e.to_string()),
    }
}

async fn service_baselines(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    Path(service): Path<String>,
) -> Response {
    let Some(view) = state.baseline_view_for(from_peer(&headers)) else {
        let e = BaselineError::NotExposed;
        return error(baseline_error(&e), e.to_string());
    };
    match view.baselines(&service).await {
        Ok(baselines) if baselines.is_empty() => {
            let e = BaselineError::UnknownService(service);
            error(baseline_error(&e), e.to_string())
        }
        Ok(baselines) => {
            Json(json!({ "service": service, "baselines": baselines })).into_response()
        }
        Err(e) => error(baseline_error(&e), e.to_string()),
    }
}

/// The body of `POST /baselines/{service}/recalculate`; empty re-learns from now on, a range
/// replaces the service's baselines with what its events teach (400 when the range is invalid).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecalcRequest {
    /// Start of the range to re-learn from, RFC 3339.
    pub from: Option<String>,
    /// End of the range, RFC 3339.
    pub to: Option<String>,
    /// Only this source's baselines.
    pub source: Option<SourceKind>,
}

const RECALC_SHAPE: &str = r#"expected {} to re-learn from now on, or {"from": "<RFC 3339>", "to": "<RFC 3339>"} to re-learn from a time range; "source" (traces, logs, metrics or changes) optional"#;

impl RecalcRequest {
    pub(crate) fn range(&self, now: UnixNanos) -> Result<RecalcRange, String> {
        let time = |field: &str, v: &str| -> Result<UnixNanos, String> {
            chrono::DateTime::parse_from_rfc3339(v.trim())
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .ok_or_else(|| {
                    format!("{field} {v:?} is not an RFC 3339 time such as 2026-03-01T12:00:00Z")
                })
        };
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|s| !s.trim().is_empty())
        }
        match (given(&self.from), given(&self.to)) {
            (None, None) => Ok(RecalcRange::FromNow),
            (Some(from), Some(to)) => {
                let (from, to) = (time("from", from)?, time("to", to)?);
                if from >= to {
                    return Err("from must be before to".into());
                }
                if from > now {
                    return Err("the range starts in the future: nothing to re-learn from".into());
                }
                Ok(RecalcRange::Range { from, to })
            }
            _ => Err("give both from and to, or neither to re-learn from now on".into()),
        }
    }
}

async fn recalculate(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: axum::http::HeaderMap,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let request: RecalcRequest = if body.iter().all(u8::is_ascii_whitespace) {
        RecalcRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid recalculation JSON: {e}; {RECALC_SHAPE}"),
                )
            }
        }
    };
    let range = match request.range(state.now()) {
        Ok(r) => r,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid recalculation: {message}"),
            )
        }
    };
    match state
        .recalculate_baselines_for(
            from_peer(&headers),
            &service,
            request.source,
            range,
            &caller.name,
        )
        .await
    {
        Ok(record) => {
            tracing::info!(%service, author = %caller.name, ?range, baselines = record.baselines, "baseline recalculation");
            Json(json!({ "recalculation": record })).into_response()
        }
        Err(e) => error(baseline_error(&e), e.to_string()),
    }
}
