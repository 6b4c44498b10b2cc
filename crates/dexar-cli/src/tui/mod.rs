//! `dexar tui` and the REPL's `/view`: the conversation full-screen, to
//! explore an answer token by token, layer by layer, head by head.
//!
//! Layout, as ratatui applications keep it: the conversation is
//! dexar-session's [`AppState`]; [`app`] holds what the user looks at,
//! [`update`] turns keys into changes of it (pure, tested without a
//! terminal), [`draw`] turns both into a frame (tested in a `TestBackend`),
//! [`derived`] keeps what is costly to recompute. This module runs the loop:
//! events in, frames out, and answers generated on a worker thread while
//! the screen stays live.

mod app;
mod conversation;
mod derived;
mod draw;
mod terminal;
mod update;

#[cfg(test)]
mod tests;

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use crossterm::event;
use dexar_core::StepTrace;
use dexar_render::term::Terminal;
use dexar_session::{AppState, Outcome, Session};
use ratatui::backend::CrosstermBackend;

use crate::error::{one_line, CliError, CliResult};
use crate::repl::{Opened, ReplArgs};
use app::{App, Effect, Finished, Live};
use derived::{Derived, MapKey, What};
use draw::View;

type Term = ratatui::Terminal<CrosstermBackend<io::Stdout>>;

/// Options of `dexar tui`: the REPL's, and a session file to open.
#[derive(Debug, Args)]
pub struct TuiArgs {
    #[command(flatten)]
    pub repl: ReplArgs,
    /// Open a recorded session file instead of a new conversation: its last
    /// answer is shown, with the model if it is the session's own (else
    /// without one: shown and re-explained, not continued).
    #[arg(long, value_name = "FILE")]
    pub session: Option<PathBuf>,
}

/// `dexar tui`.
pub fn run(args: &TuiArgs) -> CliResult<()> {
    // A session file named is read first: a bad one is the error to report.
    let session = match &args.session {
        Some(path) => Some(Session::open(path).map_err(|e| CliError::usage(e.to_string()))?),
        None => None,
    };
    if !(io::stdin().is_terminal() && io::stdout().is_terminal()) {
        return Err(CliError::usage(
            "dexar tui needs a terminal on stdin and stdout; in scripts use dexar (the REPL reads lines) or dexar explain",
        ));
    }
    if std::env::var("TERM").is_ok_and(|t| t == "dumb") {
        return Err(CliError::usage(
            "TERM=dumb cannot move the cursor, which the full-screen TUI needs; use dexar (the REPL)",
        ));
    }
    let Opened {
        mut state,
        terminal,
        record_note,
        ..
    } = args.repl.open(None)?;
    let mut notes: Vec<String> = record_note.into_iter().collect();
    if let Some(session) = &session {
        notes.extend(session.warning.iter().map(|w| one_line(w)));
        let kept = state
            .load_session(session, None)
            .map_err(|e| CliError::usage(format!("--session {}: {e}", session.path.display())))?;
        if !kept {
            notes.push(format!(
                "opened without its model ({}): answers are shown and re-explained, not continued",
                state.identity.label
            ));
        }
    }
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    // SIGINT from outside (the TUI reads Ctrl-C as a key): stop, put the
    // terminal back, leave.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    run_on(&mut state, terminal, &interrupt, notes.pop())
}

/// Runs the TUI on `state` until the user quits; the layers and strategy
/// chosen in it stay in `state`. `interrupt` (a SIGINT handler sets it)
/// stops an answer, or the TUI when none is coming. `note` is shown first
/// on the message line.
pub fn run_on(
    state: &mut AppState,
    terminal: Terminal,
    interrupt: &AtomicBool,
    note: Option<String>,
) -> CliResult<()> {
    let failed = |e: io::Error| CliError::internal(format!("the terminal failed ({e})"));
    interrupt.store(false, Ordering::SeqCst);
    let guard = terminal::FullScreen::enter().map_err(failed)?;
    let mut term = ratatui::Terminal::new(CrosstermBackend::new(io::stdout())).map_err(failed)?;
    let mut app = App::new(state);
    app.message = note;
    let mut derived = Derived::new(terminal);
    let result = event_loop(&mut term, &mut app, state, &mut derived, interrupt);
    drop(guard);
    keep_settings(&app, state);
    result.map_err(failed)
}

fn keep_settings(app: &App, state: &mut AppState) {
    state.settings.layers = app.layers;
    state.settings.region = app.region;
    // The strategy came from the state's own list; a plugin unloaded since
    // leaves the state's choice as it was.
    let _ = state.use_strategy(&app.strategy);
}

fn frame(
    term: &mut Term,
    app: &mut App,
    state: &AppState,
    derived: &mut Derived,
) -> io::Result<()> {
    let mut screen = None;
    term.draw(|f| screen = Some(draw::draw(f, &View { app, state }, derived)))?;
    app.screen = screen.unwrap_or_default();
    Ok(())
}

/// Test hook: panic after the first frame, so tests can see the terminal
/// put back before the panic's message.
pub const PANIC_ENV: &str = "DEXAR_DEBUG_TUI_PANIC";

