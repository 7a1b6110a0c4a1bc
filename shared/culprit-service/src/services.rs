//! `culprit embedder`, `culprit correlator` and `culprit serve`: the Kafka services.
//!
//! The same stages as the embedded mode (`DetectStage`, `CorrelateStage`), wired to Kafka by
//! `culprit-kafka`, with the operations API and dashboard of `culprit-api` beside them (tokens
//! from `CULPRIT_API_TOKENS` or `api.tokens_file`) and the alert sinks of `culprit-sink` as the
//! correlator's outputs besides its topic.
//!
//! The embedders' detect stages post their baselines on one `BaselineBoard`, which the API reads
//! (`baseline_view`): the baseline endpoints answer in every process that runs an embedder and
//! 501 in a correlator-only one. The embedders also take the API's requests to re-learn a
//! service from a time range of their topics (`culprit_kafka::relearn`), which the
//! `[baselines]` schedule uses too.

use crate::config::CulpritConfig;
use anyhow::{Context, Result};
use culprit_api::{ApiState, IncidentIndex, Metrics, Tokens, ANOMALIES_INPUT};
use culprit_core::SourceKind;
use culprit_kafka::{
    run_correlator, run_embedder, AlertWriter, CorrelatorOptions, EmbedderOptions, Stats,
    StatsSnapshot,
};
use culprit_pagerduty::PagerDutyClient;
use culprit_pipeline::{CorrelateStage, DetectStage};
use culprit_sink::{AlertSink, FanOut, JsonLinesSink};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// One service a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Embedder(SourceKind),
    Correlator,
}

impl Role {
    /// The `service` label of its processing latency.
    fn service(self) -> String {
        match self {
            Role::Embedder(source) => format!("embedder-{source}"),
            Role::Correlator => "correlator".to_string(),
        }
    }

    /// The `output` label of failures of its pre-commit step: what it writes before committing.
    fn hook_output(self) -> &'static str {
        match self {
            Role::Embedder(_) => "store",
            Role::Correlator => "alert_hooks",
        }
    }

    /// The `source` label of its decode errors and dead letters: what it consumes.
    fn input(self) -> &'static str {
        match self {
            Role::Embedder(source) => source.as_str(),
            Role::Correlator => ANOMALIES_INPUT,
        }
    }
}

impl Role {
    /// Every embedder and the correlator: `culprit serve`.
    pub fn all(sources: &[SourceKind]) -> Vec<Role> {
        let sources = if sources.is_empty() {
            SourceKind::ALL.as_slice()
        } else {
            sources
        };
        let mut roles: Vec<Role> = sources.iter().copied().map(Role::Embedder).collect();
        roles.push(Role::Correlator);
        roles
    }
}

