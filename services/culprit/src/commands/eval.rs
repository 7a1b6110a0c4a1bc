//! `culprit eval nezha <DIR>`: accuracy on labelled incidents.

use crate::config::CulpritConfig;
use anyhow::Result;
use clap::Subcommand;
use culprit_eval::{eval_nezha, CaseResult, EvalOptions};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum Eval {
    /// A dataset in the Nezha layout (labels/cases.csv, rca_data/<date>/, construct_data/<date>/).
    Nezha {
        dir: PathBuf,
        /// End with one JSON summary line on stdout (per-case lines go to stderr).
        #[arg(long)]
        json: bool,
        /// Only the cases whose id contains this.
        #[arg(long)]
        case: Option<String>,
        /// Print every anomaly of each case (relative to the injection) after its row.
        #[arg(long)]
        explain: bool,
        /// Which detectors run: stats, knn or fused (overrides `detector` in the configuration).
        #[arg(long)]
        detector: Option<culprit_pipeline::DetectorMode>,
        /// Review each case's incident with the LLM agent (`[llm]` settings) before scoring it.
        #[arg(long)]
        llm: bool,
    },
}

pub fn run(cmd: Eval, config: &CulpritConfig) -> Result<()> {
    let Eval::Nezha {
        dir,
        json,
        case,
        explain,
        detector,
        llm,
    } = cmd;
    let mut pipeline = config.pipeline.clone();
    if let Some(mode) = detector {
        pipeline.detector = mode;
    }
    let options = EvalOptions {
        pipeline,
        case_filter: case,
        explain,
        review: if llm {
            Some(super::agent::eval_review_hook(config)?)
        } else {
            None
        },
    };
    if !json {
        println!(
            "{:<28} {:<15} {:<30} {:>4} {:>8}  top 3",
            "case", "fault", "root cause", "rank", "delay s"
        );
    }
    let print_case = |r: &CaseResult| {
        let rank = r.rank.map_or("-".to_string(), |p| p.to_string());
        let delay = r
            .detect_delay_s
            .map_or("miss".to_string(), |d| format!("{d:.0}"));
        let top: Vec<&str> = r.ranking.iter().take(3).map(String::as_str).collect();
        let line = format!(
            "{:<28} {:<15} {:<30} {:>4} {:>8}  {}",
            r.case_id,
            r.fault_type,
            r.root_cause,
            rank,
            delay,
            top.join(", ")
        );
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        if explain {
            for c in &r.causes {
                let by_source: Vec<String> = c
                    .evidence_by_source
                    .iter()
                    .map(|(s, v)| format!("{s}={v:.2}"))
                    .collect();
                eprintln!(
                    "  #{} {:<30} score {:.2} evidence {:.2} pagerank {:.2}  {}",
                    c.rank,
                    c.service,
                    c.score,
                    c.evidence_score,
                    c.pagerank,
                    by_source.join(" ")
                );
            }
        }
        let inject = r.inject_unix_s * 1_000_000_000;
        for a in &r.anomaly_log {
            eprintln!(
                "    {:>+7.1}s {} {:<8} {:<30} {:<50} {:.2} {}",
                (a.time - inject) as f64 / 1e9,
                a.severity,
                a.source,
                a.service,
                a.signal.chars().take(50).collect::<String>(),
                a.score,
                a.description.chars().take(120).collect::<String>()
            );
        }
    };
    let (_, summary) = eval_nezha(&dir, &options, print_case)?;
    if json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let s = &summary.scores;
        println!();
        println!(
            "cases {}  detected {}  AC@1 {:.3}  AC@3 {:.3}  AC@5 {:.3}  Avg@5 {:.3}  median delay {}  in {:.1} s",
            s.cases,
            s.detected,
            s.ac1,
            s.ac3,
            s.ac5,
            s.avg5,
            summary.median_detect_delay_s.map_or("-".into(), |d| format!("{d:.0} s")),
            summary.seconds
        );
        if let Some(n) = summary.reference_incidents {
            println!(
                "  fault-free reference window replayed after its own baseline: {n} incidents"
            );
        }
        for (fault, f) in &summary.by_fault_type {
            println!(
                "  {fault:<15} cases {:>2}  AC@1 {:.3}  AC@3 {:.3}  Avg@5 {:.3}",
                f.cases, f.ac1, f.ac3, f.avg5
            );
        }
    }
    Ok(())
}
