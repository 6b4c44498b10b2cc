//! From a line to its effect: a prompt starts a streamed answer, a command
//! changes the state or prints something. User mistakes become one-line
//! messages; only a failing stdout ends the REPL.

use dexar_core::builtin_strategy;
use dexar_model::StopReason;
use dexar_session::{
    AppState, Ask, LoadedImage, Outcome, Recorded, Selection, Session, StateError,
};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::commands::{self, Command, Input, PluginAction};
use super::complete::SharedNames;
use super::paint::{Paint, TokenColours};
use super::show::Display;

/// Whether to go on reading input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

pub struct Repl {
    pub state: AppState,
    pub display: Display,
    pub paint: Paint,
    cancel: Arc<AtomicBool>,
    names: SharedNames,
    /// What `/show` showed last (the default of `/compare`).
    last_selection: Option<Selection>,
    /// The "/show N" tip is given once.
    tipped: bool,
    colours: TokenColours,
}

/// A message for the user, not a failure of the REPL.
type Reply = Result<String, String>;

impl Repl {
    pub fn new(
        state: AppState,
        display: Display,
        paint: Paint,
        cancel: Arc<AtomicBool>,
        names: SharedNames,
    ) -> Self {
        let repl = Self {
            state,
            display,
            paint,
            cancel,
            names,
            last_selection: None,
            tipped: false,
            colours: TokenColours::default(),
        };
        repl.refresh_names();
        repl
    }

    fn refresh_names(&self) {
        if let Ok(mut names) = self.names.lock() {
            names.strategies = self.state.strategy_names();
            names.plugins = self
                .state
                .plugins
                .list()
                .into_iter()
                .map(|p| p.name)
                .collect();
        }
    }

    /// A state error as the REPL says it: with the command that helps.
    fn message(&self, e: &StateError) -> String {
        let hint = match e {
            StateError::NoWord(_) => "; /tokens lists its tokens",
            StateError::UnknownStrategy { .. } => "; /strategy list shows them",
            StateError::NoQuestion => ", then /target ANSWER",
            StateError::EmptyTarget => return format!("/target: {e}"),
            StateError::NoModel => "; /model SPEC loads one (a new conversation)",
            _ => "",
        };
        format!("{e}{hint}")
    }

    pub fn banner(&self) -> String {
        let s = &self.state;
        let id = &s.identity;
        let recording = match s.recording_path() {
            Some(path) => format!(
                "{}\n",
                self.paint.dim(&format!(
                    "recording to {} (--no-record: off)",
                    path.display()
                ))
            ),
            None => String::new(),
        };
        format!(
            "{} · {} ({}, {} layers × {} heads, {}x{} patches) · image {}\n{}\n{}",
            self.paint.bold("dexar"),
            id.label,
            id.text_model_type,
            id.num_layers,
            id.num_heads,
            id.grid[0],
            id.grid[1],
            s.image.label,
            self.paint.dim(&format!(
                "graphics {} · strategy {} · {} · ask about the image · /help · Ctrl-D quits",
                self.display.graphics,
                s.strategy,
                self.layers_text()
            )),
            recording,
        )
    }

    fn layers_text(&self) -> String {
        dexar_core::layers::describe(&self.state.layers())
    }

    /// `/region [VIEW]`: which maps of an image split into tiles /show draws.
    fn region(&mut self, view: Option<dexar_core::RegionView>) -> String {
        let region = view.unwrap_or(self.state.settings.region);
        self.state.settings.region = region;
        let what = match region {
            dexar_core::RegionView::All => "the tiles' map with the global view's beside it",
            dexar_core::RegionView::Tiles => "the tiles' maps composed over the image",
            dexar_core::RegionView::Global => "the global view's map",
        };
        let note = if self.state.image_is_split() {
            ""
        } else {
            " (this image is one region: every view shows its one map)"
        };
        format!("region {}: /show draws {what}{note}\n", region.as_str())
    }

