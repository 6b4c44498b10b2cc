//! The interactive REPL that `dexar` opens with no subcommand: chat with a
//! vision-language model about an image, watch its answer stream token by
//! token (coloured by DEX-AR token weight), and expand any token into a
//! heatmap printed inline.
//!
//! Layout: [`commands`] parses lines, [`session`] holds the state and
//! computes maps, [`worker`] generates on a thread, [`show`] and [`paint`]
//! draw, [`complete`] helps the line editor, [`hf`] finds models, and
//! [`dispatch`] ties a line to its effect. This module starts it all and
//! runs the loop: reedline on a terminal, plain lines from a pipe.

mod commands;
mod complete;
mod dispatch;
mod hf;
mod paint;
mod session;
mod show;
mod worker;

use clap::Args;
use dexar_model::{Checkpoint, LoadOptions};
use dexar_render::term::{detect_terminal, CellSize, Graphics};
use dexar_render::Colormap;
use reedline::{
    default_emacs_keybindings, ColumnarMenu, Emacs, FileBackedHistory, History, KeyCode,
    KeyModifiers, MenuBuilder, Reedline, ReedlineEvent, ReedlineMenu, Signal,
};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{CliError, CliResult};
use crate::explain::{parse_device, parse_dtype};
use complete::{
    ContinuationValidator, Names, ReplCompleter, ReplHighlighter, ReplHinter, ReplPrompt,
};
use dispatch::{Flow, Repl};
use paint::Paint;
use session::{Session, Settings};
use show::Display;

/// Options of the REPL, which `dexar` runs when no subcommand is given.
#[derive(Debug, Args)]
#[command(next_help_heading = "The interactive REPL (dexar with no command)")]
pub struct ReplArgs {
    /// Checkpoint directory (llava-hf layout) or Hugging Face id found in the
    /// local Hugging Face cache; default: the bundled model.
    #[arg(long, value_name = "DIR|HF-ID")]
    pub model: Option<String>,
    /// Image to open; default: a bundled sample.
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
    /// Inline pictures: auto (probe the terminal), kitty, sixel, iterm,
    /// blocks (24-bit half-blocks), blocks256 or ascii. Default: DEXAR_GRAPHICS,
    /// else the config file's `graphics`, else auto.
    #[arg(long, value_name = "MODE")]
    pub graphics: Option<String>,
    /// Largest picture in character cells, e.g. 60x30 (default: the terminal's size).
    #[arg(long, value_name = "COLSxROWS")]
    pub size: Option<String>,
    /// Load an attribution plugin (a shared library; repeatable).
    #[arg(long = "plugin", value_name = "PATH")]
    pub plugins: Vec<PathBuf>,
    /// Load plugins even if their file or directory is writable by group or others.
    #[arg(long)]
    pub allow_insecure_plugins: bool,
    /// Weights precision: f32, f16 or bf16 (gradients are always accumulated in f32).
    #[arg(long, value_name = "DTYPE", default_value = "f32")]
    pub dtype: String,
    /// cpu, or cuda / cuda:N (needs a build with --features cuda).
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    pub device: String,
    /// First decoder layer the maps use; negative counts from the end (/layers changes it).
    #[arg(long, value_name = "K", default_value_t = -10, allow_negative_numbers = true)]
    pub layer_index: i64,
    /// Most tokens per answer (/max-tokens changes it).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy (/temp changes it).
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    pub temperature: f64,
    /// Random seed for sampling (/seed changes it).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: &ReplArgs) -> CliResult<()> {
    if args.max_tokens == 0 {
        return Err(CliError::usage("--max-tokens must be at least 1"));
    }
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        return Err(CliError::usage("--temperature must be a number >= 0"));
    }
    let size = args.size.as_deref().map(parse_size).transpose()?;
    let opts = LoadOptions {
        device: parse_device(&args.device)?,
        dtype: parse_dtype(&args.dtype)?,
    };
    let graphics = pick_graphics(args.graphics.as_deref())?;
    let plugins = crate::strategies::load_plugins(&args.plugins, args.allow_insecure_plugins)?;
    let interactive = std::io::stdin().is_terminal();
    let paint = paint_for(graphics);
    if args.model.is_some() && interactive {
        eprint!("{}", paint.dim("loading the model… "));
    }
    let (ckpt, model_label) = load_model(args.model.as_deref(), &opts).map_err(CliError::usage)?;
    if args.model.is_some() && interactive {
        eprintln!();
    }
    let image = match &args.image {
        Some(path) => session::load_image(&ckpt, path),
        None => {
            let (name, img) = crate::bundled::default_image();
            session::encode(&ckpt, format!("bundled:{name}"), img)
        }
    }
    .map_err(CliError::usage)?;
    let session = Session {
        ckpt,
        model_label,
        opts,
        image,
        turns: Vec::new(),
        answer: None,
        settings: Settings {
            max_tokens: args.max_tokens,
            temperature: args.temperature,
            top_p: 1.0,
            seed: args.seed,
            layer_index: args.layer_index,
            topk: 1,
        },
        strategy: "dexar".into(),
        plugins,
    };
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
    let mut repl = Repl::new(session, display, paint, cancel, names.clone());
    let mut out = std::io::stdout();
    let _ = out.write_all(repl.banner().as_bytes());
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

