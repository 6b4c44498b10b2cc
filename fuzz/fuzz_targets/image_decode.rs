//! Image bytes of any kind: decoding never panics or aborts, and what it
//! accepts lies within the documented limits, as does what the model's
//! resizing would make of it once the size check passes.
#![no_main]

use dexar_model::preprocess::{MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_VIEW_PIXELS};
use dexar_model::ImageProcessor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(img) = dexar_model::decode_image(data) else {
        return;
    };
    let (w, h) = (img.width(), img.height());
    assert!(w >= 1 && h >= 1 && w <= MAX_IMAGE_SIDE && h <= MAX_IMAGE_SIDE);
    assert!(w as u64 * h as u64 <= MAX_IMAGE_PIXELS);
    let processor = ImageProcessor::clip(336);
    if processor.check_image_size(w, h).is_ok() {
        let (ow, oh) = processor.output_size(w, h);
        assert!(ow as u64 * oh as u64 <= MAX_VIEW_PIXELS);
    }
});