/// Runs `roles` in this process until `shutdown` resolves (or a role fails): each consumes its
/// Kafka topic, beside the operations API, readiness checks, metrics export, the vector store,
/// the alert fan-out and the optional LLM reviewer.
pub async fn run(
    roles: Vec<Role>,
    config: &CulpritConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let tokens = Tokens::load(&config.api).context("loading the API tokens")?;
    if tokens.is_empty() {
        tracing::warn!(
            "no API tokens (CULPRIT_API_TOKENS or api.tokens_file): only /healthz, /readyz, /metrics and the dashboard's sign-in page answer"
        );
    }
    config
        .baselines
        .validate()
        .context("invalid [baselines] configuration")?;
    // The correlator's process holds the incidents and their feedback, so only it writes the
    // configured incidents collection; elsewhere the API's history stays empty.
    let incidents = if roles.contains(&Role::Correlator) {
        incident_index(&config.store).await?
    } else {
        IncidentIndex::in_memory()
    };
    let api = ApiState::with_incident_index(config.api.clone(), tokens, incidents)
        .context("setting up the HTTP API")?;
    let board = Arc::new(culprit_pipeline::BaselineBoard::new());
    // The embedders re-learn a time range from their topics for the API and the schedule.
    let relearners = culprit_kafka::Relearners::new();
    let embedders = roles.iter().any(|r| matches!(r, Role::Embedder(_)));
    let own: Option<Arc<dyn culprit_api::BaselineView>> = embedders.then(|| {
        Arc::new(crate::baseline_view::BoardView::new(
            board.clone(),
            Some(relearners.clone()),
        )) as Arc<dyn culprit_api::BaselineView>
    });
    if !config.api.baseline_peers.is_empty() {
        // A split deployment: the embedders' baselines are in their own processes.
        let token = std::env::var(culprit_api::PEER_TOKEN_ENV).ok();
        let peers =
            culprit_api::PeerBaselines::new(own.clone(), config.api.baseline_peers.clone(), token)
                .context("api.baseline_peers")?;
        api.set_baselines_with_peers(own, Arc::new(peers));
    } else if let Some(own) = own {
        api.set_baselines(own);
    } else if config.baselines.interval_secs > 0 {
        tracing::warn!("baselines.interval_secs is set, but no embedder runs in this process, so there are no baselines to recalculate here: set it on the processes that run embedders");
    }
    let listener = config
        .api
        .bind()
        .await
        .with_context(|| format!("binding {}", config.api.listen))?;
    let brokers = config.kafka.clone();
    api.add_readiness_check("broker", move || {
        let kafka = brokers.clone();
        Box::pin(async move { culprit_kafka::brokers_reachable(&kafka).await })
    });
    let publisher = alert_sinks(config, &api)?;
    let store = config
        .store
        .open()
        .await
        .with_context(|| format!("opening the {:?} vector store", config.store.backend))?;
    if let Some(store) = &store {
        let store = store.clone();
        api.add_readiness_check("store", move || {
            let store = store.clone();
            Box::pin(async move { store.health().await.map_err(|e| e.to_string()) })
        });
    }

    // One shutdown signal for every task: stop fetching, finish, commit.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let mut tasks = tokio::task::JoinSet::new();
    for role in roles {
        let latency = api.metrics().processing_latency(&role.service());
        let stats = Arc::new(Stats::with_latency_observer(Arc::new(move |d| {
            latency.observe(d)
        })));
        tokio::spawn(export_stats(
            role,
            stats.clone(),
            api.clone(),
            stop_rx.clone(),
        ));
        if config.kafka.stall_secs > 0 {
            let (stats, window_ms) = (stats.clone(), config.kafka.stall_secs * 1000);
            let started_ms = culprit_core::wall_clock_ms().max(0) as u64;
            api.add_readiness_check(role.service(), move || {
                let stalled = stats.stalled(
                    culprit_core::wall_clock_ms().max(0) as u64,
                    started_ms,
                    window_ms,
                );
                Box::pin(async move { stalled.map_or(Ok(()), Err) })
            });
        }
        let kafka = config.kafka.clone();
        let shutdown = stopped(stop_rx.clone());
        match role {
            Role::Embedder(source) => {
                // With a store, the k-NN detectors search their reference in it and the
                // embedder writes every event's point there before committing its offsets.
                let mut stage = match &store {
                    Some(store) => DetectStage::with_store(
                        &config.pipeline,
                        store.clone(),
                        config.store.retention_nanos(),
                    ),
                    None => DetectStage::from_config(&config.pipeline),
                };
                // It reads one topic: detectors that need another source would only collect.
                stage.keep_fed_by(&[source]);
                stage.attach_board(board.clone(), source.as_str());
                let options = EmbedderOptions {
                    warmup_secs: config.pipeline.warmup_secs,
                    stats,
                    relearners: Some(relearners.clone()),
                    ..Default::default()
                };
                tasks.spawn(async move {
                    run_embedder(&kafka, source, stage, options, shutdown)
                        .await
                        .with_context(|| format!("embedder {source}"))
                });
            }
            Role::Correlator => {
                let mut correlate = config.pipeline.effective_correlate();
                if config.llm.enabled {
                    // Leaves revision r + 1 free for the review of revision r.
                    correlate.revision_stride = 2;
                }
                // Each published revision carries its similar past incidents: the incidents
                // collection, searched through the feedback history this process keeps.
                let stage =
                    CorrelateStage::new(correlate).with_past_incidents(api.past_incidents());
                let options = CorrelatorOptions {
                    publisher: publisher.clone(),
                    // Incidents rebuilt after a restart reappear in `/incidents` without being
                    // paged or published again.
                    restore: Arc::new(api.clone()),
                    stats,
                };
                tasks.spawn(async move {
                    run_correlator(&kafka, stage, options, shutdown)
                        .await
                        .context("correlator")
                });
            }
        }
    }
    if embedders && config.baselines.interval_secs > 0 {
        tracing::info!(
            interval_secs = config.baselines.interval_secs,
            lookback_secs = config.baselines.lookback_secs,
            "scheduled baseline recalculation: each run re-learns from the trailing lookback still on the topics"
        );
        tokio::spawn(culprit_api::run_recalculation_schedule(
            api.clone(),
            config.baselines.clone(),
            stopped(stop_rx.clone()),
        ));
    }
    let api_task = tokio::spawn(culprit_api::serve(
        listener,
        api.clone(),
        stopped(stop_rx.clone()),
    ));

    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done.context("service task panicked").and_then(|r| r) {
            tracing::error!("{e:#}");
            result = Err(e);
        }
    }
    api_task.abort();
    if let Some(store) = &store {
        store.flush().await.context("flushing the vector store")?;
    }
    result
}

