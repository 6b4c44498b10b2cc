//! `config.json` and `preprocessor_config.json` text of any kind: parsing
//! never panics, and an accepted config has the properties loading relies
//! on (sizes that divide, a bounded context, even head dimensions,
//! processor sizes within bounds).
#![no_main]

use dexar_model::config::MAX_CONTEXT;
use dexar_model::preprocess::{Resize, MAX_PROCESSOR_SIDE};
use dexar_model::{ImageProcessor, LlavaConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        if let Ok(cfg) = LlavaConfig::from_value(&value) {
            let (v, t) = (&cfg.vision, &cfg.text);
            assert!(v.patch_size > 0 && v.image_size % v.patch_size == 0);
            assert!(v.num_attention_heads > 0 && v.hidden_size % v.num_attention_heads == 0);
            assert!(t.num_key_value_heads > 0 && t.num_attention_heads % t.num_key_value_heads == 0);
            assert!(t.head_dim > 0 && t.head_dim % 2 == 0);
            assert!(t.rope_theta.is_finite() && t.rope_theta > 0.0);
            assert!(t.rms_norm_eps.is_finite() && t.rms_norm_eps > 0.0);
            assert!(t.context_len() >= 1 && t.context_len() <= MAX_CONTEXT);
            assert!(cfg.num_image_tokens() >= 1);
        }
    }
    if let Ok(p) = ImageProcessor::from_json(text, 224) {
        let side = |n: u32| (1..=MAX_PROCESSOR_SIDE).contains(&n);
        match p.resize {
            Resize::ShortestEdge(s) => assert!(side(s)),
            Resize::Exact { height, width } => assert!(side(height) && side(width)),
        }
        assert!(p.std.iter().all(|s| *s != 0.0));
    }
});
