//! Libraries the host must refuse, each with a one-line error naming the file.

use crate::support::*;
use dexar_plugin::abi::DEXAR_PLUGIN_ABI_VERSION;
use dexar_plugin::host::{HostOptions, PluginError, PluginRegistry};
use std::path::Path;

fn refuse(plugins: &mut PluginRegistry, file: &Path) -> PluginError {
    let err = plugins.load(file).expect_err("the plugin must be refused");
    let message = err.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(
        message.contains(&*file.to_string_lossy()),
        "names the file: {message}"
    );
    assert!(plugins.is_empty(), "nothing loaded after a refusal");
    err
}

#[test]
fn wrong_abi_version_is_refused_naming_both_versions() {
    let dir = private_dir();
    let file = dir.path().join("libfuture.so");
    compile_c_fixture(&file, &["FIXTURE_ABI=99"]);
    let err = refuse(&mut registry(), &file);
    assert!(
        matches!(err, PluginError::AbiMismatch { found: 99, .. }),
        "{err}"
    );
    let message = err.to_string();
    assert!(message.contains("version 99"), "{message}");
    assert!(
        message.contains(&format!("version {DEXAR_PLUGIN_ABI_VERSION}")),
        "{message}"
    );
}

#[test]
fn a_file_that_is_not_a_library_is_refused() {
    let dir = private_dir();
    let file = dir.path().join("libnotes.so");
    std::fs::write(&file, "just some text\n").unwrap();
    set_mode(&file, 0o644);
    let err = refuse(&mut registry(), &file);
    assert!(matches!(err, PluginError::NotLibrary { .. }), "{err}");
    // The error talks about the user's file, not the private copy.
    assert!(!err.to_string().contains("dexar-plugin-"), "{err}");
}

#[test]
fn a_missing_file_is_refused() {
    let dir = private_dir();
    let err = refuse(&mut registry(), &dir.path().join("libabsent.so"));
    assert!(matches!(err, PluginError::Io { .. }), "{err}");
}

