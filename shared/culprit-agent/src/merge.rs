//! Bounded merging of checked verdicts into the deterministic ranking.
//!
//! Only services already ranked move: each verdict multiplies its candidate's score by
//! `1 + factor * v * c` (v = +1 supports, -1 refutes, 0 insufficient; c its confidence), so with
//! the default factor 0.2 no verdict moves a score by more than 20%. Candidates are then sorted by
//! the adjusted score (ties keep their old order) and renumbered. Nothing else changes: the chains
//! and the graph come from the causal graph, the evidence and explanations from the detectors, the
//! confidence from the deterministic ranking.

use culprit_core::{LlmVerdict, RankChange, RcaAlert, VerdictKind};

/// The adjusted ranking and what moved.
pub fn merge(
    alert: &RcaAlert,
    verdicts: &[LlmVerdict],
    factor: f64,
) -> (RcaAlert, Vec<RankChange>) {
    let mut merged = alert.clone();
    let before: Vec<(String, usize, f64)> = alert
        .root_causes
        .iter()
        .map(|c| (c.service.clone(), c.rank, c.score))
        .collect();
    for cause in &mut merged.root_causes {
        if let Some(v) = verdicts.iter().find(|v| v.service == cause.service) {
            let sign = match v.verdict {
                VerdictKind::Supports => 1.0,
                VerdictKind::Refutes => -1.0,
                VerdictKind::Insufficient => 0.0,
            };
            let c = v.confidence.clamp(0.0, 1.0);
            cause.score = (cause.score * (1.0 + factor * sign * c)).clamp(0.0, 1.0);
        }
    }
    // Stable: equal scores keep the deterministic order.
    merged
        .root_causes
        .sort_by(|a, b| b.score.total_cmp(&a.score));
    for (i, cause) in merged.root_causes.iter_mut().enumerate() {
        cause.rank = i + 1;
    }
    for node in &mut merged.graph.nodes {
        node.rank = merged
            .root_causes
            .iter()
            .find(|c| c.service == node.service)
            .map(|c| c.rank);
    }
    let mut changes: Vec<RankChange> = merged
        .root_causes
        .iter()
        .filter_map(|c| {
            let (_, from, score_before) = before.iter().find(|(s, _, _)| *s == c.service)?;
            (*from != c.rank).then(|| RankChange {
                service: c.service.clone(),
                from_rank: *from,
                to_rank: c.rank,
                score_before: *score_before,
                score_after: c.score,
            })
        })
        .collect();
    changes.sort_by_key(|c| c.to_rank);
    // The summary names the top candidate: keep it true when the top changed.
    if let (Some(old), Some(new)) = (alert.root_causes.first(), merged.root_causes.first()) {
        if old.service != new.service {
            merged.summary = format!(
                "{} (LLM review moved {} ahead of {})",
                alert.summary.replacen(&old.service, &new.service, 1),
                new.service,
                old.service
            );
        }
    }
    (merged, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::incident;

    fn verdict(service: &str, verdict: VerdictKind, confidence: f64) -> LlmVerdict {
        LlmVerdict {
            service: service.into(),
            verdict,
            confidence,
            evidence: vec!["a1".into()],
        }
    }

    #[test]
    fn scores_move_by_at_most_the_factor_and_only_ranked_services_move() {
        let alert = incident().alert().clone();
        let verdicts = [
            verdict("checkout", VerdictKind::Supports, 1.0),
            verdict("payment", VerdictKind::Refutes, 1.0),
        ];
        let (merged, changes) = merge(&alert, &verdicts, 0.2);
        let score =
            |a: &RcaAlert, s: &str| a.root_causes.iter().find(|c| c.service == s).unwrap().score;
        assert!((score(&merged, "checkout") - score(&alert, "checkout") * 1.2).abs() < 1e-9);
        assert!((score(&merged, "payment") - score(&alert, "payment") * 0.8).abs() < 1e-9);
        assert_eq!(merged.root_causes.len(), alert.root_causes.len());
        assert_eq!(merged.root_causes[0].service, "checkout");
        assert_eq!(changes[0].service, "checkout");
        assert_eq!((changes[0].from_rank, changes[0].to_rank), (2, 1));
        // Chains and evidence travel with their service, unchanged.
        for c in &merged.root_causes {
            let old = alert
                .root_causes
                .iter()
                .find(|o| o.service == c.service)
                .unwrap();
            assert_eq!(c.chain, old.chain);
            assert_eq!(c.evidence, old.evidence);
        }
        assert!(merged
            .summary
            .starts_with(&alert.summary.replacen("payment", "checkout", 1)));
        let node = merged
            .graph
            .nodes
            .iter()
            .find(|n| n.service == "checkout")
            .unwrap();
        assert_eq!(node.rank, Some(1));
    }

    #[test]
    fn insufficient_and_unranked_verdicts_change_nothing() {
        let alert = incident().alert().clone();
        let verdicts = [
            verdict("payment", VerdictKind::Insufficient, 1.0),
            verdict("not-ranked", VerdictKind::Supports, 1.0),
        ];
        let (merged, changes) = merge(&alert, &verdicts, 0.2);
        assert_eq!(merged.root_causes, alert.root_causes);
        assert!(changes.is_empty());
        assert_eq!(merged.summary, alert.summary);
    }
}
