//! One self-contained HTML page per alert: an SVG picture of the causal graph plus the ranking
//! and its evidence. No scripts, fonts or external resources, so it opens on an air-gapped host.

use crate::layout::{layout, Layout, NODE_H, NODE_W};
use crate::text::{
    duration, html_escape as esc, rfc3339, severity_fill, severity_ink, severity_label, truncate,
};
use culprit_core::{EdgeKind, IncidentStatus, RcaAlert, RootCause, Severity, SourceKind};
use std::collections::BTreeSet;
use std::fmt::Write;

/// How many candidates get a table row and an evidence section.
const TOP_CAUSES: usize = 5;
/// Characters of a service name that fit in a node box at the chosen font size.
const NODE_LABEL_CHARS: usize = 22;

/// The stylesheet of [`to_html`]'s page; [`to_html_body`] needs it (the dashboard of
/// `culprit-api` embeds both).
pub const HTML_STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1b1b1b; margin: 24px; background: #fafafa; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 4px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 4px; font-weight: 600; }
.summary { font-size: 15px; margin: 6px 0 12px; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 0; }
dl.meta dt { color: #555; }
dl.meta dd { margin: 0; }
.graph { overflow-x: auto; background: #fff; border: 1px solid #ddd; border-radius: 6px; }
.graph svg { display: block; max-width: 100%; height: auto; }
.legend { display: flex; flex-wrap: wrap; gap: 4px 14px; align-items: center; margin: 6px 0 8px; color: #444; font-size: 13px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 3px; border: 1px solid #999; vertical-align: -1px; margin-right: 4px; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.time { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.chain { font-family: ui-monospace, Menlo, Consolas, monospace; }
.muted { color: #666; }
footer { margin-top: 32px; color: #777; font-size: 12px; }
"#;

/// Renders `alert` as one HTML page: headline, an inline SVG of the causal graph (layered left
/// to right from cause to symptom, filled by severity, rank-1 cause outlined), the candidate
/// table, and each top candidate's chain, explanation and evidence.
///
/// Every string from the alert is escaped, and the page forbids scripts through its
/// Content-Security-Policy, so a hostile service name renders as text.
pub fn to_html(alert: &RcaAlert) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let title = format!("{} {} — culprit", alert.severity, alert.incident_id);
    // Writing to a String cannot fail; the results are ignored rather than unwrapped.
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n",
        esc(&title)
    );

    out.push_str(&to_html_body(alert));
    let _ = writeln!(
        out,
        "<footer>culprit RCA alert, schema version {}, revision {}.</footer>\n</body>\n</html>",
        alert.schema_version, alert.revision
    );
    out
}

/// The content of [`to_html`]'s page without the document around it (styled by
/// [`HTML_STYLE`]): headline, graph picture, candidate table, evidence and affected services.
/// Every string from the alert is escaped.
pub fn to_html_body(alert: &RcaAlert) -> String {
    let mut out = String::with_capacity(16 * 1024);
    header(&mut out, alert);

    out.push_str("<section>\n<h2>Causal graph</h2>\n");
    legend(&mut out);
    out.push_str("<div class=\"graph\">\n");
    svg(&mut out, alert);
    out.push_str("</div>\n</section>\n");

    let top = &alert.root_causes[..alert.root_causes.len().min(TOP_CAUSES)];
    if !top.is_empty() {
        out.push_str("<section>\n<h2>Root-cause candidates</h2>\n");
        cause_table(&mut out, top);
        out.push_str("</section>\n<section>\n<h2>Evidence</h2>\n");
        for cause in top {
            cause_detail(&mut out, cause);
        }
        out.push_str("</section>\n");
    }

    if !alert.affected_services.is_empty() {
        out.push_str("<section>\n<h2>Affected services</h2>\n<dl class=\"meta\">\n");
        for (source, services) in &alert.affected_services {
            let names: Vec<String> = services.iter().map(|s| esc(s)).collect();
            let _ = writeln!(out, "<dt>{source}</dt><dd>{}</dd>", names.join(", "));
        }
        out.push_str("</dl>\n</section>\n");
    }
    out
}

fn badge(severity: Option<Severity>) -> String {
    format!(
        "<span class=\"badge\" style=\"background:{};color:{}\">{}</span>",
        severity_fill(severity),
        severity_ink(severity),
        severity_label(severity)
    )
}

fn header(out: &mut String, alert: &RcaAlert) {
    let services: BTreeSet<&str> = alert
        .affected_services
        .values()
        .flatten()
        .map(String::as_str)
        .collect();
    let status = match alert.status {
        IncidentStatus::Open => "open",
        IncidentStatus::Resolved => "resolved",
    };
    let _ = writeln!(
        out,
        "<header>\n<h1>{} Incident {}</h1>",
        badge(Some(alert.severity)),
        esc(&alert.incident_id)
    );
    if !alert.summary.is_empty() {
        let _ = writeln!(out, "<p class=\"summary\">{}</p>", esc(&alert.summary));
    }
    let _ = writeln!(
        out,
        "<dl class=\"meta\">\n<dt>Environment</dt><dd>{}</dd>\n<dt>Status</dt><dd>{status}, revision {}</dd>\n\
         <dt>Window (UTC)</dt><dd>{} .. {} ({})</dd>\n<dt>Confidence</dt><dd>{:.2}</dd>\n\
         <dt>Anomalies</dt><dd>{} across {} services</dd>\n</dl>\n</header>",
        esc(&alert.environment),
        alert.revision,
        rfc3339(alert.started_at),
        rfc3339(alert.updated_at),
        duration(alert.started_at, alert.updated_at),
        alert.confidence,
        alert.anomaly_count,
        services.len()
    );
}

fn legend(out: &mut String) {
    out.push_str("<div class=\"legend\">");
    for severity in Severity::ALL.map(Some).into_iter().chain([None]) {
        let _ = write!(
            out,
            "<span><span class=\"swatch\" style=\"background:{}\"></span>{}</span>",
            severity_fill(severity),
            severity_label(severity)
        );
    }
    for kind in [
        EdgeKind::Dependency,
        EdgeKind::Change,
        EdgeKind::SameService,
    ] {
        let _ = write!(
            out,
            "<span><svg width=\"28\" height=\"10\" aria-hidden=\"true\"><line x1=\"0\" y1=\"5\" x2=\"28\" y2=\"5\" \
             stroke=\"#444\" stroke-width=\"2\"{}/></svg> {}</span>",
            dash(kind),
            edge_kind_name(kind)
        );
    }
    out.push_str(
        "<span class=\"muted\">Arrows point from a cause to the symptoms it explains; \
         the thick outline marks the most likely cause.</span></div>\n",
    );
}

fn dash(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Dependency => "",
        EdgeKind::Change => " stroke-dasharray=\"7 4\"",
        EdgeKind::SameService => " stroke-dasharray=\"2 3\"",
    }
}

fn edge_kind_name(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Dependency => "dependency",
        EdgeKind::Change => "change",
        EdgeKind::SameService => "same service",
    }
}

fn svg(out: &mut String, alert: &RcaAlert) {
    let graph = &alert.graph;
    if graph.nodes.is_empty() {
        out.push_str("<p class=\"muted\">The causal graph is empty.</p>\n");
        return;
    }
    let l: Layout = layout(graph);
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" \
         style=\"min-width:{min_w:.0}px\" \
         role=\"img\" aria-label=\"causal graph of incident {}\" font-family=\"system-ui, Helvetica, Arial, sans-serif\">",
        esc(&alert.incident_id),
        w = l.width,
        h = l.height,
        // Shrinks to fit the window down to two thirds of its size, then scrolls instead.
        min_w = l.width * 2.0 / 3.0
    );
    out.push_str(
        "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"11\" markerHeight=\"11\" \
         markerUnits=\"userSpaceOnUse\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#444\"/></marker></defs>\n",
    );

    // Edges first so node boxes sit on top of them.
    for e in &l.edges {
        let edge = &graph.edges[e.graph_index];
        let width = 1.0 + 2.0 * edge.weight.clamp(0.0, 1.0);
        let mut path = String::new();
        for (i, (x, y)) in e.points.iter().enumerate() {
            let _ = write!(path, "{}{x:.1},{y:.1}", if i == 0 { "M" } else { " L" });
        }
        // The weight sits on the first segment, parallel edges' labels staggered along it.
        let t = if e.parallel_count > 1 {
            0.3 + 0.4 * e.parallel_index as f64 / (e.parallel_count - 1) as f64
        } else {
            0.5
        };
        let (lx, ly) = match (e.points.first(), e.points.get(1)) {
            (Some(&(x1, y1)), Some(&(x2, y2))) => (x1 + (x2 - x1) * t, y1 + (y2 - y1) * t - 4.0),
            _ => (0.0, 0.0),
        };
        let _ = writeln!(
            out,
            "<g class=\"edge\"><title>{} → {} ({}, weight {:.2})</title>\
             <path d=\"{path}\" fill=\"none\" stroke=\"#444\" stroke-width=\"{width:.1}\"{} marker-end=\"url(#arrow)\"/>\
             <text x=\"{lx:.1}\" y=\"{ly:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#333\" \
             stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">{:.2}</text></g>",
            esc(&edge.from),
            esc(&edge.to),
            edge_kind_name(edge.kind),
            edge.weight,
            dash(edge.kind),
            edge.weight
        );
    }

    for p in &l.nodes {
        let node = &graph.nodes[p.graph_index];
        let (fill, ink) = (severity_fill(node.severity), severity_ink(node.severity));
        let (stroke, stroke_width) = match node.rank {
            Some(1) => ("#111", 4.0),
            Some(_) => ("#333", 2.0),
            None => ("#888", 1.0),
        };
        let name = match node.rank {
            Some(rank) => format!("#{rank} {}", truncate(&node.service, NODE_LABEL_CHARS - 3)),
            None => truncate(&node.service, NODE_LABEL_CHARS),
        };
        let (cx, top) = (p.x + NODE_W / 2.0, p.y);
        let _ = write!(
            out,
            "<g class=\"node\"><title>{}</title>\
             <rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{NODE_W:.0}\" height=\"{NODE_H:.0}\" rx=\"8\" \
             fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{stroke_width:.0}\"/>\
             <text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"14\" font-weight=\"600\" text-anchor=\"middle\" fill=\"{ink}\">{}</text>\
             <text x=\"{cx:.1}\" y=\"{:.1}\" font-size=\"12\" text-anchor=\"middle\" fill=\"{ink}\">evidence {:.2} · {}</text>",
            esc(&node.service),
            p.x,
            top + 22.0,
            esc(&name),
            top + 41.0,
            node.evidence_score,
            severity_label(node.severity)
        );
        if node.rank == Some(1) {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" font-weight=\"700\" fill=\"#111\" \
                 stroke=\"#fff\" stroke-width=\"3\" paint-order=\"stroke\">MOST LIKELY CAUSE</text>",
                p.x + 2.0,
                top - 8.0
            );
        }
        out.push_str("</g>\n");
    }
    out.push_str("</svg>\n");
}

