//! One module per subcommand: its arguments, and the call into the library crates.

pub mod agent;
pub mod bench;
pub mod demo;
pub mod eval;
pub mod import;
pub mod replay;
pub mod serve;
pub mod simulate;
pub mod train;
