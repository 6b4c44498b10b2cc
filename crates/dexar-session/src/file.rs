//! Reading a session file whole ([`Session`]) or just its outline
//! ([`Outline`], for listings), with every inconsistency a damaged or
//! foreign file can have turned into one [`ReadError`] sentence. A torn tail
//! (a writer killed mid-record) is not an error: the intact part is read and
//! [`Session::warning`] says what was dropped.

use dexar_core::StepTrace;
use image::RgbImage;
use std::path::{Path, PathBuf};

use crate::format::{read_bytes, split_records, FormatError, RawRecord, FORMAT};
use crate::records::{
    EndRecord, HistoryTurn, ImageRecord, Record, SessionHeader, TokenRecord, TurnRecord,
};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("session {path}: cannot read it ({message})")]
    Io { path: PathBuf, message: String },
    #[error("session {path}: {error}")]
    Format { path: PathBuf, error: FormatError },
    #[error("session {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ReadError {
    fn invalid(path: &Path, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// The image of a conversation, as recorded.
#[derive(Debug, Clone)]
pub struct SessionImage {
    pub label: String,
    /// The image file's bytes (PNG for a generated image).
    pub original: Vec<u8>,
    pub original_format: String,
    pub width: u32,
    pub height: u32,
    /// What the model saw, at the model's resolution.
    pub model_view: RgbImage,
    /// The heatmap grid of this image's traces.
    pub grid: [usize; 2],
}

/// One conversation: an image, earlier exchanges not recorded here, and
/// the indices of its turns in [`Session::turns`].
#[derive(Debug, Clone)]
pub struct Conversation {
    pub image: SessionImage,
    pub history: Vec<HistoryTurn>,
    pub turns: Vec<usize>,
}

/// A recorded turn with the traces of its tokens.
#[derive(Debug, Clone)]
pub struct RecordedTurn {
    pub record: TurnRecord,
    /// Index in [`Session::conversations`].
    pub conversation: usize,
    pub steps: Vec<StepTrace>,
    /// `None` when the recording stopped before the turn ended.
    pub end: Option<EndRecord>,
}

impl RecordedTurn {
    pub fn answer(&self) -> String {
        self.steps.iter().map(|s| s.token_text.as_str()).collect()
    }

    /// `eos`, `maxtokens`, ... or `interrupted` when the recording stopped
    /// half-way, `failed` when generation failed.
    pub fn stop_name(&self) -> String {
        match &self.end {
            None => "interrupted".into(),
            Some(EndRecord { stop: Some(s), .. }) => s.clone(),
            Some(_) => "failed".into(),
        }
    }
}

/// A session file read whole.
#[derive(Debug, Clone)]
pub struct Session {
    pub path: PathBuf,
    pub header: SessionHeader,
    pub conversations: Vec<Conversation>,
    /// Every turn in file order (turn `n` is `turns[n - 1]`).
    pub turns: Vec<RecordedTurn>,
    /// What was dropped from a torn tail, if anything.
    pub warning: Option<String>,
}

/// What a listing shows of a session, read without decoding any trace.
#[derive(Debug, Clone)]
pub struct Outline {
    pub path: PathBuf,
    pub header: SessionHeader,
    pub images: Vec<String>,
    pub turns: usize,
    pub tokens: usize,
    pub bytes: u64,
    pub warning: Option<String>,
}

fn read(path: &Path) -> Result<Vec<u8>, ReadError> {
    std::fs::read(path).map_err(|e| ReadError::Io {
        path: path.to_path_buf(),
        message: match e.kind() {
            std::io::ErrorKind::NotFound => "file not found".into(),
            _ => e.to_string(),
        },
    })
}

/// The records of a file as typed values (unknown types skipped), the
/// header first.
struct Typed<'a> {
    header: SessionHeader,
    records: Vec<(Record, RawRecord<'a>)>,
    warning: Option<String>,
}

fn typed<'a>(path: &Path, data: &'a [u8]) -> Result<Typed<'a>, ReadError> {
    let format = |error| ReadError::Format {
        path: path.to_path_buf(),
        error,
    };
    let split = split_records(data).map_err(format)?;
    let warning = split.torn.map(|why| {
        format!(
            "session {}: {why}; read the {} intact bytes before it",
            path.display(),
            split.intact_len
        )
    });
    let mut records = Vec::with_capacity(split.records.len());
    for raw in split.records {
        let corrupt = |reason: String| {
            format(FormatError::Corrupt {
                index: raw.index,
                offset: raw.offset,
                reason,
            })
        };
        let value: serde_json::Value = serde_json::from_slice(raw.json)
            .map_err(|e| corrupt(format!("its JSON does not parse ({e})")))?;
        let kind = value
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string();
        if !Record::TYPES.contains(&kind.as_str()) {
            // A record type of a later dexar: skipped.
            continue;
        }
        let record: Record = serde_json::from_value(value)
            .map_err(|e| corrupt(format!("a {kind} record with unexpected fields ({e})")))?;
        records.push((record, raw));
    }
    let header = match records.first() {
        Some((Record::Session(h), _)) => h.clone(),
        _ => {
            return Err(ReadError::invalid(
                path,
                "the first record is not the session header",
            ))
        }
    };
    if header.format != FORMAT {
        return Err(format(FormatError::Version(header.format)));
    }
    Ok(Typed {
        header,
        records,
        warning,
    })
}

