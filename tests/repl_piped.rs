//! End-to-end tests of the REPL fed from a pipe (scripts, logs, CI): the
//! same commands line by line without a line editor, bad input answered
//! with one-line errors, and bad start-up flags refused with exit code 2.

use dexar_tests::build_plugin;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

fn fixtures() -> PathBuf {
    dexar_tests::fixtures()
}

use dexar_tests::arg as s;

/// The fixture checkpoint (the bundled model may change; answers here must not).
fn tiny_llava() -> String {
    s(&fixtures().join("tiny-llava")).to_string()
}

/// Runs `dexar --model <tiny-llava> ARGS` with `input` on standard input.
fn repl(args: &[&str], input: &[u8]) -> Output {
    repl_env(args, input, &[])
}

fn repl_env(args: &[&str], input: &[u8], env: &[(&str, &Path)]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = dexar_tests::dexar();
    cmd.args(["--model", &tiny_llava()])
        .args(args)
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env_remove("DEXAR_CONFIG")
        .env_remove("DEXAR_GRAPHICS")
        .env_remove("DEXAR_PLUGIN_PATH")
        .envs(env.iter().copied());
    dexar_tests::run_with_input(&mut cmd, input)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_clean_exit(o: &Output) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{err}",
        o.status,
        stdout(o)
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_scripted_session_explains_and_recovers_from_mistakes() {
    let script = "\
What is in the image?
/tokens
/show 0
/show 0-1 --raw
/show all
/compare dexar raw-attention 1
/strategy use raw-atention
/strategy use grad-x-attn
/show 1
/layers -1
/show 1
/frobnicate
/show 99
/image /no/such.png
/target a red circle
/show circle
/clear
/show 0
/temp 0.5
/max-tokens 3
/seed 9
a second \\
line
/help
";
    let o = repl(
        &["--graphics", "ascii", "--size", "24x8"],
        script.as_bytes(),
    );
    assert_clean_exit(&o);
    let out = stdout(&o);
    // No escape sequences anywhere: stdout is not a terminal and ASCII was asked for.
    assert!(!out.contains('\x1b'), "{out}");
    for want in [
        "graphics ascii",
        "₀",
        "tok/s · strategy dexar",
        "tokens of the last answer",
        "dexar · token 0",
        "dexar · tokens 0-1",
        "min ",
        "whole answer",
        "raw-attention",
        "did you mean raw-attention?",
        "strategy grad-x-attn",
        "grad-x-attn · token 1",
        "maps now use layers 3-3",
        "unknown command /frobnicate",
        "no token 99: the answer has tokens 0-",
        "error: image /no/such.png",
        "teacher forcing",
        "a₀ red₁ circle₂",
        "target explained",
        "token 2 \" circle\"",
        "conversation cleared",
        "nothing to show yet",
        "temperature 0.5",
        "max tokens 3",
        "seed 9",
        "reached /max-tokens",
        "/quit",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // Every error is one line.
    for line in out.lines().filter(|l| l.starts_with("error:")) {
        assert!(line.len() < 200, "{line}");
    }
}

#[test]
fn quit_and_end_of_input_exit_zero_and_bad_utf8_is_one_line() {
    let o = repl(&["--graphics", "ascii"], b"/seed 4\n/quit\n/seed 5\n");
    assert_clean_exit(&o);
    let out = stdout(&o);
    assert!(out.contains("seed 4") && !out.contains("seed 5"), "{out}");

    let o = repl(&["--graphics", "ascii"], b"\xff\xfe\n/seed 6");
    assert_clean_exit(&o);
    let out = stdout(&o);
    assert!(
        out.contains("error: input line is not valid UTF-8; ignored"),
        "{out}"
    );
    assert!(out.contains("seed 6"), "{out}");
}

#[test]
fn models_and_images_switch_or_fail_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let not_an_image = tmp.path().join("notes.png");
    std::fs::write(&not_an_image, b"this is not a PNG").unwrap();
    let model = fixtures().join("tiny-bakllava");
    let wide = fixtures().join("images/wide.png");
    let script = format!(
        "/image {}\n/model {}\n/model {}\n/image '{}'\n{}\n/image\nWhat is it?\n/show 0\n",
        s(&not_an_image),
        s(tmp.path()),
        s(&model),
        s(&wide),
        s(&wide),
    );
    let o = repl(
        &["--graphics", "blocks", "--size", "10x4"],
        script.as_bytes(),
    );
    assert_clean_exit(&o);
    let out = stdout(&o);
    let errors: Vec<&str> = out.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(errors.len(), 2, "{out}");
    assert!(errors[0].contains("notes.png"), "{}", errors[0]);
    assert!(errors[1].contains("config.json"), "{}", errors[1]);
    assert!(out.contains(&format!("model {}", s(&model))), "{out}");
    // The quoted path and the bare (dropped) path both open the image.
    assert_eq!(out.matches("wide.png (").count(), 3, "{out}");
    assert!(out.contains("as the model sees it"), "{out}");
    assert!(out.contains("▀"), "{out}");
}

#[test]
fn graphics_come_from_flag_env_or_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "graphics = \"blocks256\"\n").unwrap();
    let banner = |args: &[&str], env: &[(&str, &Path)]| stdout(&repl_env(args, b"", env));
    // Not a terminal: auto means ASCII.
    assert!(banner(&[], &[]).contains("graphics ascii"));
    assert!(banner(&[], &[("DEXAR_CONFIG", &config)]).contains("graphics blocks256"));
    let env: [(&str, &Path); 2] = [
        ("DEXAR_CONFIG", &config),
        ("DEXAR_GRAPHICS", Path::new("sixel")),
    ];
    assert!(banner(&[], &env).contains("graphics sixel"));
    assert!(banner(&["--graphics", "blocks"], &env).contains("graphics blocks "));
    std::fs::write(&config, "graphics = \"hologram\"\n").unwrap();
    let o = repl_env(&[], b"", &[("DEXAR_CONFIG", &config)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("config graphics: unknown mode `hologram`"));
}

