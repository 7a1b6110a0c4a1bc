//! `culprit eval nezha <DIR>` and `culprit eval cases <DIR>`: accuracy on labelled incidents.

use crate::config::CulpritConfig;
use anyhow::Result;
use clap::Subcommand;
use culprit_eval::{
    eval_cases, eval_nezha, eval_nezha_continuous, CaseResult, CaseSet, CasesOptions, EvalOptions,
    Scores, Summary, DEFAULT_GUARD_S,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum Eval {
    /// A dataset in the Nezha layout (labels/cases.csv, rca_data/<date>/, construct_data/<date>/).
    Nezha {
        dir: PathBuf,
        /// Replay each date's cases as one stream (gaps included) instead of each case on its
        /// own; learning then carries from case to case.
        #[arg(long)]
        continuous: bool,
        #[command(flatten)]
        common: Common,
    },
    /// A dataset in the labelled case layout (cases.csv and one folder of OTLP files per case),
    /// or one case folder with its label.json (what `culprit simulate` writes).
    Cases {
        dir: PathBuf,
        /// Seconds before each fault start from which events are judged; everything earlier
        /// only trains the baselines.
        #[arg(long, default_value_t = DEFAULT_GUARD_S)]
        guard: i64,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args)]
pub struct Common {
    /// End with one JSON summary line on stdout (per-case lines go to stderr).
    #[arg(long)]
    json: bool,
    /// Only the cases whose id contains this (comma-separated: any of these).
    #[arg(long)]
    case: Option<String>,
    /// Print every anomaly of each case (relative to the fault start) after its row.
    #[arg(long)]
    explain: bool,
    /// Which detectors run: stats, knn or fused (overrides `detector` in the configuration).
    #[arg(long)]
    detector: Option<culprit_pipeline::DetectorMode>,
    /// Review each case's incident with the LLM agent (`[llm]` settings) before scoring it; the
    /// pipeline's own rank is reported beside it.
    #[arg(long)]
    llm: bool,
}

impl Common {
    fn options(&self, config: &CulpritConfig) -> Result<EvalOptions> {
        let mut pipeline = config.pipeline.clone();
        if let Some(mode) = self.detector {
            pipeline.detector = mode;
        }
        Ok(EvalOptions {
            pipeline,
            case_filter: self.case.clone(),
            explain: self.explain,
            review: if self.llm {
                Some(super::agent::eval_review_hook(config)?)
            } else {
                None
            },
        })
    }
}

pub fn run(cmd: Eval, config: &CulpritConfig) -> Result<()> {
    match cmd {
        Eval::Nezha {
            dir,
            continuous,
            common,
        } => {
            anyhow::ensure!(
                !(continuous && common.llm),
                "--llm reviews each case's incident on its own; it does not combine with --continuous"
            );
            let options = common.options(config)?;
            let report = Report::start(&common, None);
            let (_, summary) = if continuous {
                eval_nezha_continuous(&dir, &options, |r| report.case(r))?
            } else {
                eval_nezha(&dir, &options, |r| report.case(r))?
            };
            report.finish(&summary)
        }
        Eval::Cases { dir, guard, common } => {
            anyhow::ensure!(guard >= 0, "--guard must not be negative");
            let set = CaseSet::open(&dir)?;
            let options = CasesOptions {
                eval: common.options(config)?,
                guard_s: guard,
            };
            let total = set.selected(&options.eval).count();
            anyhow::ensure!(total > 0, "no case of {} is selected", dir.display());
            let report = Report::start(&common, Some(total as u64));
            let (_, summary) = eval_cases(&set, &options, |r| report.case(r))?;
            report.finish(&summary)
        }
    }
}

/// The per-case table as cases finish, a progress bar on stderr, and the summary at the end.
struct Report {
    json: bool,
    explain: bool,
    bar: ProgressBar,
}

impl Report {
    fn start(common: &Common, total: Option<u64>) -> Report {
        // indicatif draws only on a terminal, so redirected output stays clean.
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} cases  {elapsed} (eta {eta})")
                    .expect("static template"),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {pos} cases  {elapsed}")
                    .expect("static template"),
            ),
        };
        bar.enable_steady_tick(Duration::from_millis(250));
        let header = format!(
            "{:<28} {:<18} {:<30} {:>4} {:>8}  top 3",
            "case", "fault", "root cause", "rank", "delay s"
        );
        bar.suspend(|| {
            if common.json {
                eprintln!("{header}");
            } else {
                println!("{header}");
            }
        });
        Report {
            json: common.json,
            explain: common.explain,
            bar,
        }
    }

    fn case(&self, r: &CaseResult) {
        self.bar.suspend(|| self.print_case(r));
        self.bar.inc(1);
    }

    fn print_case(&self, r: &CaseResult) {
        let rank = r.rank.map_or("-".to_string(), |p| p.to_string());
        let delay = r
            .detect_delay_s
            .map_or("miss".to_string(), |d| format!("{d:.0}"));
        let top: Vec<&str> = r.ranking.iter().take(3).map(String::as_str).collect();
        let line = format!(
            "{:<28} {:<18} {:<30} {:>4} {:>8}  {}",
            r.case_id,
            r.fault_type,
            r.root_cause,
            rank,
            delay,
            top.join(", ")
        );
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
        if self.explain {
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
        let start = r.inject_unix_s * 1_000_000_000;
        for a in &r.anomaly_log {
            eprintln!(
                "    {:>+7.1}s {} {:<8} {:<30} {:<50} {:.2} {}",
                (a.time - start) as f64 / 1e9,
                a.severity,
                a.source,
                a.service,
                a.signal.as_str().chars().take(50).collect::<String>(),
                a.score,
                a.description.chars().take(120).collect::<String>()
            );
        }
    }

    fn finish(self, summary: &Summary) -> Result<()> {
        self.bar.finish_and_clear();
        if self.json {
            println!("{}", serde_json::to_string(summary)?);
            return Ok(());
        }
        let s = &summary.scores;
        println!();
        println!(
            "{} mode: cases {}  detected {}  AC@1 {:.3}  AC@3 {:.3}  AC@5 {:.3}  Avg@5 {:.3}  \
             median delay {}  in {:.1} s",
            summary.mode,
            s.cases,
            s.detected,
            s.ac1,
            s.ac3,
            s.ac5,
            s.avg5,
            summary
                .median_detect_delay_s
                .map_or("-".into(), |d| format!("{d:.0} s")),
            summary.seconds
        );
        if let Some(n) = summary.reference_incidents {
            println!(
                "  fault-free reference window replayed after its own baseline: {n} incidents"
            );
        }
        if let Some(n) = summary.stream_incidents {
            println!("  the streams opened {n} incidents in all");
        }
        println!("by fault type");
        for (fault, f) in &summary.by_fault_type {
            println!("  {}", scores_line(fault, f));
        }
        if summary.by_date.len() > 1 {
            println!("by date");
            for (date, d) in &summary.by_date {
                println!("  {}", scores_line(date, &d.scores));
                for (fault, f) in &d.by_fault_type {
                    println!("    {}", scores_line(fault, f));
                }
            }
        } else if let Some(date) = summary.by_date.keys().next() {
            println!("all on {date}");
        }
        Ok(())
    }
}

fn scores_line(name: &str, f: &Scores) -> String {
    format!(
        "{name:<16} cases {:>2}  detected {:>2}  AC@1 {:.3}  AC@3 {:.3}  AC@5 {:.3}  Avg@5 {:.3}",
        f.cases, f.detected, f.ac1, f.ac3, f.ac5, f.avg5
    )
}
