//! The bytes of a session file, `dexar.session/1` (docs/SESSION_FORMAT.md).
//!
//! A file is the 16-byte line `dexar.session/1\n`, then records appended one
//! after another. A record is a 16-byte frame (JSON length, payload length,
//! CRC-32 of JSON + payload, CRC-32 of the frame's first 12 bytes; all
//! little-endian u32), a JSON object and a payload. The JSON's `blobs` says
//! where each array lies in the payload, with its dtype, shape and encoding,
//! so the file reads with nothing but `json`, `zlib` and `numpy`.
//!
//! A writer killed half-way leaves a prefix of its last record: a frame cut
//! short, or a complete frame whose record runs past the end of the file.
//! Both are a torn tail, dropped with a warning. A complete record whose
//! checksum fails is corruption, an error.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// The first 16 bytes of every session file of this version.
pub const MAGIC: &[u8; 16] = b"dexar.session/1\n";
/// What every version's first line starts with.
const MAGIC_PREFIX: &[u8] = b"dexar.session/";
/// The format's name, as records and documents spell it.
pub const FORMAT: &str = "dexar.session/1";
/// Bytes of a record's frame.
pub const FRAME_LEN: usize = 16;
/// Largest array a blob may describe, in elements (a guard against nonsense
/// shapes and inflation bombs in damaged files; a 7B trace buffer has under
/// a million, a 70B one some 40 million).
const MAX_ELEMENTS: usize = 1 << 28;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormatError {
    #[error("not a dexar session file (it does not start with `dexar.session/`)")]
    NotASession,
    #[error("session format `{0}` is not supported; this dexar reads {FORMAT}")]
    Version(String),
    #[error("the file is truncated: it ends before its first record")]
    Empty,
    #[error("record {index} (byte {offset}) is corrupt: {reason}")]
    Corrupt {
        index: usize,
        offset: usize,
        reason: String,
    },
    #[error("blob `{name}`: {reason}")]
    Blob { name: String, reason: String },
    #[error("a record is too large to write ({0} bytes)")]
    TooLarge(usize),
}

/// How the values of a blob are stored; the names are numpy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dtype {
    #[serde(rename = "<f4")]
    F32,
    #[serde(rename = "<f2")]
    F16,
    #[serde(rename = "|u1")]
    U8,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
            Dtype::U8 => 1,
        }
    }
}

/// How a blob's bytes are packed. `shuffle+deflate` stores byte 0 of every
/// value, then byte 1 of every value, and so on (which puts the exponent
/// bytes of floats side by side), then deflates that (zlib stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    #[serde(rename = "raw")]
    Raw,
    #[serde(rename = "deflate")]
    Deflate,
    #[serde(rename = "shuffle+deflate")]
    ShuffleDeflate,
}

/// Where an array lies in a record's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub length: usize,
    pub encoding: Encoding,
}

/// The arrays of one record being written: their descriptions and payload.
#[derive(Debug, Clone, Default)]
pub struct Blobs {
    pub info: BTreeMap<String, BlobInfo>,
    pub payload: Vec<u8>,
}

impl Blobs {
    /// Adds `values` stored as `dtype` (F32 or F16). Values f16 cannot hold
    /// (beyond ±65504) keep f32, so no value becomes infinite.
    pub fn add_floats(
        &mut self,
        name: &str,
        values: &[f32],
        shape: Vec<usize>,
        dtype: Dtype,
        encoding: Encoding,
    ) {
        let fits_f16 = || values.iter().all(|v| v.abs() <= 65504.0 || !v.is_finite());
        let bytes: Vec<u8> = match dtype {
            Dtype::F16 if fits_f16() => values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        let dtype = if bytes.len() == values.len() * 2 {
            Dtype::F16
        } else {
            Dtype::F32
        };
        self.add(name, &bytes, shape, dtype, encoding);
    }

    /// Adds bytes as they are (`|u1`).
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8], shape: Vec<usize>, encoding: Encoding) {
        self.add(name, bytes, shape, Dtype::U8, encoding);
    }

    fn add(&mut self, name: &str, bytes: &[u8], shape: Vec<usize>, dtype: Dtype, enc: Encoding) {
        let stored = match enc {
            Encoding::Raw => bytes.to_vec(),
            Encoding::Deflate => deflate(bytes),
            Encoding::ShuffleDeflate => deflate(&shuffle(bytes, dtype.size())),
        };
        self.info.insert(
            name.to_string(),
            BlobInfo {
                dtype,
                shape,
                offset: self.payload.len(),
                length: stored.len(),
                encoding: enc,
            },
        );
        self.payload.extend_from_slice(&stored);
    }
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(
        Vec::with_capacity(bytes.len() / 2),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    let _ = z.write_all(bytes);
    z.finish().unwrap_or_default()
}

