//! `dexar`: see where a vision-language model looks while it talks.
//!
//! The binary: subcommands over dexar-model (models and traced generation),
//! dexar-core (DEX-AR and baseline strategies) and dexar-render (pictures).

mod bench;
mod bundled;
mod config;
mod error;
mod eval;
mod explain;
mod output;
mod repl;
mod strategies;
mod toy;

use clap::{Parser, Subcommand};

use error::{one_line, CliResult};

#[derive(Debug, Parser)]
#[command(
    name = "dexar",
    version,
    about = "See where a vision-language model looks while it talks (DEX-AR attribution)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: the interactive REPL.
    #[command(flatten)]
    repl: repl::ReplArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate (or teacher-force) an answer about an image and write per-token
    /// DEX-AR heatmaps as explain.json and PNG overlays.
    Explain(Box<explain::ExplainArgs>),
    /// Measure the per-token cost of exact DEX-AR: incremental vs the naive
    /// full-recompute path, in one run.
    Bench(bench::BenchArgs),
    /// Score attribution quality over a data set (pointing game, mIoU, AP,
    /// perturbation nPPL areas) for each strategy.
    Eval(Box<eval::EvalArgs>),
    /// The bundled demo model: train, export, check answers, write data.
    #[command(subcommand)]
    Toy(toy::ToyCommand),
}

fn run(cli: Cli) -> CliResult<()> {
    match cli.command {
        None => repl::run(&cli.repl),
        Some(Command::Explain(args)) => explain::run(&args),
        Some(Command::Bench(args)) => bench::run(&args),
        Some(Command::Eval(args)) => eval::run(&args),
        Some(Command::Toy(cmd)) => toy::run(&cmd),
    }
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DEXAR_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {}", one_line(&e.message));
        std::process::exit(e.code);
    }
}
