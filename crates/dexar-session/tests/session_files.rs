//! Session files end to end on the bundled model: a conversation recorded
//! as it streams reads back bit for bit, opens without the model, survives
//! a torn tail and a failing disk, and damaged files are refused in one line.

mod common;

use common::{ask, recording, state};
use dexar_model::{LoadOptions, ModelSpec};
use dexar_plugin::host::PluginRegistry;
use dexar_session::format::{encode_file, split_records, Blobs};
use dexar_session::recorder::Sink;
use dexar_session::{
    open_model, AppState, Destination, Recorder, Selection, Session, Settings, StateError,
    TraceDtype,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

fn target(s: &mut AppState, answer: &str) {
    let ask = s.prepare_target(answer).unwrap();
    let outcome = s.stream(&ask, &AtomicBool::new(false), &mut |_| {});
    s.record(ask, outcome);
}

fn maps(s: &AppState, strategy: &str) -> Vec<Vec<f32>> {
    let n = s.answer.as_ref().unwrap().steps.len();
    (0..n)
        .map(|i| s.shown(strategy, &Selection::Token(i)).unwrap().map01)
        .chain([s.shown(strategy, &Selection::All).unwrap().map01])
        .collect()
}

#[test]
fn a_recorded_conversation_reads_back_bit_exactly_and_opens_without_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = recording(dir.path(), TraceDtype::Auto);
    let path = s.recording_path().unwrap();
    assert!(!path.exists(), "the file is created with the first turn");
    assert!(path.starts_with(dir.path()));
    assert!(
        path.to_string_lossy().ends_with("-bundled-toy.dexar"),
        "{path:?}"
    );
    ask(&mut s, "describe the image");
    let first = s.answer.as_ref().unwrap().steps.clone();
    ask(&mut s, "how many shapes ?");
    target(&mut s, "a red circle");
    assert!(s.take_warnings().is_empty());

    let session = Session::open(&path).unwrap();
    assert!(session.warning.is_none());
    assert_eq!(session.header.model, s.identity);
    assert_eq!(session.header.format, "dexar.session/1");
    assert_eq!(session.turns.len(), 3);
    assert_eq!(session.conversations.len(), 1);
    let conv = &session.conversations[0];
    assert_eq!(conv.image.label, s.image.label);
    assert_eq!(conv.image.model_view, s.image.model_view);
    assert_eq!(conv.image.model_view.dimensions(), (64, 64));
    assert_eq!(
        conv.image.original,
        dexar_toy::SAMPLE_IMAGES[0].1,
        "the image file's bytes"
    );
    // Bit for bit (StepTrace's equality compares every f32).
    assert_eq!(session.turns[0].steps, first);
    assert_eq!(session.turns[2].steps, s.answer.as_ref().unwrap().steps);
    assert_eq!(
        session.turns[2].record.target.as_deref(),
        Some("a red circle")
    );
    assert_eq!(session.turns[2].stop_name(), "targetend");
    assert_eq!(session.turns[0].record.settings.traced_layers, [0, 3]);
    let ids: Vec<u32> = session.turns[0].steps.iter().map(|t| t.token_id).collect();
    assert!(!ids.is_empty());

    // Without the model: the same turns and the same maps, no new answers.
    let opened = AppState::from_session(
        &session,
        None,
        None,
        s.settings.clone(),
        PluginRegistry::default(),
    )
    .unwrap();
    assert!(opened.model.is_none());
    assert_eq!(opened.turns, s.turns);
    for strategy in ["dexar", "raw-attention", "grad-x-attn"] {
        assert_eq!(maps(&opened, strategy), maps(&s, strategy), "{strategy}");
    }
    assert!(matches!(
        opened.prepare_ask("what color ?", None),
        Err(StateError::NoModel)
    ));
    // An earlier turn, with the model: it can go on from there.
    let model = open_model(&ModelSpec::Bundled, &LoadOptions::default()).unwrap();
    let mut again = AppState::from_session(
        &session,
        Some(1),
        Some(model),
        s.settings.clone(),
        PluginRegistry::default(),
    )
    .unwrap();
    assert!(again.model.is_some());
    assert_eq!(again.turns.len(), 1);
    assert_eq!(again.answer.as_ref().unwrap().steps, first);
    ask(&mut again, "how many shapes ?");
    assert_eq!(again.turns.len(), 2);
    let e = AppState::from_session(
        &session,
        Some(4),
        None,
        Settings::default(),
        PluginRegistry::default(),
    )
    .err()
    .unwrap();
    assert_eq!(e.to_string(), "no turn 4: the session has turns 1-3");
}

#[test]
fn new_images_and_cleared_conversations_start_conversations_and_a_model_switch_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = recording(dir.path(), TraceDtype::F32);
    ask(&mut s, "describe the image");
    s.clear();
    ask(&mut s, "how many shapes ?");
    let path = s.recording_path().unwrap();
    let session = Session::open(&path).unwrap();
    assert_eq!(session.conversations.len(), 2);
    assert_eq!(session.conversations[1].turns, [1]);
    s.switch_model(&ModelSpec::Bundled).unwrap();
    let next = s.recording_path().unwrap();
    assert_ne!(next, path);
    ask(&mut s, "describe the image");
    assert_eq!(Session::open(&next).unwrap().turns.len(), 1);
    assert_eq!(Session::open(&path).unwrap().turns.len(), 2);
}

