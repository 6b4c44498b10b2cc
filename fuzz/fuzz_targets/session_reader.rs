//! Session files (docs/SESSION_FORMAT.md) from hostile bytes: reading a
//! whole session and its outline never panics, whatever the input, and an
//! accepted session is consistent (every trace validates, every token has
//! the session's grid).
//!
//! Random bytes rarely get past the checksums, so each input is also read
//! with its frames' checksums recomputed: mutations then reach the JSON,
//! the blob descriptions, the compressed streams and the traces.

#![no_main]

use dexar_session::file::{Outline, Session};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

const MAGIC_LEN: usize = 16;
const FRAME_LEN: usize = 16;

/// The input with every complete frame's checksums made to match.
fn with_checksums_fixed(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = MAGIC_LEN;
    while at + FRAME_LEN <= out.len() {
        let len = |i: usize| u32::from_le_bytes(out[at + i..at + i + 4].try_into().unwrap()) as usize;
        let (json_len, payload_len) = (len(0), len(4));
        let Some(end) = (at + FRAME_LEN)
            .checked_add(json_len)
            .and_then(|e| e.checked_add(payload_len))
            .filter(|&e| e <= out.len())
        else {
            break;
        };
        let crc = crc32fast::hash(&out[at + FRAME_LEN..end]);
        out[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
        let frame_crc = crc32fast::hash(&out[at..at + 12]);
        out[at + 12..at + 16].copy_from_slice(&frame_crc.to_le_bytes());
        at = end;
    }
    out
}

fn check(data: &[u8]) {
    let path = Path::new("fuzz.dexar");
    let _ = Outline::parse(path, data);
    if let Ok(session) = Session::parse(path, data) {
        let grid = session.header.model.grid;
        for turn in &session.turns {
            for step in &turn.steps {
                assert!(step.validate().is_ok());
                let g = dexar_core::regions::map_grid(&step.regions);
                assert_eq!([g.height, g.width], grid);
            }
            assert!(turn.conversation < session.conversations.len());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    check(&with_checksums_fixed(data));
});
