//! Which service calls which, per environment.

use culprit_core::DependencyEdge;
use std::collections::{BTreeMap, BTreeSet};

/// Caller -> callees per environment. Ordered maps keep every traversal deterministic.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    callees: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl Topology {
    /// Records an edge; returns true when it was new.
    pub fn add(&mut self, edge: &DependencyEdge) -> bool {
        if edge.caller == edge.callee {
            return false;
        }
        self.callees
            .entry(edge.environment.clone())
            .or_default()
            .entry(edge.caller.clone())
            .or_default()
            .insert(edge.callee.clone())
    }

    pub fn callees<'a>(
        &'a self,
        environment: &str,
        caller: &str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.callees
            .get(environment)
            .and_then(|m| m.get(caller))
            .into_iter()
            .flat_map(|s| s.iter().map(String::as_str))
    }

    pub fn callers<'a>(
        &'a self,
        environment: &str,
        callee: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.callees
            .get(environment)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |(_, callees)| callees.contains(callee))
            .map(|(caller, _)| caller.as_str())
    }

    pub fn calls(&self, environment: &str, caller: &str, callee: &str) -> bool {
        self.callees
            .get(environment)
            .and_then(|m| m.get(caller))
            .is_some_and(|s| s.contains(callee))
    }

    pub fn edge_count(&self) -> usize {
        self.callees
            .values()
            .flat_map(|m| m.values())
            .map(BTreeSet::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(caller: &str, callee: &str) -> DependencyEdge {
        DependencyEdge {
            environment: "prod".into(),
            caller: caller.into(),
            callee: callee.into(),
        }
    }

    #[test]
    fn records_edges_once_and_answers_both_directions() {
        let mut t = Topology::default();
        assert!(t.add(&edge("frontend", "cart")));
        assert!(!t.add(&edge("frontend", "cart")));
        assert!(
            !t.add(&edge("cart", "cart")),
            "self calls are not dependencies"
        );
        t.add(&edge("checkout", "cart"));
        assert_eq!(
            t.callees("prod", "frontend").collect::<Vec<_>>(),
            vec!["cart"]
        );
        assert_eq!(
            t.callers("prod", "cart").collect::<Vec<_>>(),
            vec!["checkout", "frontend"]
        );
        assert!(
            t.callers("staging", "cart").next().is_none(),
            "environments are separate"
        );
        assert_eq!(t.edge_count(), 2);
    }
}
