//! Recording a conversation as it happens: each record is appended to the
//! session file with one write as soon as it is known (a token as soon as
//! it streams), so a process killed at any moment leaves every earlier
//! record intact and at most the record in flight torn. A failed write (a
//! full disk, a vanished directory) cuts the file back to its last whole
//! record and stops recording with one warning; the conversation goes on.

use dexar_core::StepTrace;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::format::{encode_record, Blobs, FormatError, FORMAT, MAGIC};
use crate::image::LoadedImage;
use crate::model::ModelIdentity;
use crate::records::{
    token_record, EndRecord, HistoryTurn, ImageRecord, Record, SessionHeader, TraceDtype,
    TurnRecord,
};

/// Where a recorder writes: a file it chose in a directory (named after the
/// time and the model), or one the user named.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    Directory(PathBuf),
    File(PathBuf),
}

/// The default directory of recorded sessions, `<data dir>/dexar/sessions`
/// (on Linux `$XDG_DATA_HOME/dexar/sessions` or `~/.local/share/...`).
pub fn default_sessions_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("dexar").join("sessions"))
}

/// Something session records can be appended to.
pub trait Sink: Send {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Cuts what a failed append left back to `len` bytes.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
    /// Asks the system to put the bytes on disk (end of a turn).
    fn sync(&mut self) -> std::io::Result<()>;
}

impl Sink for File {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes)
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        std::io::Seek::seek(self, std::io::SeekFrom::Start(len)).map(|_| ())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_data()
    }
}

enum State {
    /// Nothing written yet: the file is created with the first turn.
    Planned,
    Open(Box<dyn Sink>),
    /// Recording stopped after an error (already reported).
    Stopped,
}

/// Appends a live conversation to a session file.
pub struct Recorder {
    destination: Destination,
    path: PathBuf,
    dtype: TraceDtype,
    state: State,
    /// Bytes of whole records written.
    written: u64,
    turns: usize,
    /// A turn has begun and not ended.
    in_turn: bool,
    conversations: usize,
    /// The next turn starts a conversation (a new image, a cleared one).
    new_conversation: bool,
    warnings: Vec<String>,
}

impl Recorder {
    /// A recorder for `model`'s conversations; a directory destination is
    /// created now, so an unwritable one is known at start.
    pub fn new(
        destination: Destination,
        model: &ModelIdentity,
        dtype: TraceDtype,
    ) -> std::io::Result<Self> {
        if let Destination::Directory(dir) = &destination {
            std::fs::create_dir_all(dir)?;
        }
        if let Destination::File(path) = &destination {
            if path.exists() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the file exists; name a new one",
                ));
            }
        }
        let path = plan_path(&destination, model, 0);
        Ok(Self::fresh(destination, path, dtype, State::Planned))
    }

    fn fresh(destination: Destination, path: PathBuf, dtype: TraceDtype, state: State) -> Self {
        Self {
            destination,
            path,
            dtype,
            state,
            written: 0,
            turns: 0,
            in_turn: false,
            conversations: 0,
            new_conversation: true,
            warnings: Vec::new(),
        }
    }

    /// A recorder appending to `sink` (a copy in memory, or in tests a
    /// sink that fails), the file's header written at once.
    pub fn with_sink(
        path: PathBuf,
        sink: Box<dyn Sink>,
        model: &ModelIdentity,
        dtype: TraceDtype,
    ) -> Self {
        let destination = Destination::File(path.clone());
        let mut recorder = Self::fresh(destination, path, dtype, State::Open(sink));
        recorder.write_header(model);
        recorder
    }

    /// The session file (created with the first turn).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether records still go to the file.
    pub fn is_recording(&self) -> bool {
        !matches!(self.state, State::Stopped)
    }

    /// Bytes of whole records in the file so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Warnings not yet shown (one line each).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The next turn starts a new conversation.
    pub fn new_conversation(&mut self) {
        self.new_conversation = true;
    }

    /// Another model: its conversations go to a new file.
    pub fn switch_model(&mut self, model: &ModelIdentity) {
        if matches!(self.state, State::Open(_)) || self.written > 0 {
            self.path = plan_path(&self.destination, model, 1);
        } else {
            self.path = plan_path(&self.destination, model, 0);
        }
        self.state = State::Planned;
        self.written = 0;
        self.turns = 0;
        self.in_turn = false;
        self.conversations = 0;
        self.new_conversation = true;
    }

    /// Records the start of a turn: the file and the conversation's image
    /// first if need be. Returns the turn's number in the file.
    pub fn begin_turn(
        &mut self,
        model: &ModelIdentity,
        image: &LoadedImage,
        history: &[HistoryTurn],
        turn: &TurnRecord,
    ) -> usize {
        if matches!(self.state, State::Planned) {
            self.open(model);
        }
        if self.new_conversation {
            self.new_conversation = false;
            self.conversations += 1;
            let (record, blobs) = image_record(self.conversations, image, history);
            self.append(record, blobs);
        }
        self.turns += 1;
        self.in_turn = true;
        let record = Record::Turn(TurnRecord {
            turn: self.turns,
            ..turn.clone()
        });
        self.append(record, Blobs::default());
        self.turns
    }

    /// Records one token of the current turn.
    pub fn token(&mut self, trace: &StepTrace) {
        if self.in_turn && matches!(self.state, State::Open(_)) {
            let (record, blobs) = token_record(self.turns, trace, self.dtype);
            self.append(record, blobs);
        }
    }

    /// Records how the current turn ended and asks for it to reach the disk.
    pub fn end_turn(&mut self, end: EndRecord) {
        if !std::mem::take(&mut self.in_turn) {
            return;
        }
        self.append(
            Record::End(EndRecord {
                turn: self.turns,
                ..end
            }),
            Blobs::default(),
        );
        if let State::Open(sink) = &mut self.state {
            // Durability against power loss only; the data is already written.
            let _ = sink.sync();
        }
    }

    /// Writes a copy of the file as it is now to `dest` (atomically).
    pub fn copy_to(&self, dest: &Path) -> Result<u64, String> {
        if self.written == 0 {
            return Err("nothing recorded yet".into());
        }
        let bytes = std::fs::read(&self.path)
            .map_err(|e| format!("cannot read {} ({e})", self.path.display()))?;
        let whole = bytes.get(..self.written as usize).unwrap_or(&bytes);
        dexar_core::write_atomic(dest, whole)
            .map_err(|e| format!("cannot write {} ({e})", dest.display()))?;
        Ok(whole.len() as u64)
    }

    fn open(&mut self, model: &ModelIdentity) {
        let mut attempt = 0;
        let file = loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&self.path)
            {
                Err(e)
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && matches!(self.destination, Destination::Directory(_))
                        && attempt < 100 =>
                {
                    attempt += 1;
                    self.path = plan_path(&self.destination, model, attempt);
                }
                other => break other,
            }
        };
        match file {
            Ok(file) => {
                self.state = State::Open(Box::new(file));
                self.write_header(model);
            }
            Err(e) => self.stop(&e.to_string()),
        }
    }

    fn write_header(&mut self, model: &ModelIdentity) {
        self.written = 0;
        self.append_bytes(MAGIC);
        self.append(Record::Session(header(model, self.dtype)), Blobs::default());
    }

    fn append(&mut self, record: Record, blobs: Blobs) {
        if !matches!(self.state, State::Open(_)) {
            return;
        }
        match encode_record(record.to_json(), blobs) {
            Ok(bytes) => self.append_bytes(&bytes),
            Err(FormatError::TooLarge(n)) => {
                self.stop(&format!("a record of {n} bytes is too large"))
            }
            Err(e) => self.stop(&e.to_string()),
        }
    }

    fn append_bytes(&mut self, bytes: &[u8]) {
        let State::Open(sink) = &mut self.state else {
            return;
        };
        match sink.append(bytes) {
            Ok(()) => self.written += bytes.len() as u64,
            Err(e) => {
                // Leave no torn record behind when we are still alive to cut it.
                let _ = sink.truncate(self.written);
                self.stop(&e.to_string());
            }
        }
    }

    fn stop(&mut self, why: &str) {
        self.state = State::Stopped;
        self.warnings.push(format!(
            "recording stopped: cannot write {} ({why}); the conversation goes on unrecorded{}",
            self.path.display(),
            if self.written > 0 {
                ", what was recorded before is intact"
            } else {
                ""
            }
        ));
    }
}

