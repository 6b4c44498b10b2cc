//! What a line typed at the REPL means: a prompt for the model, or one of the
//! `/` commands, parsed here without touching the state; plus the help
//! table, "did you mean" suggestions and the unquoting of dragged-in paths.

use dexar_session::Selection;
use std::path::{Path, PathBuf};

/// One REPL command as `/help` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    pub usage: &'static str,
    pub help: &'static str,
}

/// Every command, in the order `/help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "/show",
        usage: "N | A-B | WORD | all [--raw]",
        help: "where token(s) looked, over the image (--raw: map, colour bar, min/max)",
    },
    Spec {
        name: "/compare",
        usage: "A B [N | A-B | WORD | all]",
        help: "two strategies' maps side by side (default: the last /show)",
    },
    Spec {
        name: "/probe",
        usage: "N",
        help: "mask the top 10/20/50 % of token N's map, re-score the answer (vs random patches)",
    },
    Spec {
        name: "/view",
        usage: "",
        help: "the conversation full-screen (the TUI); q there comes back here",
    },
    Spec {
        name: "/tokens",
        usage: "",
        help: "the answer's tokens and DEX-AR weights δ (0: no visual evidence)",
    },
    Spec {
        name: "/image",
        usage: "[PATH]",
        help: "open another image, new conversation (or drop a file here); alone: show it",
    },
    Spec {
        name: "/model",
        usage: "DIR | ORG/NAME | bundled",
        help: "load a llava-hf checkpoint dir, a model in the HF cache, or the bundled one",
    },
    Spec {
        name: "/strategy",
        usage: "list | use NAME",
        help: "list attribution strategies, or pick the one /show uses",
    },
    Spec {
        name: "/plugin",
        usage: "load PATH | list | unload NAME | reload [NAME]",
        help: "strategies from shared libraries (docs/plugins.md)",
    },
    Spec {
        name: "/layers",
        usage: "[K]",
        help: "first layer the maps use (negative: from the end); no regeneration",
    },
    Spec {
        name: "/region",
        usage: "[global | tiles | all]",
        help: "an image split into tiles (SmolVLM): the tiles' map, the global view's, or both",
    },
    Spec {
        name: "/target",
        usage: "TEXT",
        help: "explain TEXT as the answer to the last question (teacher forcing)",
    },
    Spec {
        name: "/temp",
        usage: "[T]",
        help: "sampling temperature (0: greedy)",
    },
    Spec {
        name: "/max-tokens",
        usage: "[N]",
        help: "most tokens per answer",
    },
    Spec {
        name: "/seed",
        usage: "[N]",
        help: "random seed for sampling",
    },
    Spec {
        name: "/save",
        usage: "PATH",
        help: "write this conversation, with its traces, as a session file",
    },
    Spec {
        name: "/load",
        usage: "PATH [TURN]",
        help: "open a session file (without its model: show and re-explain only)",
    },
    Spec {
        name: "/clear",
        usage: "",
        help: "forget the conversation (image and settings stay)",
    },
    Spec {
        name: "/help",
        usage: "[COMMAND]",
        help: "this list, or one command's help",
    },
    Spec {
        name: "/quit",
        usage: "",
        help: "leave dexar (Ctrl-D works too)",
    },
];

/// Other spellings people type.
const ALIASES: &[(&str, &str)] = &[("/exit", "/quit"), ("/q", "/quit"), ("/?", "/help")];

/// File name endings `/image` and drag-and-drop recognise.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"];

