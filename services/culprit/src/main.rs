//! `culprit`: the command line. Thin on purpose: it parses arguments, loads configuration, sets
//! up logging and calls into the library crates, where the behaviour lives.
#![forbid(unsafe_code)]

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

// The pipeline allocates many short-lived strings and vectors per event; mimalloc serves them
// faster than the system allocator (docs/EVALUATION.md, Throughput). Without the feature, heap
// profilers that hook malloc see every allocation.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "culprit",
    version,
    about = "Multi-source root-cause analysis for OpenTelemetry data"
)]
struct Cli {
    /// TOML configuration file (see docs/CONFIGURATION.md); CULPRIT__SECTION__KEY environment
    /// variables override it.
    #[arg(long, global = true, env = "CULPRIT_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter for culprit's own diagnostics on stderr (tracing EnvFilter syntax).
    #[arg(long, global = true, env = "CULPRIT_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a labelled incident on a small simulated shop and show culprit's analysis of it.
    Demo(commands::demo::Args),
    /// Write a simulated incident as OTLP JSON files plus its label.
    Simulate(commands::simulate::Args),
    /// Run the pipeline over OTLP (JSON or protobuf) and change-event files in event-time order.
    Replay(commands::replay::Args),
    /// Convert a dataset to OTLP JSON files.
    #[command(subcommand)]
    Import(commands::import::Import),
    /// Score root-cause ranking on a labelled dataset.
    #[command(subcommand)]
    Eval(commands::eval::Eval),
    /// Train a per-source embedding model for the k-NN detector.
    Train(commands::train::Args),
    /// Measure pipeline throughput on simulated data.
    Bench(commands::bench::Args),
    /// Run one embedder service: consume a source's Kafka topic, detect, publish anomalies.
    Embedder(commands::serve::EmbedderArgs),
    /// Run the correlator service: consume anomalies, publish RCA alerts (and page).
    Correlator,
    /// Run every embedder and the correlator in one process.
    Serve(commands::serve::ServeArgs),
    /// Review stored RCA alerts with the LLM agent (`[llm]` settings); --dry-run writes the
    /// exact requests instead of sending them.
    Agent(commands::agent::Args),
    /// Print the effective configuration (defaults, file and environment merged) as TOML.
    Config,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = culprit_service::load(cli.config.as_deref())?;
    match cli.command {
        Command::Demo(args) => commands::demo::run(args, &config),
        Command::Simulate(args) => commands::simulate::run(args),
        Command::Replay(args) => commands::replay::run(args, &config),
        Command::Import(cmd) => commands::import::run(cmd),
        Command::Eval(cmd) => commands::eval::run(cmd, &config),
        Command::Bench(args) => commands::bench::run(args, &config),
        Command::Train(args) => commands::train::run(args),
        Command::Embedder(args) => commands::serve::embedder(args, &config),
        Command::Correlator => commands::serve::correlator(&config),
        Command::Serve(args) => commands::serve::serve(args, &config),
        Command::Agent(args) => commands::agent::run(args, &config),
        Command::Config => {
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
    }
}
