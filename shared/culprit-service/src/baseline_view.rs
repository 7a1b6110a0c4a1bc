//! The API's view of the baselines: what the detect stages of this process post on their
//! [`BaselineBoard`], in the API's terms; and recalculations, as forget requests on the board
//! (from now on) or re-learns from a time range of the embedders' Kafka topics ([`Relearners`]).

use async_trait::async_trait;
use culprit_api::{
    BaselineError, BaselineView, Bucket, BucketThresholds, RecalcOutcome, RecalcRange,
    SignalBaseline, Threshold,
};
use culprit_core::{SourceKind, UnixNanos};
use culprit_detect::baseline::Tier;
use culprit_detect::SignalSummary;
use culprit_kafka::Relearners;
use culprit_pipeline::{BaselineBoard, ForgetRequest};
use std::sync::Arc;
use std::time::Duration;

pub struct BoardView {
    pub board: Arc<BaselineBoard>,
    /// The embedders that re-learn from a time range of their topic; None without Kafka.
    pub relearners: Option<Relearners>,
    /// How long a re-learn from a range may take before the request is answered with a timeout
    /// (the re-learn is then abandoned).
    pub relearn_timeout: Duration,
}

impl BoardView {
    /// How long a re-learn may take by default: reading a week of a busy topic takes minutes.
    pub const RELEARN_TIMEOUT: Duration = Duration::from_secs(300);

    pub fn new(board: Arc<BaselineBoard>, relearners: Option<Relearners>) -> BoardView {
        BoardView {
            board,
            relearners,
            relearn_timeout: Self::RELEARN_TIMEOUT,
        }
    }

    fn known(&self, service: &str, source: Option<SourceKind>) -> usize {
        self.board
            .summaries()
            .iter()
            .filter(|b| b.service == service && source.is_none_or(|s| s == b.source))
            .count()
    }

    /// Re-learns `service` from `[from, to)` in every embedder of `source` (all when None) and
    /// waits for all of them.
    async fn relearn(
        &self,
        service: &str,
        source: Option<SourceKind>,
        from: UnixNanos,
        to: UnixNanos,
    ) -> Result<RecalcOutcome, BaselineError> {
        let Some(relearners) = &self.relearners else {
            return Err(BaselineError::Unsupported(
                "re-learning from a time range reads the raw events back from the sources' Kafka topics, and this process reads no Kafka topic (embedded file input); recalculate from now on instead".into(),
            ));
        };
        let known = self.known(service, source);
        let replies = relearners.request(service, source, from, to);
        if replies.is_empty() {
            let which = source.map_or("any source".to_string(), |s| s.to_string());
            return Err(BaselineError::Unsupported(format!(
                "no embedder of {which} runs in this process to re-read its topic; recalculate from now on instead"
            )));
        }
        // The embedders work at once; one deadline for all of them.
        let deadline = tokio::time::Instant::now() + self.relearn_timeout;
        let mut baselines = 0;
        let mut parts = Vec::new();
        let mut failures = Vec::new();
        for (source, reply) in replies {
            match tokio::time::timeout_at(deadline, reply).await {
                Ok(Ok(Ok(r))) => {
                    baselines += r.baselines;
                    parts.push(format!(
                        "{} events of {} messages from {} ({} skipped as undecodable): {} baselines",
                        r.events, r.messages, r.topic, r.skipped, r.baselines
                    ));
                }
                Ok(Ok(Err(e))) => failures.push(format!("{source}: {e}")),
                Ok(Err(_)) => failures.push(format!("{source}: the embedder stopped before answering")),
                Err(_) => failures.push(format!(
                    "{source}: no answer within {} s (re-reading the range takes longer; try a shorter one)",
                    self.relearn_timeout.as_secs()
                )),
            }
        }
        if !failures.is_empty() {
            let done = if parts.is_empty() {
                String::new()
            } else {
                format!("; the others re-learned: {}", parts.join("; "))
            };
            let message = format!(
                "re-learning {service} from {} to {} failed for {}{done}",
                time(from),
                time(to),
                failures.join("; ")
            );
            return Err(if failures.iter().any(|f| f.contains("no answer within")) {
                BaselineError::TimedOut(message)
            } else {
                BaselineError::Failed(message)
            });
        }
        if baselines == 0 && known == 0 {
            return Err(BaselineError::UnknownService(service.to_string()));
        }
        Ok(RecalcOutcome {
            baselines,
            detail: format!(
                "{service}'s baselines re-learned from {} to {}: {}; other services keep theirs",
                time(from),
                time(to),
                parts.join("; ")
            ),
        })
    }
}

