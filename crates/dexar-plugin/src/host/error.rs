//! Why a plugin could not be loaded: one line each, naming the file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {path} is {what}, not a regular file")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("cannot copy plugin {path} into the temporary directory {dir} ({source}); set TMPDIR to a writable directory that allows executables")]
    Copy {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plugin {path} is not a loadable library: {reason}")]
    NotLibrary { path: PathBuf, reason: String },
    #[error("plugin {path} does not export `{symbol}` (is it a dexar plugin? build it with dexar_plugin::export_plugin! or include/dexar_plugin.h)")]
    MissingSymbol { path: PathBuf, symbol: &'static str },
    #[error("plugin {path} speaks dexar plugin ABI version {found}, this host speaks version {expected}: rebuild it against dexar-plugin ABI {expected}")]
    AbiMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("plugin {path} has an invalid descriptor: {reason}")]
    InvalidDescriptor { path: PathBuf, reason: String },
    #[error("plugin {path} is named `{name}`, which clashes with {other}")]
    NameClash {
        path: PathBuf,
        name: String,
        other: String,
    },
    #[error("refusing plugin {path}: {what} {target} is writable by group or others (mode {mode:o}); run `chmod go-w {target}` or allow insecure plugins")]
    Insecure {
        path: PathBuf,
        what: &'static str,
        target: PathBuf,
        mode: u32,
    },
    #[error("plugin directory {path} does not exist or is not a directory")]
    NoSuchDirectory { path: PathBuf },
    #[error("no plugin named `{name}` is loaded")]
    NotLoaded { name: String },
}