/// `--graphics`, else `DEXAR_GRAPHICS`, else the config file, else what the
/// terminal supports. The probe runs before anything reads stdin, which
/// would otherwise eat the terminal's reply.
fn pick_graphics(flag: Option<&str>) -> CliResult<Graphics> {
    let env_set = std::env::var("DEXAR_GRAPHICS").is_ok_and(|v| !v.trim().is_empty());
    let (name, source) = match flag {
        Some(name) => (Some(name.to_string()), "--graphics"),
        None if env_set => (None, "DEXAR_GRAPHICS"),
        None => (crate::config::load()?.graphics, "config graphics"),
    };
    match name.as_deref().map(str::trim) {
        None | Some("auto") => Ok(detect_terminal()),
        Some(name) => name.parse::<Graphics>().map_err(|_| {
            CliError::usage(format!(
                "{source}: unknown mode `{name}`; use auto, {}",
                Graphics::NAMES.join(", ")
            ))
        }),
    }
}

/// `COLSxROWS`, both at least 1.
fn parse_size(s: &str) -> CliResult<CellSize> {
    let bad = || CliError::usage(format!("--size: `{s}` is not COLSxROWS (e.g. 60x30)"));
    let (c, r) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let cols = c.trim().parse::<u16>().map_err(|_| bad())?;
    let rows = r.trim().parse::<u16>().map_err(|_| bad())?;
    if cols == 0 || rows == 0 {
        return Err(bad());
    }
    Ok(CellSize::new(cols, rows))
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

/// The bundled model, or a directory / Hugging Face id; a one-line error.
pub fn load_model(spec: Option<&str>, opts: &LoadOptions) -> Result<(Checkpoint, String), String> {
    match spec {
        None => crate::bundled::checkpoint(opts)
            .map(|c| (c, crate::bundled::MODEL_LABEL.to_string()))
            .map_err(|e| format!("the bundled model does not load ({e})")),
        Some(spec) => {
            let env = |k: &str| std::env::var(k).ok();
            let dir = hf::resolve_model(spec, &env, dirs::home_dir().as_deref())?;
            let ckpt = Checkpoint::load(&dir, opts).map_err(|e| e.to_string())?;
            Ok((ckpt, spec.to_string()))
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("60x30").unwrap(), CellSize::new(60, 30));
        assert_eq!(parse_size(" 8X4 ").unwrap(), CellSize::new(8, 4));
        for bad in ["60", "0x5", "ax3", "70000x2"] {
            assert_eq!(parse_size(bad).unwrap_err().code, 2, "{bad}");
        }
    }

    #[test]
    fn model_errors_are_one_line() {
        let e = load_model(Some("/no/such/model"), &LoadOptions::default())
            .err()
            .unwrap();
        assert!(e.contains("does not exist") && !e.contains('\n'), "{e}");
        let empty = tempfile::tempdir().unwrap();
        let e = load_model(
            Some(&empty.path().display().to_string()),
            &LoadOptions::default(),
        )
        .err()
        .unwrap();
        assert!(e.contains("config.json"), "{e}");
    }
}
