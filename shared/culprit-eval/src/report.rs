//! The terminal report of an evaluation: the per-case table as cases finish, a progress bar on
//! stderr, and the summary at the end (overall, by fault type, by date).

use crate::{CaseResult, Scores, Summary};
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// The per-case table as cases finish, a progress bar on stderr, and the summary at the end.
pub struct Report {
    json: bool,
    explain: bool,
    bar: ProgressBar,
}

impl Report {
    /// `json`: per-case lines go to stderr and one JSON summary line ends stdout; `explain`:
    /// each case's candidates follow its row; `total`: cases to expect, for the progress bar.
    pub fn start(json: bool, explain: bool, total: Option<u64>) -> Report {
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
            if json {
                eprintln!("{header}");
            } else {
                println!("{header}");
            }
        });
        Report { json, explain, bar }
    }

    /// Prints one finished case.
    pub fn case(&self, r: &CaseResult) {
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
                a.description.chars().take(400).collect::<String>()
            );
        }
    }

    /// Prints the summary: overall, by fault type and by date.
    pub fn finish(self, summary: &Summary) -> serde_json::Result<()> {
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
