//! One module per subcommand.

pub mod agent;
pub mod baseline_view;
pub mod bench;
pub mod demo;
pub mod eval;
pub mod import;
pub mod replay;
pub mod serve;
pub mod simulate;
pub mod store_sink;
pub mod train;