fn cause_table(out: &mut String, causes: &[RootCause]) {
    out.push_str("<table>\n<tr><th>Rank</th><th>Service</th><th>Score</th><th>Evidence</th><th>PageRank</th>");
    for source in SourceKind::ALL {
        let _ = write!(out, "<th>{source}</th>");
    }
    out.push_str("</tr>\n");
    for c in causes {
        let _ = write!(
            out,
            "<tr><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td>",
            c.rank,
            esc(&c.service),
            c.score,
            c.evidence_score,
            c.pagerank
        );
        for source in SourceKind::ALL {
            match c.evidence_by_source.get(&source) {
                Some(v) => {
                    let _ = write!(out, "<td class=\"num\">{v:.2}</td>");
                }
                None => out.push_str("<td class=\"num muted\">–</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn cause_detail(out: &mut String, cause: &RootCause) {
    let _ = writeln!(
        out,
        "<article>\n<h3>#{} {} <span class=\"muted\">score {:.2}</span></h3>",
        cause.rank,
        esc(&cause.service),
        cause.score
    );
    if !cause.chain.is_empty() {
        let chain: Vec<String> = cause.chain.iter().map(|s| esc(s)).collect();
        let _ = writeln!(out, "<p class=\"chain\">{}</p>", chain.join(" → "));
    }
    if !cause.explanation.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", esc(&cause.explanation));
    }
    if cause.evidence.is_empty() {
        out.push_str(
            "<p class=\"muted\">No anomalies of its own: it ranks by what it explains.</p>\n",
        );
    } else {
        out.push_str(
            "<table>\n<tr><th>Severity</th><th>Source</th><th>Signal</th><th>Description</th>\
             <th>Observed</th><th>Expected</th><th>Time (UTC)</th></tr>\n",
        );
        for a in &cause.evidence {
            let num = |v: Option<f64>| {
                v.map_or_else(
                    || "–".to_string(),
                    |v| {
                        format!("{v:.4}")
                            .trim_end_matches('0')
                            .trim_end_matches('.')
                            .to_string()
                    },
                )
            };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"chain\">{}</td><td>{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"time\">{}</td></tr>",
                badge(Some(a.severity)),
                a.source,
                esc(a.signal.as_str()),
                esc(&a.description),
                num(a.observed),
                num(a.expected),
                rfc3339(a.time)
            );
        }
        out.push_str("</table>\n");
    }
    out.push_str("</article>\n");
}
