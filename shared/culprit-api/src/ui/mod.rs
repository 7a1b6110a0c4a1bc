//! The on-call dashboard: a page shell at `/` and HTML fragments the shell fetches with the
//! operator's token.
//!
//! The shell, its script and its stylesheet are static, compiled into the binary and open to
//! anyone: they hold no data. The script asks for a token (kept in the tab's session storage),
//! then fetches server-rendered fragments under `/ui/` with it and writes feedback and
//! recalculations through the JSON API. No build step, no external resource: the dashboard works
//! on an air-gapped host, and its Content-Security-Policy allows scripts from this origin only.
//!
//! Fragments: `/ui/incidents` (filters and list), `/ui/incident-rows` (the list alone, for live
//! refresh), `/ui/incidents/{id}`, `/ui/baselines`, `/ui/baselines/{service}`, `/ui/history`.

mod render;

use crate::auth::Caller;
use crate::history::{HistoryFilter, HistoryKind};
use crate::routes::{baseline_error, list_query, similar_to, ListQuery};
use crate::ApiState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Extension, Router};
use std::sync::LazyLock;

const SHELL: &str = include_str!("assets/shell.html");
const SCRIPT: &str = include_str!("assets/app.js");
const DASHBOARD_STYLE: &str = include_str!("assets/app.css");
/// The incident picture's own stylesheet first, so the dashboard's rules refine it.
static STYLE: LazyLock<String> =
    LazyLock::new(|| format!("{}\n{DASHBOARD_STYLE}", culprit_sink::HTML_STYLE));

/// Scripts and styles from this origin only (the graph picture uses inline style attributes),
/// data from this origin only, and no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

pub(crate) fn open_routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(shell))
        .route("/ui/assets/app.js", get(script))
        .route("/ui/assets/app.css", get(style))
}

pub(crate) fn read_routes(
    read: &impl Fn(MethodRouter<ApiState>) -> MethodRouter<ApiState>,
) -> Router<ApiState> {
    Router::new()
        .route("/ui/incidents", read(get(incidents_view)))
        .route("/ui/incident-rows", read(get(incident_rows)))
        .route("/ui/incidents/{id}", read(get(incident_view)))
        .route("/ui/baselines", read(get(baselines_view)))
        .route("/ui/baselines/{service}", read(get(service_baselines_view)))
        .route("/ui/history", read(get(history_view)))
}

async fn shell() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        SHELL,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE.as_str(),
    )
        .into_response()
}

fn fragment(html: String) -> Response {
    let mut response = Html(html).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

/// The list shows every stored incident up to `api.max_limit`: an on-call engineer scrolls or
/// filters rather than pages.
fn list_limit(state: &ApiState, q: &ListQuery) -> usize {
    q.limit
        .unwrap_or(state.config().max_limit)
        .min(state.config().max_limit)
}

async fn incidents_view(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match list_query(query) {
        Ok(q) => q,
        Err(response) => return response,
    };
    let filter = q.filter();
    let alerts = state.incidents().filtered(&filter, list_limit(&state, &q));
    let (environments, services) = state.incidents().facets();
    fragment(render::incidents_view(
        &filter,
        &environments,
        &services,
        &alerts,
        state.incidents().len(),
    ))
}

async fn incident_rows(
    State(state): State<ApiState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let q = match list_query(query) {
        Ok(q) => q,
        Err(response) => return response,
    };
    let alerts = state
        .incidents()
        .filtered(&q.filter(), list_limit(&state, &q));
    fragment(render::incident_table(&alerts, state.incidents().len()))
}

async fn incident_view(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let Some(alert) = state.incidents().get(&id) else {
        return fragment_error(StatusCode::NOT_FOUND, &format!("Unknown incident {id:?}."));
    };
    let (similar, unavailable) = match similar_to(&state, &alert).await {
        Ok(s) => (s, None),
        Err(e @ crate::ApiError::IncidentSearch(_)) => (Vec::new(), Some(e.to_string())),
        Err(e) => return fragment_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let filter = HistoryFilter {
        incident: Some(id),
        kind: Some(HistoryKind::Feedback),
        ..HistoryFilter::default()
    };
    let feedback = match state
        .history()
        .entries(&filter, state.config().max_limit)
        .await
    {
        Ok(f) => f,
        Err(e) => return fragment_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    fragment(render::incident_view(
        &alert,
        (&similar, unavailable.as_deref()),
        &feedback,
        &caller,
    ))
}

async fn baselines_view(State(state): State<ApiState>) -> Response {
    let Some(view) = state.baseline_view() else {
        let e = crate::BaselineError::NotExposed;
        return fragment(render::baselines_unavailable(&e.to_string()));
    };
    match view.services().await {
        Ok(services) => fragment(render::baseline_services(&services)),
        Err(e) => fragment_error(baseline_error(&e), &e.to_string()),
    }
}

async fn service_baselines_view(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(service): Path<String>,
) -> Response {
    let Some(view) = state.baseline_view() else {
        let e = crate::BaselineError::NotExposed;
        return fragment(render::baselines_unavailable(&e.to_string()));
    };
    let baselines = match view.baselines(&service).await {
        Ok(b) => b,
        Err(e) => return fragment_error(baseline_error(&e), &e.to_string()),
    };
    let filter = HistoryFilter {
        service: Some(service.clone()),
        kind: Some(HistoryKind::Recalculation),
        ..HistoryFilter::default()
    };
    let recalculations = match state.history().entries(&filter, 20).await {
        Ok(r) => r,
        Err(e) => return fragment_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    fragment(render::service_baselines(
        &service,
        &baselines,
        &recalculations,
        &caller,
    ))
}

async fn history_view(State(state): State<ApiState>) -> Response {
    match state
        .history()
        .entries(&HistoryFilter::default(), state.config().max_limit)
        .await
    {
        Ok(items) => fragment(render::history_view(&items)),
        Err(e) => fragment_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn fragment_error(status: StatusCode, message: &str) -> Response {
    let mut response = fragment(render::problem(message));
    *response.status_mut() = status;
    response
}
