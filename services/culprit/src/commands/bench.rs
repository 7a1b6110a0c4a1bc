//! placeholder until the sinks and simulator land
use crate::config::CulpritConfig;
#[derive(clap::Args)]
pub struct Args {}
pub fn run(_args: Args, _config: &CulpritConfig) -> anyhow::Result<()> { anyhow::bail!("not yet") }