/// The incidents collection similar incidents are searched in: in the configured store, or in
/// this process's memory without one (`store.backend = "none"`); the history fills it either way.
async fn incident_index(store: &culprit_store::StoreConfig) -> Result<IncidentIndex> {
    let opened = store
        .open_incidents(culprit_api::PROFILE_DIMENSIONS)
        .await
        .with_context(|| {
            format!(
                "opening the incidents collection {} ({:?} store)",
                store.incidents_collection, store.backend
            )
        })?;
    Ok(opened.map_or_else(IncidentIndex::in_memory, IncidentIndex::new))
}

/// Where the correlator's alerts go besides the alerts topic (which it writes itself, in the
/// step that commits its offsets): the API's incident list, PagerDuty when enabled, JSON lines on
/// stdout when `output.stdout_json` is set, and the LLM reviewer when enabled, whose reviews go
/// to the alerts topic and the same destinations.
fn alert_sinks(config: &CulpritConfig, api: &ApiState) -> Result<Arc<dyn AlertSink>> {
    let mut delivery = FanOut::new(vec![Arc::new(api.clone())]);
    if config.pagerduty_enabled {
        delivery.push(Arc::new(
            PagerDutyClient::new(config.pagerduty.clone()).context("setting up PagerDuty")?,
        ));
    }
    if config.output.stdout_json {
        delivery.push(Arc::new(JsonLinesSink::stdout()));
    }
    let delivery: Arc<dyn AlertSink> = Arc::new(delivery);
    if !config.llm.enabled {
        return Ok(delivery);
    }
    let topic =
        AlertWriter::new(&config.kafka).context("setting up the producer for reviewed alerts")?;
    let reviewed = Arc::new(FanOut::new(vec![Arc::new(topic), delivery.clone()]));
    let reviewer = crate::agent::background_reviewer(config, api, reviewed)?;
    Ok(Arc::new(FanOut::new(vec![
        delivery,
        Arc::new(crate::agent::ReviewOffer(reviewer)),
    ])))
}

/// Copies a worker's counters into the Prometheus metrics every second (its processing latency
/// goes straight to the histogram, through the observer its `Stats` were made with).
async fn export_stats(
    role: Role,
    stats: Arc<Stats>,
    api: ApiState,
    mut stop: watch::Receiver<bool>,
) {
    let mut exporter = Exporter::new(role);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        exporter.export(stats.snapshot(), api.metrics());
    }
}

/// Turns successive snapshots of one worker's `Stats` into increments and gauges.
struct Exporter {
    role: Role,
    last: Option<StatsSnapshot>,
}

impl Exporter {
    fn new(role: Role) -> Exporter {
        Exporter { role, last: None }
    }

