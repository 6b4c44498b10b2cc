//! The interactive REPL that `dexar` opens with no subcommand: chat with a
//! vision-language model about an image, watch its answer stream token by
//! token (coloured by DEX-AR token weight), and expand any token into a
//! heatmap printed inline.
//!
//! Layout: the state (model, image, conversation, traces, the maps a
//! selection shows) is `dexar-session`'s [`AppState`]; here [`commands`]
//! parses lines, [`show`] and [`paint`] draw, [`complete`] helps the line
//! editor, and [`dispatch`] ties a line to its effect. This module starts it
//! all and runs the loop: reedline on a terminal, plain lines from a pipe.

mod commands;
mod complete;
mod dispatch;
mod paint;
mod show;

pub use paint::token_rgb;
pub use show::{number, window_cell_pixels};

use clap::Args;
use dexar_render::term::{CellSize, Graphics, Terminal};
use dexar_session::{AppState, LoadedImage, Settings, TraceLayers};
use reedline::{
    default_emacs_keybindings, ColumnarMenu, Emacs, FileBackedHistory, History, KeyCode,
    KeyModifiers, MenuBuilder, Reedline, ReedlineEvent, ReedlineMenu, Signal,
};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::args::{
    GraphicsArgs, LayerArgs, ModelArgs, PluginArgs, RecordArgs, SamplingArgs, TopkArgs,
};
use crate::error::{CliError, CliResult};
use complete::{
    ContinuationValidator, Names, ReplCompleter, ReplHighlighter, ReplHinter, ReplPrompt,
};
use dispatch::{Flow, Repl};
use paint::Paint;
use show::Display;

/// Options of the REPL, which `dexar` runs when no subcommand is given.
#[derive(Debug, Args)]
#[command(next_help_heading = "The interactive REPL (dexar with no command)")]
pub struct ReplArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image to open; default: a bundled sample.
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub graphics: GraphicsArgs,
    #[command(flatten)]
    pub plugins: PluginArgs,
    #[command(flatten)]
    pub layers: LayerArgs,
    #[command(flatten)]
    pub topk: TopkArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub record: RecordArgs,
    /// Which decoder layers each answer traces: all (`/layers` then changes
    /// the maps at once), range (only the --layer-index layers: cheaper;
    /// other layers need the answer traced again) or auto (all for models of
    /// at most 256 layer-heads, layers x heads; range above, as for 7B
    /// models). See docs/bench.md for the cost.
    #[arg(long, value_name = "auto|range|all", default_value = "auto")]
    pub trace_layers: TraceLayers,
}

/// The state both front ends start from, and how to draw for this terminal.
pub struct Opened {
    pub state: AppState,
    pub terminal: Terminal,
    pub size: Option<CellSize>,
    /// Why the conversation is not recorded, when recording was asked for
    /// and cannot be done.
    pub record_note: Option<String>,
}

impl ReplArgs {
    /// Checks the options, asks the terminal what it draws (before anything
    /// reads stdin), loads plugins, the model and the image, and starts
    /// recording (to `record_to`, else to the sessions directory) unless
    /// `--no-record`.
    pub fn open(&self, record_to: Option<&Path>) -> CliResult<Opened> {
        self.sampling.validate()?;
        let topk = self.topk.validated()?;
        let size = self.graphics.size()?;
        let opts = self.model.load_options()?;
        let terminal = self.graphics.terminal()?;
        let plugins = self.plugins.load()?;
        let announce =
            std::io::stdin().is_terminal() && self.model.model != dexar_model::ModelSpec::Bundled;
        if announce {
            let mut err = std::io::stderr();
            let paint = paint_for(terminal.graphics);
            let _ = write!(err, "{}", paint.dim("loading the model… "));
            let _ = err.flush();
        }
        let model = dexar_session::open_model(&self.model.model, &opts)?;
        if announce {
            crate::stdio::err_line("");
        }
        let image = match &self.image {
            Some(path) => LoadedImage::open(&model.ckpt, path)?,
            None => LoadedImage::bundled_default(&model.ckpt)?,
        };
        let s = &self.sampling;
        let settings = Settings {
            max_tokens: s.max_tokens,
            temperature: s.temperature,
            top_p: s.top_p,
            seed: s.seed,
            layers: self.layers.selection(),
            topk,
            region: Default::default(),
            trace_layers: self.trace_layers,
        };
        let mut state = AppState::new(model, image, settings, plugins);
        let (recorder, record_note) = self.record.recorder(record_to, &state.identity)?;
        state.set_recorder(recorder);
        Ok(Opened {
            state,
            terminal,
            size,
            record_note,
        })
    }
}

