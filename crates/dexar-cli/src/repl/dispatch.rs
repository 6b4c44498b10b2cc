//! From a line to its effect: a prompt starts a streamed answer, a command
//! changes the session or prints something. User mistakes become one-line
//! messages; only a failing stdout ends the REPL.

use dexar_core::builtin_strategy;
use dexar_model::{GenerationSettings, Mode, StopReason};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::commands::{self, Command, Input, PluginAction, Selection};
use super::complete::SharedNames;
use super::paint::Paint;
use super::session::{self, conversation_text, Answer, Session, Turn};
use super::show::Display;
use super::worker;

/// Whether to go on reading input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

pub struct Repl {
    pub session: Session,
    pub display: Display,
    pub paint: Paint,
    cancel: Arc<AtomicBool>,
    names: SharedNames,
    /// What `/show` showed last (the default of `/compare`).
    last_selection: Option<Selection>,
    /// The "/show N" tip is given once.
    tipped: bool,
    /// The largest token weight seen with this model: streamed tokens are
    /// coloured relative to it (kept across answers so that colours settle).
    weight_scale: f32,
}

/// A message for the user, not a failure of the REPL.
type Reply = Result<String, String>;

impl Repl {
    pub fn new(
        session: Session,
        display: Display,
        paint: Paint,
        cancel: Arc<AtomicBool>,
        names: SharedNames,
    ) -> Self {
        let repl = Self {
            session,
            display,
            paint,
            cancel,
            names,
            last_selection: None,
            tipped: false,
            weight_scale: 0.0,
        };
        repl.refresh_names();
        repl
    }

    fn refresh_names(&self) {
        if let Ok(mut names) = self.names.lock() {
            names.strategies = self.session.strategy_names();
            names.plugins = self
                .session
                .plugins
                .list()
                .into_iter()
                .map(|p| p.name)
                .collect();
        }
    }

    pub fn banner(&self) -> String {
        let s = &self.session;
        let text = &s.ckpt.config.text;
        let grid = s.ckpt.config.grid();
        format!(
            "{} · {} ({}, {} layers × {} heads, {}x{} patches) · image {}\n{}\n",
            self.paint.bold("dexar"),
            s.model_label,
            text.model_type,
            text.num_hidden_layers,
            text.num_attention_heads,
            grid.height,
            grid.width,
            s.image.label,
            self.paint.dim(&format!(
                "graphics {} · strategy {} · {} · ask about the image · /help · Ctrl-D quits",
                self.display.graphics,
                s.strategy,
                self.layers_text()
            )),
        )
    }

    fn layers_text(&self) -> String {
        let l = self.session.layers();
        format!("layers {}-{}", l.start, l.end.saturating_sub(1))
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
        out.flush()?;
        Ok(Flow::Continue)
    }

