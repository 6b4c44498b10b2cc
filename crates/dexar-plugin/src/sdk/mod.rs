//! The plugin side: write a strategy in safe Rust, export it with one macro.
//!
//! ```ignore
//! use dexar_plugin::sdk::{PluginStrategy, TraceView};
//!
//! #[derive(Default)]
//! struct Mine;
//!
//! impl PluginStrategy for Mine {
//!     const NAME: &'static str = "mine";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     const HELP: &'static str = "what it shows, in one line";
//!
//!     fn token_map(&self, trace: &TraceView<'_>, map: &mut [f32]) -> Result<f32, String> {
//!         // fill `map` (one value per grid cell), return the token weight
//!         Ok(1.0)
//!     }
//! }
//!
//! dexar_plugin::export_plugin!(Mine);
//! ```
//!
//! Build the crate as a `cdylib` depending on `dexar-plugin` with
//! `default-features = false`. The macro exports the two ABI symbols and wraps
//! every call in `catch_unwind`: a panic becomes a `DEXAR_STATUS_PANIC` status
//! with the panic message and location, never an unwind into the host. This
//! needs the default `panic = "unwind"`; with `panic = "abort"` a panic ends the
//! host process. The plugin installs its own silent panic hook (the cdylib has
//! its own copy of std, so the host's hook is untouched) to record the
//! location instead of printing it over the host's terminal.

mod view;

pub use view::{Row, SentenceView, TraceView};

use crate::abi::{
    write_error, DexarPluginDescriptor, DexarSentenceMapFn, DexarSentenceView, DexarTokenMapFn,
    DexarTraceView, DEXAR_PLUGIN_ABI_VERSION, DEXAR_STATUS_ERROR, DEXAR_STATUS_OK,
    DEXAR_STATUS_PANIC,
};
use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// An attribution strategy implemented in a plugin.
///
/// The host creates one instance (`Default`) when it loads the library and may
/// call it from several threads at once, hence `Sync`.
pub trait PluginStrategy: Default + Send + Sync + 'static {
    /// Strategy name on the command line: a plain file name (see [`is_valid_name`]; checked at compile time).
    const NAME: &'static str;
    /// Free-form version shown by `/plugin list`.
    const VERSION: &'static str;
    /// One-line description.
    const HELP: &'static str;
    /// Set to `true` when overriding [`PluginStrategy::sentence_map`]; otherwise
    /// the descriptor has no sentence function and the host uses its default.
    const CUSTOM_SENTENCE_MAP: bool = false;

    /// Writes one token's un-normalised map into `map` (one value per grid
    /// cell, row-major, zeroed on entry; for an image of several regions the
    /// cells of every region, region after region, as
    /// [`TraceView::cell_positions`] lists them) and returns the token weight.
    fn token_map(&self, trace: &TraceView<'_>, map: &mut [f32]) -> Result<f32, String>;

    /// Writes the un-normalised sentence map into `out` (zeroed on entry); the
    /// host min-max normalises it. Only used when `CUSTOM_SENTENCE_MAP` is true.
    fn sentence_map(&self, tokens: &SentenceView<'_>, out: &mut [f32]) -> Result<(), String> {
        weighted_sum(tokens, out);
        Ok(())
    }
}

/// `Σ_t weight_t · map_t` into `out`: the host's default aggregate before normalisation.
pub fn weighted_sum(tokens: &SentenceView<'_>, out: &mut [f32]) {
    for (map, weight) in tokens.tokens() {
        for (acc, &v) in out.iter_mut().zip(map) {
            *acc += weight * v;
        }
    }
}