/// The REPL; `record_to` names a new session file to record into.
pub fn run(args: &ReplArgs, record_to: Option<&Path>) -> CliResult<()> {
    let Opened {
        state,
        terminal,
        record_note,
        size,
    } = args.open(record_to)?;
    let interactive = std::io::stdin().is_terminal();
    let paint = paint_for(terminal.graphics);
    let display = Display::new(terminal, size);
    let cancel = Arc::new(AtomicBool::new(false));
    let handler_flag = cancel.clone();
    // Ctrl-C while an answer streams (the terminal is not in raw mode then)
    // stops it; at the prompt, reedline reads Ctrl-C as a key instead.
    let ctrlc_note = ctrlc::set_handler(move || handler_flag.store(true, Ordering::SeqCst))
        .err()
        .map(|e| format!("Ctrl-C cannot stop answers ({e})"));
    let names = Arc::new(Mutex::new(Names::default()));
    let mut repl = Repl::new(state, display, paint, cancel, names.clone());
    let clamped = args.layers.selection().clamp_note(repl.state.num_layers());
    let mut out = std::io::stdout();
    let greeting = (|| {
        out.write_all(repl.banner().as_bytes())?;
        for note in [record_note, ctrlc_note, clamped].into_iter().flatten() {
            writeln!(out, "{}", paint.warning(&note))?;
        }
        out.flush()
    })();
    greeting.map_err(crate::stdio::output_error)?;
    if interactive {
        interactive_loop(&mut repl, names, paint.colour)
    } else {
        piped_loop(&mut repl)
    }
}

/// Colour on a terminal unless `NO_COLOR` or `TERM=dumb`; 24-bit where the
/// terminal says so or its graphics mode implies it.
fn paint_for(graphics: Graphics) -> Paint {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let colour = std::io::stdout().is_terminal()
        && var("NO_COLOR").is_none()
        && var("TERM").as_deref() != Some("dumb");
    let colorterm = var("COLORTERM").unwrap_or_default().to_ascii_lowercase();
    let truecolor = matches!(colorterm.as_str(), "truecolor" | "24bit")
        || matches!(
            graphics,
            Graphics::Truecolor | Graphics::Kitty | Graphics::Iterm
        );
    Paint { colour, truecolor }
}

/// History under the user's data directory, or in memory with a note why.
fn history() -> (Box<dyn History>, Option<String>) {
    match dirs::data_dir() {
        Some(dir) => history_at(&dir.join("dexar").join("history.txt")),
        None => (
            Box::new(FileBackedHistory::default()),
            Some("no data directory; history is kept for this session only".into()),
        ),
    }
}

/// History kept in `path`, or in memory with a note why not.
fn history_at(path: &std::path::Path) -> (Box<dyn History>, Option<String>) {
    let in_memory = |why: String| -> (Box<dyn History>, Option<String>) {
        (
            Box::new(FileBackedHistory::default()),
            Some(format!("{why}; history is kept for this session only")),
        )
    };
    // reedline would block forever opening a FIFO there.
    match dexar_core::check_regular(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return in_memory(format!("cannot use {} ({e})", path.display()))
        }
        _ => {}
    }
    match FileBackedHistory::with_file(1000, path.to_path_buf()) {
        Ok(h) => (Box::new(h), None),
        Err(e) => in_memory(format!("cannot write {} ({e})", path.display())),
    }
}

