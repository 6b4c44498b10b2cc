//! The line editor's helpers: completion (commands, strategy and plugin
//! names, file paths after `/image`, `/model` and `/plugin load`), hints
//! (a command's usage, else the last matching history entry), highlighting
//! of commands, multi-line input (a trailing backslash) and the prompt.

use nu_ansi_term::{Color, Style};
use reedline::{
    Completer, CompletionResult, Highlighter, Hinter, History, Prompt, PromptEditMode,
    PromptHistorySearch, SearchQuery, Span, StyledText, Suggestion, ValidationResult, Validator,
};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::commands::{spec, COMMANDS, IMAGE_EXTENSIONS};

/// Names that change while the REPL runs (plugins come and go).
#[derive(Debug, Default, Clone)]
pub struct Names {
    pub strategies: Vec<String>,
    pub plugins: Vec<String>,
}

pub type SharedNames = Arc<Mutex<Names>>;

fn read(names: &SharedNames) -> Names {
    names.lock().map(|n| n.clone()).unwrap_or_default()
}

pub struct ReplCompleter {
    pub names: SharedNames,
}

impl Completer for ReplCompleter {
    fn complete(&mut self, line: &str, pos: usize) -> CompletionResult {
        CompletionResult::fresh(suggestions(line, pos, &read(&self.names)))
    }
}

/// What a file-name completion accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Files {
    Images,
    Libraries,
    Dirs,
    Sessions,
}

/// Completions of `line` with the cursor at byte `pos`.
pub fn suggestions(line: &str, pos: usize, names: &Names) -> Vec<Suggestion> {
    let Some(before) = line.get(..pos) else {
        return Vec::new();
    };
    if !before.starts_with('/') {
        return Vec::new();
    }
    let words: Vec<&str> = before.split_whitespace().collect();
    let at_new_word = before.ends_with(char::is_whitespace);
    let current = if at_new_word {
        ""
    } else {
        words.last().copied().unwrap_or("")
    };
    let index = if at_new_word {
        words.len()
    } else {
        words.len().saturating_sub(1)
    };
    let word = |options: Vec<(String, Option<String>)>| {
        options
            .into_iter()
            .filter(|(o, _)| o.starts_with(current) && o != current)
            .map(|(value, description)| Suggestion {
                value,
                description,
                span: Span::new(pos - current.len(), pos),
                append_whitespace: true,
                ..Suggestion::default()
            })
            .collect::<Vec<_>>()
    };
    let plain = |list: &[&str]| {
        list.iter()
            .map(|s| (s.to_string(), None))
            .collect::<Vec<_>>()
    };
    let strategies = || {
        names
            .strategies
            .iter()
            .map(|s| (s.clone(), None))
            .collect::<Vec<_>>()
    };
    if index == 0 {
        return word(
            COMMANDS
                .iter()
                .map(|c| (c.name.to_string(), Some(c.help.to_string())))
                .collect(),
        );
    }
    // The rest of the line after the command, for paths with spaces.
    let after = |skip: usize| -> &str {
        let mut rest = before;
        for _ in 0..skip {
            rest = rest.trim_start();
            rest = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
        }
        rest.trim_start()
    };
    match (words[0], index, words.get(1).copied()) {
        ("/image", _, _) => paths(after(1), pos, Files::Images),
        ("/model", _, _) => paths(after(1), pos, Files::Dirs),
        ("/save" | "/load", _, _) => paths(after(1), pos, Files::Sessions),
        ("/plugin", 1, _) => word(plain(&["load", "list", "unload", "reload"])),
        ("/plugin", _, Some("load")) => paths(after(2), pos, Files::Libraries),
        ("/plugin", 2, Some("unload" | "reload")) => {
            word(names.plugins.iter().map(|s| (s.clone(), None)).collect())
        }
        ("/strategy", 1, _) => {
            let mut options = plain(&["list", "use"]);
            options.extend(strategies());
            word(options)
        }
        ("/strategy", 2, Some("use")) | ("/compare", 1 | 2, _) => word(strategies()),
        ("/compare", 3, _) | ("/show", _, _) => word(plain(&["all", "--raw"])),
        ("/region", 1, _) => word(plain(&dexar_core::RegionView::NAMES)),
        ("/help", 1, _) => word(
            COMMANDS
                .iter()
                .map(|c| (c.name.trim_start_matches('/').to_string(), None))
                .collect(),
        ),
        _ => Vec::new(),
    }
}