/// The longest strategy name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Whether `name` is a usable strategy name (used by [`export_plugin!`] at
/// compile time and checked by the host at load): 1 to [`MAX_NAME_LEN`]
/// bytes, no whitespace or control characters, no `/` or `\`, not starting
/// with `.`. Front ends name files and directories after strategies (e.g.
/// `explain --out DIR` writes `DIR/NAME/`), so a name must be a plain file
/// name: `../x` or `/abs` would write elsewhere.
pub const fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_NAME_LEN || bytes[0] == b'.' {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b <= b' ' || b == 0x7f || b == b'/' || b == b'\\' {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether `text` can become a C string (used by [`export_plugin!`] at compile time).
pub const fn has_no_nul(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0 {
            return false;
        }
        i += 1;
    }
    true
}

/// The exported state of one plugin: its instance and its descriptor.
#[doc(hidden)]
pub struct Exported<T> {
    plugin: T,
    // The descriptor points into these; they live as long as the static.
    _strings: [CString; 3],
    descriptor: DexarPluginDescriptor,
}

// SAFETY: the descriptor's pointers refer to the CStrings owned alongside it
// (never mutated) and to plain functions; `T` is `Send + Sync` by the trait bound.
unsafe impl<T: Send> Send for Exported<T> {}
// SAFETY: as above; all shared access is read-only.
unsafe impl<T: Sync> Sync for Exported<T> {}

impl<T: PluginStrategy> Exported<T> {
    pub fn new(token_map: DexarTokenMapFn, sentence_map: DexarSentenceMapFn) -> Self {
        install_panic_hook();
        // `export_plugin!` checked at compile time that none holds a NUL.
        let c = |s: &str| CString::new(s).unwrap_or_default();
        let strings = [c(T::NAME), c(T::VERSION), c(T::HELP)];
        let descriptor = DexarPluginDescriptor {
            abi_version: DEXAR_PLUGIN_ABI_VERSION,
            name: strings[0].as_ptr(),
            version: strings[1].as_ptr(),
            help: strings[2].as_ptr(),
            token_map: Some(token_map),
            sentence_map: T::CUSTOM_SENTENCE_MAP.then_some(sentence_map),
        };
        Self {
            plugin: T::default(),
            _strings: strings,
            descriptor,
        }
    }
}

/// Body of `dexar_plugin_entry`: the descriptor, or null if creating the plugin panicked.
#[doc(hidden)]
pub fn entry<T: PluginStrategy>(get: fn() -> &'static Exported<T>) -> *const DexarPluginDescriptor {
    match catch_unwind(get) {
        Ok(exported) => &exported.descriptor,
        Err(_) => std::ptr::null(),
    }
}

/// Body of the exported token-map function.
///
/// # Safety
/// The arguments must satisfy the contract of [`DexarTokenMapFn`].
#[doc(hidden)]
pub unsafe fn run_token_map<T: PluginStrategy>(
    get: fn() -> &'static Exported<T>,
    trace: *const DexarTraceView,
    out_map: *mut f32,
    out_len: usize,
    out_weight: *mut f32,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        // SAFETY: the host passes a trace valid for this call.
        let view = unsafe { TraceView::from_raw(trace) }?;
        if out_weight.is_null() {
            return Err("host passed a null weight pointer".into());
        }
        // SAFETY: the host owns `out_map` for `out_len` floats during this call.
        let map = unsafe { slice_mut_or_empty(out_map, out_len) }?;
        if map.len() != view.num_cells() {
            return Err(format!(
                "output map has {} cells but the image regions have {}",
                map.len(),
                view.num_cells()
            ));
        }
        let weight = get().plugin.token_map(&view, map)?;
        // SAFETY: checked non-null; host-owned for this call.
        unsafe { *out_weight = weight };
        Ok(())
    }));
    // SAFETY: `err` is the host's buffer of `err_cap` bytes.
    unsafe { finish(result, err, err_cap) }
}

/// Body of the exported sentence-map function.
///
/// # Safety
/// The arguments must satisfy the contract of [`DexarSentenceMapFn`].
#[doc(hidden)]
pub unsafe fn run_sentence_map<T: PluginStrategy>(
    get: fn() -> &'static Exported<T>,
    tokens: *const DexarSentenceView,
    out_map: *mut f32,
    out_len: usize,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        // SAFETY: the host passes a view valid for this call.
        let view = unsafe { SentenceView::from_raw(tokens) }?;
        // SAFETY: the host owns `out_map` for `out_len` floats during this call.
        let out = unsafe { slice_mut_or_empty(out_map, out_len) }?;
        get().plugin.sentence_map(&view, out)
    }));
    // SAFETY: `err` is the host's buffer of `err_cap` bytes.
    unsafe { finish(result, err, err_cap) }
}

/// # Safety
/// `ptr` must be null or valid for writes of `len` floats, unaliased, for `'a`.
unsafe fn slice_mut_or_empty<'a>(ptr: *mut f32, len: usize) -> Result<&'a mut [f32], String> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err("host passed a null output map".into());
    }
    // SAFETY: non-null and valid for `len` floats by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// Turns the outcome of a call into a status code and an error message.
///
/// # Safety
/// `err` must be null or valid for writes of `err_cap` bytes.
unsafe fn finish(
    result: Result<Result<(), String>, Box<dyn Any + Send>>,
    err: *mut c_char,
    err_cap: usize,
) -> i32 {
    let (status, message) = match result {
        Ok(Ok(())) => return DEXAR_STATUS_OK,
        Ok(Err(message)) => (DEXAR_STATUS_ERROR, message),
        Err(payload) => {
            let message = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| panic_message(payload.as_ref()));
            (DEXAR_STATUS_PANIC, message)
        }
    };
    // SAFETY: forwarded from the caller.
    unsafe { write_error(err, err_cap, &message) };
    status
}

