//! A deterministic layered layout of the causal graph, left to right from cause to symptom.
//!
//! Layers are longest paths along `from -> to` edges, so the rank-1 cause (where the depth-first
//! search that breaks cycles starts) sits in the first column and every symptom lies right of
//! what explains it. Edges spanning several layers are routed through the gaps between boxes,
//! and within a layer slots are ordered by the mean position of their predecessors to keep
//! crossings few (a simplified Sugiyama layout). Same input, same picture.

use culprit_core::CausalGraph;
use std::collections::{HashMap, HashSet};

pub(crate) const NODE_W: f64 = 210.0;
pub(crate) const NODE_H: f64 = 54.0;
const GAP_X: f64 = 90.0;
const GAP_Y: f64 = 46.0;
/// Vertical distance from a routed edge to its neighbours in a layer.
const DUMMY_GAP: f64 = 22.0;
/// Room around the drawing, including the caption above the rank-1 cause.
pub(crate) const MARGIN: f64 = 32.0;

pub(crate) struct Layout {
    /// One per distinct service, in `graph.nodes` order.
    pub nodes: Vec<PlacedNode>,
    /// Edges between two distinct placed services; others cannot be drawn and are left out.
    pub edges: Vec<PlacedEdge>,
    pub width: f64,
    pub height: f64,
}

pub(crate) struct PlacedNode {
    /// Index into `graph.nodes`.
    pub graph_index: usize,
    /// Top-left corner of the node's box.
    pub x: f64,
    pub y: f64,
}

pub(crate) struct PlacedEdge {
    /// Index into `graph.edges`.
    pub graph_index: usize,
    /// Position among the edges joining the same two nodes, and their number, so parallel
    /// edges (a dependency and a change between the same services) can be drawn apart.
    pub parallel_index: usize,
    pub parallel_count: usize,
    /// The polyline from source to target: it leaves the right side of the box in the lower
    /// layer, crosses each layer in between through a gap, and enters the left side of the box
    /// in the higher layer.
    pub points: Vec<(f64, f64)>,
}

