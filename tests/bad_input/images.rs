//! Images: decompression bombs (a few bytes of PNG declaring gigapixels),
//! pictures too elongated to resize, FIFOs and directories given as images;
//! in `explain`, in the REPL's `/image` (the conversation survives) and in
//! an `eval` data set (the item is skipped and counted).

use super::*;

/// Writes the bad images into `dir`: (file, what the error says).
fn bad_images(dir: &Path) -> Vec<(PathBuf, &'static str)> {
    let bomb = dir.join("bomb.png");
    std::fs::write(&bomb, dexar_tests::png_declaring(4_000_000, 1)).unwrap();
    let square_bomb = dir.join("square-bomb.png");
    std::fs::write(&square_bomb, dexar_tests::png_declaring(9000, 9000)).unwrap();
    let thin = dir.join("thin.png");
    image::GrayImage::new(16000, 1).save(&thin).unwrap();
    let sub = dir.join("folder.png");
    std::fs::create_dir(&sub).unwrap();
    let mut cases = vec![
        (
            bomb,
            "4000000x1 pixels; dexar takes at most 16384 pixels a side",
        ),
        (
            square_bomb,
            "9000x9000 pixels; dexar takes at most 16384 pixels a side and 64 megapixels",
        ),
        (thin, "16000x1 pixels is too elongated"),
        (sub, "is a directory, not a regular file"),
    ];
    #[cfg(unix)]
    {
        let fifo = dir.join("fifo.png");
        dexar_tests::mkfifo(&fifo);
        cases.push((fifo, "is a FIFO (named pipe), not a regular file"));
    }
    cases
}

#[test]
fn explain_refuses_bad_images_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (image, needle) in bad_images(dir.path()) {
        let o = explain(&tiny_llava(), &["--image", s(&image)]);
        assert_user_error(&o, needle);
    }
}

#[test]
fn the_repl_keeps_its_conversation_after_a_bad_image() {
    let dir = tempfile::tempdir().unwrap();
    let cases = bad_images(dir.path());
    let mut script = String::from("what is in the image?\n");
    for (image, _) in &cases {
        script.push_str(&format!("/image {}\n", s(image)));
    }
    script.push_str("/tokens\n");
    let home = tempfile::tempdir().unwrap();
    let mut cmd = isolated();
    cmd.args(["--model", s(&tiny_llava()), "--image", s(&square_png())])
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path());
    let o = dexar_tests::run_within(cmd, script.as_bytes(), LIMIT);
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    for (_, needle) in &cases {
        assert!(out.contains(needle), "no `{needle}` in:\n{out}");
    }
    assert!(
        out.contains("tokens of the last answer"),
        "the answer survived:\n{out}"
    );
    assert!(
        out.contains("image ") && out.contains("square.png"),
        "{out}"
    );
}

#[test]
fn eval_skips_and_counts_an_item_with_a_bad_image() {
    let dir = tempfile::tempdir().unwrap();
    dexar_toy::write_dataset(dir.path(), 2, 3).unwrap();
    let lines = std::fs::read_to_string(dir.path().join("data.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    let name = first["image"].as_str().unwrap();
    // Every question about that image is one item.
    let uses = lines.lines().filter(|l| l.contains(name)).count();
    assert!(uses < lines.lines().count());
    let image = dir.path().join(name);
    std::fs::write(&image, dexar_tests::png_declaring(4_000_000, 1)).unwrap();
    let result = dir.path().join("r.json");
    let o = run(&[
        "eval",
        "--data",
        s(dir.path()),
        "--no-perturbation",
        "--strategy",
        "dexar",
        "--out",
        s(&result),
    ]);
    let err = assert_ok(&o);
    assert!(err.contains("4000000x1 pixels"), "{err}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(doc["data"]["skipped"], uses, "{doc}");
    assert!(doc["data"]["items"].as_u64().unwrap() >= 1, "{doc}");
}
