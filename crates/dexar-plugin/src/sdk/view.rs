//! Safe, validated views of the C structures a plugin receives.

use crate::abi::{
    DexarRegion, DexarSentenceView, DexarTensor3, DexarTraceView, DEXAR_REGION_GLOBAL,
    DEXAR_REGION_TILE,
};
use std::ops::Range;

/// One strided row of a trace tensor: the values of one (layer slot, head)
/// over all key positions.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    data: *const f32,
    len: usize,
    stride: usize,
    _trace: std::marker::PhantomData<&'a f32>,
}

impl<'a> Row<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value at key position `j`. Panics when `j` is out of range.
    pub fn get(&self, j: usize) -> f32 {
        assert!(j < self.len, "position {j} out of range 0..{}", self.len);
        // SAFETY: `TraceView::from_raw`'s contract makes every (slot, head, j)
        // with j < len addressable through the strides; j was checked above.
        unsafe { *self.data.add(j * self.stride) }
    }

    /// The values at the positions of `range`, in order.
    pub fn range(self, range: Range<usize>) -> impl Iterator<Item = f32> + 'a {
        range.map(move |j| self.get(j))
    }

    /// All values, in position order.
    pub fn iter(self) -> impl Iterator<Item = f32> + 'a {
        self.range(0..self.len)
    }
}

/// A read-only view of one generation step (the plugin side of
/// `dexar_core::StepTrace`), checked for consistency when it is created.
pub struct TraceView<'a> {
    raw: &'a DexarTraceView,
    layers: &'a [usize],
    kinds: &'a [u8],
    token_text: &'a str,
    regions: &'a [DexarRegion],
}

impl<'a> TraceView<'a> {
    /// Wraps and validates a raw view.
    ///
    /// # Safety
    /// `raw` must be null or point to a [`DexarTraceView`] valid for `'a` whose
    /// pointers are valid for the lengths and strides it states, as the host
    /// guarantees for the duration of a call.
    pub unsafe fn from_raw(raw: *const DexarTraceView) -> Result<Self, String> {
        if raw.is_null() {
            return Err("host passed a null trace".into());
        }
        // SAFETY: non-null, and valid for 'a by the caller's contract.
        let raw = unsafe { &*raw };
        if raw.grads.shape != raw.attn.shape {
            return Err(format!(
                "grads shape {:?} differs from attn shape {:?}",
                raw.grads.shape, raw.attn.shape
            ));
        }
        let [layers, heads, positions] = raw.grads.shape;
        let values = layers * heads * positions;
        if values > 0 && (raw.grads.data.is_null() || raw.attn.data.is_null()) {
            return Err("host passed null trace buffers".into());
        }
        if raw.num_regions == 0 {
            return Err("host passed no image region".into());
        }
        // SAFETY: as below: valid for the stated length by the caller's contract.
        let regions = unsafe { slice_or_empty(raw.regions, raw.num_regions, "regions") }?;
        let first = DexarRegion {
            start: raw.image_start,
            end: raw.image_end,
            grid_height: raw.grid_height,
            grid_width: raw.grid_width,
            ..regions[0]
        };
        if first != regions[0] {
            return Err("the first region differs from the image span and grid".into());
        }
        let mut previous_end = 0;
        for r in regions {
            let span = r.end.saturating_sub(r.start);
            let grid_len = r.grid_height * r.grid_width;
            if r.start >= r.end
                || r.end > positions
                || r.start < previous_end
                || !(span == grid_len || span == grid_len + 1)
                || !(r.kind == DEXAR_REGION_GLOBAL || r.kind == DEXAR_REGION_TILE)
            {
                return Err(format!(
                    "image region [{}, {}) does not fit {positions} positions, grid {}x{} or the regions before it",
                    r.start, r.end, r.grid_height, r.grid_width
                ));
            }
            previous_end = r.end;
        }
        // SAFETY: `slice_or_empty` only dereferences non-null pointers, valid
        // for the stated lengths by the caller's contract.
        let (layers, kinds, text) = unsafe {
            (
                slice_or_empty(raw.layers, layers, "layers")?,
                slice_or_empty(raw.kinds, positions, "kinds")?,
                slice_or_empty(
                    raw.token_text.cast::<u8>(),
                    raw.token_text_len,
                    "token text",
                )?,
            )
        };
        let token_text =
            std::str::from_utf8(text).map_err(|e| format!("token text is not UTF-8: {e}"))?;
        Ok(Self {
            raw,
            layers,
            kinds,
            token_text,
            regions,
        })
    }

    /// Number of layer slots.
    pub fn num_layers(&self) -> usize {
        self.raw.grads.shape[0]
    }

    pub fn num_heads(&self) -> usize {
        self.raw.grads.shape[1]
    }

    /// Number of key positions, `q + 1`.
    pub fn num_positions(&self) -> usize {
        self.raw.grads.shape[2]
    }

