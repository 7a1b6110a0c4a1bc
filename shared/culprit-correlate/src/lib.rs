//! Correlation: anomalies from every source become incidents, and each incident gets a ranked
//! list of root-cause services with the chain of symptoms they explain.
//!
//! - [`topology`]: the service dependency graph, learned online from trace parent/child spans
//!   (and optionally seeded from a static edge list);
//! - [`incident`]: event-time grouping of anomalies per environment into incidents;
//! - [`rank`]: the causal graph (petgraph), personalised PageRank over it fused with per-service
//!   evidence, the chain and the explanation.
//!
//! Invariant: ranking is a pure function of an incident's anomalies and the topology; nothing in
//! this crate does I/O or reads the wall clock.
#![forbid(unsafe_code)]

pub mod incident;
pub mod rank;
pub mod topology;

pub use incident::{CorrelateConfig, Correlator};
pub use rank::{rank, RankConfig, Ranking};
pub use topology::Topology;