#[derive(Debug, Clone, PartialEq)]
pub enum PluginAction {
    Load(PathBuf),
    List,
    Unload(String),
    Reload(Option<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Show {
        what: Selection,
        raw: bool,
    },
    Compare {
        a: String,
        b: String,
        what: Option<Selection>,
    },
    Tokens,
    /// `/probe N`: the faithfulness check of token N's map.
    Probe(usize),
    /// `/view`: the TUI on this conversation.
    View,
    Image(PathBuf),
    /// `/image` alone: the current image as the model sees it.
    ShowImage,
    Model(String),
    StrategyList,
    StrategyUse(String),
    Plugin(PluginAction),
    Layers(Option<i64>),
    Region(Option<dexar_core::RegionView>),
    Target(String),
    Temp(Option<f64>),
    MaxTokens(Option<usize>),
    Seed(Option<u64>),
    Save(PathBuf),
    Load(PathBuf, Option<usize>),
    Clear,
    Help(Option<String>),
    Quit,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Empty,
    Prompt(String),
    Command(Command),
}

/// Parses one (possibly multi-line) input. `is_file` says whether a path
/// names an existing file, so a path dropped on the terminal opens it.
pub fn parse(line: &str, is_file: &dyn Fn(&Path) -> bool) -> Result<Input, String> {
    let text = join_continuations(line);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(Input::Empty);
    }
    // A dragged-and-dropped file: quoted, escaped or a file:// URI.
    if looks_like_dropped_path(trimmed) {
        let path = unquote_path(trimmed);
        if is_file(&path) {
            return Ok(Input::Command(Command::Image(path)));
        }
    }
    if !trimmed.starts_with('/') {
        return Ok(Input::Prompt(trimmed.to_string()));
    }
    let (word, rest) = split_word(trimmed);
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == word)
        .map_or(word, |(_, name)| name);
    if !COMMANDS.iter().any(|c| c.name == name) {
        // An absolute path dropped without quotes.
        let path = unquote_path(trimmed);
        if is_file(&path) {
            return Ok(Input::Command(Command::Image(path)));
        }
        return Err(unknown_command(word));
    }
    parse_command(name, rest).map(Input::Command)
}

fn unknown_command(word: &str) -> String {
    let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
    match dexar_session::strategies::nearest(word, &names) {
        Some(best) => {
            format!("unknown command {word}: did you mean {best}? (/help lists them all)")
        }
        None => format!("unknown command {word}; /help lists the commands"),
    }
}

fn usage(name: &str) -> String {
    let spec = spec(name);
    format!("usage: {} {}", name, spec.map_or("", |s| s.usage))
        .trim_end()
        .to_string()
}

/// The help entry of a command (with or without its leading `/`).
pub fn spec(name: &str) -> Option<&'static Spec> {
    let name = name.trim();
    let with_slash = if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/{name}")
    };
    COMMANDS.iter().find(|c| c.name == with_slash)
}

