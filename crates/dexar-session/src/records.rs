//! What each record of a session file holds (docs/SESSION_FORMAT.md): the
//! session header, an image starting a conversation, a turn, a token with
//! its whole [`StepTrace`], the end of a turn. Fields may be added; none is
//! renamed without a new format version. Readers skip record types they do
//! not know.

use dexar_core::{Grid, ImageRegion, PositionKind, StepTrace};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::format::{read_bytes, read_floats, BlobInfo, Blobs, Dtype, Encoding, FormatError};
use crate::model::ModelIdentity;

/// How traces are stored: f32 (exact), f16 (half the bytes, 11 significant
/// bits) or `auto`: f32 while a token's f32 trace is at most
/// [`TraceDtype::AUTO_F32_LIMIT`] bytes (small models), f16 beyond (7B-class
/// models, so that a 100-token answer stays under 300 MB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceDtype {
    #[default]
    Auto,
    F32,
    F16,
}

impl TraceDtype {
    /// Bytes of one token's gradients and attention in f32 up to which
    /// `auto` keeps f32.
    pub const AUTO_F32_LIMIT: usize = 1 << 20;
    pub const NAMES: [&'static str; 3] = ["auto", "f32", "f16"];

    /// The dtype a trace of `values` values per buffer is stored in.
    pub fn for_values(self, values: usize) -> Dtype {
        match self {
            TraceDtype::F32 => Dtype::F32,
            TraceDtype::F16 => Dtype::F16,
            TraceDtype::Auto if values * 4 * 2 <= Self::AUTO_F32_LIMIT => Dtype::F32,
            TraceDtype::Auto => Dtype::F16,
        }
    }
}

impl std::str::FromStr for TraceDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => Err(format!(
                "unknown trace dtype `{other}`; use {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// The first record: what the session is of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionHeader {
    pub format: String,
    /// RFC 3339, local time with its offset.
    pub created: String,
    pub dexar_version: String,
    pub model: ModelIdentity,
    pub trace_dtype: TraceDtype,
}

/// An earlier exchange of a conversation whose traces are not in this file
/// (a conversation continued after opening another session).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryTurn {
    pub user: String,
    pub assistant: String,
}

/// Starts a conversation: the image (`original` blob: the file's bytes;
/// `view` blob: what the model saw, `[height, width, 3]` RGB) and any
/// earlier exchanges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// 1-based, in file order.
    pub conversation: usize,
    pub label: String,
    pub width: u32,
    pub height: u32,
    /// `png`, `jpeg`, ... (the original's encoding).
    pub original_format: String,
    /// The heatmap grid `[height, width]` of this image's traces: Qwen-VL's
    /// grid follows the image's shape. Absent: the model's grid (header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<[usize; 2]>,
    #[serde(default)]
    pub history: Vec<HistoryTurn>,
    #[serde(default)]
    pub blobs: BTreeMap<String, BlobInfo>,
}

/// The settings a turn was answered (and first shown) with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnSettings {
    pub max_tokens: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// `[first, end)` of the traced decoder layers (every layer in the REPL).
    pub traced_layers: [usize; 2],
    /// The layer selection and strategy the maps were shown with.
    pub layer_index: i64,
    pub topk: usize,
    pub strategy: String,
}

/// A question (or a given answer to explain), before its tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// 1-based, in file order.
    pub turn: usize,
    pub question: String,
    /// The answer explained by teacher forcing; it replaces the previous
    /// turn of the conversation.
    pub target: Option<String>,
    /// The prompt as the model read it (chat template applied).
    pub prompt: String,
    pub input_ids: Vec<u32>,
    pub image_span: [usize; 2],
    pub settings: TurnSettings,
}

/// One generated (or teacher-forced) token and its whole trace: blobs
/// `grads` and `attn` (`[layers, heads, positions]`) and `kinds`
/// (`[positions]`, 0 image, 1 prompt, 2 generated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub turn: usize,
    pub step: usize,
    pub token_id: u32,
    pub text: String,
    pub query_position: usize,
    pub layers: Vec<usize>,
    pub num_heads: usize,
    pub num_positions: usize,
    /// The first image region's span and grid (the only region of most models).
    pub image_span: [usize; 2],
    pub grid: [usize; 2],
    /// Every image region (span, grid, box on the image, kind), written
    /// only when the image is more than the one region above (SmolVLM's
    /// tiles and global view). Absent: that one region, covering the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<ImageRegion>>,
    #[serde(default)]
    pub blobs: BTreeMap<String, BlobInfo>,
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndRecord {
    pub turn: usize,
    /// `eos`, `maxtokens`, `targetend`, `contextfull` or `cancelled`;
    /// absent when generation failed.
    pub stop: Option<String>,
    pub failure: Option<String>,
    pub tokens: usize,
    pub elapsed_ms: u64,
}

/// Every record type, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Session(SessionHeader),
    Image(ImageRecord),
    Turn(TurnRecord),
    Token(TokenRecord),
    End(EndRecord),
}

