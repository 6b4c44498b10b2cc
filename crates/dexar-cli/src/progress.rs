//! Progress bars on stderr for long work, set up one way: shown on a
//! terminal, hidden (and replaced by the caller's occasional lines) when
//! stderr is a pipe or a file.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// A bar over `total` units (`tokens`, `items`, `steps`), with elapsed time,
/// the estimate of what is left and the caller's message.
pub fn bar(total: u64, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template =
        format!("{{bar:30}} {{pos}}/{{len}} {unit} [{{elapsed}} < {{eta}}] {{wide_msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}
