//! Grouping accuracy on the loghub-2k samples, the standard benchmark for template miners.

mod support;

use culprit_drain::{DrainConfig, TemplateMiner};
use support::loghub;

/// Feeds every line of `system` through a fresh miner; `None` when the dataset is absent.
fn accuracy(system: &str, config: DrainConfig) -> Option<(f64, usize)> {
    let Some(lines) = loghub::load(system) else {
        println!(
            "skipping {system}: no dataset under {}",
            loghub::loghub_dir().display()
        );
        return None;
    };
    let mut miner = TemplateMiner::new(config);
    let predicted: Vec<_> = lines.iter().map(|l| miner.add(&l.content).id).collect();
    let truth: Vec<&str> = lines.iter().map(|l| l.event_id.as_str()).collect();
    let accuracy = loghub::grouping_accuracy(&predicted, &truth);
    println!(
        "{system}: grouping accuracy {accuracy:.4}, {} clusters for {} lines",
        miner.cluster_count(),
        lines.len()
    );
    Some((accuracy, miner.cluster_count()))
}

// Floors are the accuracies measured with the default config (HDFS 0.9975, BGL 0.9710,
// OpenStack 0.8070) less a margin, so that a regression fails.

#[test]
fn hdfs_grouping_accuracy_is_at_least_0_99() {
    if let Some((accuracy, _)) = accuracy("HDFS", DrainConfig::default()) {
        assert!(accuracy >= 0.99, "HDFS grouping accuracy {accuracy:.4}");
    }
}

#[test]
fn bgl_grouping_accuracy_holds_its_measured_floor() {
    if let Some((accuracy, _)) = accuracy("BGL", DrainConfig::default()) {
        assert!(accuracy >= 0.95, "BGL grouping accuracy {accuracy:.4}");
    }
}

#[test]
fn openstack_grouping_accuracy_holds_its_measured_floor() {
    if let Some((accuracy, _)) = accuracy("OpenStack", DrainConfig::default()) {
        assert!(
            accuracy >= 0.78,
            "OpenStack grouping accuracy {accuracy:.4}"
        );
    }
}

#[test]
#[ignore = "parameter sweep; run with --ignored --nocapture"]
fn similarity_threshold_sweep() {
    for threshold in [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7] {
        for depth in [3, 4, 5] {
            let config = DrainConfig {
                similarity_threshold: threshold,
                depth,
                ..DrainConfig::default()
            };
            println!("threshold {threshold} depth {depth}");
            for system in ["HDFS", "BGL", "OpenStack"] {
                accuracy(system, config.clone());
            }
        }
    }
}

#[test]
fn csv_parser_handles_quoted_commas_and_doubled_quotes() {
    let records = loghub::parse_csv("a,b\n1,\"x, \"\"y\"\"\"\n");
    assert_eq!(records, vec![vec!["a", "b"], vec!["1", "x, \"y\""]]);
}

#[test]
fn grouping_accuracy_counts_only_exactly_matching_groups() {
    // Lines 0-1 are grouped correctly; 2 and 3 are wrongly split.
    let accuracy = loghub::grouping_accuracy(&[1, 1, 2, 3], &["a", "a", "b", "b"]);
    assert!((accuracy - 0.5).abs() < 1e-12);
}

#[test]
#[ignore = "diagnostic; run with --ignored --nocapture, RCA_SYSTEM=OpenStack"]
fn print_wrongly_grouped_templates() {
    let system = std::env::var("RCA_SYSTEM").unwrap_or_else(|_| "OpenStack".into());
    let Some(lines) = loghub::load(&system) else {
        println!("skipping {system}: dataset absent");
        return;
    };
    let mut miner = TemplateMiner::new(DrainConfig::default());
    let predicted: Vec<_> = lines.iter().map(|l| miner.add(&l.content).id).collect();
    let mut truth_of_cluster: std::collections::BTreeMap<
        u32,
        std::collections::BTreeMap<&str, usize>,
    > = Default::default();
    let mut clusters_of_truth: std::collections::BTreeMap<&str, std::collections::BTreeSet<u32>> =
        Default::default();
    for (line, &id) in lines.iter().zip(&predicted) {
        *truth_of_cluster
            .entry(id)
            .or_default()
            .entry(&line.event_id)
            .or_default() += 1;
        clusters_of_truth
            .entry(&line.event_id)
            .or_default()
            .insert(id);
    }
    for (id, truths) in &truth_of_cluster {
        let split = truths.keys().any(|t| clusters_of_truth[t].len() > 1);
        if truths.len() > 1 || split {
            println!(
                "cluster {id} {:?} <- {truths:?}",
                miner.template(*id).unwrap_or_default()
            );
        }
    }
}