#[cfg(all(test, unix))]
mod history_tests {
    use super::*;

    #[test]
    fn a_history_file_that_is_no_regular_file_is_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("history.txt");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Opening it would block this test forever.
        let (_, note) = history_at(&fifo);
        let note = note.unwrap();
        assert!(
            note.contains("is a FIFO") && note.contains("this session only"),
            "{note}"
        );
        let (_, note) = history_at(&dir.path().join("new.txt"));
        assert_eq!(note, None);
    }
}

fn interactive_loop(repl: &mut Repl, names: complete::SharedNames, colour: bool) -> CliResult<()> {
    let (history, note) = history();
    let mut out = std::io::stdout();
    if let Some(note) = note {
        let _ = writeln!(out, "{}", repl.paint.dim(&note));
    }
    let mut keys = default_emacs_keybindings();
    keys.add_binding(
        KeyModifiers::NONE,
        KeyCode::Tab,
        ReedlineEvent::UntilFound(vec![
            ReedlineEvent::Menu("completion_menu".to_string()),
            ReedlineEvent::MenuNext,
        ]),
    );
    let menu = ColumnarMenu::default().with_name("completion_menu");
    let mut editor = Reedline::create()
        .with_history(history)
        .with_completer(Box::new(ReplCompleter { names }))
        .with_menu(ReedlineMenu::EngineCompleter(Box::new(menu)))
        .with_quick_completions(true)
        .with_partial_completions(true)
        .with_edit_mode(Box::new(Emacs::new(keys)))
        .with_hinter(Box::new(ReplHinter::new(colour)))
        .with_highlighter(Box::new(ReplHighlighter))
        .with_validator(Box::new(ContinuationValidator))
        .with_ansi_colors(colour)
        .use_bracketed_paste(true);
    let mut failures = 0;
    let mut history_warned = false;
    loop {
        match editor.read_line(&ReplPrompt) {
            Ok(Signal::Success(line)) => {
                failures = 0;
                match repl.handle(&line, &mut out) {
                    Ok(Flow::Quit) => break,
                    Ok(Flow::Continue) => {}
                    // stdout is gone (a closed terminal): nothing left to talk to.
                    Err(e) => return Err(crate::stdio::output_error(e)),
                }
            }
            // Ctrl-C at the prompt: reedline has cleared the line.
            Ok(Signal::CtrlC) => failures = 0,
            Ok(Signal::CtrlD) => break,
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                let _ = writeln!(
                    out,
                    "{}",
                    repl.paint.error(&format!("cannot read input ({e})"))
                );
                if failures >= 3 {
                    return Err(CliError::internal(format!(
                        "cannot read the terminal ({e})"
                    )));
                }
            }
        }
        if let Some(e) = editor.take_history_save_error() {
            if !history_warned {
                let msg = format!("history not saved ({e}); it is kept for this session only");
                let _ = writeln!(out, "{}", repl.paint.warning(&msg));
                history_warned = true;
            }
        }
    }
    let _ = out.flush();
    Ok(())
}

/// Standard input that is not a terminal: one input per line (a trailing
/// backslash continues it), the same commands, no line editor.
fn piped_loop(repl: &mut Repl) -> CliResult<()> {
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    let mut out = std::io::stdout();
    let mut pending = String::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| CliError::internal(format!("cannot read standard input ({e})")))?;
        if n == 0 {
            if !pending.is_empty() {
                repl.handle(&pending, &mut out)
                    .map_err(crate::stdio::output_error)?;
            }
            break;
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            let note = repl.paint.error("input line is not valid UTF-8; ignored");
            writeln!(out, "{note}").map_err(crate::stdio::output_error)?;
            continue;
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if line.ends_with('\\') {
            pending.push_str(line);
            pending.push('\n');
            continue;
        }
        pending.push_str(line);
        let input = std::mem::take(&mut pending);
        match repl.handle(&input, &mut out) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => break,
            Err(e) => return Err(crate::stdio::output_error(e)),
        }
    }
    out.flush().map_err(crate::stdio::output_error)
}
