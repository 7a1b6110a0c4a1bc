//! The API's view of the baselines: what the detect stages of this process post on their
//! [`BaselineBoard`], in the API's terms.

use async_trait::async_trait;
use culprit_api::{
    BaselineError, BaselineView, Bucket, BucketThresholds, RecalcOutcome, RecalcRange,
    SignalBaseline, Threshold,
};
use culprit_core::SourceKind;
use culprit_detect::baseline::Tier;
use culprit_detect::SignalSummary;
use culprit_pipeline::{BaselineBoard, ForgetRequest};
use std::sync::Arc;

pub struct BoardView {
    pub board: Arc<BaselineBoard>,
}

#[async_trait]
impl BaselineView for BoardView {
    async fn services(&self) -> Result<Vec<String>, BaselineError> {
        let mut services: Vec<String> = self
            .board
            .summaries()
            .into_iter()
            .map(|b| b.service)
            .collect();
        services.dedup(); // summaries come sorted by service
        Ok(services)
    }

    async fn baselines(&self, service: &str) -> Result<Vec<SignalBaseline>, BaselineError> {
        let shown: Vec<SignalBaseline> = self
            .board
            .summaries()
            .into_iter()
            .filter(|b| b.service == service)
            .map(signal_baseline)
            .collect();
        if shown.is_empty() {
            return Err(BaselineError::UnknownService(service.to_string()));
        }
        Ok(shown)
    }

    async fn recalculate(
        &self,
        service: &str,
        source: Option<SourceKind>,
        range: RecalcRange,
    ) -> Result<RecalcOutcome, BaselineError> {
        if let RecalcRange::Range { .. } = range {
            // The store holds embeddings, not the raw values the statistical baselines learn.
            return Err(BaselineError::Unsupported(
                "re-learning from a stored time range is not supported yet: the event store keeps embeddings, not the values the baselines learn; recalculate from now on instead".into(),
            ));
        }
        let baselines = self.board.request_forget(ForgetRequest {
            service: service.to_string(),
            source,
        });
        if baselines == 0 {
            return Err(BaselineError::UnknownService(service.to_string()));
        }
        Ok(RecalcOutcome {
            baselines,
            detail: format!(
                "{baselines} baselines of {service} are forgotten at each embedder's next window and re-learned from the events that follow; the service is not judged until they have enough samples again"
            ),
        })
    }
}

fn signal_baseline(s: SignalSummary) -> SignalBaseline {
    SignalBaseline {
        source: s.source,
        environment: s.environment,
        signal: s.signal,
        samples: s.baseline.samples,
        learned_at: s.baseline.learned_at,
        recalculated_at: None,
        buckets: s
            .baseline
            .buckets
            .into_iter()
            .map(|b| BucketThresholds {
                bucket: match b.tier {
                    Tier::HourOfWeek(hour) => Bucket::HourOfWeek { hour },
                    Tier::HourOfDay(hour) => Bucket::HourOfDay { hour },
                    Tier::Global => Bucket::Global,
                },
                samples: b.samples,
                median: b.median,
                thresholds: b
                    .thresholds
                    .into_iter()
                    .map(|t| Threshold {
                        severity: t.severity,
                        above: t.above,
                        below: t.below,
                    })
                    .collect(),
                learned_at: b.learned_at,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::Severity;
    use culprit_detect::baseline::{BaselineSummary, BucketSummary, ThresholdSummary};

    fn summary(service: &str, source: SourceKind, signal: &str) -> SignalSummary {
        SignalSummary {
            source,
            environment: "prod".into(),
            service: service.into(),
            signal: signal.into(),
            baseline: BaselineSummary {
                samples: 60,
                learned_at: Some(900),
                buckets: vec![BucketSummary {
                    tier: Tier::HourOfWeek(75),
                    samples: 60,
                    median: 22.0,
                    thresholds: vec![ThresholdSummary {
                        severity: Severity::Sev1,
                        above: Some(40.0),
                        below: Some(4.0),
                    }],
                    learned_at: Some(900),
                }],
            },
        }
    }

    #[tokio::test]
    async fn the_view_shows_what_the_stages_posted_and_queues_a_forget_from_now_on() {
        let board = Arc::new(BaselineBoard::new());
        board.register("metrics");
        board.post(
            "metrics",
            0,
            vec![
                summary("payment", SourceKind::Metrics, "metric:cpu"),
                summary("cart", SourceKind::Metrics, "metric:cpu"),
                summary("cart", SourceKind::Metrics, "metric:memory"),
            ],
        );
        let view = BoardView {
            board: board.clone(),
        };
        assert_eq!(view.services().await.unwrap(), ["cart", "payment"]);
        let cart = view.baselines("cart").await.unwrap();
        assert_eq!(cart.len(), 2);
        assert_eq!(cart[0].buckets[0].bucket, Bucket::HourOfWeek { hour: 75 });
        assert_eq!(cart[0].buckets[0].thresholds[0].above, Some(40.0));
        assert!(matches!(
            view.baselines("nope").await,
            Err(BaselineError::UnknownService(_))
        ));
        assert!(matches!(
            view.recalculate("cart", None, RecalcRange::Range { from: 0, to: 1 })
                .await,
            Err(BaselineError::Unsupported(_))
        ));
        assert!(matches!(
            view.recalculate("nope", None, RecalcRange::FromNow).await,
            Err(BaselineError::UnknownService(_))
        ));
        let outcome = view
            .recalculate("cart", Some(SourceKind::Metrics), RecalcRange::FromNow)
            .await
            .unwrap();
        assert_eq!(outcome.baselines, 2);
        // The stage picks the request up at its next window.
        assert_eq!(
            board.take_requests("metrics"),
            [ForgetRequest {
                service: "cart".into(),
                source: Some(SourceKind::Metrics)
            }]
        );
    }
}