#[test]
fn bad_flags_are_refused_with_exit_code_2() {
    let empty = tempfile::tempdir().unwrap();
    let hf_home = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--graphics", "bogus"],
            "--graphics: unknown mode `bogus`",
        ),
        (vec!["--size", "big"], "--size"),
        (vec!["--model", "/no/such/model"], "does not exist"),
        (vec!["--model", s(empty.path())], "config.json"),
        (
            vec!["--model", "llava-hf/llava-1.5-7b-hf"],
            "huggingface-cli download llava-hf/llava-1.5-7b-hf",
        ),
        (vec!["--image", "/no/such.png"], "image /no/such.png"),
        (vec!["--plugin", "/no/such/libx.so"], "--plugin"),
        (vec!["--max-tokens", "0"], "--max-tokens"),
    ];
    for (args, want) in cases {
        let o = dexar_tests::dexar()
            .args(&args)
            .env("HF_HOME", hf_home.path())
            .env_remove("DEXAR_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn plugins_load_list_serve_as_strategies_reload_and_unload() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = build_plugin("legrad", "legrad", dir.path());
    let script = format!(
        "/plugin list\n/plugin load {p}\n/plugin load {p}\n/plugin list\nWhat is in the image?\n\
         /strategy list\n/strategy use legrad\n/show 0\n/compare legrad dexar-unfiltered 0\n\
         /plugin reload\n/plugin reload legrad\n/plugin unload legrad\n/strategy use legrad\n/show 0\n/plugin load /no/such.so\n",
        p = s(&plugin)
    );
    let o = repl(
        &["--graphics", "ascii", "--size", "20x6"],
        script.as_bytes(),
    );
    assert_clean_exit(&o);
    let out = stdout(&o);
    for want in [
        "no plugins loaded",
        "loaded plugin legrad",
        "error:",
        "(plugin ",
        "strategy legrad",
        "legrad · token 0",
        "dexar-unfiltered",
        "reloaded plugin legrad",
        "unloaded plugin legrad",
        "strategy back to dexar",
        "unknown strategy legrad",
        "dexar · token 0",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // The clash on the second load and the missing file: one line each.
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 3, "{out}");
}
