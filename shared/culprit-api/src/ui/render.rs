//! The dashboard's HTML fragments. Pure functions of what they show; every string that came
//! from an alert, a token name or an operator is escaped.
//!
//! Accessibility: every table has header cells with a scope, every control a label, severity is
//! written out (`SEV1`) beside its colour, and the status is a word, not a dot.

use crate::auth::{Caller, Scope};
use crate::baselines::{Bucket, BucketThresholds, RecalcRange, SignalBaseline};
use crate::feedback::incident_services;
use crate::history::{FeedbackRecord, HistoryEntry, HistoryItem};
use crate::incidents::IncidentFilter;
use chrono::{DateTime, SecondsFormat};
use culprit_core::{IncidentStatus, RcaAlert, Severity, SourceKind, UnixNanos};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::Arc;

/// Escapes text for element content and quoted attribute values alike.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment (everything but RFC 3986's unreserved characters).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `2026-03-01 12:00:05` in UTC (the column headers say UTC).
fn time(t: UnixNanos) -> String {
    DateTime::from_timestamp_nanos(t)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

/// A `<time>` element: readable text, machine-readable attribute.
fn time_el(t: UnixNanos) -> String {
    let iso = DateTime::from_timestamp_nanos(t).to_rfc3339_opts(SecondsFormat::Secs, true);
    format!("<time datetime=\"{iso}\">{}</time>", time(t))
}

fn severity_badge(s: Severity) -> String {
    format!(
        "<span class=\"sev sev{}\">{}</span>",
        s.level(),
        esc(&s.to_string())
    )
}

fn status_badge(s: IncidentStatus) -> &'static str {
    match s {
        IncidentStatus::Open => "<span class=\"state open\">open</span>",
        IncidentStatus::Resolved => "<span class=\"state resolved\">resolved</span>",
    }
}

fn option(value: &str, label: &str, selected: bool) -> String {
    format!(
        "<option value=\"{}\"{}>{}</option>",
        esc(value),
        if selected { " selected" } else { "" },
        esc(label)
    )
}

/// A short message in place of a view.
pub(super) fn problem(message: &str) -> String {
    format!(
        "<div class=\"problem\" role=\"alert\"><p>{}</p><p><a href=\"#/incidents\">Back to the incidents</a></p></div>",
        esc(message)
    )
}

/// The incident list view: filters, then the list.
pub(super) fn incidents_view(
    filter: &IncidentFilter,
    environments: &[String],
    services: &[String],
    alerts: &[Arc<RcaAlert>],
    total: usize,
) -> String {
    let mut out = String::with_capacity(4096 + alerts.len() * 600);
    out.push_str("<h1>Incidents</h1>\n<form id=\"filters\" class=\"filters\" aria-label=\"Filter incidents\">\n");
    let _ = write!(
        out,
        "<label>Severity <select name=\"severity\">{}",
        option("", "any", filter.severity.is_none())
    );
    for s in Severity::ALL {
        out.push_str(&option(
            &s.to_string(),
            &s.to_string(),
            filter.severity == Some(s),
        ));
    }
    let _ = write!(
        out,
        "</select></label>\n<label>Status <select name=\"status\">{}{}{}</select></label>\n",
        option("", "any", filter.status.is_none()),
        option("open", "open", filter.status == Some(IncidentStatus::Open)),
        option(
            "resolved",
            "resolved",
            filter.status == Some(IncidentStatus::Resolved)
        ),
    );
    for (name, label, values, chosen) in [
        (
            "environment",
            "Environment",
            environments,
            &filter.environment,
        ),
        ("service", "Service", services, &filter.service),
    ] {
        let _ = write!(
            out,
            "<label>{label} <select name=\"{name}\">{}",
            option("", "any", chosen.is_none())
        );
        // A filter from a link may name a value no stored incident has (yet): keep it visible.
        let extra = chosen.as_ref().filter(|c| !values.contains(c));
        for v in values.iter().chain(extra) {
            out.push_str(&option(v, v, chosen.as_ref() == Some(v)));
        }
        out.push_str("</select></label>\n");
    }
    out.push_str(
        "<button type=\"button\" id=\"clear-filters\">Clear filters</button>\n\
         <span class=\"live\" id=\"live\">Live updates: connecting</span>\n</form>\n\
         <div id=\"results\">\n",
    );
    out.push_str(&incident_table(alerts, total));
    out.push_str("</div>\n");
    out
}