impl Session {
    /// Reads and checks a whole session file.
    pub fn open(path: &Path) -> Result<Session, ReadError> {
        Self::parse(path, &read(path)?)
    }

    /// Reads a session from its bytes; `path` names it in messages.
    pub fn parse(path: &Path, data: &[u8]) -> Result<Session, ReadError> {
        let Typed {
            header,
            records,
            warning,
        } = typed(path, data)?;
        let invalid = |m: String| ReadError::invalid(path, m);
        let mut session = Session {
            path: path.to_path_buf(),
            header,
            conversations: Vec::new(),
            turns: Vec::new(),
            warning,
        };
        for (record, raw) in records.into_iter().skip(1) {
            match record {
                Record::Session(_) => {
                    return Err(invalid(format!(
                        "a second session header at byte {}",
                        raw.offset
                    )))
                }
                Record::Image(image) => session.add_image(image, raw.payload)?,
                Record::Turn(turn) => session.add_turn(turn)?,
                Record::Token(token) => session.add_token(token, raw.payload)?,
                Record::End(end) => session.end_turn(end)?,
            }
        }
        Ok(session)
    }

    fn invalid(&self, message: String) -> ReadError {
        ReadError::invalid(&self.path, message)
    }

    fn add_image(&mut self, image: ImageRecord, payload: &[u8]) -> Result<(), ReadError> {
        let n = self.conversations.len() + 1;
        let what = format!("the image of conversation {n}");
        let bad = |e: FormatError| self.invalid(format!("{what}: {e}"));
        let blob = |name: &str| {
            image
                .blobs
                .get(name)
                .ok_or_else(|| self.invalid(format!("{what} has no `{name}` block")))
        };
        let original = read_bytes("original", blob("original")?, payload).map_err(bad)?;
        let view_info = blob("view")?;
        let view_bytes = read_bytes("view", view_info, payload).map_err(bad)?;
        let model_view = match view_info.shape.as_slice() {
            &[h, w, 3] => RgbImage::from_raw(w as u32, h as u32, view_bytes),
            _ => None,
        }
        .ok_or_else(|| {
            self.invalid(format!(
                "{what}: the view's shape {:?} is not [height, width, 3]",
                view_info.shape
            ))
        })?;
        self.conversations.push(Conversation {
            image: SessionImage {
                label: image.label,
                original,
                original_format: image.original_format,
                width: image.width,
                height: image.height,
                model_view,
                grid: image.grid.unwrap_or(self.header.model.grid),
            },
            history: image.history,
            turns: Vec::new(),
        });
        Ok(())
    }

    fn add_turn(&mut self, record: TurnRecord) -> Result<(), ReadError> {
        let n = self.turns.len() + 1;
        if record.turn != n {
            return Err(self.invalid(format!("turn {} comes where turn {n} should", record.turn)));
        }
        let Some(conversation) = self.conversations.len().checked_sub(1) else {
            return Err(self.invalid(format!(
                "turn {n} has no image: the image block before it is missing"
            )));
        };
        self.conversations[conversation]
            .turns
            .push(self.turns.len());
        self.turns.push(RecordedTurn {
            record,
            conversation,
            steps: Vec::new(),
            end: None,
        });
        Ok(())
    }

