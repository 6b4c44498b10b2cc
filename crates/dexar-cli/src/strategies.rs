//! Loading plugins at start and choosing the strategies a subcommand runs.

use dexar_core::{Strategy, BUILTIN_NAMES};
use dexar_plugin::host::{HostOptions, PluginRegistry, PLUGIN_PATH_ENV};
use dexar_session::StateError;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{CliError, CliResult};

/// Loads the plugins named with `--plugin`, then those in the config file's
/// `plugin_dirs` and in `DEXAR_PLUGIN_PATH`. A bad file or a missing
/// directory in those is a warning naming where it was listed.
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
    let from_config = match crate::config::path() {
        Some(p) => format!("config {} plugin_dirs", p.display()),
        None => "config plugin_dirs".into(),
    };
    for result in registry.load_dirs(&config.plugin_dirs) {
        if let Err(e) = result {
            crate::stdio::warn(&format!("{from_config}: {e}"));
        }
    }
    // Directories already listed in the config are loaded only once.
    for result in registry.load_search_path(&[]) {
        if let Err(e) = result {
            crate::stdio::warn(&format!("{PLUGIN_PATH_ENV}: {e}"));
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
    plugins: &PluginRegistry,
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
    wanted
        .iter()
        .map(|n| {
            dexar_session::strategies::find(n, topk, plugins).map_err(|e| match e {
                StateError::UnknownStrategy { name, hint } => CliError::usage(format!(
                    "--strategy: unknown strategy `{name}`{}; available: {}",
                    hint.map(|h| format!(" (did you mean `{h}`?)"))
                        .unwrap_or_default(),
                    dexar_session::strategies::names(plugins).join(", ")
                )),
                other => other.into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_includes_dexar_and_refuses_unknown() {
        let plugins = PluginRegistry::default();
        let s = select(&["raw-attention".into()], 1, &plugins).unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["dexar", "dexar-unfiltered", "raw-attention"]);
        let e = select(&["dexr".into()], 1, &plugins).err().unwrap();
        assert_eq!(e.code, 2);
        assert!(
            e.message.starts_with(
                "--strategy: unknown strategy `dexr` (did you mean `dexar`?); available: dexar,"
            ),
            "{}",
            e.message
        );
    }
}