impl Record {
    /// The `type` values this version knows.
    pub const TYPES: [&'static str; 5] = ["session", "image", "turn", "token", "end"];

    /// The record's JSON (with its `type`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

fn kind_byte(k: PositionKind) -> u8 {
    k as u8
}

fn kind_of(b: u8) -> Option<PositionKind> {
    match b {
        0 => Some(PositionKind::Image),
        1 => Some(PositionKind::Prompt),
        2 => Some(PositionKind::Generated),
        _ => None,
    }
}

/// How trace buffers are packed (see docs/SESSION_FORMAT.md for the
/// measurements behind the choice).
pub const TRACE_ENCODING: Encoding = Encoding::ShuffleDeflate;

/// A token record of `trace` and its blobs.
pub fn token_record(turn: usize, trace: &StepTrace, dtype: TraceDtype) -> (Record, Blobs) {
    let stored = dtype.for_values(trace.grads.len());
    token_record_as(turn, trace, stored, TRACE_ENCODING)
}

/// A token record with its buffers stored as `dtype` and `encoding`.
pub fn token_record_as(
    turn: usize,
    trace: &StepTrace,
    dtype: Dtype,
    encoding: Encoding,
) -> (Record, Blobs) {
    let shape = vec![trace.layers.len(), trace.num_heads, trace.num_positions];
    let mut blobs = Blobs::default();
    for (name, values) in [("grads", &trace.grads), ("attn", &trace.attn)] {
        blobs.add_floats(name, values, shape.clone(), dtype, encoding);
    }
    let kinds: Vec<u8> = trace.kinds.iter().map(|&k| kind_byte(k)).collect();
    blobs.add_bytes("kinds", &kinds, vec![kinds.len()], Encoding::Deflate);
    let first = trace
        .regions
        .first()
        .copied()
        .unwrap_or(ImageRegion::whole((0, 0), Grid::new(0, 0)));
    let record = Record::Token(TokenRecord {
        turn,
        step: trace.step,
        token_id: trace.token_id,
        text: trace.token_text.clone(),
        query_position: trace.query_position,
        layers: trace.layers.clone(),
        num_heads: trace.num_heads,
        num_positions: trace.num_positions,
        image_span: [first.span.0, first.span.1],
        grid: [first.grid.height, first.grid.width],
        regions: (trace.regions != [ImageRegion::whole(first.span, first.grid)])
            .then(|| trace.regions.clone()),
        blobs: BTreeMap::new(),
    });
    (record, blobs)
}

fn blob<'a>(
    blobs: &'a BTreeMap<String, BlobInfo>,
    name: &str,
) -> Result<&'a BlobInfo, FormatError> {
    blobs.get(name).ok_or_else(|| FormatError::Blob {
        name: name.to_string(),
        reason: "missing".into(),
    })
}

impl TokenRecord {
    /// The image regions: the stored list, or the one region of `image_span` and `grid`.
    pub fn regions(&self) -> Vec<ImageRegion> {
        match &self.regions {
            Some(list) => list.clone(),
            None => vec![ImageRegion::whole(
                (self.image_span[0], self.image_span[1]),
                Grid::new(self.grid[0], self.grid[1]),
            )],
        }
    }