/// How long to wait for a key before drawing again (tok/s moves).
const TICK: Duration = Duration::from_millis(250);
/// While an answer streams: new tokens show within this.
const STREAM_TICK: Duration = Duration::from_millis(30);

fn event_loop(
    term: &mut Term,
    app: &mut App,
    state: &mut AppState,
    derived: &mut Derived,
    interrupt: &AtomicBool,
) -> io::Result<()> {
    let panic_hook = std::env::var_os(PANIC_ENV).is_some();
    loop {
        frame(term, app, state, derived)?;
        if panic_hook {
            panic!("{PANIC_ENV} is set");
        }
        if interrupt.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        if !event::poll(TICK)? {
            continue;
        }
        let ev = event::read()?;
        let steps = app.steps(state).len();
        match update::update(app, steps, &ev) {
            Some(Effect::Quit) => return Ok(()),
            Some(Effect::Ask(question)) => {
                if answer(term, app, state, derived, interrupt, question)? {
                    return Ok(());
                }
            }
            Some(Effect::Probe) => {
                app.message = Some("probing: masking patches and re-scoring the answer…".into());
                frame(term, app, state, derived)?;
                app.message = None;
                app.probe = Some(probe(app, state, derived));
            }
            Some(Effect::Stop) | None => {}
        }
        keep_settings(app, state);
    }
}

/// The probe of the token shown, with the map shown (a strategy's or one
/// head's).
fn probe(
    app: &App,
    state: &AppState,
    derived: &mut Derived,
) -> Result<dexar_session::Probe, String> {
    let steps = app.steps(state);
    let t = app
        .token(steps.len())
        .ok_or("nothing to probe yet: ask a question first")?;
    if !app.showing_head() {
        return state.probe(t, &app.strategy).map_err(|e| e.to_string());
    }
    let (slot, head) = app.head;
    let key = MapKey {
        what: What::Head(t, slot, head),
        strategy: app.strategy.clone(),
        layers: app.layers,
        region: app.region,
        steps: steps.len(),
    };
    let shown = derived.map(state, steps, &key)?;
    let layer = app.layer_range().start + slot;
    let label = format!("layer {layer} head {head} G_v");
    state
        .probe_map(t, &shown.map01, &label)
        .map_err(|e| e.to_string())
}

/// Generates an answer to `question` on a worker thread, drawing each token
/// as it comes and taking keys meanwhile. Returns whether the user quit.
fn answer(
    term: &mut Term,
    app: &mut App,
    state: &mut AppState,
    derived: &mut Derived,
    interrupt: &AtomicBool,
    question: String,
) -> io::Result<bool> {
    let ask = match state.prepare_ask(&question, None) {
        Ok(ask) => ask,
        Err(e) => {
            app.message = Some(one_line(&e.to_string()));
            return Ok(false);
        }
    };
    app.answer_id += 1;
    app.finished = None;
    app.live = Some(Live {
        question,
        steps: Vec::new(),
        started: std::time::Instant::now(),
        stopping: false,
    });
    let cancel = AtomicBool::new(false);
    let mut quit = false;
    let shared: &AppState = state;
    let (outcome, drawn) = std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<StepTrace>();
        let (ask, cancel) = (&ask, &cancel);
        let worker = scope.spawn(move || {
            shared.stream(ask, cancel, &mut |step| {
                let _ = tx.send(step.clone());
            })
        });
        let drawn = (|| -> io::Result<()> {
            loop {
                let live = app.live.as_mut().expect("an answer is live");
                live.steps.extend(rx.try_iter());
                if worker.is_finished() {
                    live.steps.extend(rx.try_iter());
                    return Ok(());
                }
                frame(term, app, shared, derived)?;
                if interrupt.swap(false, Ordering::SeqCst) {
                    cancel.store(true, Ordering::SeqCst);
                    if let Some(live) = &mut app.live {
                        live.stopping = true;
                    }
                }
                if event::poll(STREAM_TICK)? {
                    let ev = event::read()?;
                    let steps = app.steps(shared).len();
                    match update::update(app, steps, &ev) {
                        Some(Effect::Stop) => cancel.store(true, Ordering::SeqCst),
                        Some(Effect::Quit) => {
                            quit = true;
                            cancel.store(true, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                }
            }
        })();
        // On a terminal error the answer is stopped, not left running.
        if drawn.is_err() {
            cancel.store(true, Ordering::SeqCst);
        }
        let outcome = worker.join().unwrap_or_else(|_| Outcome {
            steps: Vec::new(),
            result: Err("generation failed unexpectedly".into()),
            elapsed: Duration::ZERO,
        });
        (outcome, drawn)
    });
    app.live = None;
    let elapsed = outcome.elapsed;
    let recorded = state.record(ask, outcome);
    app.finished = Some(Finished {
        tokens: recorded.tokens,
        elapsed,
        stop: recorded.stop,
    });
    if let Some(failure) = recorded.failure {
        app.message = Some(one_line(&failure));
    }
    drawn?;
    Ok(quit)
}
