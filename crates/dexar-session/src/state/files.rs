//! The state and session files: a state opened from a recorded session
//! (with or without its model), the turn a recorder is told about, and a
//! copy of the conversation saved on request.

use dexar_model::{StopReason, Turn};
use dexar_plugin::host::PluginRegistry;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Answer, AppState, Ask, Settings};
use crate::error::StateError;
use crate::file::Session;
use crate::image::LoadedImage;
use crate::model::{LoadedModel, ModelIdentity};
use crate::recorder::{Recorder, Sink};
use crate::records::{EndRecord, HistoryTurn, TraceDtype};

/// What a state takes from a session.
struct Opened {
    identity: ModelIdentity,
    image: LoadedImage,
    turns: Vec<Turn>,
    answer: Option<Answer>,
    /// The model given is the session's own.
    model_matches: bool,
}

const STOPS: [StopReason; 5] = [
    StopReason::Eos,
    StopReason::MaxTokens,
    StopReason::TargetEnd,
    StopReason::ContextFull,
    StopReason::Cancelled,
];

fn open_parts(
    session: &Session,
    turn: Option<usize>,
    model: Option<&LoadedModel>,
) -> Result<Opened, StateError> {
    let identity = session.header.model.clone();
    let model_matches = model.is_some_and(|m| m.config_sha256() == identity.config_sha256);
    let ckpt = model.filter(|_| model_matches).map(|m| &m.ckpt);
    let no_tokens = session.turns.iter().all(|t| t.steps.is_empty());
    let selected = match turn {
        None if no_tokens => None,
        _ => Some(session.turn(turn).map_err(StateError::Turn)?),
    };
    let conversation_index = match selected {
        Some(t) => t.conversation,
        None => session.conversations.len().checked_sub(1).ok_or_else(|| {
            StateError::Turn(format!(
                "session {} has no conversation to show",
                session.path.display()
            ))
        })?,
    };
    let conversation = &session.conversations[conversation_index];
    let mut turns: Vec<Turn> = conversation
        .history
        .iter()
        .map(|h| Turn {
            user: h.user.clone(),
            assistant: h.assistant.clone(),
        })
        .collect();
    // A given answer replaces the conversation's previous recorded turn;
    // the history already leaves out what a leading one replaces.
    let mut recorded = 0;
    for &i in &conversation.turns {
        let t = &session.turns[i];
        if t.steps.is_empty() {
            continue;
        }
        if t.record.target.is_some() && recorded > 0 {
            turns.pop();
        }
        recorded += 1;
        turns.push(Turn {
            user: t.record.question.clone(),
            assistant: t.answer(),
        });
        if selected.is_some_and(|s| std::ptr::eq(s, t)) {
            break;
        }
    }
    let answer = selected.map(|t| Answer {
        turn: t.record.clone(),
        steps: t.steps.clone(),
        stop: t
            .end
            .as_ref()
            .and_then(|e| e.stop.as_deref())
            .and_then(|name| STOPS.into_iter().find(|s| s.as_str() == name)),
        teacher_forced: t.record.target.is_some(),
        elapsed: Duration::from_millis(t.end.as_ref().map_or(0, |e| e.elapsed_ms)),
    });
    Ok(Opened {
        image: LoadedImage::from_session(&conversation.image, ckpt)?,
        identity,
        turns,
        answer,
        model_matches,
    })
}

impl AppState {
    /// A state showing turn `turn` (1-based; default: the last with
    /// tokens) of a recorded session. `model` is kept when it is the
    /// session's own (the same configuration), so the conversation can go
    /// on; otherwise the state has no model and shows and re-explains only.
    pub fn from_session(
        session: &Session,
        turn: Option<usize>,
        model: Option<LoadedModel>,
        settings: Settings,
        plugins: PluginRegistry,
    ) -> Result<Self, StateError> {
        let parts = open_parts(session, turn, model.as_ref())?;
        let load_options = model.as_ref().map(|m| m.opts.clone()).unwrap_or_default();
        Ok(Self {
            model: model.filter(|_| parts.model_matches),
            identity: parts.identity,
            load_options,
            image: parts.image,
            turns: parts.turns,
            answer: parts.answer,
            settings,
            strategy: "dexar".into(),
            plugins,
            recorder: Mutex::new(None),
            answer_recorded: false,
        })
    }