    /// Absolute decoder layer index of each slot.
    pub fn layers(&self) -> &'a [usize] {
        self.layers
    }

    /// Query-row gradient of (layer slot, head) over all key positions.
    pub fn grad_row(&self, slot: usize, head: usize) -> Row<'a> {
        self.row(&self.raw.grads, slot, head)
    }

    /// Query-row attention probabilities of (layer slot, head).
    pub fn attn_row(&self, slot: usize, head: usize) -> Row<'a> {
        self.row(&self.raw.attn, slot, head)
    }

    fn row(&self, t: &DexarTensor3, slot: usize, head: usize) -> Row<'a> {
        assert!(
            slot < t.shape[0] && head < t.shape[1],
            "(slot {slot}, head {head}) out of range"
        );
        Row {
            // Row start; reads through it are checked in `Row::get`.
            // `wrapping_add` keeps this well-defined even for empty tensors.
            data: t
                .data
                .wrapping_add(slot * t.strides[0] + head * t.strides[1]),
            len: t.shape[2],
            stride: t.strides[2],
            _trace: std::marker::PhantomData,
        }
    }

    /// Kind of every key position (`abi::DEXAR_KIND_*`).
    pub fn kinds(&self) -> &'a [u8] {
        self.kinds
    }

    /// The image regions in sequence order (one for most models; SmolVLM's
    /// tiles and global view). The first is the region of [`Self::image_span`].
    pub fn regions(&self) -> &'a [DexarRegion] {
        self.regions
    }

    /// The image positions of every region (leading CLS tokens included).
    pub fn image_positions(&self) -> impl Iterator<Item = usize> + Clone + 'a {
        self.regions.iter().flat_map(|r| r.start..r.end)
    }

    /// The positions of the grid cells of every region, region after region:
    /// the positions the token map's values belong to, in order.
    pub fn cell_positions(&self) -> impl Iterator<Item = usize> + Clone + 'a {
        self.regions
            .iter()
            .flat_map(|r| r.end - r.grid_height * r.grid_width..r.end)
    }

    /// How many values the token map holds: the cells of every region.
    pub fn num_cells(&self) -> usize {
        self.regions
            .iter()
            .map(|r| r.grid_height * r.grid_width)
            .sum()
    }

    /// The first region's image positions, a leading CLS token included.
    pub fn image_span(&self) -> Range<usize> {
        self.raw.image_start..self.raw.image_end
    }

    /// The positions of the first region's grid cells: the last `grid_len()`
    /// positions of its span. [`Self::cell_positions`] covers every region.
    pub fn grid_positions(&self) -> Range<usize> {
        self.raw.image_end - self.grid_len()..self.raw.image_end
    }

    /// All positions outside every region (prompt text and generated tokens).
    pub fn text_positions(&self) -> impl Iterator<Item = usize> + 'a {
        let regions = self.regions;
        (0..self.num_positions())
            .filter(move |&j| !regions.iter().any(|r| j >= r.start && j < r.end))
    }

    /// `(height, width)` of the first region's patch grid.
    pub fn grid(&self) -> (usize, usize) {
        (self.raw.grid_height, self.raw.grid_width)
    }

    /// Cells of the first region's grid.
    pub fn grid_len(&self) -> usize {
        self.raw.grid_height * self.raw.grid_width
    }

    pub fn token_id(&self) -> u32 {
        self.raw.token_id
    }

    pub fn token_text(&self) -> &'a str {
        self.token_text
    }

    /// Index t of the explained token in the answer.
    pub fn step(&self) -> usize {
        self.raw.step
    }

    pub fn query_position(&self) -> usize {
        self.raw.query_position
    }
}

/// The per-token results of one answer, handed to a sentence aggregate.
pub struct SentenceView<'a> {
    maps: &'a [f32],
    weights: &'a [f32],
    grid: (usize, usize),
}

impl<'a> SentenceView<'a> {
    /// Wraps a raw sentence view.
    ///
    /// # Safety
    /// `raw` must be null or point to a [`DexarSentenceView`] whose buffers are
    /// valid for the lengths it states, for `'a`.
    pub unsafe fn from_raw(raw: *const DexarSentenceView) -> Result<Self, String> {
        if raw.is_null() {
            return Err("host passed a null sentence view".into());
        }
        // SAFETY: non-null, valid for 'a by the caller's contract.
        let raw = unsafe { &*raw };
        let map_len = raw.grid_height * raw.grid_width;
        // SAFETY: lengths as stated by the host, per the caller's contract.
        let (maps, weights) = unsafe {
            (
                slice_or_empty(raw.maps, raw.num_tokens * map_len, "maps")?,
                slice_or_empty(raw.weights, raw.num_tokens, "weights")?,
            )
        };
        Ok(Self {
            maps,
            weights,
            grid: (raw.grid_height, raw.grid_width),
        })
    }

    pub fn num_tokens(&self) -> usize {
        self.weights.len()
    }

    /// `(height, width)` of the patch grid shared by all maps.
    pub fn grid(&self) -> (usize, usize) {
        self.grid
    }

    /// Each token's un-normalised map and weight, in answer order.
    pub fn tokens(&self) -> impl Iterator<Item = (&'a [f32], f32)> + '_ {
        let len = (self.grid.0 * self.grid.1).max(1);
        self.maps.chunks(len).zip(self.weights.iter().copied())
    }
}

/// # Safety
/// `ptr` must be null or valid for reads of `len` elements for `'a`.
unsafe fn slice_or_empty<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T], String> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(format!("host passed a null {what} buffer of length {len}"));
    }
    // SAFETY: non-null and valid for `len` elements by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}
