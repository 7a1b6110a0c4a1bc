//! A split deployment's baselines: the correlator's API shows and recalculates the baselines
//! that live in the embedders' processes, through their real HTTP APIs (`api.baseline_peers`).

mod common;

use common::{FakeBaselines, RecalcCall, Server, READER, WRITER};
use culprit_api::{
    BaselineError, BaselineView, PeerBaselines, RecalcOutcome, RecalcRange, SignalBaseline,
};
use culprit_core::SourceKind;
use serde_json::json;
use std::sync::Arc;

/// An embedder's API holding `baselines`, and a correlator's API that lists it as its peer.
async fn split(baselines: &Arc<FakeBaselines>, token: &str) -> (Server, Server) {
    let embedder = common::state();
    embedder.set_baselines(baselines.clone());
    let embedder = Server::start(embedder).await;
    let peers =
        PeerBaselines::new(None, vec![embedder.base.clone()], Some(token.to_string())).unwrap();
    let correlator = common::state();
    correlator.set_baselines(Arc::new(peers));
    (embedder, Server::start(correlator).await)
}

#[tokio::test]
async fn the_correlators_api_shows_and_recalculates_the_baselines_of_its_peers() {
    let baselines = Arc::new(FakeBaselines::shop());
    let (_embedder, correlator) = split(&baselines, WRITER).await;

    let (status, body) = correlator.get_json("/baselines").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["services"], json!(["cart", "checkout"]));
    let (status, body) = correlator.get_json("/baselines/checkout").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["baselines"][0]["signal"],
        "span.latency:POST /checkout"
    );
    assert_eq!(
        body["baselines"][0]["buckets"].as_array().unwrap().len(),
        25
    );
    let (status, _) = correlator.get_json("/baselines/nobody").await;
    assert_eq!(status, 404);

    let range =
        json!({"from": "2026-11-01T00:00:00Z", "to": "2026-11-01T06:00:00.5Z", "source": "traces"});
    let (status, body) = correlator
        .post("/baselines/checkout/recalculate", &range.to_string())
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recalculation"]["baselines"], 1);
    let detail = body["recalculation"]["detail"].as_str().unwrap();
    assert!(detail.contains("forgotten (test double)"), "{detail}");
    let from = 1_793_491_200 * 1_000_000_000; // 2026-11-01T00:00:00Z
    assert_eq!(
        baselines.calls(),
        vec![RecalcCall {
            service: "checkout".into(),
            source: Some(SourceKind::Traces),
            range: RecalcRange::Range {
                from,
                to: from + 6 * 3600 * 1_000_000_000 + 500_000_000,
            },
        }],
        "the peer re-learns exactly the range and source asked for"
    );
    // A read token at the correlator cannot make the peers recalculate.
    let (status, _) = correlator
        .post_as(READER, "/baselines/cart/recalculate", "{}")
        .await;
    assert_eq!(status, 403);
    assert_eq!(baselines.calls().len(), 1);
}

#[tokio::test]
async fn a_peer_that_refuses_the_token_or_cannot_be_reached_fails_the_request_naming_it() {
    let baselines = Arc::new(FakeBaselines::shop());
    let (embedder, _correlator) = split(&baselines, WRITER).await;

    let refused =
        PeerBaselines::new(None, vec![embedder.base.clone()], Some("wrong".into())).unwrap();
    match refused.services().await {
        Err(BaselineError::Failed(why)) => {
            assert!(why.contains(&embedder.base) && why.contains("401"), "{why}")
        }
        other => panic!("expected a failure naming the peer, got {other:?}"),
    }
    // A read token shows the baselines but cannot recalculate them.
    let reader =
        PeerBaselines::new(None, vec![embedder.base.clone()], Some(READER.into())).unwrap();
    assert_eq!(reader.services().await.unwrap(), ["cart", "checkout"]);
    match reader.recalculate("cart", None, RecalcRange::FromNow).await {
        Err(BaselineError::Failed(why)) => assert!(why.contains("403"), "{why}"),
        other => panic!("expected a refused recalculation, got {other:?}"),
    }
    assert!(baselines.calls().is_empty());

    let gone = PeerBaselines::new(None, vec!["http://127.0.0.1:9".into()], None).unwrap();
    match gone.baselines("cart").await {
        Err(BaselineError::Failed(why)) => {
            assert!(
                why.contains("http://127.0.0.1:9") && why.contains("unreachable"),
                "{why}"
            )
        }
        other => panic!("expected an unreachable peer, got {other:?}"),
    }
    assert!(PeerBaselines::new(None, vec!["not a url".into()], None).is_err());
}

