//! The host side: load plugin libraries and use them like built-in strategies.
//!
//! ```ignore
//! let mut plugins = PluginRegistry::new(HostOptions::default());
//! for result in plugins.load_search_path(&cli_plugin_dirs) {
//!     if let Err(e) = result { eprintln!("warning: {e}") }
//! }
//! let strategy = plugins.strategy("legrad").expect("loaded");
//! let map = strategy.token_map(&trace)?;
//! ```
//!
//! Every refusal is a one-line [`PluginError`] naming the file; every failure
//! during a call is a [`dexar_core::StrategyError`] naming the plugin, and the
//! registry keeps working afterwards.

mod copies;
mod error;
mod library_file;
mod loaded;
mod security;

pub use copies::remove_stale_copies;
pub use error::PluginError;
pub use library_file::check_library_bytes;
pub use loaded::LoadedPlugin;

use dexar_core::Strategy;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Colon-separated directories scanned by [`PluginRegistry::load_search_path`].
pub const PLUGIN_PATH_ENV: &str = "DEXAR_PLUGIN_PATH";

/// How the host loads and calls plugins.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Load plugins whose file or directory is writable by group or others.
    pub allow_insecure: bool,
    /// Wall-clock budget of one plugin call. A call over budget has its result
    /// discarded with an error; it cannot be interrupted while it runs.
    pub time_budget: Duration,
    /// Names plugins may not take (the built-in strategies by default).
    pub reserved_names: Vec<String>,
    /// Where private copies of loaded libraries go (the system temp dir by
    /// default; it must allow executable mappings, i.e. not be mounted noexec).
    pub copy_dir: Option<PathBuf>,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            allow_insecure: false,
            time_budget: Duration::from_secs(5),
            reserved_names: dexar_core::BUILTIN_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            copy_dir: None,
        }
    }
}

/// What `/plugin list` shows about one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub help: String,
    pub path: PathBuf,
    pub has_sentence_map: bool,
}

/// The loaded plugins, in load order, with unique names.
///
/// Strategies handed out keep their library loaded: unloading or reloading a
/// plugin only removes it from the registry; the old code stays mapped until
/// the last `Arc` to it is dropped.
#[derive(Debug, Default)]
pub struct PluginRegistry {
    options: HostOptions,
    plugins: Vec<Arc<LoadedPlugin>>,
}

impl PluginRegistry {
    /// A registry; private copies that crashed processes left in the copy
    /// directory are removed first.
    pub fn new(options: HostOptions) -> Self {
        let dir = options.copy_dir.clone().unwrap_or_else(std::env::temp_dir);
        remove_stale_copies(&dir);
        Self {
            options,
            plugins: Vec::new(),
        }
    }

    pub fn options(&self) -> &HostOptions {
        &self.options
    }

