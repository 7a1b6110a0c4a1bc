//! A release judged by its own pods: while a rollout (or a canary) runs, pods of the new
//! `service.version` serve beside pods of the old one, on the same traffic and with the same
//! dependencies. When the new pods fail or slow down where the old ones do not, the new version
//! is at fault, whatever else is going on: trouble in a dependency or the network would hit both
//! alike. That makes this comparison the service's own changed behaviour, the evidence that
//! confirms a deploy among the several of a release batch.
//!
//! Per (environment, service), spans are counted per version and window. When a window closes
//! while two versions served within the trailing `HORIZON`, the newest version (the one first
//! seen last) is compared with the others over that horizon:
//! - errors: its failed spans against the binomial tail at the old pods' error rate;
//! - latency: its spans slower than the old pods' 95th percentile against the 5% expected.
//!
//! Only windows in which both sides served are compared. A service whose pods switched all at
//! once is left to the span detector (itself before the change, against its baseline) and to
//! the correlator's check that a change was followed by the service's own trouble; spans
//! without `service.version` are not counted.
//!
//! Its saved state ([`crate::state`], part `versions`) is what it learned per service: when each
//! version first served (which one is new) and the closed windows still inside the horizon (the
//! old pods' figures); a restart within the horizon judges the next windows as before it.

use crate::stats::binomial_surprise;
use crate::window::Windows;
use crate::{AnomalyDraft, Detector, Findings, Phase, SharedConfig};
use culprit_core::{Event, EventBody, SignalFamily, SourceKind, UnixNanos, NANOS_PER_SEC};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// How far back the versions are compared: long enough for a few hundred calls of a quiet
/// service, short enough that the old pods' figures are of the same traffic.
const HORIZON_NANOS: i64 = 120 * NANOS_PER_SEC;
/// Calls each side needs before they are compared.
const MIN_CALLS: u32 = 20;
/// The new pods' error rate must also be this many times the old pods' (plus one error in a
/// hundred calls): with thousands of calls, a binomial tail flags differences nobody would page on.
const MIN_ERROR_RATIO: f64 = 2.0;
/// The old pods' latency quantile a new pod's call is compared with, and so the share of new
/// calls expected beyond it when nothing changed.
const SLOW_QUANTILE: f64 = 0.95;
/// Width of a latency histogram bin, in ln(duration): 5% apart.
const BIN_WIDTH: f64 = 0.05;
/// The share of the new pods' calls beyond the old pods' quantile must be at least this many
/// times the expected share.
const MIN_SLOW_RATIO: f64 = 2.0;

/// (environment, service)
type ServiceKey = (String, String);
/// One window's calls per service and version.
type WindowCalls = HashMap<(ServiceKey, String), Calls>;

/// One version's calls in one window.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Calls {
    count: u32,
    errors: u32,
    /// Calls per ln-duration bin.
    durations: BTreeMap<i32, u32>,
}

impl Calls {
    fn add(&mut self, other: &Calls) {
        self.count += other.count;
        self.errors += other.errors;
        for (bin, n) in &other.durations {
            *self.durations.entry(*bin).or_default() += n;
        }
    }

    /// The bin holding the `q` quantile.
    fn quantile_bin(&self, q: f64) -> Option<i32> {
        let rank = (q * f64::from(self.count)).ceil() as u32;
        let mut seen = 0;
        self.durations.iter().find_map(|(bin, n)| {
            seen += n;
            (seen >= rank.max(1)).then_some(*bin)
        })
    }

    fn beyond(&self, bin: i32) -> u32 {
        self.durations.range(bin + 1..).map(|(_, n)| n).sum()
    }
}

fn bin_of(duration_ns: i64) -> i32 {
    ((duration_ns.max(1) as f64).ln() / BIN_WIDTH).floor() as i32
}

fn millis_of_bin(bin: i32) -> f64 {
    (f64::from(bin + 1) * BIN_WIDTH).exp() / 1e6
}

