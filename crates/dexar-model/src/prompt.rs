//! Tokenizer and `<image>` expansion, reproducing the input ids
//! transformers' LlavaProcessor builds (chat templates are in [`crate::chat`]).

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// The marker a prompt uses for the image.
pub const IMAGE_MARKER: &str = "<image>";

/// A prompt after tokenisation and image expansion.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedPrompt {
    /// The text before `<image>` expansion.
    pub text: String,
    pub input_ids: Vec<u32>,
    /// Every block of image tokens in `input_ids`, half-open, in order
    /// (SmolVLM: one per tile and the global view; one block otherwise).
    /// Never empty.
    pub image_spans: Vec<(usize, usize)>,
}

impl PreparedPrompt {
    /// The span of the first block of image tokens (the only one but for
    /// an image split into regions).
    pub fn image_span(&self) -> (usize, usize) {
        self.image_spans[0]
    }
}

/// A Hugging Face `tokenizer.json` with what dexar needs of it.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = crate::error::read_checkpoint_file(path, "no tokenizer.json")?;
        Self::from_bytes(&bytes, path)
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| ModelError::bad_file(path, format!("not a valid tokenizer.json ({e})")))?;
        Ok(Self {
            inner,
            path: path.into(),
        })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The words of `text` the tokenizer can only encode with its unknown
    /// token `<unk>` (none when it has no such token).
    pub fn unknown_words(&self, text: &str) -> Vec<String> {
        let Some(unk) = self.token_to_id("<unk>") else {
            return Vec::new();
        };
        text.split_whitespace()
            .filter(|w| self.encode(w, false).is_ok_and(|ids| ids.contains(&unk)))
            .map(str::to_string)
            .collect()
    }

    /// The largest token id the tokenizer knows (added tokens included).
    pub fn largest_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes text; `special` adds BOS and the like as the tokenizer's post-processor says.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Prompt(format!("cannot tokenize: {e}")))
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    /// The text a new token adds to an answer: decode(answer) minus decode(previous).
    pub fn token_text(&self, previous: &[u32], token: u32) -> String {
        let before = self.decode(previous);
        let mut all = previous.to_vec();
        all.push(token);
        let after = self.decode(&all);
        match after.strip_prefix(&before) {
            Some(rest) => rest.to_string(),
            None => self.inner.decode(&[token], false).unwrap_or_default(),
        }
    }

    /// Tokenises `text`, which must hold exactly one `<image>` marker, expanding
    /// it into `num_image_tokens` image tokens first as LlavaProcessor does.
    pub fn prepare(
        &self,
        text: &str,
        image_token: u32,
        num_image_tokens: usize,
    ) -> Result<PreparedPrompt> {
        self.prepare_with_marker(text, IMAGE_MARKER, image_token, num_image_tokens)
    }

    /// Tokenises `text`, which must hold exactly one `marker` (the image
    /// token's text, `<image>` or Qwen's `<|image_pad|>`), expanding it into
    /// `num_image_tokens` copies first as the transformers processors do.
    pub fn prepare_with_marker(
        &self,
        text: &str,
        marker: &str,
        image_token: u32,
        num_image_tokens: usize,
    ) -> Result<PreparedPrompt> {
        self.prepare_with_marker_special(text, marker, image_token, num_image_tokens, true)
    }

    /// [`Self::prepare_with_marker`], the tokenizer's special tokens (BOS)
    /// added only when `special`.
    pub fn prepare_with_marker_special(
        &self,
        text: &str,
        marker: &str,
        image_token: u32,
        num_image_tokens: usize,
        special: bool,
    ) -> Result<PreparedPrompt> {
        self.check_marker(text, marker, image_token)?;
        let expanded = text.replacen(marker, &marker.repeat(num_image_tokens), 1);
        let input_ids = self.encode(&expanded, special)?;
        let start = input_ids.iter().position(|&t| t == image_token);
        let count = input_ids.iter().filter(|&&t| t == image_token).count();
        match start {
            Some(s) if count == num_image_tokens && input_ids[s..s + count].iter().all(|&t| t == image_token) => {
                Ok(PreparedPrompt { text: text.to_string(), input_ids, image_spans: vec![(s, s + count)] })
            }
            _ => Err(ModelError::Prompt(format!(
                "the tokenizer produced {count} image tokens where {num_image_tokens} contiguous ones were expected"
            ))),
        }
    }

    /// `text` must hold `marker` exactly once, and `image_token` be its id.
    fn check_marker(&self, text: &str, marker: &str, image_token: u32) -> Result<()> {
        let markers = text.matches(marker).count();
        if markers != 1 {
            return Err(ModelError::Prompt(if markers == 0 {
                format!("the prompt has no {marker} marker; a raw prompt must contain exactly one")
            } else {
                format!("the prompt has {markers} {marker} markers; dexar explains one image per prompt, use exactly one")
            }));
        }
        if self.inner.id_to_token(image_token).as_deref() != Some(marker) {
            return Err(ModelError::bad_file(
                &self.path,
                format!("token id {image_token} (the config's image token) is not {marker} in this tokenizer"),
            ));
        }
        Ok(())
    }

    /// Tokenises `text`, which must hold exactly one `marker`, with the marker
    /// replaced by `expansion` (SmolVLM's tiles and global view): the image
    /// tokens must then come in blocks of `blocks` tokens, in order.
    pub fn prepare_blocks(
        &self,
        text: &str,
        marker: &str,
        image_token: u32,
        expansion: &str,
        blocks: &[usize],
    ) -> Result<PreparedPrompt> {
        self.check_marker(text, marker, image_token)?;
        let input_ids = self.encode(&text.replacen(marker, expansion, 1), true)?;
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for (j, &t) in input_ids.iter().enumerate() {
            if t != image_token {
                continue;
            }
            match spans.last_mut() {
                Some(last) if last.1 == j => last.1 = j + 1,
                _ => spans.push((j, j + 1)),
            }
        }
        let sizes: Vec<usize> = spans.iter().map(|(s, e)| e - s).collect();
        if sizes != blocks {
            return Err(ModelError::Prompt(format!(
                "the tokenizer produced blocks of {sizes:?} image tokens where {blocks:?} were expected"
            )));
        }
        Ok(PreparedPrompt {
            text: text.to_string(),
            input_ids,
            image_spans: spans,
        })
    }
}
