//! Choosing strategies by name, with suggestions for typos.

use dexar_core::{builtin_strategy, Strategy, BUILTIN_NAMES};
use dexar_plugin::host::{HostOptions, PluginRegistry};
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{CliError, CliResult};

/// Loads the plugins named with `--plugin`, then those in the config file's
/// `plugin_dirs` and in `DEXAR_PLUGIN_PATH` (problems there are warnings).
pub fn load_plugins(paths: &[PathBuf], allow_insecure: bool) -> CliResult<PluginRegistry> {
    let config = crate::config::load()?;
    let mut registry = PluginRegistry::new(HostOptions {
        allow_insecure: allow_insecure || config.allow_insecure_plugins,
        ..HostOptions::default()
    });
    for p in paths {
        registry
            .load(p)
            .map_err(|e| CliError::usage(format!("--plugin: {e}")))?;
    }
    let dirs: Vec<PathBuf> = config
        .plugin_dirs
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    for result in registry.load_search_path(&dirs) {
        if let Err(e) = result {
            eprintln!("warning: DEXAR_PLUGIN_PATH: {e}");
        }
    }
    Ok(registry)
}

/// The strategies to run: DEX-AR and its unfiltered form always, then the
/// requested ones (all built-ins when none is named), without duplicates.
/// Names are looked up among the built-ins, then the loaded plugins.
pub fn select(
    names: &[String],
    topk: usize,
    plugins: Option<&PluginRegistry>,
) -> CliResult<Vec<Arc<dyn Strategy>>> {
    let mut wanted: Vec<String> = vec!["dexar".into(), "dexar-unfiltered".into()];
    let requested: Vec<String> = if names.is_empty() {
        BUILTIN_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        names.to_vec()
    };
    for n in requested {
        if !wanted.contains(&n) {
            wanted.push(n);
        }
    }
    let plugin_names: Vec<String> = plugins
        .map(|r| r.list().into_iter().map(|p| p.name).collect())
        .unwrap_or_default();
    let mut known: Vec<&str> = BUILTIN_NAMES.to_vec();
    known.extend(plugin_names.iter().map(String::as_str));
    wanted
        .iter()
        .map(|n| {
            let found: Option<Arc<dyn Strategy>> = builtin_strategy(n, topk)
                .map(Arc::from)
                .or_else(|| plugins.and_then(|r| r.strategy(n)));
            found.ok_or_else(|| {
                let hint = nearest(n, &known)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                CliError::usage(format!(
                    "--strategy: unknown strategy `{n}`{hint}; available: {}",
                    known.join(", ")
                ))
            })
        })
        .collect()
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
    fn always_includes_dexar_and_refuses_unknown() {
        let s = select(&["raw-attention".into()], 1, None).unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["dexar", "dexar-unfiltered", "raw-attention"]);
        let e = select(&["nope".into()], 1, None).err().unwrap();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("unknown strategy `nope`"));
    }
}