    /// The open turn `number` a token or end record belongs to.
    fn open_turn(&mut self, number: usize, what: &str) -> Result<&mut RecordedTurn, ReadError> {
        match self.turns.last() {
            Some(t) if t.record.turn == number && t.end.is_none() => {}
            _ => {
                return Err(self.invalid(format!(
                    "{what} of turn {number} does not follow that turn's start"
                )))
            }
        }
        let last = self.turns.len() - 1;
        Ok(&mut self.turns[last])
    }

    fn add_token(&mut self, token: TokenRecord, payload: &[u8]) -> Result<(), ReadError> {
        let header = &self.header.model;
        let what = format!("token {} of turn {}", token.step, token.turn);
        // The grid of the image the turn is about (a turn always follows its image).
        let grid = match self.conversations.last() {
            Some(c) => c.image.grid,
            None => header.grid,
        };
        // The grid of the token's maps: its one region's, or its tiles composed.
        let maps = dexar_core::regions::map_grid(&token.regions());
        if [maps.height, maps.width] != grid {
            return Err(self.invalid(format!(
                "{what} has a {}x{} patch grid but its image, seen by the session's model {}, has {}x{}; the traces do not belong to this model",
                maps.height, maps.width, header.label, grid[0], grid[1]
            )));
        }
        if token.num_heads != header.num_heads
            || token.layers.iter().any(|&l| l >= header.num_layers)
        {
            return Err(self.invalid(format!(
                "{what} has layers {:?} x {} heads, which the model ({} layers x {} heads) does not have",
                token.layers, token.num_heads, header.num_layers, header.num_heads
            )));
        }
        let trace = token
            .trace(payload)
            .map_err(|e| self.invalid(format!("{what}: {e}")))?;
        let turn = self.open_turn(token.turn, &what)?;
        if token.step != turn.steps.len() {
            let expected = turn.steps.len();
            return Err(self.invalid(format!("{what} comes where token {expected} should")));
        }
        turn.steps.push(trace);
        Ok(())
    }

    fn end_turn(&mut self, end: EndRecord) -> Result<(), ReadError> {
        let what = "the end".to_string();
        let turn = self.open_turn(end.turn, &what)?;
        turn.end = Some(end);
        Ok(())
    }

    /// Turn `number` (1-based), or the last turn that has tokens.
    pub fn turn(&self, number: Option<usize>) -> Result<&RecordedTurn, String> {
        match number {
            Some(n) => self.turns.get(n.wrapping_sub(1)).ok_or_else(|| {
                format!("no turn {n}: the session has turns 1-{}", self.turns.len())
            }),
            None => self
                .turns
                .iter()
                .rev()
                .find(|t| !t.steps.is_empty())
                .ok_or_else(|| "the session has no answer with tokens".to_string()),
        }
    }
}

impl Outline {
    /// The outline of a session file, without decoding traces.
    pub fn read(path: &Path) -> Result<Outline, ReadError> {
        Self::parse(path, &read(path)?)
    }

    /// The outline of a session's bytes; `path` names it in messages.
    pub fn parse(path: &Path, data: &[u8]) -> Result<Outline, ReadError> {
        let Typed {
            header,
            records,
            warning,
        } = typed(path, data)?;
        let mut outline = Outline {
            path: path.to_path_buf(),
            header,
            images: Vec::new(),
            turns: 0,
            tokens: 0,
            bytes: data.len() as u64,
            warning,
        };
        for (record, _) in records {
            match record {
                Record::Image(i) => outline.images.push(i.label),
                Record::Turn(_) => outline.turns += 1,
                Record::Token(_) => outline.tokens += 1,
                _ => {}
            }
        }
        Ok(outline)
    }
}

/// The session files (`*.dexar`) of a directory, newest first, each read
/// as an outline or as the one-line reason it cannot be.
pub fn list_sessions(dir: &Path) -> std::io::Result<Vec<Result<Outline, ReadError>>> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "dexar") && path.is_file() {
            let modified = path
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            files.push((modified, path));
        }
    }
    files.sort_by(|a, b| b.cmp(a));
    Ok(files.into_iter().map(|(_, p)| Outline::read(&p)).collect())
}
