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

use clap::Args;
use dexar_render::term::Graphics;
use dexar_render::Colormap;
use dexar_session::{AppState, LoadedImage, Settings};
use reedline::{
    default_emacs_keybindings, ColumnarMenu, Emacs, FileBackedHistory, History, KeyCode,
    KeyModifiers, MenuBuilder, Reedline, ReedlineEvent, ReedlineMenu, Signal,
};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
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
}

pub fn run(args: &ReplArgs) -> CliResult<()> {
    args.sampling.validate()?;
    let topk = args.topk.validated()?;
    let size = args.graphics.size()?;
    let opts = args.model.load_options()?;
    let graphics = args.graphics.graphics()?;
    let plugins = args.plugins.load()?;
    let interactive = std::io::stdin().is_terminal();
    let paint = paint_for(graphics);
    let announce = interactive && args.model.model != dexar_model::ModelSpec::Bundled;
    if announce {
        eprint!("{}", paint.dim("loading the model… "));
    }
    let model = dexar_session::open_model(&args.model.model, &opts)?;
    if announce {
        eprintln!();
    }
    let image = match &args.image {
        Some(path) => LoadedImage::open(&model.ckpt, path)?,
        None => LoadedImage::bundled_default(&model.ckpt)?,
    };
    let s = &args.sampling;
    let settings = Settings {
        max_tokens: s.max_tokens,
        temperature: s.temperature,
        top_p: s.top_p,
        seed: s.seed,
        layers: args.layers.selection(),
        topk,
    };
    let mut state = AppState::new(model, image, settings, plugins);
    let (recorder, record_note) = args.record.recorder(&state.identity)?;
    state.set_recorder(recorder);
    let display = Display {
        graphics,
        size,
        colormap: Colormap::Inferno,
        alpha: 0.6,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let handler_flag = cancel.clone();
    // Ctrl-C while an answer streams (the terminal is not in raw mode then)
    // stops it; at the prompt, reedline reads Ctrl-C as a key instead.
    let ctrlc_note = ctrlc::set_handler(move || handler_flag.store(true, Ordering::SeqCst))
        .err()
        .map(|e| format!("Ctrl-C cannot stop answers ({e})"));
    let names = Arc::new(Mutex::new(Names::default()));
    let mut repl = Repl::new(state, display, paint, cancel, names.clone());
    let mut out = std::io::stdout();
    let _ = out.write_all(repl.banner().as_bytes());
    if let Some(note) = record_note {
        let _ = writeln!(out, "{}", paint.warning(&note));
    }
    if let Some(note) = ctrlc_note {
        let _ = writeln!(out, "{}", paint.warning(&note));
    }
    let _ = out.flush();
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
    let Some(path) = dirs::data_dir().map(|d| d.join("dexar").join("history.txt")) else {
        return (
            Box::new(FileBackedHistory::default()),
            Some("no data directory; history is kept for this session only".into()),
        );
    };
    match FileBackedHistory::with_file(1000, path.clone()) {
        Ok(h) => (Box::new(h), None),
        Err(e) => (
            Box::new(FileBackedHistory::default()),
            Some(format!(
                "cannot write {} ({e}); history is kept for this session only",
                path.display()
            )),
        ),
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
                    Err(_) => break,
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
                let _ = repl.handle(&pending, &mut out);
            }
            break;
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            let _ = writeln!(
                out,
                "{}",
                repl.paint.error("input line is not valid UTF-8; ignored")
            );
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
            Ok(Flow::Quit) | Err(_) => break,
        }
    }
    let _ = out.flush();
    Ok(())
}