/// Byte `k` of value `i` goes to `k * n + i`.
fn shuffle(bytes: &[u8], size: usize) -> Vec<u8> {
    let n = bytes.len() / size;
    let mut out = vec![0u8; bytes.len()];
    for (i, value) in bytes.chunks_exact(size).enumerate() {
        for (k, &b) in value.iter().enumerate() {
            out[k * n + i] = b;
        }
    }
    out
}

fn unshuffle(bytes: &[u8], size: usize) -> Vec<u8> {
    let n = bytes.len() / size;
    let mut out = vec![0u8; bytes.len()];
    for (i, value) in out.chunks_exact_mut(size).enumerate() {
        for (k, b) in value.iter_mut().enumerate() {
            *b = bytes[k * n + i];
        }
    }
    out
}

/// The bytes of a blob, decoded and checked against its shape.
fn blob_bytes(name: &str, info: &BlobInfo, payload: &[u8]) -> Result<Vec<u8>, FormatError> {
    let bad = |reason: String| FormatError::Blob {
        name: name.to_string(),
        reason,
    };
    let elements = info
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| bad(format!("shape {:?} is too large", info.shape)))?;
    let expected = elements * info.dtype.size();
    let stored = info
        .offset
        .checked_add(info.length)
        .and_then(|end| payload.get(info.offset..end))
        .ok_or_else(|| {
            bad(format!(
                "bytes {}..+{} lie outside the record's {} payload bytes",
                info.offset,
                info.length,
                payload.len()
            ))
        })?;
    let bytes = match info.encoding {
        Encoding::Raw => stored.to_vec(),
        Encoding::Deflate | Encoding::ShuffleDeflate => {
            // Grown as the stream inflates, not reserved from a claimed shape.
            let mut out = Vec::with_capacity(expected.min(stored.len().saturating_mul(4)));
            // One byte more than expected tells a too-long stream apart.
            flate2::read::ZlibDecoder::new(stored)
                .take(expected as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("cannot inflate ({e})")))?;
            out
        }
    };
    if bytes.len() != expected {
        return Err(bad(format!(
            "{} bytes for shape {:?} of {:?}, expected {expected}",
            bytes.len(),
            info.shape,
            info.dtype
        )));
    }
    Ok(match info.encoding {
        Encoding::ShuffleDeflate => unshuffle(&bytes, info.dtype.size()),
        _ => bytes,
    })
}

/// A float blob as f32 values.
pub fn read_floats(name: &str, info: &BlobInfo, payload: &[u8]) -> Result<Vec<f32>, FormatError> {
    let bytes = blob_bytes(name, info, payload)?;
    Ok(match info.dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::U8 => {
            return Err(FormatError::Blob {
                name: name.to_string(),
                reason: "holds bytes (|u1), not floats".into(),
            })
        }
    })
}

/// A byte blob.
pub fn read_bytes(name: &str, info: &BlobInfo, payload: &[u8]) -> Result<Vec<u8>, FormatError> {
    if info.dtype != Dtype::U8 {
        return Err(FormatError::Blob {
            name: name.to_string(),
            reason: format!("holds {:?} values, not bytes", info.dtype),
        });
    }
    blob_bytes(name, info, payload)
}

/// A whole record: frame, JSON and payload. `json` is an object; `blobs`
/// is added to it when there are any.
pub fn encode_record(mut json: serde_json::Value, blobs: Blobs) -> Result<Vec<u8>, FormatError> {
    if !blobs.info.is_empty() {
        if let Some(obj) = json.as_object_mut() {
            obj.insert(
                "blobs".into(),
                serde_json::to_value(&blobs.info).unwrap_or_default(),
            );
        }
    }
    let meta = serde_json::to_vec(&json).unwrap_or_default();
    let total = meta.len() + blobs.payload.len();
    let (Ok(meta_len), Ok(payload_len)) = (
        u32::try_from(meta.len()),
        u32::try_from(blobs.payload.len()),
    ) else {
        return Err(FormatError::TooLarge(total));
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(&meta);
    crc.update(&blobs.payload);
    let mut out = Vec::with_capacity(FRAME_LEN + total);
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    let frame_crc = crc32fast::hash(&out[..12]);
    out.extend_from_slice(&frame_crc.to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&blobs.payload);
    Ok(out)
}

/// One record as found in a file.
#[derive(Debug, Clone, Copy)]
pub struct RawRecord<'a> {
    pub index: usize,
    /// Byte offset of its frame.
    pub offset: usize,
    pub json: &'a [u8],
    pub payload: &'a [u8],
}