    /// Handles one input. `Err` only when `out` cannot be written.
    pub fn handle(&mut self, line: &str, out: &mut dyn Write) -> io::Result<Flow> {
        let reply = match commands::parse(line, &|p| p.is_file()) {
            Err(message) => Err(message),
            Ok(Input::Empty) => Ok(String::new()),
            Ok(Input::Prompt(prompt)) => self.ask(&prompt, None, out)?,
            Ok(Input::Command(Command::Quit)) => return Ok(Flow::Quit),
            Ok(Input::Command(command)) => self.command(command, out)?,
        };
        match reply {
            Ok(text) => out.write_all(text.as_bytes())?,
            Err(message) => writeln!(out, "{}", self.paint.error(&message))?,
        }
        for warning in self.state.take_warnings() {
            writeln!(out, "{}", self.paint.warning(&warning))?;
        }
        out.flush()?;
        Ok(Flow::Continue)
    }

    fn command(&mut self, command: Command, out: &mut dyn Write) -> io::Result<Reply> {
        let paint = self.paint;
        Ok(match command {
            Command::Show { what, raw } => self.show(&what, raw),
            Command::Compare { a, b, what } => self.compare(&a, &b, what),
            Command::Tokens => self.tokens(),
            Command::Probe(n) => self.probe(n, out)?,
            Command::View => self.view(),
            Command::Image(path) => match self
                .state
                .model()
                .and_then(|m| LoadedImage::open(&m.ckpt, &path))
            {
                Ok(image) => {
                    let (w, h) = (image.image.width(), image.image.height());
                    self.state.set_image(image);
                    self.last_selection = None;
                    Ok(format!(
                        "image {} ({w}x{h}) · new conversation\n",
                        self.state.image.label
                    ))
                }
                Err(e) => Err(self.message(&e)),
            },
            Command::ShowImage => Ok(self.display.image(&self.paint, &self.state.image)),
            Command::Model(spec) => {
                write!(out, "{}", paint.dim(&format!("loading {spec}… ")))?;
                out.flush()?;
                let reply = self.switch_model(&spec);
                writeln!(out)?;
                reply
            }
            Command::StrategyList => Ok(self.strategy_list()),
            Command::StrategyUse(name) => match self.state.use_strategy(&name) {
                Ok(name) => {
                    let tip = if self.state.answer.is_some() {
                        " (/show re-explains the last answer)"
                    } else {
                        ""
                    };
                    Ok(format!("strategy {name}{tip}\n"))
                }
                Err(e) => Err(self.message(&e)),
            },
            Command::Plugin(action) => self.plugin(action),
            Command::Layers(None) => Ok(format!(
                "{} of {} (layer index {})\n",
                self.layers_text(),
                self.state.num_layers(),
                self.state.settings.layers.layer_index
            )),
            Command::Layers(Some(k)) => {
                let selection = dexar_core::LayerSelection::new(k);
                self.state.settings.layers = selection;
                let clamped = selection
                    .clamp_note(self.state.num_layers())
                    .map(|note| format!("{}\n", paint.warning(&note)))
                    .unwrap_or_default();
                let traced = match self.state.untraced_layers_note() {
                    Some(traced) => paint.warning(&format!(
                        "the last answer traced only {}: its maps use those; ask again (or start with --trace-layers all) for the others",
                        dexar_core::layers::describe(&traced)
                    )),
                    None => "no need to regenerate, /show re-explains".into(),
                };
                Ok(format!(
                    "{clamped}maps now use {} (layer index {k}); {traced}\n",
                    self.layers_text()
                ))
            }
            Command::Region(view) => Ok(self.region(view)),
            Command::Target(text) => return self.ask("", Some(&text), out),
            Command::Temp(t) => {
                let s = &mut self.state.settings;
                if let Some(t) = t {
                    s.temperature = t;
                }
                Ok(format!(
                    "temperature {}{}\n",
                    s.temperature,
                    if s.temperature == 0.0 {
                        " (greedy)"
                    } else {
                        ""
                    }
                ))
            }
            Command::MaxTokens(n) => {
                let s = &mut self.state.settings;
                if let Some(n) = n {
                    s.max_tokens = n;
                }
                Ok(format!("max tokens {}\n", s.max_tokens))
            }
            Command::Seed(n) => {
                let s = &mut self.state.settings;
                if let Some(n) = n {
                    s.seed = n;
                }
                Ok(format!("seed {}\n", s.seed))
            }
            Command::Save(path) => match self.state.save_session(&path) {
                Ok(bytes) => Ok(format!(
                    "wrote {} ({:.1} KB)\n",
                    path.display(),
                    bytes as f64 / 1024.0
                )),
                Err(e) => Err(format!("/save: {e}")),
            },
            Command::Load(path, turn) => self.load(&path, turn),
            Command::Clear => {
                self.forget_conversation();
                Ok(format!(
                    "conversation cleared (image {} stays)\n",
                    self.state.image.label
                ))
            }
            Command::Help(None) => Ok(commands::help_text()),
            Command::Help(Some(name)) => match commands::spec(&name) {
                Some(s) => Ok(format!("{} {}\n  {}\n", s.name, s.usage, s.help)),
                None => commands::parse(&format!("/{}", name.trim_start_matches('/')), &|_| false)
                    .map(|_| String::new()),
            },
            Command::Quit => Ok(String::new()),
        })
    }

