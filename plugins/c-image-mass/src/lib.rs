//! c-image-mass: a dexar plugin written in C (`src/c_image_mass.c`).
//!
//! This Rust file only re-exports the C plugin's two entry points under their
//! ABI names (see build.rs for why); all the logic is in C. Template for
//! plugins in C: copy `src/c_image_mass.c` and `include/dexar_plugin.h`, and
//! either keep this crate's build or compile the C file alone with
//! `cc -shared -fPIC`.
//!
//! A crash in C code cannot be contained by the host: it ends the process.

use std::ffi::c_void;

unsafe extern "C" {
    /// `dexar_plugin_abi_version` of the C file, renamed by build.rs.
    fn c_image_mass_abi_version() -> u32;
    /// `dexar_plugin_entry` of the C file, renamed by build.rs; returns
    /// `const DexarPluginDescriptor *` (opaque here: the host reads it).
    fn c_image_mass_entry() -> *const c_void;
}

/// ABI handshake, forwarded to the C implementation.
#[unsafe(no_mangle)]
pub extern "C" fn dexar_plugin_abi_version() -> u32 {
    // SAFETY: a C function without arguments or preconditions.
    unsafe { c_image_mass_abi_version() }
}

/// The plugin descriptor, forwarded to the C implementation.
#[unsafe(no_mangle)]
pub extern "C" fn dexar_plugin_entry() -> *const c_void {
    // SAFETY: a C function without arguments or preconditions; it returns a
    // pointer to a static descriptor.
    unsafe { c_image_mass_entry() }
}
