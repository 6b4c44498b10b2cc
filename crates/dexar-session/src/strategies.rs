//! Finding strategies by name among the built-ins and the loaded plugins,
//! with a suggestion for a typo.

use dexar_core::{builtin_strategy, Strategy, BUILTIN_NAMES};
use dexar_plugin::host::PluginRegistry;
use std::sync::Arc;

use crate::error::StateError;

/// Every strategy name: the built-ins first, then the loaded plugins.
pub fn names(plugins: &PluginRegistry) -> Vec<String> {
    let mut names: Vec<String> = BUILTIN_NAMES.iter().map(|s| s.to_string()).collect();
    names.extend(plugins.list().into_iter().map(|p| p.name));
    names
}

/// The strategy called `name` (`topk` applies to the DEX-AR built-ins).
pub fn find(
    name: &str,
    topk: usize,
    plugins: &PluginRegistry,
) -> Result<Arc<dyn Strategy>, StateError> {
    builtin_strategy(name, topk)
        .map(Arc::from)
        .or_else(|| plugins.strategy(name))
        .ok_or_else(|| {
            let known = names(plugins);
            let refs: Vec<&str> = known.iter().map(String::as_str).collect();
            StateError::UnknownStrategy {
                name: name.to_string(),
                hint: nearest(name, &refs).map(str::to_string),
            }
        })
}

/// The closest candidate by edit distance, if reasonably close.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    // A shared prefix of 3+ characters beats edit distance ("raw-attn").
    let prefix = |c: &str| {
        word.chars()
            .zip(c.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    if let Some((_, _, best)) = candidates
        .iter()
        .filter(|c| prefix(c) >= 3)
        .map(|c| (std::cmp::Reverse(prefix(c)), levenshtein(word, c), *c))
        .min()
    {
        return Some(best);
    }
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 2).max(2))
        .min()
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        assert_eq!(nearest("dexr", &BUILTIN_NAMES), Some("dexar"));
        assert_eq!(nearest("raw-attn", &BUILTIN_NAMES), Some("raw-attention"));
        assert_eq!(nearest("zzzzzzzzzz", &BUILTIN_NAMES), None);
    }

    #[test]
    fn finds_built_ins_and_refuses_unknown_names() {
        let plugins = PluginRegistry::default();
        assert_eq!(
            find("grad-x-attn", 1, &plugins).unwrap().name(),
            "grad-x-attn"
        );
        let e = find("dexr", 1, &plugins).err().unwrap().to_string();
        assert_eq!(e, "unknown strategy dexr (did you mean dexar?)");
        assert_eq!(names(&plugins), BUILTIN_NAMES);
    }
}