    fn forget_conversation(&mut self) {
        self.state.clear();
        self.last_selection = None;
    }

    /// Answers `question`, or (with `target`) explains that answer to the
    /// last question, streaming the tokens: prepare, stream, record, report.
    fn ask(
        &mut self,
        question: &str,
        target: Option<&str>,
        out: &mut dyn Write,
    ) -> io::Result<Reply> {
        let ask = match target {
            Some(t) => self.state.prepare_target(t),
            None => self.state.prepare_ask(question, None),
        };
        let ask = match ask {
            Ok(a) => a,
            Err(e) => return Ok(Err(self.message(&e))),
        };
        if let (Some(t), Ok(model)) = (target, self.state.model()) {
            let unknown = model.ckpt.tokenizer.unknown_words(t);
            if !unknown.is_empty() {
                let note = format!(
                    "the tokenizer does not know {}; explained as <unk>",
                    crate::explain::quoted(&unknown)
                );
                writeln!(out, "{}", self.paint.warning(&note))?;
            }
            let line = format!(
                "explaining the given answer to \"{}\" (teacher forcing):",
                ask.question
            );
            writeln!(out, "{}", self.paint.dim(&line))?;
        }
        let outcome = self.stream(&ask, out)?;
        let status = self.paint.status(
            outcome.steps.len(),
            outcome.elapsed,
            &self.state.strategy,
            &self.state.layers(),
            outcome.result.as_ref().ok().map(|g| g.stop),
        );
        let had_turns = !self.state.turns.is_empty();
        let recorded = self.state.record(ask, outcome);
        Ok(self.report(&recorded, &status, had_turns))
    }

    /// Streams an answer to `out`, each token coloured by its weight.
    fn stream(&mut self, ask: &Ask, out: &mut dyn Write) -> io::Result<Outcome> {
        self.cancel.store(false, Ordering::SeqCst);
        let paint = self.paint;
        let state = &self.state;
        let colours = &mut self.colours;
        let mut write_error: Option<io::Error> = None;
        let outcome = state.stream(ask, &self.cancel, &mut |trace| {
            let relative = colours.relative(state.token_weight(trace));
            let token = paint.token(&trace.token_text, trace.step, relative);
            if let Err(e) = out.write_all(token.as_bytes()).and_then(|_| out.flush()) {
                write_error.get_or_insert(e);
            }
        });
        if let Some(e) = write_error {
            return Err(e);
        }
        if !outcome.steps.is_empty() {
            writeln!(out)?;
        }
        Ok(outcome)
    }

    /// The lines under an answer: its status, a failure, a first-time tip.
    fn report(&mut self, recorded: &Recorded, status: &str, had_turns: bool) -> Reply {
        if recorded.tokens == 0 {
            // Nothing to explain or to remember: the last answer stays current.
            return match &recorded.failure {
                Some(message) => {
                    let hint = if had_turns && message.contains("context") {
                        " (/clear starts a new conversation)"
                    } else {
                        ""
                    };
                    Err(format!("{message}{hint}"))
                }
                None => Ok(format!("{status}\n")),
            };
        }
        self.last_selection = None;
        let mut reply = format!("{status}\n");
        if let Some(message) = &recorded.failure {
            reply.push_str(&format!("{}\n", self.paint.error(message)));
        }
        if !self.tipped && recorded.stop != Some(StopReason::Cancelled) {
            self.tipped = true;
            reply.push_str(&format!(
                "{}\n",
                self.paint.dim("/show N: where token N looked · /show all: the whole answer · /tokens: token weights")
            ));
        }
        Ok(reply)
    }