#[tokio::test]
async fn peers_that_list_each_other_answer_each_other_from_their_own_baselines_without_looping() {
    let own = Arc::new(FakeBaselines::shop());
    let a = Server::start(common::state()).await;
    let b = Server::start(common::state()).await;
    let a_view =
        PeerBaselines::new(Some(own.clone()), vec![b.base.clone()], Some(WRITER.into())).unwrap();
    a.state
        .set_baselines_with_peers(Some(own.clone()), Arc::new(a_view));
    // b runs no detectors of its own.
    let b_view = PeerBaselines::new(None, vec![a.base.clone()], Some(WRITER.into())).unwrap();
    b.state.set_baselines_with_peers(None, Arc::new(b_view));

    for server in [&a, &b] {
        let (status, body) = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            server.get_json("/baselines"),
        )
        .await
        .expect("answered without bouncing between the peers");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["services"], json!(["cart", "checkout"]));
    }
    let (status, body) = b.post("/baselines/cart/recalculate", "{}").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(own.calls().len(), 1, "a's detectors recalculate once");
}

/// An embedder's API that holds no baseline of the service asked about and cannot re-learn the
/// requested source (another source's embedder, in a split deployment).
struct OtherSource;

#[async_trait::async_trait]
impl BaselineView for OtherSource {
    async fn services(&self) -> Result<Vec<String>, BaselineError> {
        Ok(Vec::new())
    }
    async fn baselines(&self, _: &str) -> Result<Vec<SignalBaseline>, BaselineError> {
        Ok(Vec::new())
    }
    async fn recalculate(
        &self,
        _: &str,
        _: Option<SourceKind>,
        _: RecalcRange,
    ) -> Result<RecalcOutcome, BaselineError> {
        Err(BaselineError::Unsupported(
            "no embedder of traces runs in this process to re-read its topic".into(),
        ))
    }
}

#[tokio::test]
async fn a_range_for_one_source_is_not_failed_by_the_other_sources_embedders() {
    let baselines = Arc::new(FakeBaselines::shop());
    let (traces, _) = split(&baselines, WRITER).await;
    let logs = common::state();
    logs.set_baselines(Arc::new(OtherSource));
    let logs = Server::start(logs).await;
    let range = RecalcRange::Range {
        from: 1_793_491_200 * 1_000_000_000,
        to: 1_793_494_800 * 1_000_000_000,
    };

    let both = PeerBaselines::new(
        None,
        vec![logs.base.clone(), traces.base.clone()],
        Some(WRITER.into()),
    )
    .unwrap();
    let outcome = both
        .recalculate("checkout", Some(SourceKind::Traces), range)
        .await
        .expect("the traces embedder re-learns; the logs embedder's refusal is not a failure");
    assert_eq!(outcome.baselines, 1);
    assert_eq!(baselines.calls().len(), 1);

    // When no peer can do it, their reasons are the answer.
    let alone = PeerBaselines::new(None, vec![logs.base.clone()], Some(WRITER.into())).unwrap();
    match alone
        .recalculate("checkout", Some(SourceKind::Traces), range)
        .await
    {
        Err(BaselineError::Unsupported(why)) => {
            assert!(
                why.contains(&logs.base) && why.contains("no embedder of traces"),
                "{why}"
            )
        }
        other => panic!("expected the peer's reason, got {other:?}"),
    }
}
