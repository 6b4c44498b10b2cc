//! Plugin library bytes of any kind: the check run before `dlopen` never
//! panics or reads out of bounds, whatever sizes and offsets the header
//! claims.
#![no_main]

use dexar_plugin::host::check_library_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = check_library_bytes(data);
});