    fn show(&mut self, what: &Selection, raw: bool) -> Reply {
        let shown = self
            .state
            .shown(&self.state.strategy, what)
            .map_err(|e| self.message(&e))?;
        self.last_selection = Some(what.clone());
        if raw {
            self.display.raw(&self.paint, &shown)
        } else {
            self.display
                .show(&self.paint, &self.state.image.view, &shown)
        }
    }

    fn compare(&mut self, a: &str, b: &str, what: Option<Selection>) -> Reply {
        let what = what
            .or_else(|| self.last_selection.clone())
            .unwrap_or(Selection::All);
        let shown = |name: &str| self.state.shown(name, &what).map_err(|e| self.message(&e));
        let (left, right) = (shown(a)?, shown(b)?);
        self.display
            .compare(&self.paint, &self.state.image.view, &left, &right)
    }

    /// `/probe N`: a few forward passes, so a note first.
    fn probe(&mut self, token: usize, out: &mut dyn Write) -> io::Result<Reply> {
        if self.state.answer.is_none() {
            return Ok(Err(self.message(&StateError::NothingToShow)));
        }
        write!(
            out,
            "{}",
            self.paint
                .dim("probing: masking patches and re-scoring the answer… ")
        )?;
        out.flush()?;
        let probe = self.state.probe(token, &self.state.strategy);
        writeln!(out)?;
        Ok(match probe {
            Ok(p) => Ok(crate::probe_report::probe_lines(&p)
                .iter()
                .map(|l| format!("{l}\n"))
                .collect()),
            Err(e) => Err(self.message(&e)),
        })
    }

    /// `/view`: the TUI on this conversation, back here when it quits.
    fn view(&mut self) -> Reply {
        use std::io::IsTerminal;
        if !(io::stdin().is_terminal() && io::stdout().is_terminal()) {
            return Err("/view needs a terminal (stdin and stdout are not one)".into());
        }
        let d = &self.display;
        let terminal = dexar_render::term::Terminal {
            graphics: d.graphics,
            cell: d.cell,
            tmux: d.tmux,
        };
        crate::tui::run_on(&mut self.state, terminal, &self.cancel, None).map_err(|e| e.message)?;
        self.last_selection = None;
        Ok(format!(
            "back from the TUI · strategy {} · {}\n",
            self.state.strategy,
            self.layers_text()
        ))
    }

    fn tokens(&self) -> Reply {
        let answer = self
            .state
            .answer
            .as_ref()
            .ok_or("no answer yet: type a question about the image first")?;
        let mut out = format!(
            "tokens of the last answer (δ: DEX-AR token weight, {}):\n",
            self.layers_text()
        );
        for step in &answer.steps {
            let weight = self.state.token_weight(step);
            let flag = if weight > 0.0 {
                ""
            } else {
                "  no visual evidence"
            };
            out.push_str(&format!(
                "  {:>3} {:<18} δ={weight:.4}{flag}\n",
                step.step,
                format!("{:?}", step.token_text)
            ));
        }
        if let Some(stop) = answer.stop {
            let how = if answer.teacher_forced {
                "teacher-forced"
            } else {
                "generated"
            };
            out.push_str(&self.paint.dim(&format!(
                "{how} in {:.1} s, stop: {stop}\n",
                answer.elapsed.as_secs_f64()
            )));
        }
        Ok(out)
    }

    fn strategy_list(&self) -> String {
        let mut out = String::from("strategies (* in use):\n");
        let topk = self.state.settings.topk;
        let mut rows: Vec<(String, String)> = dexar_core::BUILTIN_NAMES
            .iter()
            .filter_map(|n| {
                builtin_strategy(n, topk).map(|s| (n.to_string(), s.help().to_string()))
            })
            .collect();
        rows.extend(self.state.plugins.list().into_iter().map(|p| {
            (
                p.name,
                format!("{} (plugin {}, {})", p.help, p.version, p.path.display()),
            )
        }));
        for (name, help) in rows {
            let mark = if name == self.state.strategy {
                "*"
            } else {
                " "
            };
            out.push_str(&format!("{mark} {name:<18} {help}\n"));
        }
        out
    }

