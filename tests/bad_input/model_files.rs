//! Checkpoint files and the values in them: absurd sizes (that once asked
//! for gigabytes), values that break the arithmetic, JSON fields of the
//! wrong type, weights of the wrong dtype or holding NaN, a tokenizer larger
//! than the vocabulary, FIFOs and directories in place of files.

use super::*;
use serde_json::{json, Value};

/// A copy of the fixture checkpoint with `file` (JSON) edited.
fn with_json(file: &'static str, edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    dexar_tests::model_copy(|d| {
        let p = d.join(file);
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        edit(&mut v);
        std::fs::write(&p, v.to_string()).unwrap();
    })
}

fn config(edit: impl FnOnce(&mut Value)) -> tempfile::TempDir {
    with_json("config.json", edit)
}

/// A copy whose weights file is changed by `edit(bytes, header_len, header)`.
fn with_weights(edit: impl FnOnce(&mut Vec<u8>, usize, &Value)) -> tempfile::TempDir {
    dexar_tests::model_copy(|d| {
        let p = d.join("model.safetensors");
        let mut bytes = std::fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        edit(&mut bytes, n, &header);
        std::fs::write(&p, bytes).unwrap();
    })
}

#[test]
fn checkpoint_values_are_refused_naming_the_field() {
    let cases: Vec<(tempfile::TempDir, &str)> =
        vec![
        (
            with_json("preprocessor_config.json", |v| {
                v["size"] = json!({"shortest_edge": 200000})
            }),
            "size.shortest_edge` must be an integer between 1 and 2048",
        ),
        (
            config(|v| {
                v["text_config"]["rope_theta"] = json!(0);
                v["text_config"]["rope_parameters"]["rope_theta"] = json!(0);
            }),
            "text_config.rope_theta (0) must be a positive number",
        ),
        (
            config(|v| v["text_config"]["rms_norm_eps"] = json!(-1)),
            "text_config.rms_norm_eps (-1)",
        ),
        (
            config(|v| v["text_config"]["sliding_window"] = json!(0)),
            "text_config.sliding_window must be at least 1",
        ),
        (
            config(|v| v["vision_config"]["num_attention_heads"] = json!(3)),
            "vision_config: num_attention_heads (3) must be a positive divisor of hidden_size (32)",
        ),
        (
            config(|v| v["image_token_index"] = json!("4")),
            "`image_token_index` must be a token id",
        ),
        (
            config(|v| v["vision_config"] = json!([1, 2])),
            "`vision_config` must be an object",
        ),
        (
            config(|v| v["text_config"]["tie_word_embeddings"] = json!("yes")),
            "text_config.tie_word_embeddings must be true or false",
        ),
        (
            config(|v| v["vision_config"]["image_size"] = json!(200000)),
            "image_size (200000)",
        ),
        (
            with_json("tokenizer.json", |v| {
                let added = v["added_tokens"].as_array_mut().unwrap();
                added.push(json!({"id": 400, "content": "<extra>", "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
            }),
            "tokenizer.json: has token ids up to",
        ),
        (
            // The right byte size, the wrong type: I32 has 4 bytes like F32.
            with_weights(|bytes, n, _| {
                let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
                let at = 8 + header.find("\"F32\"").unwrap() + 1;
                bytes[at..at + 3].copy_from_slice(b"I32");
            }),
            "is stored as I32; weights must be floating point",
        ),
        (
            with_weights(|bytes, n, header| {
                let start = header["language_model.lm_head.weight"]["data_offsets"][0]
                    .as_u64()
                    .unwrap() as usize;
                let at = 8 + n + start;
                bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
            }),
            "the model's output is not finite (NaN or infinity)",
        ),
        (
            dexar_tests::model_copy(|d| {
                std::fs::remove_file(d.join("config.json")).unwrap();
                std::fs::create_dir(d.join("config.json")).unwrap();
            }),
            "config.json: cannot read: is a directory",
        ),
    ];
    for (dir, needle) in cases {
        assert_user_error(&explain(dir.path(), &[]), needle);
    }
}

#[test]
fn a_huge_declared_context_loads_without_allocating_it() {
    // 10^9 positions once asked for 4 GB of rotary tables, and aborted.
    let dir = config(|v| v["text_config"]["max_position_embeddings"] = json!(1_000_000_000u64));
    assert_ok(&explain(dir.path(), &["--no-png"]));
}

#[cfg(unix)]
#[test]
fn fifos_in_a_checkpoint_are_refused_without_waiting() {
    for file in [
        "config.json",
        "tokenizer.json",
        "preprocessor_config.json",
        "model.safetensors",
    ] {
        let dir = dexar_tests::model_copy(|d| {
            std::fs::remove_file(d.join(file)).unwrap();
            dexar_tests::mkfifo(&d.join(file));
        });
        let o = explain(dir.path(), &[]);
        assert_user_error(&o, &format!("{file}: cannot read: is a FIFO (named pipe)"));
    }
}

#[cfg(unix)]
#[test]
fn the_repl_keeps_its_model_when_another_is_bad() {
    let fifo_config = dexar_tests::model_copy(|d| {
        std::fs::remove_file(d.join("config.json")).unwrap();
        dexar_tests::mkfifo(&d.join("config.json"));
    });
    let bad_eps = config(|v| v["text_config"]["rms_norm_eps"] = json!(-1));
    let script = format!(
        "/model {}\n/model {}\nwhat is it?\n/tokens\n",
        s(fifo_config.path()),
        s(bad_eps.path())
    );
    let home = tempfile::tempdir().unwrap();
    let mut cmd = isolated();
    cmd.args(["--model", s(&tiny_llava())])
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path());
    let o = dexar_tests::run_within(cmd, script.as_bytes(), LIMIT);
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("config.json: cannot read: is a FIFO"), "{out}");
    assert!(out.contains("text_config.rms_norm_eps (-1)"), "{out}");
    assert!(out.contains("tokens of the last answer"), "{out}");
}