pub(crate) fn layout(graph: &CausalGraph) -> Layout {
    // Duplicate service entries would draw two boxes for one service: the first one wins.
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut graph_index = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        if !index.contains_key(node.service.as_str()) {
            index.insert(node.service.as_str(), graph_index.len());
            graph_index.push(i);
        }
    }
    let n = graph_index.len();

    // Self-loops (same_service edges collapsed onto one node) carry no layout information.
    let edges: Vec<(usize, usize, usize)> = graph
        .edges
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let (from, to) = (*index.get(e.from.as_str())?, *index.get(e.to.as_str())?);
            (from != to).then_some((i, from, to))
        })
        .collect();
    let mut out_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(_, from, to) in &edges {
        out_edges[from].push(to);
    }

    // Ranked causes first, best first, then the rest in input order: the DFS roots.
    let mut roots: Vec<usize> = (0..n).collect();
    roots.sort_by_key(|&v| (graph.nodes[graph_index[v]].rank.unwrap_or(usize::MAX), v));
    let back = back_edges(&roots, &out_edges);

    let mut layer = longest_path_layers(n, &edges, &back);
    pull_sources_right(&mut layer, &edges, &back, roots.first().copied());
    let layer_count = layer.iter().copied().max().map_or(0, |m| m + 1);

    // Edges spanning several layers are routed through one dummy slot per layer they cross,
    // so they run between boxes instead of through them. Slots 0..n are the nodes. A back edge
    // always ends in a strictly lower layer (its target is a DFS ancestor), so it is routed
    // like a forward edge from its target and drawn the other way round.
    let mut slot_layer = layer.clone();
    let mut segments: Vec<(usize, usize)> = Vec::new();
    let mut dummies: Vec<Vec<usize>> = vec![Vec::new(); edges.len()];
    let ends = |from: usize, to: usize| {
        if back.contains(&(from, to)) {
            (to, from)
        } else {
            (from, to)
        }
    };
    for (k, &(_, from, to)) in edges.iter().enumerate() {
        let (lo, hi) = ends(from, to);
        let mut prev = lo;
        for l in layer[lo] + 1..layer[hi] {
            let dummy = slot_layer.len();
            slot_layer.push(l);
            segments.push((prev, dummy));
            dummies[k].push(dummy);
            prev = dummy;
        }
        segments.push((prev, hi));
    }

    let mut layers: Vec<Vec<usize>> = vec![Vec::new(); layer_count];
    for v in roots.iter().copied().chain(n..slot_layer.len()) {
        layers[slot_layer[v]].push(v);
    }
    order_by_barycenter(&mut layers, slot_layer.len(), &segments);

    // Each slot's top (for nodes) or centre line (for dummies), then every layer is centred
    // against the tallest.
    let mut slot_y = vec![0.0f64; slot_layer.len()];
    let mut layer_height = vec![0.0f64; layer_count];
    for (l, members) in layers.iter().enumerate() {
        let mut y = 0.0;
        for (i, &v) in members.iter().enumerate() {
            if i > 0 {
                let both_nodes = v < n && members[i - 1] < n;
                y += if both_nodes { GAP_Y } else { DUMMY_GAP };
            }
            slot_y[v] = y;
            y += if v < n { NODE_H } else { 0.0 };
        }
        layer_height[l] = y;
    }
    let tallest = layer_height.iter().copied().fold(0.0, f64::max);
    let column_x = |l: usize| MARGIN + l as f64 * (NODE_W + GAP_X);
    for (l, members) in layers.iter().enumerate() {
        let offset = MARGIN + (tallest - layer_height[l]) / 2.0;
        for &v in members {
            slot_y[v] += offset;
        }
    }

    let nodes: Vec<PlacedNode> = (0..n)
        .map(|v| PlacedNode {
            graph_index: graph_index[v],
            x: column_x(layer[v]),
            y: slot_y[v],
        })
        .collect();

    // Ports: where each edge meets the right side of its lower box and the left side of its
    // higher box, spread along the side in the order of where the edge heads, so arrowheads do
    // not pile up on one point and edges do not cross at the box.
    let centre = |v: usize| slot_y[v] + NODE_H / 2.0;
    let inner: Vec<Vec<(f64, f64)>> = dummies
        .iter()
        .map(|ds| {
            ds.iter()
                .flat_map(|&d| {
                    // Straight through the column, so the line never cuts a box's corner.
                    let x = column_x(slot_layer[d]);
                    [(x, slot_y[d]), (x + NODE_W, slot_y[d])]
                })
                .collect()
        })
        .collect();
    let mut right: Vec<Vec<(f64, usize)>> = vec![Vec::new(); n];
    let mut left: Vec<Vec<(f64, usize)>> = vec![Vec::new(); n];
    for (k, &(_, from, to)) in edges.iter().enumerate() {
        let (lo, hi) = ends(from, to);
        right[lo].push((inner[k].first().map_or(centre(hi), |p| p.1), k));
        left[hi].push((inner[k].last().map_or(centre(lo), |p| p.1), k));
    }
    let mut lo_y = vec![0.0f64; edges.len()];
    let mut hi_y = vec![0.0f64; edges.len()];
    for v in 0..n {
        for (ports, ys) in [(&mut right[v], &mut lo_y), (&mut left[v], &mut hi_y)] {
            ports.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let m = ports.len() as f64;
            for (i, &(_, k)) in ports.iter().enumerate() {
                ys[k] = slot_y[v] + NODE_H * (i as f64 + 1.0) / (m + 1.0);
            }
        }
    }

    let mut pair_count: HashMap<(usize, usize), usize> = HashMap::new();
    for &(_, from, to) in &edges {
        *pair_count.entry((from, to)).or_default() += 1;
    }
    let mut pair_seen: HashMap<(usize, usize), usize> = HashMap::new();
    let placed_edges: Vec<PlacedEdge> = edges
        .iter()
        .enumerate()
        .map(|(k, &(graph_index, from, to))| {
            let (lo, hi) = ends(from, to);
            let mut points = vec![(column_x(layer[lo]) + NODE_W, lo_y[k])];
            points.extend(inner[k].iter().copied());
            points.push((column_x(layer[hi]), hi_y[k]));
            if lo != from {
                points.reverse();
            }
            let seen = pair_seen.entry((from, to)).or_default();
            let parallel_index = *seen;
            *seen += 1;
            PlacedEdge {
                graph_index,
                parallel_index,
                parallel_count: pair_count.get(&(from, to)).copied().unwrap_or(1),
                points,
            }
        })
        .collect();

    let width =
        2.0 * MARGIN + layer_count as f64 * NODE_W + layer_count.saturating_sub(1) as f64 * GAP_X;
    let height = 2.0 * MARGIN + tallest;
    Layout {
        nodes,
        edges: placed_edges,
        width,
        height,
    }
}