#[test]
fn a_torn_tail_keeps_every_earlier_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = recording(dir.path(), TraceDtype::Auto);
    ask(&mut s, "describe the image");
    let path = s.recording_path().unwrap();
    let whole = std::fs::read(&path).unwrap();
    let steps = s.answer.as_ref().unwrap().steps.clone();
    // Every cut inside the end record and the last token record.
    let session = Session::open(&path).unwrap();
    assert_eq!(session.turns[0].steps.len(), steps.len());
    let mut cuts_seen = 0;
    for cut in (1..whole.len() / 3).step_by(37).map(|k| whole.len() - k) {
        let torn = dir.path().join("torn.dexar");
        std::fs::write(&torn, &whole[..cut]).unwrap();
        let Ok(t) = Session::open(&torn) else {
            panic!("cut at {cut} is not a torn tail")
        };
        let turn = &t.turns[0];
        assert!(turn.steps.len() <= steps.len());
        assert_eq!(turn.steps[..], steps[..turn.steps.len()], "cut {cut}");
        if turn.end.is_none() {
            assert!(t.warning.is_some() || turn.steps.len() == steps.len());
            assert_eq!(turn.stop_name(), "interrupted");
            cuts_seen += 1;
        }
    }
    assert!(cuts_seen > 10);
}

/// A disk that fills up after `room` bytes.
#[derive(Clone)]
struct FillingDisk {
    bytes: Arc<Mutex<Vec<u8>>>,
    room: usize,
}

impl Sink for FillingDisk {
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut b = self.bytes.lock().unwrap();
        let fits = self.room.saturating_sub(b.len()).min(bytes.len());
        b.extend_from_slice(&bytes[..fits]);
        if fits < bytes.len() {
            return Err(std::io::Error::other("No space left on device"));
        }
        Ok(())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.bytes.lock().unwrap().truncate(len as usize);
        Ok(())
    }
    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_disk_stops_recording_with_one_warning_and_keeps_the_file_whole() {
    let run = |room: usize| {
        let mut s = state();
        let disk = FillingDisk {
            bytes: Arc::default(),
            room,
        };
        s.set_recorder(Some(Recorder::with_sink(
            PathBuf::from("full.dexar"),
            Box::new(disk.clone()),
            &s.identity,
            TraceDtype::F32,
        )));
        ask(&mut s, "describe the image");
        (s, disk)
    };
    // Where the 4th token record starts when there is room for everything
    // (records: header, image, turn, tokens...): the disk fills inside it.
    let whole = run(usize::MAX).1.bytes.lock().unwrap().clone();
    let split = split_records(&whole).unwrap();
    let (mut s, disk) = run(split.records[6].offset + 10);
    let first = s.answer.as_ref().unwrap().steps.clone();
    ask(&mut s, "how many shapes ?");
    ask(&mut s, "what color is the circle ?");
    let warnings = s.take_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .starts_with("recording stopped: cannot write full.dexar (No space left on device)"),
        "{}",
        warnings[0]
    );
    assert!(s.recording_path().is_none());
    // The conversation went on.
    assert_eq!(s.turns.len(), 3);
    let bytes = disk.bytes.lock().unwrap().clone();
    assert_eq!(bytes.len(), split.records[6].offset);
    let session = Session::parse(Path::new("full.dexar"), &bytes).unwrap();
    assert!(session.warning.is_none(), "no torn record left behind");
    assert_eq!(session.turns.len(), 1);
    assert_eq!(session.turns[0].steps[..], first[..3]);
}

#[test]
fn an_unwritable_destination_is_known_at_start_or_at_the_first_turn() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let id = state().identity;
    assert!(Recorder::new(
        Destination::Directory(file.join("sessions")),
        &id,
        TraceDtype::Auto
    )
    .is_err());
    assert!(Recorder::new(Destination::File(file.clone()), &id, TraceDtype::Auto).is_err());
    if Path::new("/dev/full").exists() {
        // /dev/full exists but is refused as an existing file; its
        // behaviour (every write fails) is the sink test above.
        assert!(
            Recorder::new(Destination::File("/dev/full".into()), &id, TraceDtype::Auto).is_err()
        );
    }
    let mut s = state();
    let gone = dir.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let r = Recorder::new(
        Destination::Directory(gone.clone()),
        &s.identity,
        TraceDtype::Auto,
    )
    .unwrap();
    s.set_recorder(Some(r));
    std::fs::remove_dir(&gone).unwrap();
    ask(&mut s, "describe the image");
    let w = s.take_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("recording stopped") && !w[0].contains('\n'),
        "{}",
        w[0]
    );
    assert!(s.answer.is_some());
}