    fn plugin(&mut self, action: PluginAction) -> Reply {
        let reply = match action {
            PluginAction::Load(path) => self
                .state
                .plugins
                .load(&path)
                .map(|p| {
                    format!(
                        "loaded plugin {} {}: {} (/strategy use {} to show it)\n",
                        p.name(),
                        p.version(),
                        p.help(),
                        p.name()
                    )
                })
                .map_err(|e| e.to_string()),
            PluginAction::List => {
                let list = self.state.plugins.list();
                if list.is_empty() {
                    Ok("no plugins loaded; /plugin load PATH loads one\n".into())
                } else {
                    Ok(list
                        .iter()
                        .map(|p| {
                            format!(
                                "  {:<18} {:<8} {}  {}\n",
                                p.name,
                                p.version,
                                p.path.display(),
                                p.help
                            )
                        })
                        .collect())
                }
            }
            PluginAction::Unload(name) => match self.state.unload_plugin(&name) {
                Ok(reset) => {
                    let mut msg = format!("unloaded plugin {name}\n");
                    if reset {
                        msg.push_str("strategy back to dexar\n");
                    }
                    Ok(msg)
                }
                Err(e) => Err(self.message(&e)),
            },
            PluginAction::Reload(Some(name)) => self
                .state
                .plugins
                .reload(&name)
                .map(|p| format!("reloaded plugin {} {}\n", p.name(), p.version()))
                .map_err(|e| e.to_string()),
            PluginAction::Reload(None) => {
                let results = self.state.plugins.reload_all();
                if results.is_empty() {
                    Ok("no plugins loaded to reload\n".into())
                } else {
                    let mut out = String::new();
                    for (name, r) in results {
                        match r {
                            Ok(p) => out.push_str(&format!(
                                "reloaded plugin {} {}\n",
                                p.name(),
                                p.version()
                            )),
                            Err(e) => out.push_str(&format!(
                                "{}\n",
                                self.paint.error(&format!("{name}: {e}"))
                            )),
                        }
                    }
                    Ok(out)
                }
            }
        };
        self.refresh_names();
        reply
    }

    /// Opens a session file: its conversation replaces this one, with the
    /// model if it is the session's own, else without a model.
    fn load(&mut self, path: &std::path::Path, turn: Option<usize>) -> Reply {
        let session = Session::open(path).map_err(|e| e.to_string())?;
        let kept = self
            .state
            .load_session(&session, turn)
            .map_err(|e| self.message(&e))?;
        self.colours = TokenColours::default();
        self.last_selection = None;
        let id = &self.state.identity;
        let mut reply = String::new();
        if let Some(w) = &session.warning {
            reply.push_str(&format!("{}\n", self.paint.warning(w)));
        }
        let shown = match &self.state.answer {
            Some(a) => format!(
                "turn {} ({} tokens) shown: /tokens, /show N, /show all",
                a.turn.turn,
                a.steps.len()
            ),
            None => "no answer recorded".into(),
        };
        reply.push_str(&format!(
            "opened {} · {} turns · model {} · image {} · {shown}\n",
            path.display(),
            session.turns.len(),
            id.label,
            self.state.image.label
        ));
        if !kept {
            reply.push_str(&format!(
                "{}\n",
                self.paint.dim(&format!(
                    "model {} is not loaded: explore and re-explain only (/model {} loads it)",
                    id.label, id.spec
                ))
            ));
        }
        Ok(reply)
    }

    /// Loads another model; the old one stays if the new one fails.
    fn switch_model(&mut self, spec: &str) -> Reply {
        let spec: dexar_model::ModelSpec = spec.parse().map_err(|e| format!("{e}"))?;
        self.state
            .switch_model(&spec)
            .map_err(|e| self.message(&e))?;
        self.colours = TokenColours::default();
        self.last_selection = None;
        let id = &self.state.identity;
        let recording = match self.state.recording_path() {
            Some(p) => format!(" · recording to {}", p.display()),
            None => String::new(),
        };
        Ok(format!(
            "model {} ({}, {} layers × {} heads) · new conversation · {}{recording}\n",
            id.label,
            id.text_model_type,
            id.num_layers,
            id.num_heads,
            self.layers_text()
        ))
    }
}

#[cfg(test)]
mod tests;
