//! Compiles the C plugin with the `cc` crate into a static library that the
//! cdylib of this crate links.
//!
//! Why the renaming defines: a Rust cdylib exports only the symbols Rust code
//! defines, never those of linked C libraries. So the C file's two ABI entry
//! points are compiled under other names here, and src/lib.rs exports the real
//! names as thin forwarders. The C file itself stays a standalone plugin:
//!
//!   cc -shared -fPIC -O2 -I ../../crates/dexar-plugin/include \
//!      src/c_image_mass.c -o libc_image_mass.so

use std::path::PathBuf;

fn main() {
    // The header lives in dexar-plugin; a copy of this template elsewhere can
    // point DEXAR_PLUGIN_INCLUDE at it.
    let include = std::env::var_os("DEXAR_PLUGIN_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../../crates/dexar-plugin/include"));
    println!("cargo:rerun-if-env-changed=DEXAR_PLUGIN_INCLUDE");
    println!("cargo:rerun-if-changed=src/c_image_mass.c");
    println!(
        "cargo:rerun-if-changed={}",
        include.join("dexar_plugin.h").display()
    );
    cc::Build::new()
        .file("src/c_image_mass.c")
        .include(&include)
        .define("dexar_plugin_abi_version", "c_image_mass_abi_version")
        .define("dexar_plugin_entry", "c_image_mass_entry")
        .flag_if_supported("-std=c99")
        .warnings(true)
        .extra_warnings(true)
        .compile("c_image_mass");
}
