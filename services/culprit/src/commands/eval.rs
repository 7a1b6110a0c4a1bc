//! `culprit eval nezha <DIR>` and `culprit eval cases <DIR>`: accuracy on labelled incidents.

use anyhow::Result;
use clap::Subcommand;
use culprit_eval::{
    eval_cases, eval_nezha, eval_nezha_continuous, CaseSet, CasesOptions, EvalOptions, Report,
    DEFAULT_GUARD_S,
};
use culprit_service::CulpritConfig;
use std::path::PathBuf;

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
                Some(culprit_service::agent::eval_review_hook(config)?)
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
            let report = Report::start(common.json, common.explain, None);
            let (_, summary) = if continuous {
                eval_nezha_continuous(&dir, &options, |r| report.case(r))?
            } else {
                eval_nezha(&dir, &options, |r| report.case(r))?
            };
            Ok(report.finish(&summary)?)
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
            let report = Report::start(common.json, common.explain, Some(total as u64));
            let (_, summary) = eval_cases(&set, &options, |r| report.case(r))?;
            Ok(report.finish(&summary)?)
        }
    }
}