/// What one service's versions did, window by window, over the horizon.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Rollout {
    /// The start of the first window each version served in.
    first_seen: HashMap<String, UnixNanos>,
    /// Closed windows still inside the horizon: (start, version, calls).
    recent: VecDeque<(UnixNanos, String, Calls)>,
}

/// What a [`VersionDetector`] learned ([`crate::state`]): per service, when each version first
/// served and the closed windows still inside the horizon (the old pods' figures the new ones are
/// judged against). The open windows are not part of it.
#[derive(serde::Serialize, serde::Deserialize)]
struct VersionState {
    #[serde(with = "crate::state::pairs")]
    rollouts: HashMap<ServiceKey, Rollout>,
}

impl VersionState {
    const VERSION: u32 = 1;
}

pub struct VersionDetector {
    config: SharedConfig,
    windows: Windows<WindowCalls>,
    rollouts: HashMap<ServiceKey, Rollout>,
}

impl VersionDetector {
    pub fn new(config: SharedConfig) -> VersionDetector {
        VersionDetector {
            windows: Windows::new(config.window_nanos(), config.lateness_nanos()),
            config,
            rollouts: HashMap::new(),
        }
    }

    fn close(&mut self, closed: Vec<(UnixNanos, WindowCalls)>, phase: Phase, out: &mut Findings) {
        for (start, versions) in closed {
            let mut touched: Vec<ServiceKey> = Vec::new();
            for ((service, version), calls) in versions {
                let rollout = self.rollouts.entry(service.clone()).or_default();
                // Windows close in time order, so the first one a version served in dates it.
                rollout.first_seen.entry(version.clone()).or_insert(start);
                rollout.recent.push_back((start, version, calls));
                if !touched.contains(&service) {
                    touched.push(service);
                }
            }
            for service in touched {
                let rollout = self.rollouts.get_mut(&service).expect("just inserted");
                let keep_from = start.saturating_sub(HORIZON_NANOS) + self.windows.width();
                while rollout
                    .recent
                    .front()
                    .is_some_and(|(t, _, _)| *t < keep_from)
                {
                    rollout.recent.pop_front();
                }
                if phase == Phase::Detecting {
                    judge(&self.config, &service, start, rollout, out);
                }
            }
        }
    }
}

