//! Assembles culprit from its configuration, the same stages wired two ways:
//!
//! - [`services::run`]: the Kafka services (`embedder`, `correlator`, `serve`): each role
//!   consumes its topic through `culprit-kafka`, beside the operations API, readiness checks,
//!   metrics export, the vector store, the alert fan-out and the optional LLM reviewer.
//! - [`embedded`]: the same pipeline over files in one process, alerts to files and stdout.
//!
//! The binary only parses arguments, sets up logging and calls in here (the mini-redis shape:
//! a thin `main`, the server in a library).
#![forbid(unsafe_code)]

pub mod agent;
mod baseline_view;
pub mod bench;
pub mod config;
pub mod demo;
pub mod embedded;
pub mod services;
pub mod train;

pub use config::{load, CulpritConfig, OutputConfig};
pub use services::Role;
