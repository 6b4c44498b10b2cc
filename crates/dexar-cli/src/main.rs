//! `dexar`: see where a vision-language model looks while it talks.
//!
//! The binary, kept thin: the REPL, the TUI and the subcommands over dexar-session
//! (the app state), dexar-model (models and traced generation), dexar-core
//! (DEX-AR and baseline strategies) and dexar-render (pictures).

#[macro_use]
mod stdio;
mod args;
mod bench;
mod config;
mod error;
mod eval;
mod explain;
mod explain_files;
mod export;
mod output;
mod probe_report;
mod progress;
mod repl;
mod sessions;
mod strategies;
mod toy;
mod tui;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

use error::{one_line, CliResult};

#[derive(Debug, Parser)]
#[command(
    name = "dexar",
    version,
    about = "See where a vision-language model looks while it talks (DEX-AR attribution)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: the interactive REPL.
    #[command(flatten)]
    repl: repl::ReplArgs,
    /// Record to this session file instead (a new file).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "no_record",
        help_heading = "The interactive REPL (dexar with no command)"
    )]
    session: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate (or teacher-force) an answer about an image and write per-token
    /// DEX-AR heatmaps as explain.json and PNG overlays.
    Explain(Box<explain::ExplainArgs>),
    /// Measure the per-token cost of exact DEX-AR: incremental vs the naive
    /// full-recompute path, in one run.
    Bench(Box<bench::BenchArgs>),
    /// Score attribution quality over a data set (pointing game, mIoU, AP,
    /// perturbation nPPL areas) for each strategy.
    Eval(Box<eval::EvalArgs>),
    /// The conversation full-screen: explore an answer token by token, layer
    /// by layer, head by head (same options as the REPL).
    Tui(Box<tui::TuiArgs>),
    /// List the recorded sessions, newest first: date, model, image, turns,
    /// tokens, size.
    Sessions(sessions::SessionsArgs),
    /// Explain a recorded turn again, with no model: explain.json and PNG
    /// overlays as `dexar explain` writes them, for any strategy or plugin.
    Replay(Box<sessions::ReplayArgs>),
    /// Write a recorded session as one self-contained HTML page.
    Export(Box<export::ExportArgs>),
    /// The bundled demo model: train, export, check answers, write data.
    #[command(subcommand)]
    Toy(toy::ToyCommand),
}

fn run(cli: Cli) -> CliResult<()> {
    match cli.command {
        None => repl::run(&cli.repl, cli.session.as_deref()),
        Some(Command::Explain(args)) => explain::run(&args),
        Some(Command::Bench(args)) => bench::run(&args),
        Some(Command::Eval(args)) => eval::run(&args),
        Some(Command::Sessions(args)) => sessions::list(&args),
        Some(Command::Replay(args)) => sessions::replay(&args),
        Some(Command::Export(args)) => export::run(&args),
        Some(Command::Toy(cmd)) => toy::run(&cmd),
        Some(Command::Tui(args)) => tui::run(&args),
    }
}

/// A command-line mistake on one line: clap's message and its tips.
fn usage_error(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut parts: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(first) = line.strip_prefix("error: ") {
            parts.push(first.to_string());
        } else if line.starts_with("tip:") {
            parts.push(line.to_string());
        }
    }
    parts.push("see --help".into());
    one_line(&parts.join("; "))
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DEXAR_LOG"))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let shown = e
                    .print()
                    .and_then(|()| std::io::Write::flush(&mut std::io::stdout()));
                exit(shown.map(|()| e.exit_code()).map_err(stdio::output_error))
            }
            _ => {
                stdio::err_line(&format!("error: {}", usage_error(&e)));
                std::process::exit(2);
            }
        },
    };
    exit(run(cli).and_then(|()| stdio::flush_out()).map(|()| 0))
}

/// Ends the program: with the code, or with the error's message and code.
fn exit(result: CliResult<i32>) -> ! {
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            if !e.is_quiet() {
                stdio::err_line(&format!("error: {}", one_line(&e.message)));
            }
            std::process::exit(e.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_mistakes_are_one_line() {
        let e = Cli::try_parse_from(["dexar", "--modle", "x"]).unwrap_err();
        let msg = usage_error(&e);
        assert!(
            msg.contains("--modle") && msg.ends_with("see --help"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        let e = Cli::try_parse_from(["dexar", "--model", "x", "explain"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{e}");
        let e = Cli::try_parse_from(["dexar", "explain", "--layer-index", "x"]).unwrap_err();
        assert!(usage_error(&e).contains("--layer-index"), "{e}");
    }

    #[test]
    fn every_subcommand_takes_the_same_model_and_layer_options() {
        for args in [
            vec!["dexar"],
            vec!["dexar", "explain", "--prompt", "p", "--out", "o"],
            vec!["dexar", "eval", "--data", "toy:1"],
            vec!["dexar", "bench"],
            vec!["dexar", "tui"],
        ] {
            let mut with = args.clone();
            with.extend(["--model", "llava-hf/llava-1.5-7b-hf", "--layer-index", "-2"]);
            assert!(Cli::try_parse_from(&with).is_ok(), "{with:?}");
        }
        let cli = Cli::try_parse_from(["dexar", "toy", "accuracy", "--model", "toy"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Toy(_))));
        let cli = Cli::try_parse_from(["dexar", "bench"]).unwrap();
        let Some(Command::Bench(b)) = cli.command else {
            panic!("bench")
        };
        assert_eq!(
            b.layers.layer_index,
            dexar_core::LayerSelection::DEFAULT_INDEX
        );
        assert_eq!(b.model.model, dexar_model::ModelSpec::Bundled);
    }
}