    /// Replaces the conversation with one of a session (see
    /// [`AppState::from_session`]); settings, strategies and the recorder
    /// stay. Returns whether the loaded model is the session's own (else it
    /// is unloaded). Nothing changes if the session cannot be shown.
    pub fn load_session(
        &mut self,
        session: &Session,
        turn: Option<usize>,
    ) -> Result<bool, StateError> {
        let parts = open_parts(session, turn, self.model.as_ref())?;
        if !parts.model_matches {
            self.model = None;
        }
        self.identity = parts.identity;
        self.image = parts.image;
        self.turns = parts.turns;
        self.answer = parts.answer;
        self.answer_recorded = false;
        if let Some(r) = self.recorder().as_mut() {
            r.new_conversation();
        }
        Ok(parts.model_matches)
    }

    /// Tells the recorder a turn starts (with the conversation's image and
    /// earlier exchanges when it starts a conversation in the file).
    pub(super) fn begin_recorded_turn(&self, ask: &Ask) {
        let mut guard = self.recorder();
        let Some(recorder) = guard.as_mut() else {
            return;
        };
        let earlier = match ask.target {
            Some(_) => &self.turns[..self.turns.len().saturating_sub(1)],
            None => &self.turns[..],
        };
        recorder.begin_turn(
            &self.identity,
            &self.image,
            &history(earlier),
            &self.turn_record(ask),
        );
    }

    /// Writes the conversation to `path` as a session file: a copy of the
    /// recording when it holds the current answer, else the state itself
    /// (earlier exchanges as text, the last answer with its traces).
    /// Returns the bytes written.
    pub fn save_session(&self, path: &Path) -> Result<u64, String> {
        if let Some(recording) = self.recording_path() {
            let same = |p: &Path| std::fs::canonicalize(p).ok();
            if same(path).is_some() && same(path) == same(&recording) {
                return Err(format!(
                    "{} is the file this conversation is recorded to; choose another",
                    path.display()
                ));
            }
        }
        if self.answer_recorded {
            if let Some(r) = self.recorder().as_ref().filter(|r| r.bytes_written() > 0) {
                return r.copy_to(path);
            }
        }
        let Some(answer) = &self.answer else {
            return Err("nothing to save yet: ask a question first".into());
        };
        let buffer = MemorySink::default();
        let mut recorder = Recorder::with_sink(
            path.to_path_buf(),
            Box::new(buffer.clone()),
            &self.identity,
            TraceDtype::F32,
        );
        let earlier = &self.turns[..self.turns.len().saturating_sub(1)];
        recorder.begin_turn(&self.identity, &self.image, &history(earlier), &answer.turn);
        for step in &answer.steps {
            recorder.token(step);
        }
        recorder.end_turn(EndRecord {
            turn: 0,
            stop: answer.stop.map(|s| s.to_string()),
            failure: None,
            tokens: answer.steps.len(),
            elapsed_ms: answer.elapsed.as_millis() as u64,
        });
        let bytes = buffer.bytes();
        dexar_core::write_atomic(path, &bytes)
            .map_err(|e| format!("cannot write {} ({e})", path.display()))?;
        Ok(bytes.len() as u64)
    }
}

fn history(turns: &[Turn]) -> Vec<HistoryTurn> {
    turns
        .iter()
        .map(|t| HistoryTurn {
            user: t.user.clone(),
            assistant: t.assistant.clone(),
        })
        .collect()
}

/// Records kept in memory (a session saved from the state).
#[derive(Clone, Default)]
struct MemorySink(Arc<Mutex<Vec<u8>>>);

impl MemorySink {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl Sink for MemorySink {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("buffer poisoned"))?
            .extend_from_slice(bytes);
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        if let Ok(mut b) = self.0.lock() {
            b.truncate(len as usize);
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}
