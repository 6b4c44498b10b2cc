//! The closed word-level vocabulary of the toy VLM and its Hugging Face
//! `tokenizer.json`.
//!
//! Tokenization of the chat template `USER: <image>\n{prompt} ASSISTANT:`:
//! `<s>` is prepended by the post-processor; `USER:`, `<image>` and
//! `ASSISTANT:` are added tokens matched before anything else; the rest is
//! lower-cased and split by the `Whitespace` pre-tokenizer (`\w+|[^\w\s]+`),
//! so the newline vanishes like any other whitespace and `circle?` splits
//! into `circle` `?`. Decoding joins tokens with single spaces (no decoder),
//! which gives generated answers back verbatim.

use serde_json::{json, Map, Value};

use crate::text::emitted_words;

pub const UNK: &str = "<unk>";
pub const BOS: &str = "<s>";
pub const EOS: &str = "</s>";
pub const PAD: &str = "<pad>";
pub const IMAGE: &str = "<image>";
pub const USER: &str = "USER:";
pub const ASSISTANT: &str = "ASSISTANT:";

pub const UNK_ID: u32 = 0;
pub const BOS_ID: u32 = 1;
pub const EOS_ID: u32 = 2;
pub const PAD_ID: u32 = 3;
pub const IMAGE_ID: u32 = 4;

/// Special tokens, in id order; skipped when decoding with
/// `skip_special_tokens`.
pub const SPECIAL_TOKENS: [&str; 5] = [UNK, BOS, EOS, PAD, IMAGE];

/// Chat-role markers: added tokens, but ordinary text when decoding.
pub const ROLE_TOKENS: [&str; 2] = [USER, ASSISTANT];

/// The text of a single-turn question in the chat template the toy model is
/// trained with: LLaVA-1.5's.
pub fn chat_prompt(prompt: &str) -> String {
    dexar_model::chat::llava15(&[], prompt)
}

/// The full vocabulary, index = token id: [`SPECIAL_TOKENS`], then
/// [`ROLE_TOKENS`], then every word the shapes generator can emit, sorted
/// bytewise and deduplicated.
pub fn vocabulary() -> Vec<String> {
    let mut words = emitted_words();
    words.sort_unstable();
    words.dedup();
    SPECIAL_TOKENS
        .iter()
        .chain(ROLE_TOKENS.iter())
        .chain(words.iter())
        .map(|w| w.to_string())
        .collect()
}

/// Id of `token` in [`vocabulary`], if it is there.
pub fn token_id(token: &str) -> Option<u32> {
    vocabulary()
        .iter()
        .position(|w| w == token)
        .map(|i| i as u32)
}

