//! The C ABI shared by host and plugins, version [`DEXAR_PLUGIN_ABI_VERSION`].
//!
//! Mirrored by hand in `include/dexar_plugin.h`; the test `header_matches_rust`
//! compiles the header and compares every size and field offset with these
//! definitions, so the two cannot drift apart silently.
//!
//! Handshake: the host resolves `dexar_plugin_abi_version` and calls it first;
//! only when it returns [`DEXAR_PLUGIN_ABI_VERSION`] does it call
//! `dexar_plugin_entry` and read the [`DexarPluginDescriptor`] it points to.
//! Any change to a type in this file is a new ABI version.
//!
//! Minor versions add fields at the end of a structure the host allocates,
//! so a plugin of an older minor version reads a prefix it knows. A plugin
//! states its minor version by exporting `dexar_plugin_abi_minor`; one that
//! does not is minor 0. ABI 1.1 ([`DEXAR_PLUGIN_ABI_MINOR`]) added the image
//! regions ([`DexarRegion`], [`DexarTraceView::regions`]). The host calls an
//! ABI 1.0 plugin only with traces of one region (the fields `image_start`
//! .. `grid_width` describe it fully); a trace of several regions is refused
//! with an error naming both versions. A 1.1 plugin needs a 1.1 host.
//!
//! Memory: every buffer that crosses the boundary is owned by the host. The
//! plugin reads the trace view and writes into the output and error buffers it
//! is given; it never allocates memory the host has to free. Descriptor
//! strings must stay valid for as long as the library is loaded.

use std::ffi::c_char;

/// The ABI version this crate speaks. Bump on any change to the types below.
pub const DEXAR_PLUGIN_ABI_VERSION: u32 = 1;

/// The minor version this crate speaks (1.1: image regions).
pub const DEXAR_PLUGIN_ABI_MINOR: u32 = 1;

/// Name of the exported `uint32_t dexar_plugin_abi_version(void)`.
pub const ABI_VERSION_SYMBOL: &str = "dexar_plugin_abi_version";
/// Name of the optional `uint32_t dexar_plugin_abi_minor(void)` (absent: 0).
pub const ABI_MINOR_SYMBOL: &str = "dexar_plugin_abi_minor";
/// Name of the exported `const DexarPluginDescriptor *dexar_plugin_entry(void)`.
pub const ENTRY_SYMBOL: &str = "dexar_plugin_entry";

/// The call succeeded; outputs are written.
pub const DEXAR_STATUS_OK: i32 = 0;
/// The plugin reports an error; its message is in the error buffer.
pub const DEXAR_STATUS_ERROR: i32 = 1;
/// The plugin panicked (Rust SDK) and caught it; the message is in the error buffer.
pub const DEXAR_STATUS_PANIC: i32 = 2;

/// Position kinds in [`DexarTraceView::kinds`] (DEXAR.md: V, C, Y).
pub const DEXAR_KIND_IMAGE: u8 = 0;
pub const DEXAR_KIND_PROMPT: u8 = 1;
pub const DEXAR_KIND_GENERATED: u8 = 2;

/// A read-only f32 tensor of shape `[layers, heads, positions]`.
///
/// Element `(s, i, j)` is at `data[s * strides[0] + i * strides[1] + j * strides[2]]`
/// (strides in elements, not bytes). The host currently passes contiguous
/// row-major data (`strides = [heads * positions, positions, 1]`), but plugins
/// must honour the strides.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DexarTensor3 {
    pub data: *const f32,
    pub shape: [usize; 3],
    pub strides: [usize; 3],
}

/// [`DexarRegion::kind`]: the whole image (possibly downscaled).
pub const DEXAR_REGION_GLOBAL: u32 = 0;
/// [`DexarRegion::kind`]: one tile of a split image.
pub const DEXAR_REGION_TILE: u32 = 1;

/// One block of image tokens (ABI 1.1): its span among the key positions,
/// its grid (whose cells are the last `grid_height * grid_width` positions
/// of the span) and the box it covers on the image.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DexarRegion {
    pub start: usize,
    pub end: usize,
    pub grid_height: usize,
    pub grid_width: usize,
    /// `[x0, y0, x1, y1]`, normalised to [0, 1].
    pub bbox: [f32; 4],
    /// `DEXAR_REGION_GLOBAL` or `DEXAR_REGION_TILE`.
    pub kind: u32,
}