/// Compares the newest version serving over the horizon with the others serving beside it.
fn judge(
    config: &SharedConfig,
    service: &ServiceKey,
    start: UnixNanos,
    rollout: &Rollout,
    out: &mut Findings,
) {
    let serving: Vec<&String> = {
        let mut v: Vec<&String> = rollout
            .recent
            .iter()
            .map(|(_, version, _)| version)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    if serving.len() < 2 {
        return;
    }
    let Some(newest) = serving.iter().copied().max_by_key(|v| {
        (
            rollout.first_seen.get(*v).copied().unwrap_or(i64::MIN),
            v.as_str(),
        )
    }) else {
        return;
    };
    // Only windows in which both sides served: the same traffic and the same dependencies.
    let starts_of = |newest_side: bool| -> Vec<UnixNanos> {
        let mut starts: Vec<UnixNanos> = rollout
            .recent
            .iter()
            .filter(|(_, version, _)| (version == newest) == newest_side)
            .map(|(t, _, _)| *t)
            .collect();
        starts.dedup();
        starts
    };
    let (new_starts, old_starts) = (starts_of(true), starts_of(false));
    let (mut new, mut old) = (Calls::default(), Calls::default());
    for (t, version, calls) in &rollout.recent {
        if version == newest && old_starts.contains(t) {
            new.add(calls);
        } else if version != newest && new_starts.contains(t) {
            old.add(calls);
        }
    }
    if new.count < MIN_CALLS || old.count < MIN_CALLS {
        return;
    }
    let old_versions: Vec<&str> = serving
        .iter()
        .filter(|v| **v != newest)
        .map(|v| v.as_str())
        .collect();
    let old_names = old_versions.join(", ");
    let levels = &config.surprise_levels;
    let mut report =
        |family: SignalFamily, surprise: f64, observed: f64, expected: f64, description: String| {
            let Some(severity) = levels
                .severity(surprise)
                .filter(|s| *s <= config.min_severity)
            else {
                return;
            };
            let draft = AnomalyDraft {
                source: SourceKind::Traces,
                service: &service.1,
                environment: &service.0,
                instance: None,
                time: start,
                signal: family.on(newest),
            };
            out.anomalies.push(draft.finish(
                severity,
                levels.score(surprise),
                Some(observed),
                Some(expected),
                description,
            ));
        };

    // Errors: half an error of prior keeps a clean old version from making one failure a wonder.
    let old_rate = (f64::from(old.errors) + 0.5) / (f64::from(old.count) + 1.0);
    let new_rate = f64::from(new.errors) / f64::from(new.count);
    if new_rate >= MIN_ERROR_RATIO * old_rate + 0.01 {
        let surprise = binomial_surprise(u64::from(new.errors), u64::from(new.count), old_rate);
        report(
            SignalFamily::SpanVersionErrors,
            surprise,
            new_rate,
            old_rate,
            format!(
                "pods of version {newest} fail {} of {} calls ({:.1}%) where pods of {old_names} beside them fail {:.1}%",
                new.errors,
                new.count,
                100.0 * new_rate,
                100.0 * f64::from(old.errors) / f64::from(old.count),
            ),
        );
    }

    // Latency: the new pods' calls beyond the old pods' 95th percentile.
    if let Some(bin) = old.quantile_bin(SLOW_QUANTILE) {
        let expected_share = f64::from(old.beyond(bin)) / f64::from(old.count);
        let expected_share = expected_share.max(1.0 - SLOW_QUANTILE);
        let slow = new.beyond(bin);
        let share = f64::from(slow) / f64::from(new.count);
        if share >= MIN_SLOW_RATIO * expected_share {
            let surprise = binomial_surprise(u64::from(slow), u64::from(new.count), expected_share);
            report(
                SignalFamily::SpanVersionLatency,
                surprise,
                share,
                expected_share,
                format!(
                    "{slow} of {} calls to pods of version {newest} take over {:.0} ms, which {:.0}% of calls to pods of {old_names} beside them exceed",
                    new.count,
                    millis_of_bin(bin),
                    100.0 * expected_share,
                ),
            );
        }
    }
}

impl Detector for VersionDetector {
    fn sources(&self) -> &'static [SourceKind] {
        &[SourceKind::Traces]
    }

    fn observe(&mut self, event: &Event, _phase: Phase, _out: &mut Findings) {
        let EventBody::Span(span) = &event.body else {
            return;
        };
        let Some(version) = event.resource.attributes.get("service.version") else {
            return;
        };
        let service = (
            event.resource.environment.clone(),
            event.resource.service.clone(),
        );
        let calls = self
            .windows
            .at(event.time)
            .entry((service, version.clone()))
            .or_default();
        calls.count += 1;
        calls.errors += u32::from(span.is_error);
        *calls.durations.entry(bin_of(span.duration_ns)).or_default() += 1;
    }

    fn advance(&mut self, watermark: UnixNanos, phase: Phase, out: &mut Findings) {
        let closed = self.windows.close_until(watermark);
        self.close(closed, phase, out);
    }

    fn flush(&mut self, phase: Phase, out: &mut Findings) {
        let closed = self.windows.close_all();
        self.close(closed, phase, out);
    }

    fn forget(&mut self, service: &str) -> usize {
        let before = self.rollouts.len();
        self.rollouts.retain(|key, _| key.1 != service);
        before - self.rollouts.len()
    }

    /// Takes the service's rollouts: when each of its versions first served, and its recent
    /// windows.
    fn adopt(
        &mut self,
        service: &str,
        learned: &crate::state::RawValue,
    ) -> Result<usize, crate::state::StateError> {
        let state: VersionState = crate::state::unversioned(learned, VersionState::VERSION)?;
        self.forget(service);
        let before = self.rollouts.len();
        self.rollouts
            .extend(state.rollouts.into_iter().filter(|(k, _)| k.1 == service));
        Ok(self.rollouts.len() - before)
    }

    fn state_name(&self) -> Option<String> {
        Some("versions".into())
    }

    fn save_state(&self) -> Option<crate::state::SavedState> {
        crate::state::versioned(
            VersionState::VERSION,
            &VersionState {
                rollouts: self.rollouts.clone(),
            },
        )
    }

    fn restore_state(
        &mut self,
        state: &crate::state::RawValue,
    ) -> Result<(), crate::state::StateError> {
        let state: VersionState = crate::state::unversioned(state, VersionState::VERSION)?;
        self.rollouts = state.rollouts;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{Resource, Severity, SpanEvent};
    use std::sync::Arc;

    /// A span of `checkout` on pod `pod` running `version`.
    fn span(t: UnixNanos, pod: &str, version: &str, millis: i64, is_error: bool) -> Event {
        let mut resource = Resource::new("checkout");
        resource.instance = Some(pod.to_string());
        resource
            .attributes
            .insert("service.version".into(), version.into());
        Event {
            time: t,
            resource: Arc::new(resource),
            body: EventBody::Span(SpanEvent {
                trace_id: "t".repeat(32),
                span_id: format!("{t:016x}"),
                parent_span_id: None,
                name: "POST /checkout".into(),
                kind: "server".into(),
                duration_ns: millis * 1_000_000,
                is_error,
                error_type: None,
                attributes: Default::default(),
            }),
        }
    }

    /// Ten minutes of v1 on three pods, then a rollout: pod c runs v2 from minute 5, whose calls
    /// take `new_millis` and fail one in `new_fail_every`; returns the version anomalies.
    fn rollout(new_millis: i64, new_fail_every: u64) -> Vec<(String, Severity)> {
        let mut d = VersionDetector::new(SharedConfig::default());
        let mut out = Findings::default();
        let step = NANOS_PER_SEC / 5;
        for i in 0..(600 * 5) {
            let t = i * step;
            for (n, pod) in ["a", "b", "c"].iter().enumerate() {
                let jitter = (i + n as i64) % 5;
                let e = if *pod == "c" && t >= 300 * NANOS_PER_SEC {
                    let fails = new_fail_every > 0 && (i as u64) % new_fail_every == 0;
                    span(t, pod, "2.0.0", new_millis + jitter, fails)
                } else {
                    span(t, pod, "1.0.0", 20 + jitter, i % 500 == 0)
                };
                d.observe(&e, Phase::Detecting, &mut out);
            }
            d.advance(t, Phase::Detecting, &mut out);
        }
        d.flush(Phase::Detecting, &mut out);
        let mut found: Vec<(String, Severity)> = out
            .anomalies
            .iter()
            .map(|a| (a.signal.to_string(), a.severity))
            .collect();
        found.sort();
        found.dedup_by(|a, b| a.0 == b.0);
        found
    }

    #[test]
    fn new_pods_slower_than_the_old_ones_beside_them_blame_the_new_version() {
        let found = rollout(60, 0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "span.version_latency:2.0.0");
    }

    #[test]
    fn new_pods_failing_where_the_old_ones_do_not_blame_the_new_version() {
        let found = rollout(20, 10);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "span.version_errors:2.0.0");
    }

    #[test]
    fn a_new_version_that_behaves_like_the_old_one_is_not_reported() {
        assert_eq!(rollout(20, 0), vec![]);
    }

    #[test]
    fn a_version_that_replaced_every_pod_at_once_is_left_to_the_span_detector() {
        let mut d = VersionDetector::new(SharedConfig::default());
        let mut out = Findings::default();
        let step = NANOS_PER_SEC / 5;
        for i in 0..(600 * 5) {
            let t = i * step;
            let (version, millis) = if t >= 300 * NANOS_PER_SEC {
                ("2.0.0", 80)
            } else {
                ("1.0.0", 20)
            };
            for pod in ["a", "b", "c"] {
                d.observe(
                    &span(t, pod, version, millis + i % 5, false),
                    Phase::Detecting,
                    &mut out,
                );
            }
            d.advance(t, Phase::Detecting, &mut out);
        }
        assert_eq!(out.anomalies, vec![]);
    }

    #[test]
    fn trouble_on_every_pod_alike_is_not_the_new_versions() {
        // A slow dependency: both versions' calls take 80 ms from minute 6 on.
        let mut d = VersionDetector::new(SharedConfig::default());
        let mut out = Findings::default();
        let step = NANOS_PER_SEC / 5;
        for i in 0..(600 * 5) {
            let t = i * step;
            let millis = if t >= 360 * NANOS_PER_SEC { 80 } else { 20 } + i % 5;
            let version = |pod: &str| {
                if pod == "c" && t >= 300 * NANOS_PER_SEC {
                    "2.0.0"
                } else {
                    "1.0.0"
                }
            };
            for pod in ["a", "b", "c"] {
                d.observe(
                    &span(t, pod, version(pod), millis, false),
                    Phase::Detecting,
                    &mut out,
                );
            }
            d.advance(t, Phase::Detecting, &mut out);
        }
        let versions: Vec<&str> = out.anomalies.iter().map(|a| a.signal.as_str()).collect();
        assert_eq!(versions, Vec::<&str>::new());
    }

    /// Three pods of `checkout` on version 2.0.0 from `from_s` to `to_s` seconds, pod c running
    /// 10.0.0 from second 300 on, whose calls take three times as long. The newer version sorts
    /// first by name, so only the dates the versions were first seen tell which one is new.
    fn serve(d: &mut VersionDetector, from_s: i64, to_s: i64, phase: Phase) -> Findings {
        let mut out = Findings::default();
        let step = NANOS_PER_SEC / 5;
        for i in from_s * 5..to_s * 5 {
            let t = i * step;
            for (n, pod) in ["a", "b", "c"].iter().enumerate() {
                let jitter = (i + n as i64) % 5;
                let e = if *pod == "c" && t >= 300 * NANOS_PER_SEC {
                    span(t, pod, "10.0.0", 60 + jitter, false)
                } else {
                    span(t, pod, "2.0.0", 20 + jitter, false)
                };
                d.observe(&e, phase, &mut out);
            }
            d.advance(t, phase, &mut out);
        }
        d.flush(phase, &mut out);
        out
    }

    /// The rollouts `d` saves for `service`, as text.
    fn rollouts_of(d: &VersionDetector, service: &str) -> Vec<String> {
        let state: serde_json::Value = serde_json::from_str(d.save_state().unwrap().get()).unwrap();
        let mut of: Vec<String> = state["state"]["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|pair| pair[0][1] == service)
            .map(|pair| {
                // Maps come out in any order: compare them sorted.
                let rollout: Rollout = serde_json::from_value(pair[1].clone()).unwrap();
                let first: std::collections::BTreeMap<_, _> = rollout.first_seen.iter().collect();
                format!("{first:?} {:?}", rollout.recent.len())
            })
            .collect();
        of.sort();
        of
    }

    /// `billing` on one pod and version, `from_s` to `to_s`.
    fn billing(d: &mut VersionDetector, from_s: i64, to_s: i64, version: &str) {
        let mut out = Findings::default();
        for i in from_s * 5..to_s * 5 {
            let t = i * NANOS_PER_SEC / 5;
            let mut e = span(t, "a", version, 30, false);
            let mut resource = (*e.resource).clone();
            resource.service = "billing".into();
            e.resource = Arc::new(resource);
            d.observe(&e, Phase::Learning, &mut out);
            d.advance(t, Phase::Learning, &mut out);
        }
        d.flush(Phase::Learning, &mut out);
    }

    #[test]
    fn an_adopted_service_judges_as_the_fresh_detector_and_the_others_keep_their_rollouts() {
        let mut live = VersionDetector::new(SharedConfig::default());
        serve(&mut live, 0, 330, Phase::Learning);
        billing(&mut live, 0, 330, "1.0.0");
        // The fresh detector saw checkout's rollout start at second 1000 instead.
        let mut fresh = VersionDetector::new(SharedConfig::default());
        serve(&mut fresh, 700, 1030, Phase::Learning);
        billing(&mut fresh, 700, 1030, "9.9.9");
        let billing_before = rollouts_of(&live, "billing");
        assert_ne!(
            rollouts_of(&live, "checkout"),
            rollouts_of(&fresh, "checkout")
        );

        let adopted = live
            .adopt("checkout", &fresh.save_state().unwrap())
            .unwrap();
        assert_eq!(adopted, 1);
        assert_eq!(
            rollouts_of(&live, "checkout"),
            rollouts_of(&fresh, "checkout")
        );
        assert_eq!(
            rollouts_of(&live, "billing"),
            billing_before,
            "billing untouched"
        );
        let next_live = serve(&mut live, 1030, 1150, Phase::Detecting).anomalies;
        let next_fresh = serve(&mut fresh, 1030, 1150, Phase::Detecting).anomalies;
        assert_eq!(next_live, next_fresh);
    }

    #[test]
    fn a_restored_detector_judges_the_next_spans_as_the_one_it_was_saved_from() {
        let mut original = VersionDetector::new(SharedConfig::default());
        serve(&mut original, 0, 330, Phase::Learning);
        let text = serde_json::to_string(&original.save_state().unwrap()).unwrap();
        let mut restored = VersionDetector::new(SharedConfig::default());
        restored
            .restore_state(serde_json::from_str(&text).unwrap())
            .unwrap();
        let mut fresh = VersionDetector::new(SharedConfig::default());

        let after_original = serve(&mut original, 330, 450, Phase::Detecting).anomalies;
        let after_restored = serve(&mut restored, 330, 450, Phase::Detecting).anomalies;
        let after_fresh = serve(&mut fresh, 330, 450, Phase::Detecting).anomalies;
        assert!(
            after_original
                .iter()
                .any(|a| a.signal == "span.version_latency:10.0.0"),
            "{after_original:?}"
        );
        assert_eq!(after_restored, after_original);
        // A fresh detector met both versions at once and takes the later name for the new one.
        assert_ne!(
            after_fresh, after_original,
            "without the state the verdicts differ, or the test proves nothing"
        );
    }

    #[test]
    fn a_state_of_another_format_version_is_refused_and_the_detector_stays_fresh() {
        let mut learned = VersionDetector::new(SharedConfig::default());
        serve(&mut learned, 0, 330, Phase::Learning);
        let mut state: serde_json::Value =
            serde_json::from_str(learned.save_state().unwrap().get()).unwrap();
        state["version"] = serde_json::json!(VersionState::VERSION + 1);
        let text = serde_json::to_string(&state).unwrap();

        let mut refused = VersionDetector::new(SharedConfig::default());
        let err = refused
            .restore_state(&serde_json::from_str::<crate::state::SavedState>(&text).unwrap())
            .unwrap_err();
        assert!(
            matches!(err, crate::state::StateError::Version { found, expected }
                if found == VersionState::VERSION + 1 && expected == VersionState::VERSION),
            "{err}"
        );
        assert!(refused.rollouts.is_empty());
        let mut fresh = VersionDetector::new(SharedConfig::default());
        assert_eq!(
            serve(&mut refused, 330, 450, Phase::Detecting),
            serve(&mut fresh, 330, 450, Phase::Detecting)
        );
    }
}