/// The list of incidents, newest first.
pub(super) fn incident_table(alerts: &[Arc<RcaAlert>], total: usize) -> String {
    let mut out = String::with_capacity(1024 + alerts.len() * 600);
    let _ = writeln!(
        out,
        "<p id=\"count\" class=\"count\" aria-live=\"polite\">{} of {total} incidents</p>",
        alerts.len()
    );
    if alerts.is_empty() {
        out.push_str("<p class=\"empty\">No incident matches these filters.</p>\n");
        return out;
    }
    out.push_str(
        "<table class=\"incidents\">\n<caption class=\"visually-hidden\">Incidents, newest first</caption>\n\
         <thead><tr><th scope=\"col\">Severity</th><th scope=\"col\">Incident</th><th scope=\"col\">Status</th>\
         <th scope=\"col\">Environment</th><th scope=\"col\">Started (UTC)</th><th scope=\"col\">Top cause</th>\
         <th scope=\"col\">Summary</th></tr></thead>\n<tbody>\n",
    );
    for a in alerts {
        let top = a.root_causes.first().map_or_else(
            || "<span class=\"muted\">none</span>".to_string(),
            |c| {
                format!(
                    "{} <span class=\"muted\">{:.2}</span>",
                    esc(&c.service),
                    c.score
                )
            },
        );
        let _ = writeln!(
            out,
            "<tr data-incident=\"{id}\" data-severity=\"{sev}\" data-status=\"{status}\" data-environment=\"{env}\">\
             <td>{badge}</td><td><a href=\"#/incidents/{href}\">{id}</a></td><td>{state}</td><td>{env}</td>\
             <td class=\"time\">{started}</td><td>{top}</td><td>{summary}</td></tr>",
            id = esc(&a.incident_id),
            sev = a.severity,
            status = crate::metrics::status_label(a.status),
            env = esc(&a.environment),
            badge = severity_badge(a.severity),
            href = segment(&a.incident_id),
            state = status_badge(a.status),
            started = time_el(a.started_at),
            summary = esc(&a.summary),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

/// One incident: the same picture and tables as its standalone page, then what the dashboard
/// adds: changes, similar past incidents, the agent's review, feedback and its history.
pub(super) fn incident_view(
    alert: &RcaAlert,
    similar: (&[FeedbackRecord], Option<&str>),
    feedback: &[HistoryItem],
    caller: &Caller,
) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let _ = writeln!(
        out,
        "<nav class=\"crumbs\" aria-label=\"Breadcrumb\"><a href=\"#/incidents\">Incidents</a> › {} \
         · <a href=\"#feedback\" class=\"jump\">Give feedback</a></nav>\n<article class=\"incident\" data-incident=\"{}\">",
        esc(&alert.incident_id),
        esc(&alert.incident_id)
    );
    out.push_str(&culprit_sink::to_html_body(alert));
    changes(&mut out, alert);
    similar_incidents(&mut out, similar);
    llm_review(&mut out, alert);
    feedback_form(&mut out, alert, caller);
    feedback_history(&mut out, feedback);
    out.push_str("</article>\n");
    out
}

/// Change events among the candidates' evidence: deploys, config changes, flags.
fn changes(out: &mut String, alert: &RcaAlert) {
    let mut seen = BTreeSet::new();
    let mut list: Vec<_> = alert
        .root_causes
        .iter()
        .flat_map(|c| &c.evidence)
        .filter(|a| a.source == SourceKind::Changes && seen.insert(a.id.clone()))
        .collect();
    list.sort_by(|a, b| a.time.cmp(&b.time).then(a.service.cmp(&b.service)));
    out.push_str("<section id=\"changes\">\n<h2>Changes in the window</h2>\n");
    if list.is_empty() {
        out.push_str("<p class=\"muted\">No deploy, configuration change or feature flag among the evidence.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table>\n<thead><tr><th scope=\"col\">Time (UTC)</th><th scope=\"col\">Service</th>\
         <th scope=\"col\">Change</th><th scope=\"col\">Description</th></tr></thead>\n<tbody>\n",
    );
    for a in list {
        let _ = writeln!(
            out,
            "<tr><td class=\"time\">{}</td><td>{}</td><td class=\"chain\">{}</td><td>{}</td></tr>",
            time_el(a.time),
            esc(&a.service),
            esc(a.signal.as_str()),
            esc(&a.description)
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

/// `similar`: the incidents, and why there are none when the search could not run.
fn similar_incidents(out: &mut String, (similar, unavailable): (&[FeedbackRecord], Option<&str>)) {
    out.push_str("<section id=\"similar\">\n<h2>Similar past incidents</h2>\n");
    if let Some(reason) = unavailable {
        let _ = writeln!(
            out,
            "<p class=\"muted\">Similar incidents are unavailable: {}</p>\n</section>",
            esc(reason)
        );
        return;
    }
    if similar.is_empty() {
        out.push_str("<p class=\"muted\">No resolved incident with a confirmed cause resembles this one yet.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table>\n<thead><tr><th scope=\"col\">Incident</th><th scope=\"col\">Started (UTC)</th>\
         <th scope=\"col\">Environment</th><th scope=\"col\">Confirmed cause</th><th scope=\"col\">By</th>\
         <th scope=\"col\">Summary</th><th scope=\"col\">Note</th></tr></thead>\n<tbody>\n",
    );
    for r in similar {
        let _ = writeln!(
            out,
            "<tr><td><a href=\"#/incidents/{}\">{}</a></td><td class=\"time\">{}</td><td>{}</td><td><strong>{}</strong></td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            segment(&r.incident_id),
            esc(&r.incident_id),
            time_el(r.started_at),
            esc(&r.environment),
            esc(&r.cause.to_string()),
            esc(&r.author),
            esc(&r.summary),
            esc(r.note.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

/// The agent's review (`llm_review`), shown only when present: how it ended, what it cost, its
/// verdicts and what moved. The model's rationale is shown as unverified.
fn llm_review(out: &mut String, alert: &RcaAlert) {
    let Some(review) = &alert.llm_review else {
        return;
    };
    out.push_str("<section id=\"review\" aria-labelledby=\"review-title\">\n<h2 id=\"review-title\">Agent review</h2>\n");
    let _ = writeln!(
        out,
        "<p>Status <strong>{}</strong>{} &middot; model {} ({}) &middot; reviewed revision {} &middot; {} calls, {} tool calls ({} repeated), {} tokens, {:.1} s{}</p>",
        esc(review.status.as_str()),
        review
            .detail
            .as_deref()
            .map(|d| format!(": {}", esc(d)))
            .unwrap_or_default(),
        esc(&review.model),
        esc(&review.mode),
        review.reviewed_revision,
        review.steps,
        review.tool_calls,
        review.duplicate_tool_calls,
        review.prompt_tokens + review.completion_tokens,
        review.latency_ms as f64 / 1000.0,
        review
            .limit_hit
            .as_deref()
            .map(|l| format!(" &middot; stopped by its {} limit", esc(l)))
            .unwrap_or_default(),
    );
    if !review.verdicts.is_empty() {
        out.push_str("<table class=\"verdicts\">\n<thead><tr><th scope=\"col\">Service</th><th scope=\"col\">Verdict</th><th scope=\"col\">Confidence</th><th scope=\"col\">Cites</th></tr></thead>\n<tbody>\n");
        for v in &review.verdicts {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td></tr>",
                esc(&v.service),
                esc(v.verdict.as_str()),
                v.confidence,
                esc(&v.evidence.join(", "))
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    if review.dropped_verdicts > 0 {
        let _ = writeln!(
            out,
            "<p>{} verdicts dropped (a service outside the graph, or evidence no tool returned).</p>",
            review.dropped_verdicts
        );
    }
    if review.rank_changes.is_empty() {
        out.push_str("<p>The ranking is unchanged.</p>\n");
    } else {
        out.push_str("<ul class=\"rank-changes\">\n");
        for c in &review.rank_changes {
            let _ = writeln!(
                out,
                "<li>{}: #{} &rarr; #{}</li>",
                esc(&c.service),
                c.from_rank,
                c.to_rank
            );
        }
        out.push_str("</ul>\n");
    }
    if let Some(rationale) = &review.unverified_rationale {
        let _ = writeln!(
            out,
            "<blockquote class=\"unverified\"><p><strong>Unverified:</strong> the model's own words, checked against nothing.</p><p>{}</p></blockquote>",
            esc(rationale)
        );
    }
    out.push_str("</section>\n");
}

fn feedback_form(out: &mut String, alert: &RcaAlert, caller: &Caller) {
    let can_write = caller.scope.allows(Scope::Write);
    let disabled = if can_write { "" } else { " disabled" };
    out.push_str("<section id=\"feedback\" aria-labelledby=\"feedback-title\">\n<h2 id=\"feedback-title\" tabindex=\"-1\">What was the cause?</h2>\n");
    let _ = write!(
        out,
        "<p class=\"who\">Signed in as <strong>{}</strong> ({} scope).",
        esc(&caller.name),
        caller.scope.as_str()
    );
    if alert.status == IncidentStatus::Open {
        out.push_str(" The incident is still open: feedback is kept as <em>provisional</em> and learned from once it resolves.");
    }
    out.push_str(" Each answer is added to the history; the latest one counts.</p>\n");
    if !can_write {
        out.push_str("<p class=\"notice\" role=\"note\">This token can read only: giving feedback needs a write-scoped token.</p>\n");
    }
    if let Some(top) = alert.root_causes.first() {
        let _ = writeln!(
            out,
            "<form class=\"fb\" id=\"fb-top\" data-cause=\"{}\"><button type=\"submit\"{disabled}>Confirm #1: {}</button></form>",
            esc(&top.service),
            esc(&top.service)
        );
    }
    // The other candidates in rank order, then the graph's remaining services.
    let ranked: Vec<&str> = alert
        .root_causes
        .iter()
        .skip(1)
        .map(|c| c.service.as_str())
        .collect();
    let mut rest: Vec<&str> = incident_services(alert)
        .into_iter()
        .filter(|s| alert.root_causes.first().is_none_or(|t| t.service != *s))
        .filter(|s| !ranked.contains(s))
        .collect();
    rest.sort();
    if !ranked.is_empty() || !rest.is_empty() {
        out.push_str("<form class=\"fb\" id=\"fb-pick\"><label for=\"fb-pick-cause\">Another service</label> <select id=\"fb-pick-cause\" name=\"cause\">");
        for (i, s) in ranked.iter().enumerate() {
            out.push_str(&option(s, &format!("#{} {s}", i + 2), false));
        }
        for s in rest {
            out.push_str(&option(s, &format!("{s} (not ranked)"), false));
        }
        let _ = writeln!(
            out,
            "</select> <button type=\"submit\"{disabled}>Confirm this service</button></form>"
        );
    }
    let _ = writeln!(
        out,
        "<form class=\"fb\" id=\"fb-other\"><label for=\"fb-other-text\">Something else</label> \
         <input id=\"fb-other-text\" name=\"other\" maxlength=\"2000\" placeholder=\"what it was, e.g. the payment provider\"{disabled}> \
         <button type=\"submit\"{disabled}>Confirm other cause</button></form>\n\
         <p><label for=\"fb-note\">Note (optional, sent with any of the buttons)</label><br>\
         <textarea id=\"fb-note\" rows=\"2\" cols=\"60\" maxlength=\"2000\"{disabled}></textarea></p>\n\
         <p id=\"fb-result\" class=\"result\" role=\"status\"></p>\n</section>"
    );
}

fn feedback_history(out: &mut String, items: &[HistoryItem]) {
    out.push_str("<section id=\"feedback-history\">\n<h2>Feedback history</h2>\n");
    if items.is_empty() {
        out.push_str("<p class=\"muted\">No feedback yet.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table class=\"history\">\n<thead><tr><th scope=\"col\">When (UTC)</th><th scope=\"col\">Author</th>\
         <th scope=\"col\">Cause</th><th scope=\"col\">Culprit's rank</th><th scope=\"col\">Standing</th>\
         <th scope=\"col\">Note</th></tr></thead>\n<tbody>\n",
    );
    for item in items {
        let HistoryEntry::Feedback(f) = &item.entry else {
            continue;
        };
        let _ = writeln!(
            out,
            "<tr class=\"{}\"><td class=\"time\">{}</td><td>{}</td><td><strong>{}</strong></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if item.latest == Some(true) { "latest" } else { "superseded" },
            time_el(f.at),
            esc(&f.author),
            esc(&f.cause.to_string()),
            f.rank.map_or_else(|| "not ranked".to_string(), |r| format!("#{r}")),
            standing(f, item.latest),
            esc(f.note.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn standing(f: &FeedbackRecord, latest: Option<bool>) -> String {
    let which = if latest == Some(true) {
        "latest, counts"
    } else {
        "superseded"
    };
    let state = if f.provisional {
        "provisional"
    } else {
        "final"
    };
    format!("{which}; {state}")
}

pub(super) fn baselines_unavailable(message: &str) -> String {
    format!(
        "<h1>Baselines</h1>\n<p class=\"notice\" role=\"note\">{}</p>\n",
        esc(message)
    )
}

pub(super) fn baseline_services(services: &[String]) -> String {
    let mut out = String::from("<h1>Baselines</h1>\n");
    if services.is_empty() {
        out.push_str("<p class=\"muted\">Nothing learned yet.</p>\n");
        return out;
    }
    out.push_str("<p>What culprit has learned as normal, per service. Choose one to see its thresholds and recalculate them.</p>\n<ul class=\"services\">\n");
    for s in services {
        let _ = writeln!(
            out,
            "<li><a href=\"#/baselines/{}\">{}</a></li>",
            segment(s),
            esc(s)
        );
    }
    out.push_str("</ul>\n");
    out
}

fn bucket_label(b: &Bucket) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    match b {
        Bucket::HourOfDay { hour } => format!("{hour:02}:00–{:02}:00", (hour + 1) % 24),
        Bucket::HourOfWeek { hour } => {
            format!("{} {:02}:00", DAYS[(*hour as usize / 24) % 7], hour % 24)
        }
        Bucket::Global => "all hours".to_string(),
    }
}

fn number(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn bucket_rows(out: &mut String, buckets: &[&BucketThresholds]) {
    out.push_str(
        "<table class=\"baseline\">\n<thead><tr><th scope=\"col\">Bucket (UTC)</th><th scope=\"col\">Samples</th>\
         <th scope=\"col\">Median</th>",
    );
    for s in Severity::ALL {
        let _ = write!(out, "<th scope=\"col\">{s}</th>");
    }
    out.push_str("<th scope=\"col\">Learned at (event time, UTC)</th></tr></thead>\n<tbody>\n");
    for b in buckets {
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            bucket_label(&b.bucket),
            b.samples,
            number(b.median)
        );
        for s in Severity::ALL {
            let cell = b
                .thresholds
                .iter()
                .find(|t| t.severity == s)
                .map(|t| {
                    let mut parts = Vec::new();
                    if let Some(v) = t.above {
                        parts.push(format!("&gt; {}", number(v)));
                    }
                    if let Some(v) = t.below {
                        parts.push(format!("&lt; {}", number(v)));
                    }
                    parts.join("<br>")
                })
                .unwrap_or_else(|| "–".to_string());
            let _ = write!(out, "<td class=\"num\">{cell}</td>");
        }
        let _ = writeln!(
            out,
            "<td class=\"time\">{}</td></tr>",
            b.learned_at.map_or_else(|| "–".to_string(), time_el)
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

/// One service's baselines, per source and signal, with the recalculation form.
pub(super) fn service_baselines(
    service: &str,
    baselines: &[SignalBaseline],
    recalculations: &[HistoryItem],
    caller: &Caller,
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = writeln!(
        out,
        "<nav class=\"crumbs\" aria-label=\"Breadcrumb\"><a href=\"#/baselines\">Baselines</a> › {}</nav>\n\
         <h1>Baselines of {}</h1>",
        esc(service),
        esc(service)
    );
    let can_write = caller.scope.allows(Scope::Write);
    let disabled = if can_write { "" } else { " disabled" };
    let _ = write!(
        out,
        "<form id=\"recalc\" data-service=\"{}\">\n<fieldset><legend>Recalculate {}'s baselines</legend>\n\
         <p>Forget what was learned and learn again, for example after a release that legitimately changed latency.</p>\n\
         <label><input type=\"radio\" name=\"mode\" value=\"now\" checked{disabled}> From now on</label>\n\
         <label><input type=\"radio\" name=\"mode\" value=\"range\"{disabled}> From stored events of a time range</label>\n\
         <label>From (UTC) <input type=\"datetime-local\" name=\"from\"{disabled}></label>\n\
         <label>To (UTC) <input type=\"datetime-local\" name=\"to\"{disabled}></label>\n\
         <label>Source <select name=\"source\"{disabled}>{}",
        esc(service),
        esc(service),
        option("", "all", true)
    );
    for s in SourceKind::ALL {
        out.push_str(&option(s.as_str(), s.as_str(), false));
    }
    let _ = writeln!(
        out,
        "</select></label>\n<button type=\"submit\"{disabled}>Recalculate</button>\n</fieldset>\n</form>\n\
         <p id=\"recalc-result\" class=\"result\" role=\"status\"></p>"
    );
    if !can_write {
        out.push_str("<p class=\"notice\" role=\"note\">This token can read only: recalculating needs a write-scoped token.</p>\n");
    }

    if baselines.is_empty() {
        out.push_str("<p class=\"muted\">No baseline for this service.</p>\n");
    }
    for b in baselines {
        let _ = writeln!(
            out,
            "<section class=\"signal\">\n<h2>{} · <span class=\"chain\">{}</span> <span class=\"muted\">{}</span></h2>\n\
             <p>{} values learned; last at {}{}.</p>",
            b.source,
            esc(&b.signal),
            esc(&b.environment),
            b.samples,
            b.learned_at.map_or_else(|| "–".to_string(), time_el),
            b.recalculated_at
                .map(|t| format!("; recalculated {}", time_el(t)))
                .unwrap_or_default()
        );
        let mut buckets: Vec<&BucketThresholds> = b.buckets.iter().collect();
        buckets.sort_by_key(|x| x.bucket);
        let (weekly, daily): (Vec<&BucketThresholds>, Vec<&BucketThresholds>) = buckets
            .into_iter()
            .partition(|x| matches!(x.bucket, Bucket::HourOfWeek { .. }));
        bucket_rows(&mut out, &daily);
        if !weekly.is_empty() {
            let _ = writeln!(
                out,
                "<details><summary>{} hour-of-week buckets</summary>",
                weekly.len()
            );
            bucket_rows(&mut out, &weekly);
            out.push_str("</details>\n");
        }
        out.push_str("</section>\n");
    }

    out.push_str("<section>\n<h2>Recent recalculations</h2>\n");
    if recalculations.is_empty() {
        out.push_str("<p class=\"muted\">None recorded.</p>\n");
    } else {
        recalculation_table(&mut out, recalculations);
    }
    out.push_str("</section>\n");
    out
}

fn range_text(range: &RecalcRange) -> String {
    match range {
        RecalcRange::FromNow => "from now on".to_string(),
        RecalcRange::Range { from, to } => format!("from {} to {}", time(*from), time(*to)),
    }
}

fn recalculation_table(out: &mut String, items: &[HistoryItem]) {
    out.push_str(
        "<table class=\"history\">\n<thead><tr><th scope=\"col\">When (UTC)</th><th scope=\"col\">By</th>\
         <th scope=\"col\">Source</th><th scope=\"col\">Re-learns</th><th scope=\"col\">Baselines reset</th>\
         <th scope=\"col\">Detail</th></tr></thead>\n<tbody>\n",
    );
    for item in items {
        let HistoryEntry::Recalculation(r) = &item.entry else {
            continue;
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"time\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            time_el(r.at),
            esc(&r.author),
            r.source.map_or("all", |s| s.as_str()),
            range_text(&r.range),
            r.baselines,
            esc(&r.detail)
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

/// Everything recorded: feedback and recalculations, newest first.
pub(super) fn history_view(items: &[HistoryItem]) -> String {
    let mut out = String::from("<h1>History</h1>\n");
    if items.is_empty() {
        out.push_str("<p class=\"muted\">No feedback or recalculation yet.</p>\n");
        return out;
    }
    out.push_str(
        "<table class=\"history\">\n<caption class=\"visually-hidden\">Feedback and recalculations, newest first</caption>\n\
         <thead><tr><th scope=\"col\">When (UTC)</th><th scope=\"col\">What</th><th scope=\"col\">Of</th>\
         <th scope=\"col\">Detail</th><th scope=\"col\">By</th><th scope=\"col\">Standing</th></tr></thead>\n<tbody>\n",
    );
    for item in items {
        match &item.entry {
            HistoryEntry::Feedback(f) => {
                let _ = writeln!(
                    out,
                    "<tr class=\"{}\"><td class=\"time\">{}</td><td>Feedback</td><td><a href=\"#/incidents/{}\">{}</a></td>\
                     <td>cause <strong>{}</strong>{}</td><td>{}</td><td>{}</td></tr>",
                    if item.latest == Some(true) { "latest" } else { "superseded" },
                    time_el(f.at),
                    segment(&f.incident_id),
                    esc(&f.incident_id),
                    esc(&f.cause.to_string()),
                    f.note
                        .as_deref()
                        .map(|n| format!(" — {}", esc(n)))
                        .unwrap_or_default(),
                    esc(&f.author),
                    standing(f, item.latest)
                );
            }
            HistoryEntry::Recalculation(r) => {
                let _ = writeln!(
                    out,
                    "<tr><td class=\"time\">{}</td><td>Baseline recalculation</td><td><a href=\"#/baselines/{}\">{}</a></td>\
                     <td>{} ({} source{}), {} baselines reset{}</td><td>{}</td><td>done</td></tr>",
                    time_el(r.at),
                    segment(&r.service),
                    esc(&r.service),
                    range_text(&r.range),
                    r.source.map_or("every", |s| s.as_str()),
                    if r.source.is_some() { "" } else { "s" },
                    r.baselines,
                    if r.detail.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", esc(&r.detail))
                    },
                    esc(&r.author)
                );
            }
        }
    }
    out.push_str("</tbody>\n</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_segments_keep_hostile_names_inert() {
        assert_eq!(
            esc("<img src=x onerror='a'>&\""),
            "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;&quot;"
        );
        assert_eq!(segment("inc 1/a?b#c"), "inc%201%2Fa%3Fb%23c");
        assert_eq!(segment("inc-1.a_b~"), "inc-1.a_b~");
    }

    #[test]
    fn a_recalculation_in_the_history_says_what_the_detectors_did_escaped() {
        let item = |detail: &str| HistoryItem {
            entry: HistoryEntry::Recalculation(crate::RecalculationRecord {
                service: "cart".into(),
                source: None,
                range: RecalcRange::FromNow,
                author: "schedule".into(),
                at: 0,
                baselines: 4,
                detail: detail.into(),
            }),
            latest: None,
        };
        let page = history_view(&[item("re-read 1,200 events of <otlp_spans>")]);
        assert!(
            page.contains("4 baselines reset — re-read 1,200 events of &lt;otlp_spans&gt;</td>"),
            "{page}"
        );
        assert!(history_view(&[item("")]).contains("4 baselines reset</td>"));
    }

    #[test]
    fn bucket_labels_name_the_hour() {
        assert_eq!(bucket_label(&Bucket::HourOfDay { hour: 9 }), "09:00–10:00");
        assert_eq!(bucket_label(&Bucket::HourOfDay { hour: 23 }), "23:00–00:00");
        assert_eq!(bucket_label(&Bucket::HourOfWeek { hour: 33 }), "Tue 09:00");
        assert_eq!(bucket_label(&Bucket::Global), "all hours");
    }
}
