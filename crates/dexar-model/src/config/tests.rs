//! Tests of config.json parsing: the fields at fault are named.

use super::*;

fn config(vision: Value) -> Value {
    serde_json::json!({"model_type": "llava", "vision_config": vision, "text_config": {}})
}

#[test]
fn vision_mistakes_name_the_field_at_fault() {
    let bad_heads = config(serde_json::json!({"num_attention_heads": 0}));
    let e = LlavaConfig::from_value(&bad_heads).unwrap_err().to_string();
    assert!(e.contains("num_attention_heads (0)"), "{e}");
    assert!(!e.contains("patch_size"), "{e}");
    let bad_patch = config(serde_json::json!({"image_size": 30, "patch_size": 14}));
    let e = LlavaConfig::from_value(&bad_patch).unwrap_err().to_string();
    assert!(
        e.contains("image_size (30)") && e.contains("patch_size (14)"),
        "{e}"
    );
    let ok = config(serde_json::json!({"image_size": 28, "patch_size": 14}));
    assert_eq!(LlavaConfig::from_value(&ok).unwrap().grid().len(), 4);
    let e = LlavaConfig::from_value(&serde_json::json!({"model_type": "blip"}))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "unsupported model: blip");
}

/// The fixture checkpoint's text and vision settings, `edit`ed.
fn edited(edit: impl FnOnce(&mut Value)) -> std::result::Result<LlavaConfig, ParseError> {
    let mut v = serde_json::json!({
        "model_type": "llava",
        "image_token_index": 312,
        "vision_config": {"hidden_size": 32, "num_attention_heads": 2, "image_size": 32,
                          "patch_size": 8, "num_hidden_layers": 3},
        "text_config": {"hidden_size": 64, "num_attention_heads": 4, "head_dim": 16,
                        "vocab_size": 314, "max_position_embeddings": 128}
    });
    edit(&mut v);
    LlavaConfig::from_value(&v)
}

#[test]
fn values_of_the_wrong_type_are_refused_not_defaulted() {
    assert_eq!(edited(|_| {}).unwrap().image_token_index, 312);
    for (edit, needle) in [
        (
            Box::new(|v: &mut Value| v["image_token_index"] = "4".into())
                as Box<dyn FnOnce(&mut Value)>,
            "image_token_index",
        ),
        (
            Box::new(|v| v["image_token_index"] = (1u64 << 40).into()),
            "image_token_index",
        ),
        (
            Box::new(|v| v["vision_config"] = serde_json::json!([1, 2])),
            "vision_config",
        ),
        (
            Box::new(|v| v["text_config"] = "llama".into()),
            "text_config",
        ),
        (
            Box::new(|v| v["text_config"]["tie_word_embeddings"] = "yes".into()),
            "text_config.tie_word_embeddings must be true or false",
        ),
        (
            Box::new(|v| v["text_config"]["hidden_act"] = 3.into()),
            "text_config.hidden_act must be a string",
        ),
        (
            Box::new(|v| v["text_config"]["head_dim"] = "16".into()),
            "text_config.head_dim",
        ),
        (
            Box::new(|v| v["vision_config"]["hidden_size"] = 32.5.into()),
            "vision_config.hidden_size",
        ),
        (
            Box::new(|v| v["eos_token_id"] = serde_json::json!(["2"])),
            "eos_token_id",
        ),
        (
            Box::new(|v| v["vision_feature_layer"] = serde_json::json!([])),
            "vision_feature_layer",
        ),
    ] {
        let e = edited(edit).unwrap_err().to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let e = LlavaConfig::from_value(&serde_json::json!([1])).unwrap_err();
    assert!(e.to_string().contains("JSON object"), "{e}");
}

#[test]
fn values_that_break_the_arithmetic_are_refused_by_name() {
    for (key, value, needle) in [
        ("rope_theta", serde_json::json!(0), "rope_theta (0)"),
        ("rope_theta", serde_json::json!(-5.0), "rope_theta (-5)"),
        ("rms_norm_eps", serde_json::json!(-1), "rms_norm_eps (-1)"),
        ("rms_norm_eps", serde_json::json!(0), "rms_norm_eps (0)"),
        ("sliding_window", serde_json::json!(0), "sliding_window"),
        ("head_dim", serde_json::json!(15), "head_dim (15)"),
        (
            "num_hidden_layers",
            serde_json::json!(0),
            "num_hidden_layers",
        ),
        ("vocab_size", serde_json::json!(0), "vocab_size"),
    ] {
        let e = edited(|v| v["text_config"][key] = value)
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{key}: {e}");
    }
    let e = edited(|v| v["vision_config"]["layer_norm_eps"] = (-1).into()).unwrap_err();
    assert!(
        e.to_string().contains("vision_config.layer_norm_eps"),
        "{e}"
    );
    let e = edited(|v| v["vision_config"]["hidden_act"] = "relu6".into()).unwrap_err();
    assert!(
        e.to_string().contains("vision_config.hidden_act `relu6`"),
        "{e}"
    );
    let e = edited(|v| v["projector_hidden_act"] = "tanh".into()).unwrap_err();
    assert!(e.to_string().contains("projector_hidden_act"), "{e}");
    let e = edited(|v| v["vision_config"]["image_size"] = 200000.into()).unwrap_err();
    assert!(e.to_string().contains("image_size (200000)"), "{e}");
}

#[test]
fn a_huge_declared_context_is_capped_not_allocated() {
    let cfg =
        edited(|v| v["text_config"]["max_position_embeddings"] = 1_000_000_000.into()).unwrap();
    assert_eq!(cfg.text.max_position_embeddings, 1_000_000_000);
    assert_eq!(cfg.text.context_len(), MAX_CONTEXT);
    assert_eq!(edited(|_| {}).unwrap().text.context_len(), 128);
}