#[test]
fn missing_symbols_are_refused() {
    let dir = private_dir();
    let no_entry = dir.path().join("libnoentry.so");
    compile_c_fixture(&no_entry, &["FIXTURE_NO_ENTRY"]);
    let err = refuse(&mut registry(), &no_entry);
    assert!(
        matches!(
            err,
            PluginError::MissingSymbol {
                symbol: "dexar_plugin_entry",
                ..
            }
        ),
        "{err}"
    );

    // A real shared library that is no dexar plugin at all.
    let source = dir.path().join("other.c");
    std::fs::write(&source, "int answer(void) { return 42; }\n").unwrap();
    let other = dir.path().join("libother.so");
    compile_c_library(&source, &other, &[]);
    let err = refuse(&mut registry(), &other);
    assert!(
        matches!(
            err,
            PluginError::MissingSymbol {
                symbol: "dexar_plugin_abi_version",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn invalid_names_are_refused() {
    let dir = private_dir();
    let names = [
        "\"\"",
        "\"two words\"",
        "\"../../x\"",
        "\"/abs/dir\"",
        "\"..\"",
        "\"a\\\\b\"",
    ];
    for (i, name) in names.iter().enumerate() {
        let file = dir.path().join(format!("libbadname{i}.so"));
        compile_c_fixture(&file, &[&format!("FIXTURE_NAME={name}")]);
        let err = refuse(&mut registry(), &file);
        assert!(
            matches!(err, PluginError::InvalidDescriptor { .. }),
            "{err}"
        );
    }
}

#[test]
fn name_clashes_with_builtins_and_loaded_plugins_are_refused() {
    let dir = private_dir();
    let builtin = dir.path().join("libdexar.so");
    compile_c_fixture(&builtin, &["FIXTURE_NAME=\"dexar\""]);
    let err = refuse(&mut registry(), &builtin);
    assert!(err.to_string().contains("built-in strategy"), "{err}");

    // Reserved names come from the caller.
    let mut custom = PluginRegistry::new(HostOptions {
        reserved_names: vec!["c-fixture".into()],
        ..HostOptions::default()
    });
    let plain = dir.path().join("libfixture.so");
    compile_c_fixture(&plain, &[]);
    refuse(&mut custom, &plain);

    let mut plugins = registry();
    let first = plugins.load(&plain).unwrap();
    let twin = install(&plain, dir.path(), "libtwin.so");
    let err = plugins.load(&twin).unwrap_err();
    assert!(matches!(err, PluginError::NameClash { .. }), "{err}");
    assert!(
        err.to_string().contains(&*first.path().to_string_lossy()),
        "{err}"
    );
    assert_eq!(plugins.len(), 1);
}

#[test]
fn group_or_world_writable_plugins_are_refused_unless_allowed() {
    let dir = private_dir();
    let file = dir.path().join("libfixture.so");
    compile_c_fixture(&file, &[]);

    set_mode(&file, 0o666);
    let err = refuse(&mut registry(), &file);
    assert!(
        matches!(err, PluginError::Insecure { what: "file", .. }),
        "{err}"
    );
    set_mode(&file, 0o664);
    refuse(&mut registry(), &file);

    set_mode(&file, 0o644);
    set_mode(dir.path(), 0o777);
    let err = refuse(&mut registry(), &file);
    assert!(
        matches!(
            err,
            PluginError::Insecure {
                what: "directory",
                ..
            }
        ),
        "{err}"
    );

    let mut lenient = PluginRegistry::new(HostOptions {
        allow_insecure: true,
        ..HostOptions::default()
    });
    set_mode(&file, 0o666);
    lenient.load(&file).expect("allowed with allow_insecure");
    set_mode(dir.path(), 0o700);
}

#[test]
fn a_truncated_library_is_refused_before_dlopen() {
    let dir = private_dir();
    let whole = dir.path().join("libwhole.so");
    compile_c_fixture(&whole, &[]);
    let bytes = std::fs::read(&whole).unwrap();
    for (i, len) in [bytes.len() / 2, bytes.len() / 10, 64, 3]
        .into_iter()
        .enumerate()
    {
        let cut = dir.path().join(format!("libcut{i}.so"));
        std::fs::write(&cut, &bytes[..len]).unwrap();
        set_mode(&cut, 0o644);
        // Without the check, dlopen of a cut library can die of SIGBUS.
        let err = refuse(&mut registry(), &cut);
        assert!(matches!(err, PluginError::NotLibrary { .. }), "{err}");
        assert!(err.to_string().contains("ELF"), "{err}");
    }
    registry().load(&whole).expect("the whole library loads");
}

#[test]
fn a_fifo_or_a_directory_is_refused_without_waiting() {
    let dir = private_dir();
    let fifo = dir.path().join("libfifo.so");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err = refuse(&mut registry(), &fifo);
    assert!(err.to_string().contains("FIFO"), "{err}");
    let sub = dir.path().join("libdir.so");
    std::fs::create_dir(&sub).unwrap();
    let err = refuse(&mut registry(), &sub);
    assert!(matches!(err, PluginError::NotAFile { .. }), "{err}");
}

#[test]
fn a_bad_file_in_a_plugin_directory_is_one_error_among_results() {
    let dir = private_dir();
    compile_c_fixture(&dir.path().join("libgood.so"), &[]);
    let bad = dir.path().join("libbad.so");
    std::fs::write(&bad, b"\x7fELF truncated").unwrap();
    set_mode(&bad, 0o644);
    let mut plugins = registry();
    let results = plugins.load_dirs(&[dir.path().to_path_buf()]);
    assert_eq!(results.len(), 2);
    assert!(results.iter().any(|r| r.is_ok()));
    let err = results.into_iter().find_map(Result::err).unwrap();
    assert!(err.to_string().contains("libbad.so"), "{err}");
    assert_eq!(plugins.len(), 1);
}

#[test]
fn an_unusable_copy_directory_is_named_as_such() {
    let dir = private_dir();
    let file = dir.path().join("libfixture.so");
    compile_c_fixture(&file, &[]);
    let missing = dir.path().join("no-such-tmp");
    let mut plugins = PluginRegistry::new(HostOptions {
        copy_dir: Some(missing.clone()),
        ..HostOptions::default()
    });
    let err = refuse(&mut plugins, &file);
    assert!(matches!(err, PluginError::Copy { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("temporary directory") && message.contains("no-such-tmp"),
        "{message}"
    );
}
