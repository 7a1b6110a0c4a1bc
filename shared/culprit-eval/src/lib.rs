//! Scores culprit's root-cause ranking on labelled incidents.
//!
//! - [`score`]: the contract every layout shares: which incident a case is scored by, the rank
//!   of its root cause, AC@k and the summary (per fault type, per date).
//! - [`nezha`]: the Nezha layout, per case ([`eval_nezha`]) or as one stream per date
//!   ([`eval_nezha_continuous`]).
//! - [`cases`]: the labelled case layout (`cases.csv` and one folder of OTLP files per case, the
//!   shape `culprit simulate` writes), each case replayed on its own ([`eval_cases`]).
#![forbid(unsafe_code)]

pub mod cases;
pub mod nezha;
mod parallel;
mod report;
pub mod score;

pub use cases::{eval_cases, CaseSet, CasesOptions, LabelledCase, DEFAULT_GUARD_S};
pub use nezha::{
    eval_nezha, eval_nezha_continuous, reference_self_check, METRIC_HISTORY_S, METRIC_ROW_SLACK_S,
};
pub use report::Report;
pub use score::{
    rank_of, score_case, score_reviewed_case, scoring_incident, CaseLabel, CaseResult, DateScores,
    ReviewHook, ReviewInput, RunFacts, Scores, Summary, FAULT_WINDOW_S,
};

use culprit_pipeline::PipelineConfig;

/// What to evaluate and how much to say about it.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    pub pipeline: PipelineConfig,
    /// Only the cases whose id contains one of these comma-separated patterns.
    pub case_filter: Option<String>,
    /// Keep every anomaly of each case in [`CaseResult::anomaly_log`].
    pub explain: bool,
    /// Re-rank each case's incident before it is scored (`culprit eval nezha --llm`; per-case
    /// mode only).
    pub review: Option<ReviewHook>,
}

impl EvalOptions {
    /// Whether `case_filter` selects the case with this id.
    pub fn selects(&self, case_id: &str) -> bool {
        self.case_filter.as_ref().is_none_or(|f| {
            f.split(',')
                .map(str::trim)
                .any(|p| !p.is_empty() && case_id.contains(p))
        })
    }
}
