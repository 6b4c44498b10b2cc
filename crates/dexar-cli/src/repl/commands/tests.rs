//! Tests of command parsing, selections, suggestions and path unquoting.

use super::*;

fn p(line: &str) -> Result<Input, String> {
    parse(line, &|_| false)
}

fn cmd(line: &str) -> Command {
    match p(line) {
        Ok(Input::Command(c)) => c,
        other => panic!("{line}: {other:?}"),
    }
}

#[test]
fn prompts_and_empty_lines() {
    assert_eq!(p("   ").unwrap(), Input::Empty);
    assert_eq!(
        p("  what colour is it? ").unwrap(),
        Input::Prompt("what colour is it?".into())
    );
    assert_eq!(
        p("first line\\\nsecond").unwrap(),
        Input::Prompt("first line\nsecond".into())
    );
}

#[test]
fn show_selections() {
    let show = |what, raw| Command::Show { what, raw };
    assert_eq!(cmd("/show 3"), show(Selection::Token(3), false));
    assert_eq!(cmd("/show 3-5"), show(Selection::Range(3, 5), false));
    assert_eq!(cmd("/show 3 - 5 --raw"), show(Selection::Range(3, 5), true));
    assert_eq!(cmd("/show --raw 0"), show(Selection::Token(0), true));
    assert_eq!(cmd("/show all"), show(Selection::All, false));
    assert_eq!(cmd("/show"), show(Selection::All, false));
    assert_eq!(
        cmd("/show red circle"),
        show(Selection::Word("red circle".into()), false)
    );
    assert_eq!(
        cmd("/show \"circle\""),
        show(Selection::Word("circle".into()), false)
    );
    assert!(p("/show 5-3").unwrap_err().contains("backwards"));
    assert!(p("/show -2").unwrap_err().contains("numbered from 0"));
    assert!(p("/show 1 --big")
        .unwrap_err()
        .contains("unknown option --big"));
}

#[test]
fn settings_commands() {
    assert_eq!(cmd("/layers -2"), Command::Layers(Some(-2)));
    assert_eq!(cmd("/layers"), Command::Layers(None));
    assert!(p("/layers x").unwrap_err().contains("whole number"));
    assert_eq!(cmd("/temp 0.7"), Command::Temp(Some(0.7)));
    assert!(p("/temp -1").is_err());
    assert!(p("/temp nan").is_err());
    assert_eq!(cmd("/max-tokens 12"), Command::MaxTokens(Some(12)));
    assert!(p("/max-tokens 0").is_err());
    assert_eq!(cmd("/seed 7"), Command::Seed(Some(7)));
    assert_eq!(
        cmd("/target a red circle"),
        Command::Target("a red circle".into())
    );
    assert!(p("/target").is_err());
    assert!(p("/clear now").unwrap_err().contains("no arguments"));
    assert_eq!(cmd("/probe 3"), Command::Probe(3));
    assert!(p("/probe").unwrap_err().contains("usage: /probe N"));
    assert!(p("/probe x").unwrap_err().contains("not a token number"));
    assert_eq!(cmd("/view"), Command::View);
    assert!(p("/view 2").unwrap_err().contains("no arguments"));
}

#[test]
fn strategy_plugin_and_compare() {
    assert_eq!(cmd("/strategy"), Command::StrategyList);
    assert_eq!(cmd("/strategy list"), Command::StrategyList);
    assert_eq!(
        cmd("/strategy use raw-attention"),
        Command::StrategyUse("raw-attention".into())
    );
    assert_eq!(
        cmd("/strategy grad-x-attn"),
        Command::StrategyUse("grad-x-attn".into())
    );
    assert_eq!(cmd("/plugin"), Command::Plugin(PluginAction::List));
    assert_eq!(
        cmd("/plugin load '/tmp/my plugins/libx.so'"),
        Command::Plugin(PluginAction::Load("/tmp/my plugins/libx.so".into()))
    );
    assert_eq!(
        cmd("/plugin reload"),
        Command::Plugin(PluginAction::Reload(None))
    );
    assert_eq!(
        cmd("/plugin unload legrad"),
        Command::Plugin(PluginAction::Unload("legrad".into()))
    );
    assert_eq!(
        cmd("/compare dexar raw-attention 2-3"),
        Command::Compare {
            a: "dexar".into(),
            b: "raw-attention".into(),
            what: Some(Selection::Range(2, 3))
        }
    );
    assert!(p("/compare dexar").is_err());
}