/// File-name completions of `arg` (as typed, spaces escaped with `\`),
/// which ends at byte `pos` of the line.
fn paths(arg: &str, pos: usize, files: Files) -> Vec<Suggestion> {
    let typed = arg.replace("\\ ", " ");
    let (dir_typed, prefix) = match typed.rfind('/') {
        Some(i) => (&typed[..=i], &typed[i + 1..]),
        None => ("", typed.as_str()),
    };
    let dir: PathBuf = match dir_typed {
        "" => PathBuf::from("."),
        d if d.starts_with("~/") => {
            dirs::home_dir().map_or_else(|| PathBuf::from(d), |h| h.join(&d[2..]))
        }
        d => PathBuf::from(d),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, bool)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let is_dir = e.path().is_dir();
            let hidden_ok = !name.starts_with('.') || prefix.starts_with('.');
            (name.starts_with(prefix) && hidden_ok && (is_dir || accepts(files, &e.path())))
                .then_some((name, is_dir))
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|(name, is_dir)| {
            let slash = if is_dir { "/" } else { "" };
            Suggestion {
                value: format!("{dir_typed}{name}{slash}").replace(' ', "\\ "),
                span: Span::new(pos - arg.len(), pos),
                append_whitespace: !is_dir,
                ..Suggestion::default()
            }
        })
        .collect()
}

fn accepts(files: Files, path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match files {
        Files::Images => IMAGE_EXTENSIONS.contains(&ext.as_str()),
        Files::Libraries => matches!(ext.as_str(), "so" | "dylib" | "dll"),
        Files::Dirs => false,
        Files::Sessions => ext == "dexar",
    }
}

/// Hints: the rest of a command name and its usage, or history.
pub struct ReplHinter {
    pub colour: bool,
    /// What Right-arrow inserts.
    insert: String,
}

impl ReplHinter {
    pub fn new(colour: bool) -> Self {
        Self {
            colour,
            insert: String::new(),
        }
    }

    /// (shown hint, inserted part) for a line.
    fn hint_for(line: &str, history: &dyn History) -> (String, String) {
        if line.starts_with('/') {
            let (name, rest) = line.split_at(line.find(char::is_whitespace).unwrap_or(line.len()));
            if rest.is_empty() {
                let matching: Vec<_> = COMMANDS
                    .iter()
                    .filter(|c| c.name.starts_with(name))
                    .collect();
                if let [c] = matching.as_slice() {
                    let completion = c.name[name.len()..].to_string();
                    let usage = if c.usage.is_empty() {
                        String::new()
                    } else {
                        format!(" {}", c.usage)
                    };
                    return (format!("{completion}{usage}"), completion);
                }
            } else if rest.trim().is_empty() {
                if let Some(s) = spec(name) {
                    return (s.usage.to_string(), String::new());
                }
            }
        }
        if line.is_empty() {
            return (String::new(), String::new());
        }
        let found = history
            .search(SearchQuery::last_with_prefix(
                line.to_string(),
                history.session(),
            ))
            .unwrap_or_default()
            .first()
            .and_then(|e| e.command_line.get(line.len()..).map(str::to_string))
            .unwrap_or_default();
        (found.clone(), found)
    }
}

impl Hinter for ReplHinter {
    fn handle(
        &mut self,
        line: &str,
        _pos: usize,
        history: &dyn History,
        use_ansi_coloring: bool,
        _cwd: &str,
    ) -> String {
        let (shown, insert) = Self::hint_for(line, history);
        self.insert = insert;
        if use_ansi_coloring && self.colour && !shown.is_empty() {
            Style::new().fg(Color::DarkGray).paint(shown).to_string()
        } else {
            shown
        }
    }

    fn complete_hint(&self) -> String {
        self.insert.clone()
    }

    fn next_hint_token(&self) -> String {
        let trimmed = self.insert.trim_start();
        let lead = self.insert.len() - trimmed.len();
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        self.insert[..lead + end].to_string()
    }
}

/// Known commands in green, unknown ones in red; prompts as typed.
pub struct ReplHighlighter;

impl Highlighter for ReplHighlighter {
    fn highlight(&self, line: &str, _cursor: usize) -> StyledText {
        let mut styled = StyledText::new();
        if !line.starts_with('/') {
            styled.push((Style::new(), line.to_string()));
            return styled;
        }
        let end = line.find(char::is_whitespace).unwrap_or(line.len());
        let (name, rest) = line.split_at(end);
        let known = spec(name).is_some() || matches!(name, "/exit" | "/q" | "/?");
        let style = if known {
            Style::new().fg(Color::Green).bold()
        } else {
            Style::new().fg(Color::Red)
        };
        styled.push((style, name.to_string()));
        styled.push((Style::new(), rest.to_string()));
        styled
    }
}

/// A line ending in a backslash continues on the next one.
pub struct ContinuationValidator;

impl Validator for ContinuationValidator {
    fn validate(&self, line: &str) -> ValidationResult {
        if line.ends_with('\\') {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Complete
        }
    }
}

