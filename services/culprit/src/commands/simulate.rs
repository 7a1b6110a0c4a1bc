//! placeholder until the sinks and simulator land
#[derive(clap::Args)]
pub struct Args {}
pub fn run(_args: Args) -> anyhow::Result<()> { anyhow::bail!("not yet") }
