//! [`StepTrace`]: everything one traced generation step knows about the token
//! it produced, as plain f32 buffers with explicit shapes.

use crate::regions::ImageRegion;
use serde::{Deserialize, Serialize};

/// Which part of the sequence a key position belongs to (DEXAR.md: V, C, Y).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum PositionKind {
    /// An image token (the set V).
    Image = 0,
    /// Prompt text, BOS included (the set C).
    Prompt = 1,
    /// A generated (or teacher-forced) answer token, the query included (the set Y).
    Generated = 2,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    #[error("trace buffer `{name}` has {actual} values, expected {expected} (layers x heads x positions)")]
    BufferSize {
        name: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("trace has {actual} position kinds, expected {expected}")]
    KindsSize { expected: usize, actual: usize },
    #[error("image span [{start}, {end}) does not fit {positions} positions or grid {grid_len}")]
    ImageSpan {
        start: usize,
        end: usize,
        positions: usize,
        grid_len: usize,
    },
    #[error("trace has no image region; every trace needs at least one")]
    NoRegions,
    #[error("image region {index} starts at {start}, before the previous region ends ({previous_end}); regions must be in sequence order and not overlap")]
    RegionOrder {
        index: usize,
        start: usize,
        previous_end: usize,
    },
    #[error("image region {index} has the box {bbox:?}; a box is [x0, y0, x1, y1] inside [0, 1] with x0 < x1 and y0 < y1")]
    RegionBox { index: usize, bbox: [f32; 4] },
}

/// One generation step, as seen by attribution strategies.
///
/// `grads` and `attn` are row-major `[layers.len(), num_heads, num_positions]`:
/// for the layer in slot `s` (absolute index `layers[s]`) and head `i`,
/// `grads[(s * num_heads + i) * num_positions + j]` is
/// `g^{l,t,i}[j] = ∂ o^{l,t}[y_t] / ∂ A^{l,i}[q, j]` and `attn` holds `A^{l,i}[q, j]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTrace {
    /// Index t of the explained token in the answer (0-based).
    pub step: usize,
    /// The explained token y_t.
    pub token_id: u32,
    /// Its decoded text (may be empty or a fragment of a word).
    pub token_text: String,
    /// The query position q (the last position of the sequence at this step);
    /// the token itself is placed at `q + 1`.
    pub query_position: usize,
    /// Absolute decoder layer indices, one per slot, ascending.
    pub layers: Vec<usize>,
    pub num_heads: usize,
    /// Number of key positions, `q + 1`.
    pub num_positions: usize,
    pub grads: Vec<f32>,
    pub attn: Vec<f32>,
    /// Kind of every key position (`num_positions` entries).
    pub kinds: Vec<PositionKind>,
    /// The image's blocks of tokens in sequence order (at least one): one
    /// region covering the whole image for most models, tiles plus a global
    /// view for SmolVLM. The image positions V are their spans together.
    pub regions: Vec<ImageRegion>,
}

impl StepTrace {
    /// Checks that buffer sizes, kinds and the image span are consistent.
    pub fn validate(&self) -> Result<(), TraceError> {
        let expected = self.layers.len() * self.num_heads * self.num_positions;
        for (name, buf) in [("grads", &self.grads), ("attn", &self.attn)] {
            if buf.len() != expected {
                return Err(TraceError::BufferSize {
                    name,
                    expected,
                    actual: buf.len(),
                });
            }
        }
        if self.kinds.len() != self.num_positions {
            return Err(TraceError::KindsSize {
                expected: self.num_positions,
                actual: self.kinds.len(),
            });
        }
        if self.regions.is_empty() {
            return Err(TraceError::NoRegions);
        }
        let mut previous_end = 0;
        for (index, r) in self.regions.iter().enumerate() {
            let (start, end) = r.span;
            let span = end.saturating_sub(start);
            if start >= end
                || end > self.num_positions
                || !(span == r.grid.len() || span == r.grid.len() + 1)
            {
                return Err(TraceError::ImageSpan {
                    start,
                    end,
                    positions: self.num_positions,
                    grid_len: r.grid.len(),
                });
            }
            if index > 0 && start < previous_end {
                return Err(TraceError::RegionOrder {
                    index,
                    start,
                    previous_end,
                });
            }
            if !r.bbox_ok() {
                return Err(TraceError::RegionBox {
                    index,
                    bbox: r.bbox,
                });
            }
            previous_end = end;
        }
        Ok(())
    }

    /// The query-row gradient of (layer slot, head) over all key positions.
    pub fn grad_row(&self, slot: usize, head: usize) -> &[f32] {
        let p = self.num_positions;
        let at = (slot * self.num_heads + head) * p;
        &self.grads[at..at + p]
    }

    /// The query-row attention probabilities of (layer slot, head).
    pub fn attn_row(&self, slot: usize, head: usize) -> &[f32] {
        let p = self.num_positions;
        let at = (slot * self.num_heads + head) * p;
        &self.attn[at..at + p]
    }

    /// Positions of the grid cells of every region, region after region
    /// (each span without a leading CLS token).
    pub fn cell_positions(&self) -> impl Iterator<Item = usize> + Clone + '_ {
        self.regions.iter().flat_map(ImageRegion::cell_positions)
    }

    /// How many grid cells all regions have together.
    pub fn num_cells(&self) -> usize {
        self.regions.iter().map(|r| r.grid.len()).sum()
    }

    /// Whether key position `j` is an image position (in some region's span).
    pub fn is_image_position(&self, j: usize) -> bool {
        self.regions.iter().any(|r| j >= r.span.0 && j < r.span.1)
    }

    /// True when the image is more than one block of tokens.
    pub fn is_multi_region(&self) -> bool {
        self.regions.len() > 1
    }

    /// The trace restricted to layer slots whose absolute layer index is `>= first_layer`.
    pub fn restricted_to_layers_from(&self, first_layer: usize) -> StepTrace {
        let keep: Vec<usize> = (0..self.layers.len())
            .filter(|&s| self.layers[s] >= first_layer)
            .collect();
        let row = self.num_heads * self.num_positions;
        let pick = |buf: &[f32]| -> Vec<f32> {
            keep.iter()
                .flat_map(|&s| buf[s * row..(s + 1) * row].iter().copied())
                .collect()
        };
        StepTrace {
            step: self.step,
            token_id: self.token_id,
            token_text: self.token_text.clone(),
            query_position: self.query_position,
            layers: keep.iter().map(|&s| self.layers[s]).collect(),
            num_heads: self.num_heads,
            num_positions: self.num_positions,
            grads: pick(&self.grads),
            attn: pick(&self.attn),
            kinds: self.kinds.clone(),
            regions: self.regions.clone(),
        }
    }
}
