//! Graphviz DOT of an alert's causal graph.

use crate::text::{severity_fill, severity_ink, severity_label};
use culprit_core::{EdgeKind, RcaAlert};
use std::fmt::Write;

/// Renders `alert.graph` as a Graphviz digraph (`dot -Tsvg incident.dot > incident.svg`).
///
/// Nodes are labelled with the service and its evidence score and filled by severity (SEV1 red
/// .. none grey); ranked causes carry `#rank` and the rank-1 cause a bold border. Edges are solid
/// for dependencies, dashed for changes and dotted within a service, labelled with their weight.
pub fn to_dot(alert: &RcaAlert) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored rather than unwrapped.
    let _ = writeln!(out, "digraph \"{}\" {{", dot_escape(&alert.incident_id));
    let _ = writeln!(
        out,
        "  graph [rankdir=LR, labelloc=t, fontname=\"Helvetica\", label=\"{} {} in {}\"];",
        alert.severity,
        dot_escape(&alert.incident_id),
        dot_escape(&alert.environment)
    );
    out.push_str(
        "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", penwidth=1];\n",
    );
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");

    for node in &alert.graph.nodes {
        let mut label = String::new();
        if let Some(rank) = node.rank {
            let _ = write!(label, "#{rank} ");
        }
        label.push_str(&dot_escape(&node.service));
        let _ = write!(
            label,
            "\\nevidence {:.2} · {}",
            node.evidence_score,
            severity_label(node.severity)
        );
        let border = if node.rank == Some(1) {
            ", style=\"rounded,filled,bold\", penwidth=3"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{label}\", fillcolor=\"{}\", fontcolor=\"{}\"{border}];",
            dot_escape(&node.service),
            severity_fill(node.severity),
            severity_ink(node.severity)
        );
    }

    for edge in &alert.graph.edges {
        let style = match edge.kind {
            EdgeKind::Dependency => "solid",
            EdgeKind::Change => "dashed",
            EdgeKind::SameService => "dotted",
        };
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\" [style={style}, label=\"{:.2}\"];",
            dot_escape(&edge.from),
            dot_escape(&edge.to),
            edge.weight
        );
    }
    out.push_str("}\n");
    out
}

/// Escapes text for a double-quoted DOT string. Backslashes are doubled because DOT gives
/// `\n`, `\l` and friends a meaning in labels; line breaks become spaces.
fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dot_escape;

    #[test]
    fn dot_escape_quotes_backslashes_and_newlines() {
        assert_eq!(dot_escape("a\"b\\n\nc"), "a\\\"b\\\\n c");
    }
}