#[test]
fn unknown_commands_suggest_the_nearest() {
    assert!(p("/shwo 1").unwrap_err().contains("did you mean /show?"));
    assert!(p("/strat list")
        .unwrap_err()
        .contains("did you mean /strategy?"));
    assert!(p("/layer 2").unwrap_err().contains("did you mean /layers?"));
    let e = p("/zzzzzzzz").unwrap_err();
    assert!(
        e.contains("unknown command /zzzzzzzz") && e.contains("/help"),
        "{e}"
    );
    assert_eq!(cmd("/exit"), Command::Quit);
    assert_eq!(cmd("/?"), Command::Help(None));
}

#[test]
fn dropped_paths_open_images() {
    let exists =
        |p: &Path| p == Path::new("/tmp/My Pics/cat 1.png") || p == Path::new("/tmp/a.png");
    let image = |line: &str| parse(line, &exists);
    let want = Ok(Input::Command(Command::Image(
        "/tmp/My Pics/cat 1.png".into(),
    )));
    assert_eq!(image("'/tmp/My Pics/cat 1.png' "), want);
    assert_eq!(image("\"/tmp/My Pics/cat 1.png\""), want);
    assert_eq!(image("/tmp/My\\ Pics/cat\\ 1.png"), want);
    assert_eq!(image("file:///tmp/My%20Pics/cat%201.png"), want);
    assert_eq!(
        image("/tmp/a.png"),
        Ok(Input::Command(Command::Image("/tmp/a.png".into())))
    );
    // Not an existing file: a prompt, or an unknown command.
    assert_eq!(image("cat.png"), Ok(Input::Prompt("cat.png".into())));
    assert!(image("/tmp/missing.png")
        .unwrap_err()
        .contains("unknown command"));
    assert_eq!(cmd("/image"), Command::ShowImage);
    // The explicit command unquotes too.
    assert_eq!(
        cmd("/image '/x/it'\\''s.png'"),
        Command::Image("/x/it's.png".into())
    );
}

#[test]
fn unquoting() {
    assert_eq!(unquote_path("a\\ b.png"), PathBuf::from("a b.png"));
    assert_eq!(
        unquote_path("file://localhost/x%2Fy%zz"),
        PathBuf::from("/x/y%zz")
    );
    assert_eq!(percent_decode("%4"), "%4");
    if let Some(home) = dirs::home_dir() {
        assert_eq!(unquote_path("~/x.png"), home.join("x.png"));
    }
}

#[test]
fn help_lists_every_command_once() {
    let help = help_text();
    for c in COMMANDS {
        assert_eq!(
            help.matches(&format!("  {} ", c.name)).count(),
            1,
            "{}",
            c.name
        );
        assert!(!c.help.is_empty());
    }
    assert_eq!(spec("show").map(|s| s.name), Some("/show"));
    assert_eq!(spec("/nope"), None);
}

#[test]
fn save_and_load_take_a_session_file_and_an_optional_turn() {
    assert_eq!(cmd("/save s.dexar"), Command::Save("s.dexar".into()));
    assert_eq!(
        cmd("/save 'my session.dexar'"),
        Command::Save("my session.dexar".into())
    );
    assert_eq!(cmd("/load s.dexar"), Command::Load("s.dexar".into(), None));
    assert_eq!(
        cmd("/load s.dexar 2"),
        Command::Load("s.dexar".into(), Some(2))
    );
    assert!(p("/save").unwrap_err().starts_with("usage: /save PATH"));
    assert!(p("/load")
        .unwrap_err()
        .starts_with("usage: /load PATH [TURN]"));
}