    fn command(&mut self, command: Command, out: &mut dyn Write) -> io::Result<Reply> {
        let paint = self.paint;
        Ok(match command {
            Command::Show { what, raw } => self.show(&what, raw),
            Command::Compare { a, b, what } => self.compare(&a, &b, what),
            Command::Tokens => self.tokens(),
            Command::Image(path) => match session::load_image(&self.session.ckpt, &path) {
                Ok(image) => {
                    let (w, h) = (image.image.width(), image.image.height());
                    self.session.image = image;
                    self.forget_conversation();
                    Ok(format!(
                        "image {} ({w}x{h}) · new conversation\n",
                        self.session.image.label
                    ))
                }
                Err(e) => Err(e),
            },
            Command::ShowImage => Ok(self.display.image(&self.paint, &self.session.image)),
            Command::Model(spec) => {
                write!(out, "{}", paint.dim(&format!("loading {spec}… ")))?;
                out.flush()?;
                let reply = self.switch_model(&spec);
                writeln!(out)?;
                reply
            }
            Command::StrategyList => Ok(self.strategy_list()),
            Command::StrategyUse(name) => self.session.strategy_by_name(&name).map(|s| {
                self.session.strategy = s.name().to_string();
                let tip = if self.session.answer.is_some() {
                    " (/show re-explains the last answer)"
                } else {
                    ""
                };
                format!("strategy {}{tip}\n", s.name())
            }),
            Command::Plugin(action) => self.plugin(action),
            Command::Layers(None) => Ok(format!(
                "{} of {} (layer index {})\n",
                self.layers_text(),
                self.session.ckpt.config.text.num_hidden_layers,
                self.session.settings.layer_index
            )),
            Command::Layers(Some(k)) => {
                self.session.settings.layer_index = k;
                Ok(format!(
                    "maps now use {} (layer index {k}); no need to regenerate, /show re-explains\n",
                    self.layers_text()
                ))
            }
            Command::Target(text) => match self.session.turns.last().cloned() {
                Some(last) => return self.ask(&last.user, Some(&text), out),
                None => Err(
                    "no question to explain an answer to yet: ask one first, then /target ANSWER"
                        .into(),
                ),
            },
            Command::Temp(t) => {
                let s = &mut self.session.settings;
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
                let s = &mut self.session.settings;
                if let Some(n) = n {
                    s.max_tokens = n;
                }
                Ok(format!("max tokens {}\n", s.max_tokens))
            }
            Command::Seed(n) => {
                let s = &mut self.session.settings;
                if let Some(n) = n {
                    s.seed = n;
                }
                Ok(format!("seed {}\n", s.seed))
            }
            Command::Clear => {
                self.forget_conversation();
                Ok(format!(
                    "conversation cleared (image {} stays)\n",
                    self.session.image.label
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
        self.session.turns.clear();
        self.session.answer = None;
        self.last_selection = None;
    }

    /// Generates an answer to `prompt` (or teacher-forces `target` as the
    /// answer to the last question, replacing that turn), streaming tokens.
    fn ask(
        &mut self,
        prompt: &str,
        target: Option<&str>,
        out: &mut dyn Write,
    ) -> io::Result<Reply> {
        let s = &self.session;
        if prompt.contains(dexar_model::IMAGE_MARKER) {
            return Ok(Err(
                "leave <image> out of the question: dexar places the image itself".into(),
            ));
        }
        let earlier = match target {
            Some(_) => &s.turns[..s.turns.len().saturating_sub(1)],
            None => &s.turns[..],
        };
        let cfg = &s.ckpt.config;
        let text = conversation_text(earlier, prompt);
        let prepared = match s.ckpt.prepare_prompt(&text) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let mode = match target {
            None => Mode::Generate,
            Some(t) => match s.ckpt.tokenizer.encode(t, false) {
                Ok(ids) if !ids.is_empty() => Mode::TeacherForced(ids),
                Ok(_) => {
                    return Ok(Err(
                        "/target: the answer tokenizes to nothing; give some text".into(),
                    ))
                }
                Err(e) => return Ok(Err(e.to_string())),
            },
        };
        let settings = GenerationSettings {
            max_tokens: s.settings.max_tokens,
            temperature: s.settings.temperature,
            top_p: s.settings.top_p,
            seed: s.settings.seed,
            // Every layer is traced; /layers picks among them afterwards.
            layers: 0..cfg.text.num_hidden_layers,
        };
        if target.is_some() {
            writeln!(
                out,
                "{}",
                self.paint.dim(&format!(
                    "explaining the given answer to \"{prompt}\" (teacher forcing):"
                ))
            )?;
        }
        self.cancel.store(false, Ordering::SeqCst);
        let paint = self.paint;
        let mut max_weight = self.weight_scale;
        let mut write_error: Option<io::Error> = None;
        let outcome = worker::generate(
            &s.ckpt,
            &prepared,
            &s.image.features,
            &settings,
            &mode,
            &self.cancel,
            &mut |trace| {
                let weight = s.token_weight(trace);
                max_weight = max_weight.max(weight);
                let relative = if max_weight > 0.0 {
                    weight / max_weight
                } else {
                    0.0
                };
                let token = paint.token(&trace.token_text, trace.step, relative);
                if let Err(e) = out.write_all(token.as_bytes()).and_then(|_| out.flush()) {
                    write_error.get_or_insert(e);
                }
            },
        );
        if let Some(e) = write_error {
            return Err(e);
        }
        self.weight_scale = max_weight;
        let stop = outcome.result.as_ref().ok().map(|g| g.stop);
        if !outcome.steps.is_empty() {
            writeln!(out)?;
        }
        let status = paint.status(
            outcome.steps.len(),
            outcome.elapsed,
            &s.strategy,
            &s.layers(),
            stop,
        );
        let failure = outcome.result.as_ref().err().cloned();
        if outcome.steps.is_empty() {
            // Nothing to explain or to remember: the last answer stays current.
            return Ok(match failure {
                Some(message) => {
                    let hint = if s.turns.is_empty() || !message.contains("context") {
                        ""
                    } else {
                        " (/clear starts a new conversation)"
                    };
                    Err(format!("{message}{hint}"))
                }
                None => Ok(format!("{status}\n")),
            });
        }
        let answer = Answer {
            steps: outcome.steps,
            stop,
            teacher_forced: target.is_some(),
            elapsed: outcome.elapsed,
        };
        let turn = Turn {
            user: prompt.to_string(),
            assistant: answer.text(),
        };
        if target.is_some() {
            self.session.turns.pop();
        }
        self.session.turns.push(turn);
        self.session.answer = Some(answer);
        self.last_selection = None;
        let mut reply = format!("{status}\n");
        if let Some(message) = failure {
            reply.push_str(&format!("{}\n", self.paint.error(&message)));
        }
        if !self.tipped && stop != Some(StopReason::Cancelled) {
            self.tipped = true;
            reply.push_str(&format!(
                "{}\n",
                self.paint.dim("/show N: where token N looked · /show all: the whole answer · /tokens: token weights")
            ));
        }
        Ok(Ok(reply))
    }

    fn show(&mut self, what: &Selection, raw: bool) -> Reply {
        let shown = self.session.shown(&self.session.strategy, what)?;
        self.last_selection = Some(what.clone());
        if raw {
            self.display.raw(&self.paint, &shown)
        } else {
            self.display
                .show(&self.paint, &self.session.image.view, &shown)
        }
    }

    fn compare(&mut self, a: &str, b: &str, what: Option<Selection>) -> Reply {
        let what = what
            .or_else(|| self.last_selection.clone())
            .unwrap_or(Selection::All);
        let left = self.session.shown(a, &what)?;
        let right = self.session.shown(b, &what)?;
        self.display
            .compare(&self.paint, &self.session.image.view, &left, &right)
    }

    fn tokens(&self) -> Reply {
        let answer = self
            .session
            .answer
            .as_ref()
            .ok_or("no answer yet: type a question about the image first")?;
        let mut out = format!(
            "tokens of the last answer (δ: DEX-AR token weight, {}):\n",
            self.layers_text()
        );
        for step in &answer.steps {
            let weight = self.session.token_weight(step);
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
                "{how} in {:.1} s, stop: {stop:?}\n",
                answer.elapsed.as_secs_f64()
            )));
        }
        Ok(out)
    }

    fn strategy_list(&self) -> String {
        let mut out = String::from("strategies (* in use):\n");
        let topk = self.session.settings.topk;
        let mut rows: Vec<(String, String)> = dexar_core::BUILTIN_NAMES
            .iter()
            .filter_map(|n| {
                builtin_strategy(n, topk).map(|s| (n.to_string(), s.help().to_string()))
            })
            .collect();
        rows.extend(self.session.plugins.list().into_iter().map(|p| {
            (
                p.name,
                format!("{} (plugin {}, {})", p.help, p.version, p.path.display()),
            )
        }));
        for (name, help) in rows {
            let mark = if name == self.session.strategy {
                "*"
            } else {
                " "
            };
            out.push_str(&format!("{mark} {name:<18} {help}\n"));
        }
        out
    }

    fn plugin(&mut self, action: PluginAction) -> Reply {
        let plugins = &mut self.session.plugins;
        let reply = match action {
            PluginAction::Load(path) => plugins
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
                let list = plugins.list();
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
            PluginAction::Unload(name) => plugins
                .unload(&name)
                .map(|()| {
                    let mut msg = format!("unloaded plugin {name}\n");
                    if self.session.strategy == name {
                        self.session.strategy = "dexar".into();
                        msg.push_str("strategy back to dexar\n");
                    }
                    msg
                })
                .map_err(|e| e.to_string()),
            PluginAction::Reload(Some(name)) => plugins
                .reload(&name)
                .map(|p| format!("reloaded plugin {} {}\n", p.name(), p.version()))
                .map_err(|e| e.to_string()),
            PluginAction::Reload(None) => {
                let results = plugins.reload_all();
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

    /// Loads another model; the old one stays if the new one fails.
    fn switch_model(&mut self, spec: &str) -> Reply {
        let (ckpt, label) = super::load_model(Some(spec), &self.session.opts)?;
        let img = self.session.image.image.clone();
        let image = session::encode(&ckpt, self.session.image.label.clone(), img)?;
        self.session.ckpt = ckpt;
        self.session.model_label = label;
        self.weight_scale = 0.0;
        self.session.image = image;
        self.forget_conversation();
        let text = &self.session.ckpt.config.text;
        Ok(format!(
            "model {} ({}, {} layers × {} heads) · new conversation · {}\n",
            self.session.model_label,
            text.model_type,
            text.num_hidden_layers,
            text.num_attention_heads,
            self.layers_text()
        ))
    }
}

#[cfg(test)]
mod tests;