/// A time for the history's sentence, RFC 3339 in UTC.
fn time(t: UnixNanos) -> String {
    chrono::DateTime::from_timestamp_nanos(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
        if let RecalcRange::Range { from, to } = range {
            return self.relearn(service, source, from, to).await;
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
    use culprit_core::NANOS_PER_SEC as NANOS;
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
        let view = BoardView::new(board.clone(), None);
        assert_eq!(view.services().await.unwrap(), ["cart", "payment"]);
        let cart = view.baselines("cart").await.unwrap();
        assert_eq!(cart.len(), 2);
        assert_eq!(cart[0].buckets[0].bucket, Bucket::HourOfWeek { hour: 75 });
        assert_eq!(cart[0].buckets[0].thresholds[0].above, Some(40.0));
        assert!(matches!(
            view.baselines("nope").await,
            Err(BaselineError::UnknownService(_))
        ));
        match view
            .recalculate("cart", None, RecalcRange::Range { from: 0, to: 1 })
            .await
        {
            Err(BaselineError::Unsupported(why)) => {
                assert!(
                    why.contains("Kafka") && why.contains("from now on"),
                    "{why}"
                )
            }
            other => panic!("without Kafka a range is unsupported: {other:?}"),
        }
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

    /// An embedder that answers every re-learn request with `baselines` baselines.
    fn answering(relearners: &Relearners, source: SourceKind, baselines: usize) {
        let mut inbox = relearners.register(source);
        tokio::spawn(async move {
            while let Some(r) = inbox.recv().await {
                let report = culprit_kafka::RelearnReport {
                    source,
                    topic: format!("otlp_{source}"),
                    from: r.from,
                    to: r.to,
                    messages: 40,
                    events: 120,
                    skipped: 2,
                    baselines,
                };
                let _ = r.reply.send(Ok(report));
            }
        });
    }

    #[tokio::test]
    async fn a_range_recalculation_waits_for_the_embedders_concerned_and_says_what_they_reread() {
        let board = Arc::new(BaselineBoard::new());
        board.register("traces");
        board.post(
            "traces",
            0,
            vec![summary(
                "cart",
                SourceKind::Traces,
                "span.latency:GET /cart",
            )],
        );
        let relearners = Relearners::new();
        answering(&relearners, SourceKind::Traces, 3);
        answering(&relearners, SourceKind::Logs, 2);
        let view = BoardView::new(board, Some(relearners.clone()));
        let (from, to) = (1_767_225_600 * NANOS, 1_767_229_200 * NANOS);
        let range = RecalcRange::Range { from, to };

        let all = view.recalculate("cart", None, range).await.unwrap();
        assert_eq!(all.baselines, 5, "both embedders: {all:?}");
        for part in [
            "from 2026-01-01T00:00:00Z to 2026-01-01T01:00:00Z",
            "120 events of 40 messages from otlp_traces (2 skipped as undecodable): 3 baselines",
            "from otlp_logs",
        ] {
            assert!(all.detail.contains(part), "{part}: {}", all.detail);
        }
        let logs = view
            .recalculate("cart", Some(SourceKind::Logs), range)
            .await
            .unwrap();
        assert_eq!(logs.baselines, 2, "the logs embedder only");
        assert!(!logs.detail.contains("otlp_traces"), "{}", logs.detail);

        match view
            .recalculate("cart", Some(SourceKind::Metrics), range)
            .await
        {
            Err(BaselineError::Unsupported(why)) => assert!(why.contains("metrics"), "{why}"),
            other => panic!("no metrics embedder: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_range_recalculation_that_takes_too_long_is_answered_with_a_timeout() {
        let board = Arc::new(BaselineBoard::new());
        let relearners = Relearners::new();
        let _silent = relearners.register(SourceKind::Traces);
        let mut view = BoardView::new(board, Some(relearners));
        view.relearn_timeout = Duration::from_millis(50);
        match view
            .recalculate("cart", None, RecalcRange::Range { from: 0, to: NANOS })
            .await
        {
            Err(BaselineError::TimedOut(why)) => {
                assert!(why.contains("traces: no answer within 0 s"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }
}