/// Edges closing a cycle, found by an iterative depth-first search from `roots` in order.
/// Returned as a set of (from, to) pairs.
fn back_edges(roots: &[usize], out_edges: &[Vec<usize>]) -> HashSet<(usize, usize)> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        New,
        Open,
        Done,
    }
    let mut state = vec![State::New; out_edges.len()];
    let mut back = HashSet::new();
    for &root in roots {
        if state[root] != State::New {
            continue;
        }
        state[root] = State::Open;
        let mut stack = vec![(root, 0usize)];
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if let Some(&w) = out_edges[v].get(*next) {
                *next += 1;
                match state[w] {
                    State::New => {
                        state[w] = State::Open;
                        stack.push((w, 0));
                    }
                    State::Open => {
                        back.insert((v, w));
                    }
                    State::Done => {}
                }
            } else {
                state[v] = State::Done;
                stack.pop();
            }
        }
    }
    back
}

/// Layer of each node: 0 for nodes nothing (acyclic) points at, else one past its deepest
/// predecessor. Kahn's algorithm over the graph without its back edges.
fn longest_path_layers(
    n: usize,
    edges: &[(usize, usize, usize)],
    back: &HashSet<(usize, usize)>,
) -> Vec<usize> {
    let forward: Vec<(usize, usize)> = edges
        .iter()
        .map(|&(_, f, t)| (f, t))
        .filter(|e| !back.contains(e))
        .collect();
    let mut indegree = vec![0usize; n];
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(f, t) in &forward {
        indegree[t] += 1;
        succ[f].push(t);
    }
    let mut layer = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&v| indegree[v] == 0).collect();
    while let Some(v) = ready.pop() {
        for &w in &succ[v] {
            layer[w] = layer[w].max(layer[v] + 1);
            indegree[w] -= 1;
            if indegree[w] == 0 {
                ready.push(w);
            }
        }
    }
    layer
}

/// Moves nodes nothing points at (other than the rank-1 cause, which anchors the first
/// column) to just left of their nearest successor, so an unrelated upstream service sits next
/// to what it feeds instead of far away in column 0.
fn pull_sources_right(
    layer: &mut [usize],
    edges: &[(usize, usize, usize)],
    back: &HashSet<(usize, usize)>,
    anchor: Option<usize>,
) {
    let forward = || {
        edges
            .iter()
            .map(|&(_, f, t)| (f, t))
            .filter(|e| !back.contains(e))
    };
    let mut has_pred = vec![false; layer.len()];
    for (_, t) in forward() {
        has_pred[t] = true;
    }
    let mut nearest: Vec<Option<usize>> = vec![None; layer.len()];
    for (f, t) in forward() {
        nearest[f] = Some(nearest[f].map_or(layer[t], |l| l.min(layer[t])));
    }
    for v in 0..layer.len() {
        if let (false, Some(succ)) = (has_pred[v] || Some(v) == anchor, nearest[v]) {
            layer[v] = succ.saturating_sub(1);
        }
    }
}

