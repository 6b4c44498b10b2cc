//! The model families: what differs between them around the one decoder
//! (vision tower, projector, how image tokens are placed and positioned).
//! LLaVA lives in `crate::llava`; the Qwen-VL families in [`qwen_vl`];
//! SmolVLM / Idefics3 in [`smolvlm`]; PaliGemma in [`paligemma`].

pub mod paligemma;
pub mod qwen_vl;
pub mod smolvlm;

use candle_core::{DType, Device, Tensor};
use dexar_core::{Grid, ImageRegion};

use crate::config::TextConfig;
use crate::decoder::{ChunkInput, Decoder, Deepstack, RopePositions};
use crate::llava::LlavaModel;
use paligemma::PaliGemmaModel;
use qwen_vl::QwenVlModel;
use smolvlm::SmolVlmModel;

/// A loaded vision-language model of one of the supported families.
#[derive(Debug, Clone)]
pub enum VlModel {
    Llava(LlavaModel),
    QwenVl(QwenVlModel),
    SmolVlm(SmolVlmModel),
    PaliGemma(PaliGemmaModel),
}

/// Image tokens as the decoder receives them, with the grid they cover.
#[derive(Debug, Clone)]
pub struct ImageFeatures {
    /// `[N, D]`: the vision tower's output for one image, projected.
    pub tokens: Tensor,
    /// The heatmap grid, row-major: LLaVA's patch grid (N is one more with
    /// the `full` feature strategy's CLS token), Qwen-VL's merged-token grid
    /// of the resized image.
    pub grid: Grid,
    /// Qwen3-VL's DeepStack features, one `[N, D]` per early decoder layer.
    pub deepstack: Vec<Tensor>,
    /// An image split into blocks of tokens (SmolVLM's tiles and global
    /// view): each block's rows of `tokens` (`span` counts rows of `tokens`,
    /// not sequence positions), grid, box and kind, in order. Empty: one
    /// block covering the whole image, of grid `grid`.
    pub layout: Vec<ImageRegion>,
}

impl ImageFeatures {
    pub fn tensor(&self) -> &Tensor {
        &self.tokens
    }

    /// The image regions of a prompt whose `image_spans` hold these tokens,
    /// block by block.
    pub fn regions(&self, image_spans: &[(usize, usize)]) -> Vec<ImageRegion> {
        if self.layout.is_empty() {
            return image_spans
                .iter()
                .map(|&span| ImageRegion::whole(span, self.grid))
                .collect();
        }
        self.layout
            .iter()
            .zip(image_spans)
            .map(|(r, &span)| ImageRegion { span, ..*r })
            .collect()
    }

    /// Rows and columns of the tiles of a split image (0 and 0 when it is not split).
    pub fn tiles(&self) -> (usize, usize) {
        let tiles = self
            .layout
            .iter()
            .filter(|r| r.kind == dexar_core::RegionKind::Tile);
        let rows = tiles.clone().filter(|r| r.bbox[0] == 0.0).count();
        let cols = tiles.filter(|r| r.bbox[1] == 0.0).count();
        (rows, cols)
    }

    /// How many tokens each block of the prompt must hold.
    pub fn block_sizes(&self) -> Vec<usize> {
        if self.layout.is_empty() {
            vec![self.num_tokens()]
        } else {
            self.layout.iter().map(|r| r.span.1 - r.span.0).collect()
        }
    }

    /// How many image tokens the prompt must hold.
    pub fn num_tokens(&self) -> usize {
        self.tokens.dim(0).unwrap_or(0)
    }
}

/// The decoder input of a whole sequence holding the image: embeddings, the
/// rotary positions, and the offset text positions get after the prompt.
#[derive(Debug, Clone)]
pub struct SequenceInput {
    /// `[1, T, D]`.
    pub embeds: Tensor,
    pub rope: RopePositions,
    /// Rotary position minus cache position of every token after the image
    /// (M-RoPE's `rope_deltas`; 0 for plain RoPE).
    pub rope_delta: i64,
}