fn parse_command(name: &str, rest: &str) -> Result<Command, String> {
    let args: Vec<&str> = rest.split_whitespace().collect();
    let no_args = |cmd: Command| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(format!("{name} takes no arguments"))
        }
    };
    match name {
        "/show" => {
            let raw = args.contains(&"--raw");
            let words: Vec<&str> = args.iter().copied().filter(|a| *a != "--raw").collect();
            if let Some(flag) = words.iter().find(|w| w.starts_with("--")) {
                return Err(format!("/show: unknown option {flag}; {}", usage(name)));
            }
            let what = if words.is_empty() {
                Selection::All
            } else {
                parse_selection(&words.join(" "))?
            };
            Ok(Command::Show { what, raw })
        }
        "/compare" => match args.as_slice() {
            [a, b] => Ok(Command::Compare {
                a: a.to_string(),
                b: b.to_string(),
                what: None,
            }),
            [a, b, sel @ ..] => Ok(Command::Compare {
                a: a.to_string(),
                b: b.to_string(),
                what: Some(parse_selection(&sel.join(" "))?),
            }),
            _ => Err(format!("/compare needs two strategy names; {}", usage(name))),
        },
        "/tokens" => no_args(Command::Tokens),
        "/view" => no_args(Command::View),
        "/probe" => match args.as_slice() {
            [n] => n.parse::<usize>().map(Command::Probe).map_err(|_| {
                format!("/probe: `{n}` is not a token number (/tokens lists them)")
            }),
            _ => Err(format!("{}: the token to probe", usage(name))),
        },
        "/image" if rest.trim().is_empty() => Ok(Command::ShowImage),
        "/image" => Ok(Command::Image(unquote_path(rest))),
        "/model" => match args.as_slice() {
            [] => Err(usage(name)),
            _ => Ok(Command::Model(unquote_path(rest).to_string_lossy().into_owned())),
        },
        "/strategy" => match args.as_slice() {
            [] | ["list"] => Ok(Command::StrategyList),
            ["use", n] => Ok(Command::StrategyUse(n.to_string())),
            [n] if *n != "use" => Ok(Command::StrategyUse(n.to_string())),
            _ => Err(usage(name)),
        },
        "/plugin" => parse_plugin(&args, rest).map(Command::Plugin),
        "/layers" => match args.as_slice() {
            [] => Ok(Command::Layers(None)),
            [k] => k
                .parse::<i64>()
                .map(|k| Command::Layers(Some(k)))
                .map_err(|_| format!("/layers: `{k}` is not a whole number (e.g. 0 for all layers, -2 for the last two)")),
            _ => Err(usage(name)),
        },
        "/region" => match args.as_slice() {
            [] => Ok(Command::Region(None)),
            [v] => v
                .parse()
                .map(|v| Command::Region(Some(v)))
                .map_err(|e| format!("/region: {e}")),
            _ => Err(usage(name)),
        },
        "/target" => {
            let text = rest.trim();
            if text.is_empty() {
                Err(format!("{}: the answer to explain", usage(name)))
            } else {
                Ok(Command::Target(text.to_string()))
            }
        }
        "/temp" => match args.as_slice() {
            [] => Ok(Command::Temp(None)),
            [t] => match t.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(Command::Temp(Some(v))),
                _ => Err(format!("/temp: `{t}` is not a temperature (a number >= 0; 0 is greedy)")),
            },
            _ => Err(usage(name)),
        },
        "/max-tokens" => match args.as_slice() {
            [] => Ok(Command::MaxTokens(None)),
            [n] => match n.parse::<usize>() {
                Ok(v) if v >= 1 => Ok(Command::MaxTokens(Some(v))),
                _ => Err(format!("/max-tokens: `{n}` is not a count (a whole number >= 1)")),
            },
            _ => Err(usage(name)),
        },
        "/seed" => match args.as_slice() {
            [] => Ok(Command::Seed(None)),
            [n] => n
                .parse::<u64>()
                .map(|v| Command::Seed(Some(v)))
                .map_err(|_| format!("/seed: `{n}` is not a seed (a whole number >= 0)")),
            _ => Err(usage(name)),
        },
        "/save" if rest.trim().is_empty() => Err(format!("{}: the session file to write", usage(name))),
        "/save" => Ok(Command::Save(unquote_path(rest))),
        "/load" if rest.trim().is_empty() => Err(format!("{}: a session file", usage(name))),
        "/load" => Ok(parse_load(rest)),
        "/clear" => no_args(Command::Clear),
        "/help" => match args.as_slice() {
            [] => Ok(Command::Help(None)),
            [c] => Ok(Command::Help(Some(c.to_string()))),
            _ => Err(usage(name)),
        },
        "/quit" => no_args(Command::Quit),
        _ => Err(unknown_command(name)),
    }
}

/// `PATH [TURN]`: a trailing whole number is the turn unless the whole
/// text names a file.
fn parse_load(rest: &str) -> Command {
    let whole = unquote_path(rest);
    if let Some((path, turn)) = rest.trim().rsplit_once(char::is_whitespace) {
        if let (Ok(turn), false) = (turn.parse::<usize>(), whole.is_file()) {
            return Command::Load(unquote_path(path), Some(turn));
        }
    }
    Command::Load(whole, None)
}

