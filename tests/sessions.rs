//! End-to-end tests of recorded sessions: the REPL records by default, a
//! recording killed mid-answer replays, `dexar replay` writes what `dexar
//! explain` writes (maps equal to 1e-6), `dexar sessions` lists, `/load`
//! works without the model, and damaged files are refused in one line.
//! The HTML export is tested in export_html.rs.

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dexar_tests::{arg as s, dexar_at, record_session, repl_at, text};

fn tiny_llava() -> PathBuf {
    dexar_tests::fixtures().join("tiny-llava")
}

fn square() -> PathBuf {
    dexar_tests::fixtures().join("images/square.png")
}

fn sessions_dir(home: &Path) -> PathBuf {
    home.join("data/dexar/sessions")
}

fn recorded(home: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(sessions_dir(home))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("explain.json")).unwrap()).unwrap()
}

/// Equal JSON, numbers within `tol`.
fn assert_close(a: &Value, b: &Value, tol: f64, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= tol, "{at}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_close(x, y, tol, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(x), keys(y), "{at}: keys");
            for (k, v) in x {
                assert_close(v, &y[k], tol, &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

#[test]
fn replay_writes_what_explain_writes_with_maps_equal_to_1e6() {
    let home = tempfile::tempdir().unwrap();
    let session = home.path().join("s.dexar");
    let o = repl_at(
        home.path(),
        &["--max-tokens", "4", "--session", s(&session)],
        "What is in the image?\n",
    );
    assert!(text(&o.stdout).contains(&format!("recording to {}", s(&session))));
    assert!(recorded(home.path()).is_empty(), "--session names the file");
    for layer_index in ["-2", "-10"] {
        let (a, b) = (home.path().join("explain"), home.path().join("replay"));
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
        let e = dexar_at(home.path())
            .args([
                "explain",
                "--model",
                s(&tiny_llava()),
                "--image",
                s(&square()),
            ])
            .args(["--prompt", "What is in the image?", "--max-tokens", "4"])
            .args(["--layer-index", layer_index, "--out", s(&a)])
            .output()
            .unwrap();
        assert!(e.status.success(), "{}", text(&e.stderr));
        // No model: replay must not need one (a bad --model would be refused
        // as an unknown flag anyway: replay has none).
        let r = dexar_at(home.path())
            .args([
                "replay",
                s(&session),
                "--layer-index",
                layer_index,
                "--out",
                s(&b),
            ])
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", text(&r.stderr));
        let (ja, jb) = (json(&a), json(&b));
        assert_eq!(ja["tokens"].as_array().unwrap().len(), 4);
        assert_close(&ja, &jb, 1e-6, "explain.json");
        // The overlays: the same pictures (maps equal, drawn over the same view).
        for strategy in ["dexar", "dexar-unfiltered", "raw-attention", "grad-x-attn"] {
            for png in ["token_000.png", "token_003.png", "sentence.png"] {
                let pa = image::open(a.join(strategy).join(png)).unwrap().to_rgb8();
                let pb = image::open(b.join(strategy).join(png)).unwrap().to_rgb8();
                assert_eq!(pa.dimensions(), pb.dimensions());
                let worst = pa
                    .as_raw()
                    .iter()
                    .zip(pb.as_raw())
                    .map(|(x, y)| x.abs_diff(*y))
                    .max()
                    .unwrap();
                assert!(worst <= 1, "{strategy}/{png}: {worst}");
            }
        }
    }
    // JSON to standard output, like explain.
    let r = dexar_at(home.path())
        .args([
            "replay",
            s(&session),
            "--turn",
            "1",
            "--strategy",
            "raw-attention",
        ])
        .args([
            "--out",
            s(&home.path().join("r2")),
            "--json",
            "-",
            "--topk",
            "2",
        ])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(doc["settings"]["topk"], 2);
    assert_eq!(doc["settings"]["stop_reason"], "maxtokens");
    let names: Vec<&String> = doc["strategies"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["dexar", "dexar-unfiltered", "raw-attention"]);
}

/// Standard output of a child, collected as it comes.
fn collect(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    out
}

#[cfg(unix)]
#[test]
fn a_recording_killed_mid_answer_replays_every_streamed_token() {
    let home = tempfile::tempdir().unwrap();
    let mut child = dexar_at(home.path())
        .args(["--model", s(&tiny_llava()), "--image", s(&square())])
        .args(["--graphics", "ascii", "--max-tokens", "40"])
        .env(dexar_session::STEP_DELAY_ENV, "400")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = collect(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"What is in the image?\n").unwrap();
    // Kill (SIGKILL) once three tokens have streamed, mid-answer.
    let start = Instant::now();
    while !text(&out.lock().unwrap()).contains('₂') {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no tokens streamed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let streamed = text(&out.lock().unwrap());
    assert!(
        !streamed.contains("── "),
        "the answer was still streaming: {streamed}"
    );
    let files = recorded(home.path());
    assert_eq!(files.len(), 1, "{files:?}");

    let list = dexar_at(home.path()).arg("sessions").output().unwrap();
    let listing = text(&list.stdout);
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(
        listing.contains("tiny-llava") && listing.contains("square.png"),
        "{listing}"
    );

    let dir = home.path().join("replay");
    let r = dexar_at(home.path())
        .args(["replay", s(&files[0]), "--out", s(&dir)])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r.stderr));
    let doc = json(&dir);
    let tokens = doc["tokens"].as_array().unwrap();
    // At most the token in flight is lost: every printed token is there.
    assert!(tokens.len() >= 3, "{doc}");
    assert_eq!(doc["settings"]["stop_reason"], "interrupted");
    for (i, t) in tokens.iter().take(3).enumerate() {
        let sub = "₀₁₂".chars().nth(i).unwrap();
        let shown = format!("{}{sub}", t["text"].as_str().unwrap().trim_start());
        assert!(streamed.contains(&shown), "{shown} not in {streamed}");
    }
}

#[test]
fn recording_is_on_by_default_off_with_no_record_and_a_failure_is_a_warning() {
    let home = tempfile::tempdir().unwrap();
    repl_at(home.path(), &["--no-record"], "What is in the image?\n");
    assert!(recorded(home.path()).is_empty());
    let o = repl_at(
        home.path(),
        &[],
        "What is in the image?\n/clear\nWhat is it?\n",
    );
    let first = recorded(home.path());
    assert_eq!(first.len(), 1);
    assert!(text(&o.stdout).contains(&format!("recording to {}", s(&first[0]))));
    std::thread::sleep(Duration::from_millis(20));
    repl_at(home.path(), &[], "How many?\n");
    let both = recorded(home.path());
    assert_eq!(both.len(), 2);
    let newer = both.iter().find(|p| **p != first[0]).unwrap();
    let list = text(
        &dexar_at(home.path())
            .arg("sessions")
            .output()
            .unwrap()
            .stdout,
    );
    let rows: Vec<&str> = list.lines().collect();
    assert!(rows[0].starts_with("date") && rows.len() == 3, "{list}");
    assert!(rows[1].ends_with(s(newer)), "newest first: {list}");
    // The first session: 2 turns (a cleared conversation starts another).
    assert!(rows[2].contains("  2  "), "{list}");

    // A data directory that cannot be made: one warning, the REPL goes on.
    let blocker = home.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let mut cmd = dexar_at(home.path());
    cmd.env("XDG_DATA_HOME", &blocker)
        .args(["--model", s(&tiny_llava()), "--graphics", "ascii"]);
    let o = dexar_tests::run_with_input(&mut cmd, b"What is in the image?\n");
    let out = text(&o.stdout);
    assert!(o.status.success());
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].contains("this conversation is not recorded"),
        "{out}"
    );
    assert!(
        out.contains("end of answer") || out.contains("max-tokens"),
        "{out}"
    );

    // A --session file whose directory vanishes before the first answer.
    let gone = home.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let target = gone.join("s.dexar");
    let mut child = dexar_at(home.path())
        .args(["--model", s(&tiny_llava()), "--graphics", "ascii"])
        .args(["--session", s(&target)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::remove_dir(&gone).unwrap();
    stdin
        .write_all(b"What is in the image?\n/tokens\n")
        .unwrap();
    drop(stdin);
    let out = text(&child.wait_with_output().unwrap().stdout);
    assert!(
        out.contains("warning: recording stopped: cannot write"),
        "{out}"
    );
    assert!(out.contains("tokens of the last answer"), "{out}");

    // An existing --session file is refused (nothing is overwritten).
    let o = dexar_at(home.path())
        .args(["--session", s(&first[0])])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("the file exists"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_session_loads_without_its_model_to_explore_and_re_explain() {
    let home = tempfile::tempdir().unwrap();
    let session = record_session(home.path(), "tiny.dexar");
    // The bundled model is loaded; the session is of another one.
    let saved = home.path().join("copy.dexar");
    let script = format!(
        "/load {}\n/tokens\n/show 0\n/show all --raw\n/strategy use raw-attention\n/compare dexar grad-x-attn 1\n\
         /layers -1\n/show 1\nWhat color is it?\n/image {}\n/save {}\n/load {} 7\n/load /no/such.dexar\n",
        s(&session),
        s(&square()),
        s(&saved),
        s(&session)
    );
    let mut cmd = dexar_at(home.path());
    cmd.args(["--graphics", "ascii", "--size", "16x8", "--no-record"]);
    let o = dexar_tests::run_with_input(&mut cmd, script.as_bytes());
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for want in [
        &format!("opened {} · 1 turns", s(&session))[..],
        "is not loaded: explore and re-explain only",
        "tokens of the last answer",
        "dexar · token 0",
        "whole answer",
        "strategy raw-attention",
        "grad-x-attn",
        "maps now use layers 3-3",
        "raw-attention · token 1",
        "error: the model is not loaded",
        "/model SPEC loads one",
        &format!("wrote {}", s(&saved))[..],
        "error: no turn 7: the session has turns 1-1",
        "error: session /no/such.dexar: cannot read it (file not found)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // /image needs the model too.
    assert_eq!(
        out.matches("error: the model is not loaded").count(),
        2,
        "{out}"
    );
    assert!(dexar_session::Session::open(&saved).is_ok());
}

/// Runs `dexar replay FILE` and returns (exit code, stderr).
fn replay_of(home: &Path, bytes: &[u8]) -> (Option<i32>, String) {
    let file = home.join("bad.dexar");
    std::fs::write(&file, bytes).unwrap();
    let o = dexar_at(home)
        .args(["replay", s(&file), "--out", s(&home.join("out"))])
        .output()
        .unwrap();
    (o.status.code(), text(&o.stderr))
}

#[test]
fn damaged_session_files_are_refused_in_one_line_and_a_torn_tail_is_a_warning() {
    use dexar_session::format::{encode_file, split_records};
    let home = tempfile::tempdir().unwrap();
    let session = record_session(home.path(), "s.dexar");
    let whole = std::fs::read(&session).unwrap();
    let split = split_records(&whole).unwrap();
    let offsets: Vec<usize> = split.records.iter().map(|r| r.offset).collect();
    // The file rewritten record by record: some left out, one JSON edited.
    let rebuild = |keep: &dyn Fn(usize) -> bool, edit: &dyn Fn(usize, &mut Value)| {
        let records = split.records.iter().enumerate().filter(|(i, _)| keep(*i));
        let edited = records.map(|(i, raw)| {
            let (mut json, blobs) = raw.decode().unwrap();
            edit(i, &mut json);
            (json, blobs)
        });
        encode_file(edited.collect::<Vec<_>>()).unwrap()
    };
    let mut corrupt_middle = whole.clone();
    corrupt_middle[offsets[3] + 40] ^= 0xff;
    let mut v2 = whole.clone();
    v2[..16].copy_from_slice(b"dexar.session/2\n");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (whole[..12].to_vec(), "the file is truncated"),
        (
            b"GIF89a not a session at all".to_vec(),
            "not a dexar session file",
        ),
        (v2, "session format `dexar.session/2` is not supported"),
        (corrupt_middle, "is corrupt: its checksum does not match"),
        (
            rebuild(&|_| true, &|_, j| {
                if j["type"] == "image" {
                    j["grid"] = serde_json::json!([2, 8]);
                }
            }),
            "patch grid but its image, seen by the session's model",
        ),
        (
            rebuild(&|i| i != 1, &|_, _| {}),
            "the image block before it is missing",
        ),
    ];
    for (bytes, want) in cases {
        let (code, err) = replay_of(home.path(), &bytes);
        assert_eq!(code, Some(2), "{want}: {err}");
        assert!(
            err.starts_with("error: session ") && err.contains(want),
            "{want}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"));
    }
    // A torn last record: a warning, and the intact part is replayed.
    let (code, err) = replay_of(home.path(), &whole[..whole.len() - 30]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.starts_with("warning: session ") && err.contains("cut short"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let (code, err) = replay_of(home.path(), &whole);
    assert_eq!(code, Some(0), "{err}");
    let o = dexar_at(home.path())
        .args([
            "replay",
            s(&session),
            "--turn",
            "3",
            "--out",
            s(&home.path().join("o")),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no turn 3: the session has turns 1-1"));
}

#[test]
fn trace_dtype_chooses_how_traces_are_stored() {
    let home = tempfile::tempdir().unwrap();
    let dtypes = |path: &Path| -> Vec<String> {
        let whole = std::fs::read(path).unwrap();
        let split = dexar_session::format::split_records(&whole).unwrap();
        split
            .records
            .iter()
            .filter_map(|r| {
                let json: Value = serde_json::from_slice(r.json).unwrap();
                (json["type"] == "token").then(|| json["blobs"]["grads"]["dtype"].to_string())
            })
            .collect()
    };
    for (flag, want) in [("f16", "\"<f2\""), ("f32", "\"<f4\""), ("auto", "\"<f4\"")] {
        let file = home.path().join(format!("{flag}.dexar"));
        repl_at(
            home.path(),
            &[
                "--trace-dtype",
                flag,
                "--session",
                s(&file),
                "--max-tokens",
                "3",
            ],
            "What is in the image?\n",
        );
        let stored = dtypes(&file);
        assert!(
            !stored.is_empty() && stored.iter().all(|d| d == want),
            "{flag}: {stored:?}"
        );
        let o = dexar_at(home.path())
            .args(["replay", s(&file), "--out", s(&home.path().join(flag))])
            .output()
            .unwrap();
        assert!(o.status.success(), "{flag}: {}", text(&o.stderr));
    }
    let o = dexar_at(home.path())
        .args(["--trace-dtype", "f8"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("unknown trace dtype `f8`; use auto, f32, f16"));
}