#[test]
fn a_conversation_saves_and_loads_with_or_without_recording() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state();
    assert!(s.save_session(&dir.path().join("none.dexar")).is_err());
    ask(&mut s, "describe the image");
    target(&mut s, "a red circle");
    let saved = dir.path().join("saved.dexar");
    s.save_session(&saved).unwrap();
    let session = Session::open(&saved).unwrap();
    assert_eq!(session.turns.len(), 1);
    assert_eq!(session.conversations[0].history.len(), 0);
    let mut other = state();
    ask(&mut other, "how many shapes ?");
    assert!(other.load_session(&session, None).unwrap());
    assert_eq!(other.turns, s.turns);
    assert_eq!(maps(&other, "dexar"), maps(&s, "dexar"));

    // Recording: /save copies the file, which holds every turn.
    let mut r = recording(dir.path(), TraceDtype::Auto);
    ask(&mut r, "describe the image");
    ask(&mut r, "how many shapes ?");
    let copy = dir.path().join("copy.dexar");
    r.save_session(&copy).unwrap();
    let own = r.recording_path().unwrap();
    let e = r.save_session(&own).unwrap_err();
    assert!(
        e.contains("is the file this conversation is recorded to"),
        "{e}"
    );
    assert_eq!(Session::open(&copy).unwrap().turns.len(), 2);
    // A loaded conversation continued while recording keeps its history.
    r.load_session(&session, None).unwrap();
    ask(&mut r, "what color is the circle ?");
    let again = Session::open(&r.recording_path().unwrap()).unwrap();
    assert_eq!(again.conversations.len(), 2);
    assert_eq!(again.conversations[1].history.len(), 1);
    let reopened = AppState::from_session(
        &again,
        None,
        None,
        Settings::default(),
        PluginRegistry::default(),
    )
    .unwrap();
    assert_eq!(reopened.turns, r.turns);
}

#[test]
fn damaged_files_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = recording(dir.path(), TraceDtype::Auto);
    ask(&mut s, "describe the image");
    let path = s.recording_path().unwrap();
    let whole = std::fs::read(&path).unwrap();
    let check = |bytes: &[u8], want: &str| {
        let p = dir.path().join("bad.dexar");
        std::fs::write(&p, bytes).unwrap();
        let e = Session::open(&p)
            .err()
            .unwrap_or_else(|| panic!("{want}: accepted"))
            .to_string();
        assert!(e.contains(want), "{want}: {e}");
        assert!(e.starts_with("session ") && !e.contains('\n'), "{e}");
    };
    check(&whole[..10], "truncated");
    check(&whole[..16], "truncated");
    check(
        b"PK\x03\x04 a zip file, not a session",
        "not a dexar session file",
    );
    let mut v9 = whole.clone();
    v9[..16].copy_from_slice(b"dexar.session/9\n");
    check(&v9, "session format `dexar.session/9` is not supported");
    let mut middle = whole.clone();
    middle[whole.len() / 2] ^= 0x5a;
    check(&middle, "corrupt");
    let e = Session::open(&dir.path().join("missing.dexar"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.ends_with("cannot read it (file not found)"), "{e}");

    // Files rewritten record by record, one thing changed.
    let records: Vec<(serde_json::Value, Blobs)> = split_records(&whole)
        .unwrap()
        .records
        .iter()
        .map(|r| r.decode().unwrap())
        .collect();
    let rewritten = |edit: &dyn Fn(usize, &mut serde_json::Value, &mut Blobs) -> bool| {
        let mut records = records.clone();
        let kept = records
            .iter_mut()
            .enumerate()
            .filter_map(|(i, (json, blobs))| {
                edit(i, json, blobs).then(|| (json.clone(), blobs.clone()))
            });
        encode_file(kept.collect::<Vec<_>>()).unwrap()
    };
    // Traces of another grid than their image's.
    let other_grid = rewritten(&|_, json, _| {
        if json["type"] == "image" {
            json["grid"] = serde_json::json!([4, 4]);
        }
        true
    });
    check(
        &other_grid,
        "has a 8x8 patch grid but its image, seen by the session's model bundled:toy, has 4x4",
    );
    // Image records without a grid (files of earlier versions): the header's.
    let old_file = rewritten(&|i, json, _| {
        if i == 0 {
            json["model"]["grid"] = serde_json::json!([4, 4]);
        }
        if json["type"] == "image" {
            json.as_object_mut().unwrap().remove("grid");
        }
        true
    });
    check(
        &old_file,
        "has a 8x8 patch grid but its image, seen by the session's model bundled:toy, has 4x4",
    );
    // A turn with no image record before it.
    check(
        &rewritten(&|i, _, _| i != 1),
        "turn 1 has no image: the image block before it is missing",
    );
    // An image record without its view.
    let no_view = rewritten(&|i, _, blobs| {
        if i == 1 {
            blobs.info.remove("view");
        }
        true
    });
    check(&no_view, "the image of conversation 1 has no `view` block");
}