thread_local! {
    /// The message and location of the last panic on this thread, recorded by our hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let mut message = panic_message(info.payload());
            if let Some(at) = info.location() {
                message.push_str(&format!(" (at {}:{})", at.file(), at.line()));
            }
            // `try_with`: the thread may be shutting down.
            let _ = LAST_PANIC.try_with(|p| *p.borrow_mut() = Some(message));
        }));
    });
}

/// Exports a [`PluginStrategy`] type as a dexar plugin: defines
/// `dexar_plugin_abi_version`, `dexar_plugin_abi_minor` and `dexar_plugin_entry`
/// with panic containment.
/// Use once per cdylib crate, at its root.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = ::core::assert!(
            $crate::sdk::is_valid_name(<$plugin as $crate::sdk::PluginStrategy>::NAME),
            "PluginStrategy::NAME must be a plain file name: 1-64 bytes, no whitespace, control characters, / or \\, not starting with ."
        );
        const _: () = ::core::assert!(
            $crate::sdk::has_no_nul(<$plugin as $crate::sdk::PluginStrategy>::VERSION)
                && $crate::sdk::has_no_nul(<$plugin as $crate::sdk::PluginStrategy>::HELP),
            "PluginStrategy::VERSION and HELP must not contain NUL"
        );

        fn __dexar_plugin_exported() -> &'static $crate::sdk::Exported<$plugin> {
            static EXPORTED: ::std::sync::OnceLock<$crate::sdk::Exported<$plugin>> =
                ::std::sync::OnceLock::new();
            EXPORTED.get_or_init(|| {
                $crate::sdk::Exported::new(__dexar_plugin_token_map, __dexar_plugin_sentence_map)
            })
        }

        extern "C" fn __dexar_plugin_token_map(
            trace: *const $crate::abi::DexarTraceView,
            out_map: *mut f32,
            out_len: usize,
            out_weight: *mut f32,
            err: *mut ::std::ffi::c_char,
            err_cap: usize,
        ) -> i32 {
            // SAFETY: only the host calls this, through the descriptor, under
            // the ABI contract that `run_token_map` requires.
            unsafe {
                $crate::sdk::run_token_map(
                    __dexar_plugin_exported,
                    trace,
                    out_map,
                    out_len,
                    out_weight,
                    err,
                    err_cap,
                )
            }
        }

        extern "C" fn __dexar_plugin_sentence_map(
            tokens: *const $crate::abi::DexarSentenceView,
            out_map: *mut f32,
            out_len: usize,
            err: *mut ::std::ffi::c_char,
            err_cap: usize,
        ) -> i32 {
            // SAFETY: as for the token map.
            unsafe {
                $crate::sdk::run_sentence_map(
                    __dexar_plugin_exported,
                    tokens,
                    out_map,
                    out_len,
                    err,
                    err_cap,
                )
            }
        }

        /// ABI handshake: the dexar plugin ABI version this library speaks.
        #[unsafe(no_mangle)]
        pub extern "C" fn dexar_plugin_abi_version() -> u32 {
            $crate::abi::DEXAR_PLUGIN_ABI_VERSION
        }

        /// ABI 1.1: the minor version, so the host passes images of several regions.
        #[unsafe(no_mangle)]
        pub extern "C" fn dexar_plugin_abi_minor() -> u32 {
            $crate::abi::DEXAR_PLUGIN_ABI_MINOR
        }

        /// The plugin descriptor (null if creating the plugin panicked).
        #[unsafe(no_mangle)]
        pub extern "C" fn dexar_plugin_entry() -> *const $crate::abi::DexarPluginDescriptor {
            $crate::sdk::entry(__dexar_plugin_exported)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_checks() {
        assert!(is_valid_name("legrad"));
        assert!(!is_valid_name(""));
        assert!(!is_valid_name("two words"));
        assert!(!is_valid_name("tab\there"));
        for bad in [
            "../../x", "/abs/dir", "a/b", "a\\b", ".", "..", ".hidden", "nul\0",
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
        assert!(is_valid_name("dexar-top3.v2_x"));
        assert!(!is_valid_name(&"x".repeat(MAX_NAME_LEN + 1)));
        assert!(has_no_nul("fine"));
        assert!(!has_no_nul("nul\0inside"));
    }
}