/// `dexar> `, and `…  ` on continuation lines.
pub struct ReplPrompt;

impl Prompt for ReplPrompt {
    fn render_prompt_left(&self) -> Cow<'_, str> {
        Cow::Borrowed("dexar")
    }

    fn render_prompt_right(&self) -> Cow<'_, str> {
        Cow::Borrowed("")
    }

    fn render_prompt_indicator(&self, _mode: PromptEditMode) -> Cow<'_, str> {
        Cow::Borrowed("> ")
    }

    fn render_prompt_multiline_indicator(&self) -> Cow<'_, str> {
        Cow::Borrowed("   … ")
    }

    fn render_prompt_history_search_indicator(&self, search: PromptHistorySearch) -> Cow<'_, str> {
        Cow::Owned(format!("(history search: {}) ", search.term))
    }

    fn get_prompt_color(&self) -> reedline::Color {
        reedline::Color::Cyan
    }

    fn get_indicator_color(&self) -> reedline::Color {
        reedline::Color::Cyan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reedline::FileBackedHistory;

    fn names() -> Names {
        Names {
            strategies: vec![
                "dexar".into(),
                "dexar-unfiltered".into(),
                "raw-attention".into(),
                "legrad".into(),
            ],
            plugins: vec!["legrad".into()],
        }
    }

    fn values(line: &str) -> Vec<String> {
        suggestions(line, line.len(), &names())
            .into_iter()
            .map(|s| s.value)
            .collect()
    }

    #[test]
    fn completes_commands_and_names() {
        assert_eq!(values("/sh"), ["/show"]);
        assert_eq!(values("/s"), ["/show", "/strategy", "/seed", "/save"]);
        assert_eq!(values("/strategy use de"), ["dexar", "dexar-unfiltered"]);
        assert_eq!(values("/strategy l"), ["list", "legrad"]);
        assert_eq!(values("/compare dexar r"), ["raw-attention"]);
        assert_eq!(values("/plugin re"), ["reload"]);
        assert_eq!(values("/plugin unload "), ["legrad"]);
        assert_eq!(values("/show 3 --"), ["--raw"]);
        assert_eq!(values("/region t"), ["tiles"]);
        assert_eq!(values("/help qu"), ["quit"]);
        assert!(values("what is").is_empty());
        let s = &suggestions("/strategy use de", 16, &names())[0];
        assert_eq!((s.span.start, s.span.end), (14, 16));
    }

    #[test]
    fn completes_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub dir")).unwrap();
        std::fs::write(dir.path().join("cat.png"), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        std::fs::write(dir.path().join("libx.so"), b"").unwrap();
        let d = dir.path().display().to_string();
        assert_eq!(
            values(&format!("/image {d}/")),
            [format!("{d}/cat.png"), format!("{d}/sub\\ dir/")]
        );
        assert_eq!(
            values(&format!("/image {d}/su")),
            [format!("{d}/sub\\ dir/")]
        );
        assert_eq!(
            values(&format!("/plugin load {d}/l")),
            [format!("{d}/libx.so")]
        );
        assert_eq!(values(&format!("/model {d}/")), [format!("{d}/sub\\ dir/")]);
        let line = format!("/image {d}/sub\\ ");
        let s = suggestions(&line, line.len(), &names());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].span.start, "/image ".len());
        assert!(!s[0].append_whitespace);
    }

    #[test]
    fn hints_usage_then_history() {
        let mut history = FileBackedHistory::new(10).unwrap();
        history
            .save(reedline::HistoryItem::from_command_line(
                "what colour is the circle?",
            ))
            .unwrap();
        let (shown, insert) = ReplHinter::hint_for("/sh", &history);
        assert_eq!(shown, "ow N | A-B | WORD | all [--raw]");
        assert_eq!(insert, "ow");
        assert_eq!(ReplHinter::hint_for("/layers ", &history).0, "[K]");
        assert_eq!(
            ReplHinter::hint_for("what c", &history).1,
            "olour is the circle?"
        );
        assert_eq!(ReplHinter::hint_for("", &history).0, "");
    }

    #[test]
    fn highlights_and_continues() {
        let styled = ReplHighlighter.highlight("/show 1", 0);
        assert_eq!(styled.buffer[0].1, "/show");
        assert_eq!(styled.buffer[0].0, Style::new().fg(Color::Green).bold());
        assert_eq!(
            ReplHighlighter.highlight("/nope", 0).buffer[0].0,
            Style::new().fg(Color::Red)
        );
        assert!(matches!(
            ContinuationValidator.validate("a \\"),
            ValidationResult::Incomplete
        ));
        assert!(matches!(
            ContinuationValidator.validate("a"),
            ValidationResult::Complete
        ));
    }
}
