//! The baselines of other culprit processes, read and recalculated through their own APIs.
//!
//! Baselines live in the processes that run the embedders. In a split deployment (one process
//! per source and one correlator, as the Helm chart runs them) the correlator's dashboard would
//! otherwise show none. [`PeerBaselines`] is a [`BaselineView`] over this process's own view
//! (when it has one) and the APIs listed in `api.baseline_peers`: it merges what they report and
//! forwards a recalculation to each of them, with the write token from [`PEER_TOKEN_ENV`].
//! Its requests carry [`PEER_HEADER`], which a peer answers from its own baselines only.
//!
//! A peer that cannot be reached or answers with an error fails the request with the peer's
//! address and what it said: a view that silently left out one source's baselines would look
//! like a service that has none.

use crate::baselines::{BaselineError, BaselineView, RecalcOutcome, RecalcRange, SignalBaseline};
use culprit_core::SourceKind;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The environment variable holding the secret of a write-scoped token the peers accept.
pub const PEER_TOKEN_ENV: &str = "CULPRIT_API_PEER_TOKEN";

/// The header that marks a request as a peer's: it is answered from the receiver's own
/// baselines only, never passed on to the receiver's peers, so peers that list each other (or
/// a chain of them) cannot loop.
pub const PEER_HEADER: &str = "culprit-peer";

/// This process's baselines (if it has any) and its peers'.
pub struct PeerBaselines {
    local: Option<Arc<dyn BaselineView>>,
    /// Base URLs, checked by [`peer_url`].
    peers: Vec<reqwest::Url>,
    token: Option<String>,
    client: reqwest::Client,
}

/// `peer` as the base URL of a culprit API: http(s), and one that paths can be joined to.
pub(crate) fn peer_url(peer: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(peer).map_err(|e| format!("{peer:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return Err(format!(
            "{peer:?} is not an http(s) base URL such as http://culprit-embedder-traces:9464"
        ));
    }
    Ok(url)
}

/// A peer as messages name it: its address without the trailing slash.
fn name(peer: &reqwest::Url) -> &str {
    peer.as_str().trim_end_matches('/')
}

/// `path` under `peer`'s base URL.
fn at(peer: &reqwest::Url, path: &[&str]) -> reqwest::Url {
    let mut url = peer.clone();
    url.path_segments_mut()
        .expect("peer_url accepts base URLs only")
        .pop_if_empty()
        .extend(path);
    url
}

#[derive(Deserialize)]
struct ServicesReply {
    services: Vec<String>,
}

#[derive(Deserialize)]
struct BaselinesReply {
    baselines: Vec<SignalBaseline>,
}

#[derive(Deserialize)]
struct RecalcReply {
    recalculation: RecalcDone,
}

#[derive(Deserialize)]
struct RecalcDone {
    baselines: usize,
    #[serde(default)]
    detail: String,
}

#[derive(Deserialize)]
struct ErrorReply {
    error: String,
}

/// A peer's answer, read as far as this view needs it.
enum Reply<T> {
    Found(T),
    /// 404 (no baselines for that service there) or 501 (no detectors run there).
    Nothing,
}

impl PeerBaselines {
    /// How long a peer may take to show its baselines.
    pub const VIEW_TIMEOUT: Duration = Duration::from_secs(10);
    /// How long a peer may take to recalculate: a re-learn from a range re-reads its topic, which
    /// the peer allows five minutes (`culprit_service::BoardView::RELEARN_TIMEOUT`), plus slack.
    pub const RECALC_TIMEOUT: Duration = Duration::from_secs(330);

