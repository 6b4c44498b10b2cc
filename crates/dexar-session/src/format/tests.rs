//! Blobs, records and files: round trips, torn tails, damage.

use super::*;
use serde_json::json;

fn file(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

fn record(n: u32) -> Vec<u8> {
    let mut blobs = Blobs::default();
    let values: Vec<f32> = (0..50)
        .map(|i| (i as f32 * 0.37 + n as f32).sin())
        .collect();
    blobs.add_floats(
        "v",
        &values,
        vec![5, 10],
        Dtype::F32,
        Encoding::ShuffleDeflate,
    );
    encode_record(json!({"type": "test", "n": n}), blobs).unwrap()
}

#[test]
fn floats_round_trip_in_every_encoding() {
    let values: Vec<f32> = (0..257)
        .map(|i| ((i as f32) * 0.731).sin() * 10f32.powi(i % 7 - 4))
        .chain([0.0, -0.0, 1e-30, 7e4, f32::MIN_POSITIVE])
        .collect();
    for enc in [Encoding::Raw, Encoding::Deflate, Encoding::ShuffleDeflate] {
        let mut b = Blobs::default();
        b.add_floats("x", &values, vec![values.len()], Dtype::F32, enc);
        let back = read_floats("x", &b.info["x"], &b.payload).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&values), "{enc:?}");
    }
    // f16 halves the bytes and rounds to 11 significant bits; a value
    // beyond f16's range keeps the whole blob in f32.
    let small: Vec<f32> = values.iter().map(|v| v.clamp(-100.0, 100.0)).collect();
    let mut b = Blobs::default();
    b.add_floats("h", &small, vec![small.len()], Dtype::F16, Encoding::Raw);
    b.add_floats(
        "big",
        &values,
        vec![values.len()],
        Dtype::F16,
        Encoding::Raw,
    );
    assert_eq!(b.info["h"].dtype, Dtype::F16);
    assert_eq!(b.info["h"].length, small.len() * 2);
    assert_eq!(b.info["big"].dtype, Dtype::F32);
    let back = read_floats("h", &b.info["h"], &b.payload).unwrap();
    for (a, b) in small.iter().zip(&back) {
        // Half an ulp at 11 bits, or half the smallest subnormal step.
        assert!(
            (a - b).abs() <= a.abs() * 2f32.powi(-11) + 2f32.powi(-25),
            "{a} {b}"
        );
    }
}

#[test]
fn shuffle_groups_bytes_by_significance() {
    let bytes = [1, 2, 3, 4, 5, 6, 7, 8];
    assert_eq!(shuffle(&bytes, 4), [1, 5, 2, 6, 3, 7, 4, 8]);
    assert_eq!(unshuffle(&shuffle(&bytes, 2), 2), bytes);
}

#[test]
fn blobs_that_do_not_fit_their_shape_are_refused() {
    let mut b = Blobs::default();
    b.add_floats(
        "x",
        &[1.0, 2.0, 3.0],
        vec![3],
        Dtype::F32,
        Encoding::Deflate,
    );
    let mut info = b.info["x"].clone();
    info.shape = vec![4];
    let e = read_floats("x", &info, &b.payload).unwrap_err().to_string();
    assert!(e.contains("expected 16"), "{e}");
    info.shape = vec![usize::MAX, 2];
    assert!(read_floats("x", &info, &b.payload).is_err());
    info = b.info["x"].clone();
    info.length += 1;
    let e = read_floats("x", &info, &b.payload).unwrap_err().to_string();
    assert!(e.contains("outside"), "{e}");
    assert!(read_bytes("x", &b.info["x"], &b.payload).is_err());
}

#[test]
fn records_split_and_a_torn_tail_is_dropped() {
    let (a, b, c) = (record(1), record(2), record(3));
    let whole = file(&[a.clone(), b.clone(), c.clone()]);
    let r = split_records(&whole).unwrap();
    assert_eq!(r.records.len(), 3);
    assert!(r.torn.is_none());
    assert_eq!(r.intact_len, whole.len());
    let v: serde_json::Value = serde_json::from_slice(r.records[1].json).unwrap();
    assert_eq!(v["n"], 2);
    // Cut anywhere inside the last record: the first two survive.
    let start_c = MAGIC.len() + a.len() + b.len();
    for cut in [1, FRAME_LEN - 1, FRAME_LEN, FRAME_LEN + 3, c.len() - 1] {
        let torn = &whole[..start_c + cut];
        let r = split_records(torn).unwrap();
        assert_eq!(r.records.len(), 2, "cut {cut}");
        assert_eq!(r.intact_len, start_c, "cut {cut}");
        assert!(r.torn.is_some(), "cut {cut}");
    }
    // Zeros where the last record should be (a power cut).
    let mut zeroed = whole[..start_c].to_vec();
    zeroed.extend(std::iter::repeat_n(0u8, c.len()));
    assert_eq!(split_records(&zeroed).unwrap().records.len(), 2);
    // The last record complete in length but with other bytes.
    let mut last_bad = whole.clone();
    let n = last_bad.len();
    last_bad[n - 1] ^= 0x40;
    let r = split_records(&last_bad).unwrap();
    assert_eq!(r.records.len(), 2);
    assert!(r.torn.unwrap().contains("checksum"));
}

#[test]
fn damage_in_the_middle_magic_and_version_are_errors() {
    let (a, b, c) = (record(1), record(2), record(3));
    let whole = file(&[a.clone(), b.clone(), c]);
    let mut flipped = whole.clone();
    flipped[MAGIC.len() + a.len() + FRAME_LEN + 5] ^= 1;
    let e = split_records(&flipped).unwrap_err();
    assert!(matches!(e, FormatError::Corrupt { index: 1, .. }), "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");
    let mut frame = whole.clone();
    frame[MAGIC.len() + 2] ^= 0x10;
    assert!(matches!(
        split_records(&frame).unwrap_err(),
        FormatError::Corrupt { index: 0, .. }
    ));
    let mut v2 = whole.clone();
    v2[..MAGIC.len()].copy_from_slice(b"dexar.session/2\n");
    assert_eq!(
        split_records(&v2).unwrap_err().to_string(),
        "session format `dexar.session/2` is not supported; this dexar reads dexar.session/1"
    );
    assert_eq!(
        split_records(b"\x89PNG\r\n\x1a\n0000000000").unwrap_err(),
        FormatError::NotASession
    );
    for short in [&b""[..], &b"dexar.ses"[..], &MAGIC[..]] {
        assert_eq!(split_records(short).unwrap_err(), FormatError::Empty);
    }
    assert_eq!(
        split_records(b"hello").unwrap_err(),
        FormatError::NotASession
    );
}