impl VlModel {
    pub fn decoder(&self) -> &Decoder {
        match self {
            Self::Llava(m) => &m.decoder,
            Self::QwenVl(m) => &m.decoder,
            Self::SmolVlm(m) => &m.decoder,
            Self::PaliGemma(m) => &m.decoder,
        }
    }

    pub fn text_config(&self) -> &TextConfig {
        &self.decoder().cfg
    }

    pub fn device(&self) -> &Device {
        match self {
            Self::Llava(m) => &m.device,
            Self::QwenVl(m) => &m.device,
            Self::SmolVlm(m) => &m.device,
            Self::PaliGemma(m) => &m.device,
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Self::Llava(m) => m.dtype,
            Self::QwenVl(m) => m.dtype,
            Self::SmolVlm(m) => m.dtype,
            Self::PaliGemma(m) => m.dtype,
        }
    }

    /// The input of the sequence `ids` whose spans `image_spans` hold the
    /// image's blocks of tokens, in order.
    pub fn sequence_input(
        &self,
        ids: &[u32],
        image_spans: &[(usize, usize)],
        image: &ImageFeatures,
    ) -> candle_core::Result<SequenceInput> {
        let sizes = image.block_sizes();
        let fits = image_spans.len() == sizes.len()
            && image_spans
                .iter()
                .zip(&sizes)
                .all(|(&(s, e), &n)| s <= e && e <= ids.len() && e - s == n)
            && image_spans.windows(2).all(|w| w[0].1 <= w[1].0);
        if !fits {
            candle_core::bail!(
                "the prompt's image spans {image_spans:?} do not hold the image's blocks of {sizes:?} tokens"
            );
        }
        let image_span = image_spans[0];
        let embeds = self
            .decoder()
            .embed_with_image(ids, image_spans, image.tensor())?;
        Ok(match self {
            Self::Llava(_) | Self::SmolVlm(_) => SequenceInput {
                embeds,
                rope: RopePositions::Sequential(0),
                rope_delta: 0,
            },
            Self::QwenVl(_) => {
                let (positions, rope_delta) =
                    qwen_vl::mrope_positions(ids.len(), image_span, image.grid);
                SequenceInput {
                    embeds,
                    rope: RopePositions::Multi(positions),
                    rope_delta,
                }
            }
            // PaliGemma's rotary positions start at 1
            Self::PaliGemma(_) => SequenceInput {
                embeds,
                rope: RopePositions::Sequential(1),
                rope_delta: 1,
            },
        })
    }

    /// The chunk description of a whole sequence (from cache position 0)
    /// whose first `prompt_len` tokens are the prompt (PaliGemma's
    /// bidirectional prefix; the tokens after it are answer tokens).
    pub fn whole_sequence<'a>(
        &self,
        input: &SequenceInput,
        image_spans: &[(usize, usize)],
        image: &'a ImageFeatures,
        prompt_len: usize,
    ) -> ChunkInput<'a> {
        ChunkInput {
            prefix: match self {
                Self::PaliGemma(_) => prompt_len,
                Self::Llava(_) | Self::QwenVl(_) | Self::SmolVlm(_) => 0,
            },
            start: 0,
            rope: input.rope.clone(),
            deepstack: (!image.deepstack.is_empty()).then_some(Deepstack {
                span: image_spans[0],
                layers: &image.deepstack,
            }),
        }
    }
}

/// The weights of a top-level `lm_head`: none when it is tied to the
/// embeddings, an error when it is not tied but missing.
pub(crate) fn lm_head<'a>(
    vb: &candle_nn::VarBuilder<'a>,
    tied: bool,
) -> candle_core::Result<Option<candle_nn::VarBuilder<'a>>> {
    if tied {
        Ok(None)
    } else if vb.contains_tensor("lm_head.weight") {
        Ok(Some(vb.pp("lm_head")))
    } else {
        candle_core::bail!("missing tensor lm_head.weight (and tie_word_embeddings is false)")
    }
}

/// The chunk of one generated token at cache position `pos`.
pub fn decode_step(pos: usize, rope_delta: i64) -> ChunkInput<'static> {
    ChunkInput {
        start: pos,
        rope: RopePositions::Sequential((pos as i64 + rope_delta).max(0) as usize),
        deepstack: None,
        prefix: 0,
    }
}