/// One generation step as a plugin sees it (a view of `dexar_core::StepTrace`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DexarTraceView {
    /// Query-row gradients `g^{l,t,i}[j]`, `[layers, heads, positions]`.
    pub grads: DexarTensor3,
    /// Query-row attention probabilities `A^{l,i}[q, j]`, same shape as `grads`.
    pub attn: DexarTensor3,
    /// Absolute decoder layer index of each layer slot, `grads.shape[0]` entries.
    pub layers: *const usize,
    /// Kind of each key position (`DEXAR_KIND_*`), `grads.shape[2]` entries.
    pub kinds: *const u8,
    /// Half-open span `[image_start, image_end)` of the image positions of
    /// the first region (the only one an ABI 1.0 plugin is given).
    pub image_start: usize,
    pub image_end: usize,
    /// The first region's grid, row-major. Its cells are the last
    /// `grid_height * grid_width` positions of the image span (the span may
    /// start with one CLS token).
    pub grid_height: usize,
    pub grid_width: usize,
    /// The explained token y_t.
    pub token_id: u32,
    /// Its text, UTF-8, `token_text_len` bytes; a NUL byte follows for C's sake.
    pub token_text: *const c_char,
    pub token_text_len: usize,
    /// Index t of the token in the answer.
    pub step: usize,
    /// The query position q.
    pub query_position: usize,
    /// ABI 1.1: every image region in sequence order, `num_regions >= 1`
    /// entries, the first one the region of the fields above. The token map
    /// holds one value per grid cell of every region, region after region.
    pub regions: *const DexarRegion,
    pub num_regions: usize,
}

/// The per-token results a sentence aggregate combines.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DexarSentenceView {
    /// `num_tokens` un-normalised maps, contiguous, each `grid_height * grid_width` floats.
    pub maps: *const f32,
    /// `num_tokens` token weights.
    pub weights: *const f32,
    pub num_tokens: usize,
    pub grid_height: usize,
    pub grid_width: usize,
}

/// Computes one token's map into `out_map` (`out_len` floats, zeroed by the
/// host) and its weight into `*out_weight` (1.0 on entry). On failure returns
/// a non-zero status and writes a NUL-terminated UTF-8 message of at most
/// `err_cap` bytes (terminator included) into `err`.
pub type DexarTokenMapFn = unsafe extern "C" fn(
    trace: *const DexarTraceView,
    out_map: *mut f32,
    out_len: usize,
    out_weight: *mut f32,
    err: *mut c_char,
    err_cap: usize,
) -> i32;

/// Aggregates per-token maps into one un-normalised sentence map of `out_len`
/// floats (zeroed by the host; the host min-max normalises it afterwards).
/// Errors as for [`DexarTokenMapFn`].
pub type DexarSentenceMapFn = unsafe extern "C" fn(
    tokens: *const DexarSentenceView,
    out_map: *mut f32,
    out_len: usize,
    err: *mut c_char,
    err_cap: usize,
) -> i32;

/// What `dexar_plugin_entry` returns. Must stay valid while the library is loaded.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DexarPluginDescriptor {
    /// Must equal [`DEXAR_PLUGIN_ABI_VERSION`] (checked again after the handshake).
    pub abi_version: u32,
    /// Strategy name used on the command line, NUL-terminated UTF-8: a plain
    /// file name of 1-64 bytes, no whitespace, control characters, `/` or `\`,
    /// not starting with `.` (front ends name output directories after it).
    pub name: *const c_char,
    /// Free-form plugin version, NUL-terminated.
    pub version: *const c_char,
    /// One-line help, NUL-terminated.
    pub help: *const c_char,
    /// Required.
    pub token_map: Option<DexarTokenMapFn>,
    /// Optional (NULL): the host then uses `minmax(Σ_t weight_t · map_t)`.
    pub sentence_map: Option<DexarSentenceMapFn>,
}

/// Signature of `dexar_plugin_abi_version`.
pub type DexarAbiVersionFn = unsafe extern "C" fn() -> u32;
/// Signature of `dexar_plugin_entry`.
pub type DexarEntryFn = unsafe extern "C" fn() -> *const DexarPluginDescriptor;

/// Writes `message` into a C error buffer, truncated on a UTF-8 boundary so
/// that it fits with its NUL terminator. Does nothing for a null or empty buffer.
///
/// # Safety
/// `err` must be null or valid for writes of `cap` bytes.
pub unsafe fn write_error(err: *mut c_char, cap: usize, message: &str) {
    if err.is_null() || cap == 0 {
        return;
    }
    let mut len = message.len().min(cap - 1);
    while !message.is_char_boundary(len) {
        len -= 1;
    }
    // SAFETY: the caller guarantees `err` is valid for `cap` bytes and
    // `len + 1 <= cap`; `message` is a distinct Rust allocation.
    unsafe {
        std::ptr::copy_nonoverlapping(message.as_ptr(), err.cast::<u8>(), len);
        *err.add(len) = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_error_truncates_on_char_boundary() {
        let mut buf = [0x7f as c_char; 6];
        // SAFETY: the buffer holds 6 bytes.
        unsafe { write_error(buf.as_mut_ptr(), buf.len(), "abcdé!") };
        let bytes: Vec<u8> = buf.iter().map(|&c| c as u8).collect();
        // "abcd" (4) + "é" (2) does not fit in 5 bytes: stop before the é.
        assert_eq!(&bytes[..5], b"abcd\0");
        // SAFETY: a null buffer is allowed.
        unsafe { write_error(std::ptr::null_mut(), 10, "x") };
    }
}