/// Two left-to-right sweeps sorting each layer by the mean centred position of its
/// predecessors along `segments`; slots without one keep their place. Stable sorts keep ties
/// deterministic.
fn order_by_barycenter(layers: &mut [Vec<usize>], slots: usize, segments: &[(usize, usize)]) {
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); slots];
    for &(f, t) in segments {
        preds[t].push(f);
    }
    let mut pos = vec![0.0f64; slots];
    let mut key = vec![0.0f64; slots];
    let centre = |layer: &[usize], pos: &mut [f64]| {
        let mid = (layer.len() as f64 - 1.0) / 2.0;
        for (i, &v) in layer.iter().enumerate() {
            pos[v] = i as f64 - mid;
        }
    };
    for _ in 0..2 {
        for (l, layer) in layers.iter_mut().enumerate() {
            if l > 0 {
                let mid = (layer.len() as f64 - 1.0) / 2.0;
                for (i, &v) in layer.iter().enumerate() {
                    key[v] = if preds[v].is_empty() {
                        i as f64 - mid
                    } else {
                        preds[v].iter().map(|&p| pos[p]).sum::<f64>() / preds[v].len() as f64
                    };
                }
                layer.sort_by(|&a, &b| key[a].total_cmp(&key[b]));
            }
            centre(layer, &mut pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use culprit_core::{EdgeKind, GraphEdge, GraphNode};

    fn graph(nodes: &[(&str, Option<usize>)], edges: &[(&str, &str)]) -> CausalGraph {
        CausalGraph {
            nodes: nodes
                .iter()
                .map(|&(s, rank)| GraphNode {
                    service: s.into(),
                    evidence_score: 0.5,
                    severity: None,
                    rank,
                })
                .collect(),
            edges: edges
                .iter()
                .map(|&(f, t)| GraphEdge {
                    from: f.into(),
                    to: t.into(),
                    kind: EdgeKind::Dependency,
                    weight: 1.0,
                })
                .collect(),
        }
    }

    /// The column a service is drawn in, counted from the left.
    fn layer_of(l: &Layout, g: &CausalGraph, service: &str) -> Option<usize> {
        let node = l
            .nodes
            .iter()
            .find(|n| g.nodes[n.graph_index].service == service)?;
        Some(((node.x - MARGIN) / (NODE_W + GAP_X)).round() as usize)
    }

    #[test]
    fn layers_follow_longest_path_from_the_rank_one_cause() {
        let g = graph(
            &[("frontend", None), ("cart", None), ("redis", Some(1))],
            &[
                ("redis", "cart"),
                ("cart", "frontend"),
                ("redis", "frontend"),
            ],
        );
        let l = layout(&g);
        assert_eq!(layer_of(&l, &g, "redis"), Some(0));
        assert_eq!(layer_of(&l, &g, "cart"), Some(1));
        assert_eq!(layer_of(&l, &g, "frontend"), Some(2));
    }

    #[test]
    fn cycles_are_broken_at_the_edge_back_into_the_cause() {
        let g = graph(
            &[("a", None), ("b", Some(1))],
            &[("a", "b"), ("b", "a"), ("a", "a")],
        );
        let l = layout(&g);
        assert_eq!(layer_of(&l, &g, "b"), Some(0));
        assert_eq!(layer_of(&l, &g, "a"), Some(1));
        assert_eq!(l.edges.len(), 2, "the self-loop is not drawn");
    }

    #[test]
    fn nodes_do_not_overlap_and_fit_the_canvas() {
        let g = graph(
            &[
                ("r", Some(1)),
                ("a", None),
                ("b", None),
                ("c", None),
                ("d", None),
                ("e", None),
            ],
            &[
                ("r", "a"),
                ("r", "b"),
                ("r", "c"),
                ("a", "d"),
                ("c", "e"),
                ("x", "r"),
            ],
        );
        let l = layout(&g);
        assert_eq!(l.nodes.len(), 6);
        assert_eq!(
            l.edges.len(),
            5,
            "the edge from an unknown service is left out"
        );
        for (i, a) in l.nodes.iter().enumerate() {
            assert!(
                a.x >= 0.0 && a.x + NODE_W <= l.width && a.y >= 0.0 && a.y + NODE_H <= l.height
            );
            for b in &l.nodes[i + 1..] {
                let apart = (a.x - b.x).abs() >= NODE_W || (a.y - b.y).abs() >= NODE_H;
                assert!(
                    apart,
                    "nodes {} and {} overlap",
                    a.graph_index, b.graph_index
                );
            }
        }
    }

    #[test]
    fn long_and_backward_edges_run_between_boxes() {
        let g = graph(
            &[
                ("r", Some(1)),
                ("a", None),
                ("b", None),
                ("c", None),
                ("side", None),
            ],
            &[
                ("r", "a"),
                ("a", "b"),
                ("b", "c"),
                ("r", "c"),
                ("c", "r"),
                ("side", "b"),
            ],
        );
        let l = layout(&g);
        assert_eq!(
            layer_of(&l, &g, "side"),
            Some(1),
            "a lone source sits next to what it feeds"
        );
        for e in &l.edges {
            assert!(e.points.len() >= 2);
            for &(x, y) in &e.points[1..e.points.len() - 1] {
                let inside = l
                    .nodes
                    .iter()
                    .any(|n| x > n.x && x < n.x + NODE_W && y > n.y && y < n.y + NODE_H);
                assert!(
                    !inside,
                    "edge {} passes through a box at ({x}, {y})",
                    e.graph_index
                );
            }
        }
        // The back edge c -> r ends on r's right side, drawn right to left.
        let back = l
            .edges
            .iter()
            .find(|e| e.graph_index == 4)
            .map(|e| e.points.clone())
            .unwrap_or_default();
        let r = &l.nodes[0];
        assert_eq!(back.last().map(|p| p.0), Some(r.x + NODE_W));
        assert_eq!(back.len(), 2 + 2 * 2, "two layers crossed, two points each");
    }

    #[test]
    fn same_graph_gives_the_same_layout() {
        let g = graph(
            &[("r", Some(1)), ("a", None), ("b", None)],
            &[("r", "a"), ("r", "b"), ("a", "b")],
        );
        let (x, y) = (layout(&g), layout(&g));
        let coords = |l: &Layout| l.nodes.iter().map(|n| (n.x, n.y)).collect::<Vec<_>>();
        assert_eq!(coords(&x), coords(&y));
    }
}
