//! The user's config file: `$DEXAR_CONFIG`, else `<config dir>/dexar/config.toml`
//! (`~/.config/dexar/config.toml` on Linux). Every key is optional:
//!
//! ```toml
//! plugin_dirs = ["~/dexar-plugins"]   # loaded at start, like DEXAR_PLUGIN_PATH
//! allow_insecure_plugins = false
//! graphics = "auto"                   # REPL: auto|kitty|sixel|iterm|blocks|blocks256|ascii
//! ```

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult};

#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub plugin_dirs: Vec<PathBuf>,
    #[serde(default)]
    pub allow_insecure_plugins: bool,
    #[serde(default)]
    pub graphics: Option<String>,
}

/// Where the config file is looked for.
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DEXAR_CONFIG") {
        return Some(PathBuf::from(p));
    }
    dirs::config_dir().map(|d| d.join("dexar").join("config.toml"))
}

/// The config; a missing file is the default, a malformed one (or a FIFO,
/// a directory) an error naming it.
pub fn load() -> CliResult<Config> {
    match path() {
        Some(p) if p.exists() => parse_file(&p),
        _ => Ok(Config::default()),
    }
}

/// The largest config file read.
const MAX_CONFIG_FILE: u64 = 1 << 20;

fn parse_file(p: &Path) -> CliResult<Config> {
    let text = dexar_core::read_regular_to_string(p, MAX_CONFIG_FILE)
        .map_err(|e| CliError::usage(format!("config {}: cannot read ({e})", p.display())))?;
    let mut cfg: Config = toml::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "config {}: {} (fix or remove the file)",
            p.display(),
            crate::error::one_line(&e.to_string())
        ))
    })?;
    cfg.plugin_dirs = cfg.plugin_dirs.iter().map(|d| expand_home(d)).collect();
    Ok(cfg)
}

fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), dirs::home_dir()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_config_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(
            &p,
            "plugin_dirs = [\"/opt/p\"]\nallow_insecure_plugins = true\ngraphics = \"ascii\"\n",
        )
        .unwrap();
        let cfg = parse_file(&p).unwrap();
        assert_eq!(cfg.plugin_dirs, vec![PathBuf::from("/opt/p")]);
        assert!(cfg.allow_insecure_plugins);
        assert_eq!(cfg.graphics.as_deref(), Some("ascii"));
        std::fs::write(&p, "plugin_dir = 3\n").unwrap();
        let e = parse_file(&p).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(
            e.message.contains("config.toml") && !e.message.contains('\n'),
            "{}",
            e.message
        );
        let e = parse_file(dir.path()).unwrap_err();
        assert!(e.message.contains("a directory"), "{}", e.message);
    }
}