impl RawRecord<'_> {
    /// The record as [`encode_record`] takes it: its JSON without `blobs`,
    /// and its blobs (to rewrite a file record by record).
    pub fn decode(&self) -> Result<(serde_json::Value, Blobs), FormatError> {
        let corrupt = |reason: String| FormatError::Corrupt {
            index: self.index,
            offset: self.offset,
            reason,
        };
        let mut json: serde_json::Value = serde_json::from_slice(self.json)
            .map_err(|e| corrupt(format!("its JSON does not parse ({e})")))?;
        let info = match json.as_object_mut().and_then(|o| o.remove("blobs")) {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| corrupt(format!("its blobs are not described right ({e})")))?,
            None => BTreeMap::new(),
        };
        Ok((
            json,
            Blobs {
                info,
                payload: self.payload.to_vec(),
            },
        ))
    }
}

/// A whole file of `records` (JSON and blobs, as [`RawRecord::decode`]
/// gives them).
pub fn encode_file(
    records: impl IntoIterator<Item = (serde_json::Value, Blobs)>,
) -> Result<Vec<u8>, FormatError> {
    let mut out = MAGIC.to_vec();
    for (json, blobs) in records {
        out.extend(encode_record(json, blobs)?);
    }
    Ok(out)
}

/// What a file holds: its intact records, and where a torn tail was cut.
#[derive(Debug)]
pub struct Records<'a> {
    pub records: Vec<RawRecord<'a>>,
    /// Bytes of the intact part (magic and whole records).
    pub intact_len: usize,
    /// Why bytes after `intact_len` were dropped, if any were.
    pub torn: Option<String>,
}

fn u32_at(data: &[u8], at: usize) -> usize {
    let b = [data[at], data[at + 1], data[at + 2], data[at + 3]];
    u32::from_le_bytes(b) as usize
}

/// Splits a file into records, checking magic, frames and checksums.
pub fn split_records(data: &[u8]) -> Result<Records<'_>, FormatError> {
    if data.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(data) {
            FormatError::Empty
        } else {
            FormatError::NotASession
        });
    }
    let head = &data[..MAGIC.len()];
    if head != MAGIC {
        if !head.starts_with(MAGIC_PREFIX) {
            return Err(FormatError::NotASession);
        }
        let line = head.split(|&b| b == b'\n').next().unwrap_or(head);
        return Err(FormatError::Version(
            String::from_utf8_lossy(line).into_owned(),
        ));
    }
    let mut records = Vec::new();
    let mut at = MAGIC.len();
    let mut torn = None;
    while at < data.len() {
        let index = records.len();
        let corrupt = |reason: String| FormatError::Corrupt {
            index,
            offset: at,
            reason,
        };
        let rest = &data[at..];
        if rest.len() < FRAME_LEN {
            torn = Some(format!(
                "a record's frame is cut short at byte {at} ({} of {FRAME_LEN} bytes)",
                rest.len()
            ));
            break;
        }
        if crc32fast::hash(&rest[..12]) != u32_at(rest, 12) as u32 {
            // A writer stopped by a power cut may leave zeros where the
            // last record should be; that is a torn tail, not damage.
            if rest.iter().all(|&b| b == 0) {
                torn = Some(format!("{} zero bytes at byte {at}", rest.len()));
                break;
            }
            return Err(corrupt("its frame checksum does not match".into()));
        }
        let (meta_len, payload_len) = (u32_at(rest, 0), u32_at(rest, 4));
        let body_len = meta_len + payload_len;
        let Some(body) = rest.get(FRAME_LEN..FRAME_LEN + body_len) else {
            torn = Some(format!(
                "the last record (byte {at}) is cut short: {} of {body_len} bytes",
                rest.len() - FRAME_LEN
            ));
            break;
        };
        if crc32fast::hash(body) != u32_at(rest, 8) as u32 {
            if FRAME_LEN + body_len == rest.len() {
                torn = Some(format!(
                    "the last record (byte {at}) was not completely written (checksum mismatch)"
                ));
                break;
            }
            return Err(corrupt("its checksum does not match its contents".into()));
        }
        records.push(RawRecord {
            index,
            offset: at,
            json: &body[..meta_len],
            payload: &body[meta_len..],
        });
        at += FRAME_LEN + body_len;
    }
    if records.is_empty() {
        return Err(FormatError::Empty);
    }
    Ok(Records {
        intact_len: at,
        records,
        torn,
    })
}

#[cfg(test)]
mod tests;