    /// The trace this record holds, checked for consistency.
    pub fn trace(&self, payload: &[u8]) -> Result<StepTrace, FormatError> {
        let grads = read_floats("grads", blob(&self.blobs, "grads")?, payload)?;
        let attn = read_floats("attn", blob(&self.blobs, "attn")?, payload)?;
        let kinds = read_bytes("kinds", blob(&self.blobs, "kinds")?, payload)?
            .into_iter()
            .map(|b| {
                kind_of(b).ok_or_else(|| FormatError::Blob {
                    name: "kinds".into(),
                    reason: format!("unknown position kind {b}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shape = [self.layers.len(), self.num_heads, self.num_positions];
        for name in ["grads", "attn"] {
            if self.blobs[name].shape != shape {
                return Err(FormatError::Blob {
                    name: name.into(),
                    reason: format!(
                        "shape {:?} does not match layers x heads x positions {shape:?}",
                        self.blobs[name].shape
                    ),
                });
            }
        }
        let trace = StepTrace {
            step: self.step,
            token_id: self.token_id,
            token_text: self.text.clone(),
            query_position: self.query_position,
            layers: self.layers.clone(),
            num_heads: self.num_heads,
            num_positions: self.num_positions,
            grads,
            attn,
            kinds,
            regions: self.regions(),
        };
        trace.validate().map_err(|e| FormatError::Blob {
            name: "trace".into(),
            reason: e.to_string(),
        })?;
        Ok(trace)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A trace with values of every magnitude a real one has.
    pub(crate) fn sample_trace(step: usize, layers: usize, heads: usize) -> StepTrace {
        let positions = 20 + step;
        let n = layers * heads * positions;
        let mut kinds = vec![PositionKind::Prompt; positions];
        kinds[2..18].fill(PositionKind::Image);
        kinds[20..].fill(PositionKind::Generated);
        StepTrace {
            step,
            token_id: 7 + step as u32,
            token_text: format!(" tok{step}"),
            query_position: positions - 1,
            layers: (0..layers).collect(),
            num_heads: heads,
            num_positions: positions,
            grads: (0..n)
                .map(|i| ((i * 7919 + step) as f32 * 0.013).sin() * 10f32.powi((i % 9) as i32 - 6))
                .collect(),
            attn: (0..n)
                .map(|i| ((i * 31 + step) as f32 * 0.7).cos().abs() / positions as f32)
                .collect(),
            kinds,
            regions: vec![ImageRegion::whole((2, 18), Grid::new(4, 4))],
        }
    }

    /// [`sample_trace`] with its image split: two 2x2 tiles and a 2x2 global view.
    pub(crate) fn split_trace(step: usize) -> StepTrace {
        let mut trace = sample_trace(step, 2, 3);
        let tile = |span, x0: f32| ImageRegion {
            kind: dexar_core::RegionKind::Tile,
            span,
            grid: Grid::new(2, 2),
            bbox: [x0, 0.0, x0 + 0.5, 1.0],
        };
        trace.regions = vec![
            tile((2, 6), 0.0),
            tile((7, 11), 0.5),
            ImageRegion::whole((12, 16), Grid::new(2, 2)),
        ];
        for (j, k) in trace.kinds.iter_mut().enumerate().take(18) {
            *k = if trace.regions.iter().any(|r| j >= r.span.0 && j < r.span.1) {
                PositionKind::Image
            } else {
                PositionKind::Prompt
            };
        }
        trace
    }

    #[test]
    fn regions_are_stored_only_for_split_images() {
        let one = sample_trace(0, 2, 2);
        let (record, _) = token_record(1, &one, TraceDtype::F32);
        assert!(!record
            .to_json()
            .as_object()
            .unwrap()
            .contains_key("regions"));
        let split = split_trace(1);
        let (record, _) = token_record(1, &split, TraceDtype::F32);
        let json = record.to_json();
        assert_eq!(json["image_span"], serde_json::json!([2, 6]));
        assert_eq!(json["regions"][1]["kind"], "tile");
        assert_eq!(
            json["regions"][1]["bbox"],
            serde_json::json!([0.5, 0.0, 1.0, 1.0])
        );
        assert_eq!(json["regions"][2]["kind"], "global");
        assert_eq!(round_trip(&split, TraceDtype::F32), split);
    }

    fn round_trip(trace: &StepTrace, dtype: TraceDtype) -> StepTrace {
        let (record, blobs) = token_record(3, trace, dtype);
        let Record::Token(mut t) = record else {
            unreachable!()
        };
        t.blobs = blobs.info;
        // Through JSON, as a reader sees it.
        let json = serde_json::to_string(&Record::Token(t)).unwrap();
        let Record::Token(t) = serde_json::from_str(&json).unwrap() else {
            panic!("not a token record: {json}")
        };
        t.trace(&blobs.payload).unwrap()
    }

    #[test]
    fn traces_round_trip_bit_exactly_in_f32() {
        let trace = sample_trace(2, 3, 4);
        let back = round_trip(&trace, TraceDtype::F32);
        assert_eq!(back, trace);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.grads), bits(&trace.grads));
        // Small traces stay f32 under auto.
        assert_eq!(round_trip(&trace, TraceDtype::Auto), trace);
    }

    #[test]
    fn f16_traces_keep_eleven_significant_bits() {
        let trace = sample_trace(1, 2, 3);
        let back = round_trip(&trace, TraceDtype::F16);
        assert_ne!(back.grads, trace.grads);
        for (a, b) in trace
            .grads
            .iter()
            .zip(&back.grads)
            .chain(trace.attn.iter().zip(&back.attn))
        {
            assert!(
                (a - b).abs() <= a.abs() * 2f32.powi(-11) + 2f32.powi(-25),
                "{a} {b}"
            );
        }
        assert_eq!(back.kinds, trace.kinds);
        assert_eq!(TraceDtype::Auto.for_values(32 * 32 * 650), Dtype::F16);
        assert_eq!(TraceDtype::Auto.for_values(3 * 4 * 90), Dtype::F32);
    }

    #[test]
    fn inconsistent_token_records_are_refused() {
        let trace = sample_trace(0, 2, 2);
        let (record, blobs) = token_record(1, &trace, TraceDtype::F32);
        let Record::Token(mut t) = record else {
            unreachable!()
        };
        t.blobs = blobs.info.clone();
        let mut wrong = t.clone();
        wrong.num_heads = 3;
        assert!(wrong.trace(&blobs.payload).is_err());
        let mut wrong = t.clone();
        wrong.image_span = [2, 30];
        let e = wrong.trace(&blobs.payload).unwrap_err().to_string();
        assert!(e.contains("image span"), "{e}");
        let mut wrong = t.clone();
        wrong.blobs.remove("attn");
        assert_eq!(
            wrong.trace(&blobs.payload).unwrap_err().to_string(),
            "blob `attn`: missing"
        );
        assert_eq!(t.trace(&blobs.payload).unwrap(), trace);
    }
}