    /// Loads one plugin library.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<Arc<LoadedPlugin>, PluginError> {
        let path = absolute(path.as_ref())?;
        let plugin = Arc::new(LoadedPlugin::open(&path, &self.options)?);
        self.check_name(&plugin, None)?;
        self.plugins.push(plugin.clone());
        Ok(plugin)
    }

    /// Loads every library (`*.so` on Linux) in each directory, in name order.
    /// A missing directory is an error; files already loaded are skipped.
    pub fn load_dirs(&mut self, dirs: &[PathBuf]) -> Vec<Result<Arc<LoadedPlugin>, PluginError>> {
        let mut results = Vec::new();
        for dir in dirs {
            match plugin_files(dir) {
                Ok(files) => results.extend(self.load_files(files)),
                Err(e) => results.push(Err(e)),
            }
        }
        results
    }

    /// What the CLI calls at start-up: loads plugins from `extra_dirs` (from
    /// the command line or config; a missing one is an error) and then from the
    /// directories of `DEXAR_PLUGIN_PATH` (missing ones are skipped). On a name
    /// clash the first one loaded wins and the later one is reported.
    pub fn load_search_path(
        &mut self,
        extra_dirs: &[PathBuf],
    ) -> Vec<Result<Arc<LoadedPlugin>, PluginError>> {
        let env = std::env::var_os(PLUGIN_PATH_ENV);
        let mut results = self.load_dirs(extra_dirs);
        for dir in split_search_path(env.as_deref()) {
            if dir.is_dir() && !extra_dirs.contains(&dir) {
                results.extend(self.load_dirs(&[dir]));
            }
        }
        results
    }

    fn load_files(&mut self, files: Vec<PathBuf>) -> Vec<Result<Arc<LoadedPlugin>, PluginError>> {
        let mut results = Vec::new();
        for file in files {
            let already = absolute(&file)
                .map(|abs| self.plugins.iter().any(|p| p.path() == abs))
                .unwrap_or(false);
            if !already {
                results.push(self.load(&file));
            }
        }
        results
    }

    /// The loaded plugins, in load order.
    pub fn list(&self) -> Vec<PluginInfo> {
        self.plugins
            .iter()
            .map(|p| PluginInfo {
                name: p.name().to_string(),
                version: p.version().to_string(),
                help: p.help().to_string(),
                path: p.path().to_path_buf(),
                has_sentence_map: p.has_sentence_map(),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.plugins.iter().find(|p| p.name() == name).cloned()
    }

    /// A loaded plugin as a strategy, to use like the built-ins.
    pub fn strategy(&self, name: &str) -> Option<Arc<dyn Strategy>> {
        self.get(name).map(|p| p as Arc<dyn Strategy>)
    }

    /// All loaded plugins as strategies, in load order.
    pub fn strategies(&self) -> Vec<Arc<dyn Strategy>> {
        self.plugins
            .iter()
            .map(|p| p.clone() as Arc<dyn Strategy>)
            .collect()
    }

    /// Removes a plugin from the registry (its code stays loaded while in use).
    pub fn unload(&mut self, name: &str) -> Result<(), PluginError> {
        let index = self.index_of(name)?;
        self.plugins.remove(index);
        Ok(())
    }

    /// Loads the plugin's file again (a fresh copy, so a rebuilt library is
    /// really re-read). On failure the old version stays loaded.
    pub fn reload(&mut self, name: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        let index = self.index_of(name)?;
        let path = self.plugins[index].path().to_path_buf();
        let plugin = Arc::new(LoadedPlugin::open(&path, &self.options)?);
        self.check_name(&plugin, Some(index))?;
        self.plugins[index] = plugin.clone();
        Ok(plugin)
    }

    /// Reloads every plugin; one result per plugin, named by its old name.
    pub fn reload_all(&mut self) -> Vec<(String, Result<Arc<LoadedPlugin>, PluginError>)> {
        let names: Vec<String> = self.plugins.iter().map(|p| p.name().to_string()).collect();
        names
            .into_iter()
            .map(|name| {
                let result = self.reload(&name);
                (name, result)
            })
            .collect()
    }

    fn index_of(&self, name: &str) -> Result<usize, PluginError> {
        self.plugins
            .iter()
            .position(|p| p.name() == name)
            .ok_or_else(|| PluginError::NotLoaded {
                name: name.to_string(),
            })
    }

    /// Refuses a name taken by a built-in or by another loaded plugin
    /// (`replacing`: the slot a reload will overwrite, which does not count).
    fn check_name(
        &self,
        plugin: &LoadedPlugin,
        replacing: Option<usize>,
    ) -> Result<(), PluginError> {
        let clash = |other: String| PluginError::NameClash {
            path: plugin.path().to_path_buf(),
            name: plugin.name().to_string(),
            other,
        };
        if self
            .options
            .reserved_names
            .iter()
            .any(|n| n == plugin.name())
        {
            return Err(clash("a built-in strategy".into()));
        }
        let taken = self
            .plugins
            .iter()
            .enumerate()
            .find(|(i, p)| Some(*i) != replacing && p.name() == plugin.name());
        if let Some((_, other)) = taken {
            return Err(clash(format!(
                "the plugin loaded from {}",
                other.path().display()
            )));
        }
        Ok(())
    }
}

/// The directories of a `DEXAR_PLUGIN_PATH` value (empty entries skipped).
pub fn split_search_path(value: Option<&OsStr>) -> Vec<PathBuf> {
    value
        .map(|v| {
            std::env::split_paths(v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// The plugin libraries in a directory (by the platform's library extension), sorted.
pub fn plugin_files(dir: &Path) -> Result<Vec<PathBuf>, PluginError> {
    if !dir.is_dir() {
        return Err(PluginError::NoSuchDirectory {
            path: dir.to_path_buf(),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(|source| PluginError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension() == Some(OsStr::new(std::env::consts::DLL_EXTENSION)) && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

fn absolute(path: &Path) -> Result<PathBuf, PluginError> {
    std::path::absolute(path).map_err(|source| PluginError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_splits_on_colons_and_skips_empty_entries() {
        let dirs = split_search_path(Some(OsStr::new("/a::/b/c:")));
        assert_eq!(dirs, vec![PathBuf::from("/a"), PathBuf::from("/b/c")]);
        assert!(split_search_path(None).is_empty());
    }

    #[test]
    fn default_options_reserve_the_builtins() {
        let options = HostOptions::default();
        assert!(options.reserved_names.iter().any(|n| n == "dexar"));
        assert!(!options.allow_insecure);
    }

    #[test]
    fn missing_directory_is_reported() {
        let err = plugin_files(Path::new("/nonexistent/dexar-plugins")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/dexar-plugins"),
            "{err}"
        );
    }
}