fn parse_plugin(args: &[&str], rest: &str) -> Result<PluginAction, String> {
    match args {
        [] | ["list"] => Ok(PluginAction::List),
        ["load", ..] => {
            let path = rest.trim_start().strip_prefix("load").unwrap_or("").trim();
            if path.is_empty() {
                Err("usage: /plugin load PATH (a .so built from a dexar plugin)".into())
            } else {
                Ok(PluginAction::Load(unquote_path(path)))
            }
        }
        ["unload", n] => Ok(PluginAction::Unload(n.to_string())),
        ["reload"] => Ok(PluginAction::Reload(None)),
        ["reload", n] => Ok(PluginAction::Reload(Some(n.to_string()))),
        _ => Err(usage("/plugin")),
    }
}

/// `3`, `3-5`, `all`, or a word / phrase of the answer.
pub fn parse_selection(s: &str) -> Result<Selection, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("all") {
        return Ok(Selection::All);
    }
    if let Ok(n) = s.parse::<usize>() {
        return Ok(Selection::Token(n));
    }
    if let Some((a, b)) = s.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
            return if a <= b {
                Ok(Selection::Range(a, b))
            } else {
                Err(format!("range {a}-{b} runs backwards; write {b}-{a}"))
            };
        }
    }
    if s.starts_with('-') && s[1..].chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("no token {s}: tokens are numbered from 0"));
    }
    let word = s.trim_matches(|c| c == '"' || c == '\'');
    if word.is_empty() {
        return Err("which token? give a number, a range like 2-4, a word or `all`".into());
    }
    Ok(Selection::Word(word.to_string()))
}

/// Lines ending in a backslash continue on the next line (the backslash
/// and line break become one line break).
pub fn join_continuations(text: &str) -> String {
    text.replace("\\\r\n", "\n").replace("\\\n", "\n")
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// Whether a whole line may be a path a terminal pasted for a dropped file.
fn looks_like_dropped_path(s: &str) -> bool {
    let quoted = s.len() >= 2
        && ((s.starts_with('\'') && s.ends_with('\'')) || (s.starts_with('"') && s.ends_with('"')));
    let lower = s.to_ascii_lowercase();
    let image_ext = IMAGE_EXTENSIONS.iter().any(|e| {
        lower
            .trim_end_matches(['\'', '"'])
            .ends_with(&format!(".{e}"))
    });
    quoted
        || s.starts_with("file://")
        || s.starts_with("~/")
        || (image_ext && !s.contains(' '))
        || (image_ext && s.contains("\\ "))
}

/// A path as a terminal or a user writes it: surrounding quotes removed,
/// backslash escapes resolved, `file://` URIs decoded, `~/` expanded.
pub fn unquote_path(s: &str) -> PathBuf {
    let s = s.trim();
    let unquoted = if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        // Shell-style single quotes, where a quote inside is written '\''.
        s[1..s.len() - 1].replace("'\\''", "'")
    } else if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        unescape(&s[1..s.len() - 1])
    } else {
        unescape(s)
    };
    let decoded = match unquoted.strip_prefix("file://") {
        // file://host/path: only the local host (empty or localhost) makes sense.
        Some(rest) => percent_decode(rest.strip_prefix("localhost").unwrap_or(rest)),
        None => unquoted,
    };
    match decoded.strip_prefix("~/") {
        Some(rest) => dirs::home_dir().map_or_else(|| PathBuf::from(&decoded), |h| h.join(rest)),
        None => PathBuf::from(decoded),
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
                continue;
            }
        }
        out.push(c);
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/help`: every command with one line of help.
pub fn help_text() -> String {
    // Longer usages put their help on the next line, so the table fits 100 columns.
    const WIDTH: usize = 26;
    let mut out = String::from(
        "Type a question about the image to chat; its answer streams token by token.\n",
    );
    for c in COMMANDS {
        let head = format!("{} {}", c.name, c.usage);
        if head.len() > WIDTH {
            out.push_str(&format!("  {head}\n  {:WIDTH$}  {}\n", "", c.help));
        } else {
            out.push_str(&format!("  {head:<WIDTH$}  {}\n", c.help));
        }
    }
    out.push_str("Ctrl-C stops an answer; Ctrl-D quits; end a line with \\ to continue it.\n");
    out
}

#[cfg(test)]
mod tests;