fn header(model: &ModelIdentity, dtype: TraceDtype) -> SessionHeader {
    SessionHeader {
        format: FORMAT.into(),
        created: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        dexar_version: env!("CARGO_PKG_VERSION").into(),
        model: model.clone(),
        trace_dtype: dtype,
    }
}

/// `<dir>/<YYYYmmdd-HHMMSS>-<model>[-N].dexar`, or the named file (with
/// `-<model>[-N]` added to its stem when `attempt > 0`).
fn plan_path(destination: &Destination, model: &ModelIdentity, attempt: usize) -> PathBuf {
    let suffix = if attempt > 0 {
        format!("-{}", attempt + 1)
    } else {
        String::new()
    };
    match destination {
        Destination::Directory(dir) => {
            let time = chrono::Local::now().format("%Y%m%d-%H%M%S");
            dir.join(format!("{time}-{}{suffix}.dexar", model.file_stem()))
        }
        Destination::File(path) if attempt == 0 => path.clone(),
        Destination::File(path) => {
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let ext = path
                .extension()
                .map(|e| format!(".{}", e.to_string_lossy()))
                .unwrap_or_default();
            path.with_file_name(format!("{stem}-{}{suffix}{ext}", model.file_stem()))
        }
    }
}

/// The image record of conversation `n` (the image file's bytes and what
/// the model saw) and its blobs.
pub fn image_record(n: usize, image: &LoadedImage, history: &[HistoryTurn]) -> (Record, Blobs) {
    use crate::format::Encoding;
    let (original, original_format) = image.original_bytes();
    let mut blobs = Blobs::default();
    blobs.add_bytes("original", &original, vec![original.len()], Encoding::Raw);
    let (w, h) = image.model_view.dimensions();
    blobs.add_bytes(
        "view",
        image.model_view.as_raw(),
        vec![h as usize, w as usize, 3],
        Encoding::Deflate,
    );
    let record = Record::Image(ImageRecord {
        conversation: n,
        label: image.label.clone(),
        width: image.image.width(),
        height: image.image.height(),
        original_format,
        grid: image.grid.map(|g| [g.height, g.width]),
        history: history.to_vec(),
        blobs: Default::default(),
    });
    (record, blobs)
}
