//! What dexar writes: a re-run of explain leaves no overlay of the earlier
//! answer, toy export / toy data never mix their output into an existing
//! directory, eval checks --out before working and keeps partial results
//! when interrupted.

use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_rerun_of_explain_leaves_no_overlay_of_the_earlier_one() {
    let out = tempfile::tempdir().unwrap();
    let o = out.path();
    let model = tiny_llava();
    assert_ok(&run(&explain_args(&model, o, &["--max-tokens", "4"])));
    assert!(o.join("raw-attention/token_003.png").exists());
    std::fs::write(o.join("notes.txt"), b"mine").unwrap();
    let args = ["--max-tokens", "2", "--strategy", "dexar"];
    assert_ok(&run(&explain_args(&model, o, &args)));
    assert_eq!(
        names(o),
        ["dexar", "dexar-unfiltered", "explain.json", "notes.txt"]
    );
    assert_eq!(
        names(&o.join("dexar")),
        ["sentence.png", "token_000.png", "token_001.png"]
    );
    // JSON only: no overlays of the earlier runs stay beside it.
    assert_ok(&run(&explain_args(&model, o, &["--no-png"])));
    assert_eq!(names(o), ["explain.json", "notes.txt"]);
}

#[test]
fn toy_export_and_data_refuse_a_non_empty_directory_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::write(model.join("model.safetensors.index.json"), b"{}").unwrap();
    std::fs::write(model.join("README.md"), b"mine").unwrap();
    assert_user_error(
        &run(&["toy", "export", s(&model)]),
        "is not empty; choose a new directory, or pass --force",
    );
    assert_eq!(names(&model), ["README.md", "model.safetensors.index.json"]);
    assert_ok(&run(&["toy", "export", s(&model), "--force"]));
    assert_eq!(
        names(&model),
        [
            "README.md",
            "config.json",
            "model.safetensors",
            "preprocessor_config.json",
            "tokenizer.json"
        ],
        "the old index, which would win over the new weights, is gone"
    );

    let data = dir.path().join("data");
    assert_ok(&run(&["toy", "data", s(&data), "--n", "2"]));
    assert_user_error(&run(&["toy", "data", s(&data), "--n", "1"]), "is not empty");
    assert_ok(&run(&["toy", "data", s(&data), "--n", "1", "--force"]));
    let lines = std::fs::read_to_string(data.join("data.jsonl")).unwrap();
    assert!(
        lines.lines().all(|l| l.contains("images/00000.png")),
        "only the new set: {lines}"
    );
    assert_eq!(names(&data.join("images")).len(), 1);
    assert_eq!(
        names(dir.path()),
        ["data", "model"],
        "no temporary directory left"
    );
}

#[test]
fn eval_checks_its_output_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    for (out, needle) in [
        (file.join("sub/r.json"), "cannot write there"),
        (dir.path().to_path_buf(), "use a .json or .csv file name"),
        (dir.path().join("d.json"), "is a directory"),
    ] {
        if out.extension().is_some() && !out.starts_with(&file) {
            std::fs::create_dir_all(&out).unwrap();
        }
        let o = run(&["eval", "--data", "toy:100000", "--out", s(&out)]);
        assert_user_error(&o, needle);
    }
}

#[cfg(unix)]
#[test]
fn an_interrupted_eval_keeps_the_results_so_far() {
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("r.json");
    let mut child = isolated()
        .args(["eval", "--data", "toy:5000", "--out", s(&result)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(6));
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < LIMIT, "eval did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.starts_with("error: interrupted after "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(doc["data"]["interrupted"], true);
    let items = doc["data"]["items"].as_u64().unwrap();
    assert!(items < 5000, "{items}");
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("{items} items from toy:5000")));
}