    /// `peers` are API base URLs (`http://culprit-embedder-traces:9464`); `token` is the secret
    /// sent as a bearer token, needed when the peers require one.
    pub fn new(
        local: Option<Arc<dyn BaselineView>>,
        peers: Vec<String>,
        token: Option<String>,
    ) -> Result<PeerBaselines, BaselineError> {
        let peers = peers
            .iter()
            .map(|p| peer_url(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| BaselineError::Failed(format!("peer address {why}")))?;
        let client = reqwest::Client::builder()
            .timeout(Self::VIEW_TIMEOUT)
            .build()
            .map_err(|e| BaselineError::Failed(format!("building the peer HTTP client: {e}")))?;
        Ok(PeerBaselines {
            local,
            peers,
            token: token.filter(|t| !t.trim().is_empty()),
            client,
        })
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        peer: &reqwest::Url,
        request: reqwest::RequestBuilder,
    ) -> Result<Reply<T>, BaselineError> {
        let peer = name(peer);
        let request = request.header(PEER_HEADER, "1");
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let failed = |what: String| BaselineError::Failed(format!("baselines of {peer}: {what}"));
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                BaselineError::TimedOut(format!("baselines of {peer}: no answer in time"))
            } else {
                failed(format!("unreachable ({e})"))
            }
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND
            || status == reqwest::StatusCode::NOT_IMPLEMENTED
        {
            return Ok(Reply::Nothing);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?;
        if !status.is_success() {
            let said = serde_json::from_slice::<ErrorReply>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(match status {
                reqwest::StatusCode::UNPROCESSABLE_ENTITY => {
                    BaselineError::Unsupported(format!("{peer}: {said}"))
                }
                reqwest::StatusCode::GATEWAY_TIMEOUT => {
                    BaselineError::TimedOut(format!("{peer}: {said}"))
                }
                _ => failed(format!("HTTP {status}: {said}")),
            });
        }
        serde_json::from_slice(&body)
            .map(Reply::Found)
            .map_err(|e| failed(format!("not a culprit API answer: {e}")))
    }
}

/// An error that means "nothing here" rather than a failure.
fn absent(e: &BaselineError) -> bool {
    matches!(
        e,
        BaselineError::NotExposed | BaselineError::UnknownService(_)
    )
}

#[async_trait::async_trait]
impl BaselineView for PeerBaselines {
    async fn services(&self) -> Result<Vec<String>, BaselineError> {
        let mut all = match &self.local {
            Some(local) => match local.services().await {
                Ok(s) => s,
                Err(e) if absent(&e) => Vec::new(),
                Err(e) => return Err(e),
            },
            None => Vec::new(),
        };
        for peer in &self.peers {
            let url = at(peer, &["baselines"]);
            if let Reply::Found(r) = self
                .send::<ServicesReply>(peer, self.client.get(url))
                .await?
            {
                all.extend(r.services);
            }
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    async fn baselines(&self, service: &str) -> Result<Vec<SignalBaseline>, BaselineError> {
        let mut all = match &self.local {
            Some(local) => match local.baselines(service).await {
                Ok(b) => b,
                Err(e) if absent(&e) => Vec::new(),
                Err(e) => return Err(e),
            },
            None => Vec::new(),
        };
        for peer in &self.peers {
            let url = at(peer, &["baselines", service]);
            if let Reply::Found(r) = self
                .send::<BaselinesReply>(peer, self.client.get(url))
                .await?
            {
                all.extend(r.baselines);
            }
        }
        all.sort_by(|a, b| {
            (a.source, &a.environment, &a.signal).cmp(&(b.source, &b.environment, &b.signal))
        });
        Ok(all)
    }

    async fn recalculate(
        &self,
        service: &str,
        source: Option<SourceKind>,
        range: RecalcRange,
    ) -> Result<RecalcOutcome, BaselineError> {
        let mut done: Vec<(String, RecalcOutcome)> = Vec::new();
        // In a split deployment a range for one source is not for the others' embedders, which
        // say they cannot do it: that is an error only when nobody could.
        let mut unsupported: Vec<String> = Vec::new();
        if let Some(local) = &self.local {
            match local.recalculate(service, source, range).await {
                Ok(outcome) => done.push(("here".into(), outcome)),
                Err(e) if absent(&e) => {}
                Err(BaselineError::Unsupported(why)) => unsupported.push(format!("here: {why}")),
                Err(e) => return Err(e),
            }
        }
        let body = recalc_body(source, range);
        for peer in &self.peers {
            let url = at(peer, &["baselines", service, "recalculate"]);
            let request = self
                .client
                .post(url)
                .json(&body)
                .timeout(Self::RECALC_TIMEOUT);
            match self.send::<RecalcReply>(peer, request).await {
                Ok(Reply::Found(r)) => {
                    let outcome = RecalcOutcome {
                        baselines: r.recalculation.baselines,
                        detail: r.recalculation.detail,
                    };
                    done.push((name(peer).to_string(), outcome));
                }
                Ok(Reply::Nothing) => {}
                Err(BaselineError::Unsupported(why)) => unsupported.push(why),
                Err(e) => return Err(e),
            }
        }
        if done.is_empty() {
            return Err(if unsupported.is_empty() {
                BaselineError::UnknownService(service.to_string())
            } else {
                BaselineError::Unsupported(unsupported.join("; "))
            });
        }
        Ok(RecalcOutcome {
            baselines: done.iter().map(|(_, o)| o.baselines).sum(),
            detail: done
                .iter()
                .map(|(at, o)| match o.detail.as_str() {
                    "" => format!("{at}: {} baselines", o.baselines),
                    detail => format!("{at}: {detail}"),
                })
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// The body of a peer's `POST /baselines/{service}/recalculate` for `range`.
fn recalc_body(source: Option<SourceKind>, range: RecalcRange) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    if let RecalcRange::Range { from, to } = range {
        let rfc3339 = |t| chrono::DateTime::from_timestamp_nanos(t).to_rfc3339();
        body.insert("from".into(), rfc3339(from).into());
        body.insert("to".into(), rfc3339(to).into());
    }
    if let Some(source) = source {
        body.insert("source".into(), serde_json::json!(source));
    }
    serde_json::Value::Object(body)
}
