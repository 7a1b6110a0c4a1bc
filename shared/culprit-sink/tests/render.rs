mod common;

use culprit_sink::{render_summary, to_dot, to_html};

#[test]
fn summary_names_the_top_cause_its_chain_and_evidence() {
    let alert = common::alert();
    let text = render_summary(&alert);
    assert!(
        text.starts_with("SEV1 incident prod-cartservice-1714564800 in prod"),
        "{text}"
    );
    assert!(
        text.contains("2024-05-01T12:00:00Z .. 2024-05-01T12:05:30Z (5m30s), confidence 0.82"),
        "{text}"
    );
    assert!(text.contains("Most likely cause: cartservice"), "{text}");
    assert!(
        text.contains("chain: cartservice -> checkoutservice -> frontend"),
        "{text}"
    );
    assert!(
        text.contains("SEV1  traces   span.latency:GetCart"),
        "{text}"
    );
    assert!(text.contains("37 anomalies across 5 services"), "{text}");
}

#[test]
fn summary_table_lists_five_causes_in_aligned_columns() {
    let text = render_summary(&common::alert());
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("rank"))
        .take(6)
        .collect();
    assert_eq!(rows.len(), 6, "{text}");
    assert!(rows[1].trim_start().starts_with("1  cartservice"), "{text}");
    assert!(
        rows[5].trim_start().starts_with("5  paymentservice"),
        "{text}"
    );
    let widths: Vec<usize> = rows.iter().map(|r| r.chars().count()).collect();
    assert!(
        widths.iter().all(|&w| w == widths[0]),
        "rows differ in width: {widths:?}\n{text}"
    );
    assert!(text.contains("... and 1 more candidate\n"), "{text}");
    assert!(
        !text.contains("productcatalogservice  "),
        "the sixth cause is not a row: {text}"
    );
}

#[test]
fn summary_has_no_control_characters_from_untrusted_names() {
    let mut alert = common::alert();
    common::rename_service(&mut alert, "cartservice", "cart\x1b[31mservice");
    let text = render_summary(&alert);
    assert!(!text.contains('\x1b'));
    assert!(
        text.contains("Most likely cause: cart?[31mservice"),
        "{text}"
    );
}

#[test]
fn dot_declares_every_node_and_edge() {
    let alert = common::alert();
    let dot = to_dot(&alert);
    assert!(dot.starts_with("digraph ") && dot.trim_end().ends_with('}'));
    for node in &alert.graph.nodes {
        assert!(
            dot.contains(&format!("  \"{}\" [label=", node.service)),
            "missing node {}",
            node.service
        );
    }
    let edge_lines = dot.lines().filter(|l| l.contains(" -> ")).count();
    assert_eq!(edge_lines, alert.graph.edges.len());
    assert!(dot.contains("\"cartservice\" -> \"checkoutservice\" [style=solid, label=\"0.90\"]"));
    assert!(dot.contains("\"cartservice\" -> \"checkoutservice\" [style=dashed, label=\"0.60\"]"));
    assert!(dot.contains("\"cartservice\" -> \"cartservice\" [style=dotted, label=\"0.50\"]"));
}

#[test]
fn dot_marks_the_rank_one_cause_and_colours_by_severity() {
    let dot = to_dot(&common::alert());
    let cart = dot
        .lines()
        .find(|l| l.trim_start().starts_with("\"cartservice\" ["))
        .unwrap_or_default();
    assert!(
        cart.contains("label=\"#1 cartservice\\nevidence 0.92 · SEV1\""),
        "{cart}"
    );
    assert!(
        cart.contains("penwidth=3") && cart.contains("bold"),
        "{cart}"
    );
    assert!(cart.contains("fillcolor=\"#d62828\""), "{cart}");
    let currency = dot
        .lines()
        .find(|l| l.trim_start().starts_with("\"currencyservice\" ["))
        .unwrap_or_default();
    assert!(
        currency.contains("label=\"currencyservice\\nevidence 0.00 · none\""),
        "{currency}"
    );
    assert!(
        currency.contains("fillcolor=\"#d9d9d9\"") && !currency.contains("penwidth"),
        "{currency}"
    );
}

#[test]
fn dot_escapes_quotes_in_service_names() {
    let mut alert = common::alert();
    common::rename_service(&mut alert, "redis-cart", "redis \"cart\"");
    let dot = to_dot(&alert);
    assert!(
        dot.contains("  \"redis \\\"cart\\\"\" [label=\"#2 redis \\\"cart\\\"\\nevidence"),
        "{dot}"
    );
    assert!(
        dot.contains("\"redis \\\"cart\\\"\" -> \"cartservice\""),
        "{dot}"
    );
}

#[test]
fn html_draws_one_svg_node_per_graph_node() {
    let alert = common::alert();
    let html = to_html(&alert);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg xmlns=").count(), 1);
    assert_eq!(
        html.matches("<g class=\"node\">").count(),
        alert.graph.nodes.len()
    );
    // The self-loop is not drawn; every other edge is.
    assert_eq!(
        html.matches("<g class=\"edge\">").count(),
        alert.graph.edges.len() - 1
    );
    assert!(html.contains("marker-end=\"url(#arrow)\""));
    assert!(html.contains("MOST LIKELY CAUSE"));
}

#[test]
fn html_shows_the_ranking_chains_and_evidence() {
    let html = to_html(&common::alert());
    assert!(html.contains("<td>cartservice</td>"));
    assert!(html.contains("<p class=\"chain\">cartservice → checkoutservice → frontend</p>"));
    assert!(html.contains("new error template: Can&#39;t access cart storage."));
    assert!(html.contains("2024-05-01T12:00:00Z .. 2024-05-01T12:05:30Z (5m30s)"));
}

#[test]
fn html_escapes_markup_in_service_names() {
    let mut alert = common::alert();
    common::rename_service(&mut alert, "frontend", "<script>alert(1)</script>");
    let html = to_html(&alert);
    assert!(!html.contains("<script"), "raw script tag in the page");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[test]
fn html_references_nothing_outside_the_page() {
    let html = to_html(&common::alert());
    let external = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!external.contains("http://") && !external.contains("https://"));
    assert!(!external.contains("src=") && !external.contains("<link"));
}

#[test]
fn renderers_accept_an_alert_without_causes_or_graph() {
    let mut alert = common::alert();
    alert.root_causes.clear();
    alert.graph = Default::default();
    assert!(render_summary(&alert).contains("No root-cause candidates."));
    assert_eq!(to_dot(&alert).matches(" -> ").count(), 0);
    let html = to_html(&alert);
    assert!(html.contains("The causal graph is empty.") && !html.contains("<g class=\"node\">"));
}
