//! `dexar sessions` (the recorded sessions, newest first) and `dexar replay`
//! (what `dexar explain` writes, from a recorded turn, with no model).

use clap::Args;
use dexar_core::{Grid, StepTrace};
use dexar_session::{Outline, Session};
use std::path::{Path, PathBuf};

use crate::args::LayerArgs;
use crate::error::{CliError, CliResult};
use crate::explain::{prepare_out_dir, write_explanation, Explained, OutputArgs};
use crate::output::{ModelInfo, PromptInfo, Settings};

#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// The directory to list (default: <data dir>/dexar/sessions, where the
    /// REPL records).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A session file (`dexar sessions` lists the recorded ones).
    #[arg(value_name = "FILE")]
    pub session: PathBuf,
    /// The turn to explain, 1-based in file order (default: the last one
    /// with tokens).
    #[arg(long, value_name = "N")]
    pub turn: Option<usize>,
    #[command(flatten)]
    pub layers: LayerArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Opens a session for a subcommand: a damaged file is a usage error (exit
/// 2); a torn tail is a warning on standard error.
pub fn open_session(path: &Path) -> CliResult<Session> {
    let session = Session::open(path).map_err(|e| CliError::usage(e.to_string()))?;
    if let Some(w) = &session.warning {
        crate::stdio::warn(w);
    }
    Ok(session)
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// `2025-06-14 15:30` of an RFC 3339 time (as written, in its own zone).
fn short_date(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|_| rfc3339.chars().take(16).collect())
}

pub fn list(args: &SessionsArgs) -> CliResult<()> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => dexar_session::default_sessions_dir()
            .ok_or_else(|| CliError::usage("no data directory; give --dir DIR"))?,
    };
    if !dir.exists() && args.dir.is_none() {
        outln!(
            "no sessions recorded yet ({} does not exist)",
            dir.display()
        )?;
        return Ok(());
    }
    let found = dexar_session::list_sessions(&dir)
        .map_err(|e| CliError::usage(format!("--dir {}: cannot list it ({e})", dir.display())))?;
    if found.is_empty() {
        outln!("no sessions in {}", dir.display())?;
        return Ok(());
    }
    outln!(
        "{:<16}  {:<20}  {:<24}  {:>5}  {:>6}  {:>9}  file",
        "date",
        "model",
        "image",
        "turns",
        "tokens",
        "size"
    )?;
    for entry in found {
        match entry {
            Ok(o) => outln!("{}", outline_row(&o))?,
            Err(e) => crate::stdio::warn(&e.to_string()),
        }
    }
    Ok(())
}

fn outline_row(o: &Outline) -> String {
    let image = match o.images.as_slice() {
        [] => "-".to_string(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} (+{})", rest.len()),
    };
    let torn = if o.warning.is_some() {
        " (torn tail)"
    } else {
        ""
    };
    format!(
        "{:<16}  {:<20}  {:<24}  {:>5}  {:>6}  {:>9}  {}{torn}",
        short_date(&o.header.created),
        o.header.model.label,
        image,
        o.turns,
        o.tokens,
        human_size(o.bytes),
        o.path.display()
    )
}

pub fn replay(args: &ReplayArgs) -> CliResult<()> {
    let output = args.output.prepare()?;
    prepare_out_dir(&args.output.out)?;
    let session = open_session(&args.session)?;
    let turn = session
        .turn(args.turn)
        .map_err(|e| CliError::usage(format!("{}: {e}", args.session.display())))?;
    let record = &turn.record;
    if turn.steps.is_empty() {
        return Err(CliError::usage(format!(
            "turn {} has no tokens to explain ({})",
            record.turn,
            turn.stop_name()
        )));
    }
    let id = &session.header.model;
    let selection = args.layers.selection();
    let used = selection.layers(id.num_layers);
    let [first, end] = record.settings.traced_layers;
    if used.start < first || used.end > end {
        return Err(CliError::usage(format!(
            "--layer-index {}: layers {}-{} were not recorded (turn {} traced layers {first}-{})",
            args.layers.layer_index,
            used.start,
            used.end.saturating_sub(1),
            record.turn,
            end.saturating_sub(1)
        )));
    }
    let traces: Vec<StepTrace> = turn
        .steps
        .iter()
        .map(|t| selection.restrict(t, id.num_layers))
        .collect();
    let image = &session.conversations[turn.conversation].image;
    let view = dexar_session::image::enlarged(&image.model_view);
    let s = &record.settings;
    let answer = turn.answer();
    let explained = Explained {
        model: ModelInfo {
            path: id.path.clone(),
            model_type: id.model_type.clone(),
            text_model_type: id.text_model_type.clone(),
            num_layers: id.num_layers,
            num_heads: id.num_heads,
            grid: image.grid,
        },
        settings: Settings {
            mode: Settings::mode(record.target.is_some()),
            layer_index: args.layers.layer_index,
            layers_used: used.collect(),
            topk: output.topk,
            max_tokens: s.max_tokens,
            temperature: s.temperature,
            top_p: s.top_p,
            seed: s.seed,
            dtype: id.dtype.clone(),
            device: id.device.clone(),
            stop_reason: turn.stop_name(),
        },
        prompt: PromptInfo {
            text: record.prompt.clone(),
            input_ids: record.input_ids.clone(),
            image_span: record.image_span,
            image: image.label.clone(),
        },
        traces: &traces,
        answer: &answer,
        view: &view,
        grid: Grid::new(image.grid[0], image.grid[1]),
    };
    write_explanation(&explained, &output, &args.output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_dates_read_well() {
        assert_eq!(human_size(10), "10 B");
        assert_eq!(human_size(2048), "2.0 KB");
        assert_eq!(human_size(3 * 1024 * 1024), "3.0 MB");
        assert_eq!(short_date("2025-06-14T15:30:12+02:00"), "2025-06-14 15:30");
        assert_eq!(short_date("garbage"), "garbage");
    }
}