    fn export(&mut self, now: StatsSnapshot, metrics: &Metrics) {
        let last = self.last.as_ref();
        for (source, n) in &now.events {
            let before = last
                .and_then(|l| l.events.iter().find(|(s, _)| s == source))
                .map_or(0, |(_, n)| *n);
            if *n > before {
                metrics.events(*source, n - before);
            }
        }
        let input = self.role.input();
        let before = last.map_or(0, |l| l.dlq_messages);
        if now.dlq_messages > before {
            metrics.dlq(input, now.dlq_messages - before);
        }
        for (reason, n) in &now.decode_errors {
            let before = last
                .and_then(|l| l.decode_errors.iter().find(|(r, _)| r == reason))
                .map_or(0, |(_, n)| *n);
            if *n > before {
                metrics.decode_errors(input, reason, n - before);
            }
        }
        for (source, severity, n) in &now.anomalies {
            let before = last
                .and_then(|l| {
                    l.anomalies
                        .iter()
                        .find(|(s, v, _)| s == source && v == severity)
                })
                .map_or(0, |(_, _, n)| *n);
            if *n > before {
                metrics.anomalies(*source, *severity, n - before);
            }
        }
        let service = self.role.service();
        for (output, now, before) in [
            (
                "kafka",
                now.produce_failures,
                last.map_or(0, |l| l.produce_failures),
            ),
            (
                self.role.hook_output(),
                now.hook_failures,
                last.map_or(0, |l| l.hook_failures),
            ),
        ] {
            if now > before {
                metrics.output_failures(&service, output, now - before);
            }
        }
        let before = last.map_or(0, |l| l.commit_failures);
        if now.commit_failures > before {
            metrics.commit_failures(&service, now.commit_failures - before);
        }
        metrics.consumer_paused(&service, now.paused);
        for p in &now.partitions {
            if let Some(records) = p.offsets {
                metrics.consumer_lag(&p.topic, p.partition, records);
            }
            if let Some(ms) = p.time_ms {
                metrics.consumer_lag_seconds(&p.topic, p.partition, Duration::from_millis(ms));
            }
            if let Some(records) = p.held_back {
                metrics.consumer_held_back(&p.topic, p.partition, records);
            }
        }
        // Partitions gone since the last export (revoked, or no longer reported) lose their lag.
        for gone in last.iter().flat_map(|l| &l.partitions) {
            let now = now
                .partitions
                .iter()
                .find(|p| p.topic == gone.topic && p.partition == gone.partition);
            if gone.offsets.is_some() && now.is_none_or(|p| p.offsets.is_none()) {
                metrics.forget_consumer_lag(&gone.topic, gone.partition);
            }
            if gone.time_ms.is_some() && now.is_none_or(|p| p.time_ms.is_none()) {
                metrics.forget_consumer_lag_seconds(&gone.topic, gone.partition);
            }
            if gone.held_back.is_some() && now.is_none_or(|p| p.held_back.is_none()) {
                metrics.forget_consumer_held_back(&gone.topic, gone.partition);
            }
        }
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_api::ApiConfig;
    use culprit_core::Severity;
    use culprit_kafka::PartitionLag;

    fn state() -> ApiState {
        ApiState::new(ApiConfig::default(), Tokens::none()).unwrap()
    }

    fn lines(api: &ApiState) -> Vec<String> {
        api.encode_metrics()
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn lag(partition: i32, offsets: Option<i64>, time_ms: Option<u64>) -> PartitionLag {
        PartitionLag {
            topic: "otlp_logs".to_string(),
            partition,
            offsets,
            held_back: None,
            time_ms,
        }
    }

    #[test]
    fn snapshots_become_increments_and_gauges_labelled_by_what_each_service_consumes() {
        let api = state();
        let mut embedder = Exporter::new(Role::Embedder(SourceKind::Logs));
        let mut correlator = Exporter::new(Role::Correlator);
        let mut s = Stats::new().snapshot();
        s.events = vec![(SourceKind::Logs, 10)];
        s.dlq_messages = 3;
        s.decode_errors = vec![("malformed_protobuf", 2), ("empty", 1)];
        s.anomalies = vec![(SourceKind::Logs, Severity::Sev2, 4)];
        s.partitions = vec![lag(0, Some(120), Some(1500)), lag(1, None, Some(20))];
        s.partitions[0].held_back = Some(40); // of the 120, in windows still open
        (s.hook_failures, s.produce_failures, s.commit_failures) = (2, 1, 1);
        s.paused = true;
        embedder.export(s.clone(), api.metrics());
        // The next snapshot adds only what happened since.
        s.events = vec![(SourceKind::Logs, 15)];
        s.dlq_messages = 4;
        s.decode_errors = vec![("malformed_protobuf", 3), ("empty", 1)];
        s.anomalies = vec![(SourceKind::Logs, Severity::Sev2, 6)];
        s.hook_failures = 5;
        s.paused = false;
        embedder.export(s.clone(), api.metrics());

        let mut c = Stats::new().snapshot();
        c.hook_failures = 1;
        c.dlq_messages = 1;
        c.decode_errors = vec![("malformed_bus_message", 1)];
        correlator.export(c, api.metrics());

        let text = lines(&api);
        for want in [
            r#"culprit_events_total{source="logs"} 15"#,
            r#"culprit_dlq_total{source="logs"} 4"#,
            r#"culprit_decode_errors_total{source="logs",reason="malformed_protobuf"} 3"#,
            r#"culprit_decode_errors_total{source="logs",reason="empty"} 1"#,
            r#"culprit_anomalies_total{source="logs",severity="SEV2"} 6"#,
            r#"culprit_dlq_total{source="anomalies"} 1"#,
            r#"culprit_decode_errors_total{source="anomalies",reason="malformed_bus_message"} 1"#,
            r#"culprit_consumer_lag{topic="otlp_logs",partition="0"} 120"#,
            r#"culprit_consumer_held_back{topic="otlp_logs",partition="0"} 40"#,
            r#"culprit_consumer_lag_seconds{topic="otlp_logs",partition="0"} 1.5"#,
            r#"culprit_consumer_lag_seconds{topic="otlp_logs",partition="1"} 0.02"#,
            r#"culprit_output_failures_total{service="embedder-logs",output="store"} 5"#,
            r#"culprit_output_failures_total{service="embedder-logs",output="kafka"} 1"#,
            r#"culprit_output_failures_total{service="correlator",output="alert_hooks"} 1"#,
            r#"culprit_commit_failures_total{service="embedder-logs"} 1"#,
            r#"culprit_consumer_paused{service="embedder-logs"} 0"#,
            r#"culprit_consumer_paused{service="correlator"} 0"#,
        ] {
            assert!(text.iter().any(|l| l == want), "missing {want}: {text:#?}");
        }
        assert!(
            !text.iter().any(|l| l.contains(r#"partition="-1""#)),
            "{text:#?}"
        );

        // Partition 0 revoked, partition 1 committed for the first time.
        s.partitions = vec![lag(1, Some(9), Some(30))];
        embedder.export(s, api.metrics());
        let text = lines(&api);
        assert!(
            !text.iter().any(|l| l.contains(r#"partition="0""#)),
            "{text:#?}"
        );
        assert!(text
            .iter()
            .any(|l| l == r#"culprit_consumer_lag{topic="otlp_logs",partition="1"} 9"#));
    }

    #[test]
    fn each_committed_message_is_one_processing_latency_observation_of_its_service() {
        let api = state();
        let recorder = api
            .metrics()
            .processing_latency(&Role::Embedder(SourceKind::Traces).service());
        let stats = Stats::with_latency_observer(Arc::new(move |d| recorder.observe(d)));
        stats.record_latency_ms(3);
        stats.record_latency_ms(700);
        let text = lines(&api);
        for want in [
            r#"culprit_processing_latency_seconds_count{service="embedder-traces"} 2"#,
            r#"culprit_processing_latency_seconds_bucket{le="0.004",service="embedder-traces"} 1"#,
        ] {
            assert!(text.iter().any(|l| l == want), "missing {want}: {text:#?}");
        }
    }
}