/// A Hugging Face `tokenizer.json` (WordLevel model) for [`vocabulary`].
pub fn tokenizer_json() -> Value {
    let vocab = vocabulary();
    let added_tokens: Vec<Value> = SPECIAL_TOKENS
        .iter()
        .map(|t| (*t, true))
        .chain(ROLE_TOKENS.iter().map(|t| (*t, false)))
        .enumerate()
        .map(|(id, (content, special))| {
            json!({
                "id": id,
                "content": content,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": special,
            })
        })
        .collect();
    let vocab_map: Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(id, word)| (word.clone(), json!(id)))
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": { "type": "Lowercase" },
        "pre_tokenizer": { "type": "Whitespace" },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                { "SpecialToken": { "id": BOS, "type_id": 0 } },
                { "Sequence": { "id": "A", "type_id": 0 } }
            ],
            "pair": [
                { "SpecialToken": { "id": BOS, "type_id": 0 } },
                { "Sequence": { "id": "A", "type_id": 0 } },
                { "Sequence": { "id": "B", "type_id": 1 } }
            ],
            "special_tokens": {
                (BOS): { "id": BOS, "ids": [BOS_ID], "tokens": [BOS] }
            }
        },
        // No decoder: `tokenizers` then joins tokens with single spaces.
        "decoder": null,
        "model": {
            "type": "WordLevel",
            "vocab": vocab_map,
            "unk_token": UNK
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate, SceneConfig};
    use tokenizers::Tokenizer;

    fn tokenizer() -> Tokenizer {
        let bytes = serde_json::to_vec(&tokenizer_json()).expect("serialise tokenizer.json");
        Tokenizer::from_bytes(bytes).expect("tokenizers loads our tokenizer.json")
    }

    #[test]
    fn vocabulary_has_fixed_special_ids_and_no_duplicates() {
        let vocab = vocabulary();
        assert_eq!(&vocab[..5], &SPECIAL_TOKENS.map(String::from));
        assert_eq!(token_id(UNK), Some(UNK_ID));
        assert_eq!(token_id(BOS), Some(BOS_ID));
        assert_eq!(token_id(EOS), Some(EOS_ID));
        assert_eq!(token_id(PAD), Some(PAD_ID));
        assert_eq!(token_id(IMAGE), Some(IMAGE_ID));
        let mut sorted = vocab.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), vocab.len(), "duplicate tokens");
        assert_eq!(vocabulary(), vocab, "vocabulary is deterministic");
    }

    #[test]
    fn vocabulary_covers_every_generated_word() {
        let vocab = vocabulary();
        let config = SceneConfig {
            max_objects: crate::MAX_OBJECTS,
            ..SceneConfig::default()
        };
        for index in 0..200 {
            let scene = generate(&config, 11, index);
            for (prompt, answer) in scene.qa_pairs() {
                for word in prompt.split(' ').chain(answer.words()) {
                    assert!(
                        vocab.iter().any(|v| v == word),
                        "{word:?} not in vocabulary"
                    );
                }
            }
        }
    }

    #[test]
    fn chat_template_tokenizes_without_unknowns() {
        let tok = tokenizer();
        let text = chat_prompt("what color is the circle?");
        assert_eq!(text, "USER: <image>\nwhat color is the circle? ASSISTANT:");
        let encoding = tok.encode(text, true).expect("encode");
        let ids = encoding.get_ids();
        assert_eq!(ids[0], BOS_ID);
        assert!(ids.contains(&IMAGE_ID));
        assert!(
            !ids.contains(&UNK_ID),
            "unknown token in {:?}",
            encoding.get_tokens()
        );
        assert_eq!(
            encoding.get_tokens(),
            [
                "<s>",
                "USER:",
                "<image>",
                "what",
                "color",
                "is",
                "the",
                "circle",
                "?",
                "ASSISTANT:"
            ]
        );
        // Ids agree with `vocabulary()`.
        let vocab = vocabulary();
        for (id, token) in ids.iter().zip(encoding.get_tokens()) {
            assert_eq!(&vocab[*id as usize], token);
        }
        // Capitals typed by a user still map to known words.
        let shouting = tok.encode("WHAT Color", false).expect("encode");
        assert!(!shouting.get_ids().contains(&UNK_ID));
    }

    #[test]
    fn generated_text_round_trips_through_the_tokenizer() {
        let tok = tokenizer();
        for index in 0..20 {
            let scene = generate(&SceneConfig::default(), 5, index);
            for (prompt, answer) in scene.qa_pairs() {
                for text in [prompt, answer.text.as_str()] {
                    let encoding = tok.encode(text, true).expect("encode");
                    assert!(!encoding.get_ids().contains(&UNK_ID), "{text}");
                    // One token per word, plus BOS.
                    assert_eq!(encoding.get_ids().len(), text.split(' ').count() + 1);
                    let decoded = tok.decode(encoding.get_ids(), true).expect("decode");
                    assert_eq!(decoded, text);
                }
            }
        }
        let eos = tok.decode(&[EOS_ID], false).expect("decode");
        assert_eq!(eos, EOS);
        assert_eq!(tok.get_vocab_size(true), vocabulary().len());
    }
}
