//! Length padding applied to every plaintext before encryption.
//!
//! A plaintext of `len` bytes is padded ISO/IEC 7816-4 style (`0x80` then zeros) to the smallest
//! bucket of `64 · 2^k` bytes (64, 128, ..., 65536) that holds `len + 1` bytes. An observer learns
//! only the bucket, not the length: all short chat messages (< 64 bytes) look the same, and
//! longer ones leak at most ⌈log2⌉ of their length. Unpadding is strict: the padded length must
//! be a bucket size and the padding must be exactly `0x80 0x00*`.

use thiserror::Error;

/// The smallest bucket.
pub const MIN_PADDED_LEN: usize = 64;
/// The largest bucket; a plaintext may be at most `MAX_PADDED_LEN - 1` bytes.
pub const MAX_PADDED_LEN: usize = 65536;
/// The largest plaintext that can be padded.
pub const MAX_PLAINTEXT_LEN: usize = MAX_PADDED_LEN - 1;

/// The plaintext is longer than [`MAX_PLAINTEXT_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("plaintext too long: {len} bytes, at most {MAX_PLAINTEXT_LEN} allowed")]
pub struct TooLong {
    /// The rejected length.
    pub len: usize,
}

/// The padded size of a plaintext of `len` bytes.
pub fn padded_len(len: usize) -> Result<usize, TooLong> {
    if len > MAX_PLAINTEXT_LEN {
        return Err(TooLong { len });
    }
    Ok((len + 1).next_power_of_two().max(MIN_PADDED_LEN))
}

/// Pads `plaintext` to its bucket.
pub fn pad(plaintext: &[u8]) -> Result<Vec<u8>, TooLong> {
    let mut out = Vec::with_capacity(padded_len(plaintext.len())? + 16);
    pad_into(plaintext, &mut out)?;
    Ok(out)
}

/// Appends `plaintext`, padded to its bucket, to `out`. A caller that reserved the room first
/// (header, padded length, tag) keeps the plaintext in one allocation that never moves.
pub fn pad_into(plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), TooLong> {
    let total = padded_len(plaintext.len())?;
    let end = out.len() + total;
    out.extend_from_slice(plaintext);
    out.push(0x80);
    out.resize(end, 0);
    Ok(())
}

/// Removes the padding in place; `None` if it is not exactly what [`pad`] writes.
pub(crate) fn unpad(mut padded: Vec<u8>) -> Option<Vec<u8>> {
    let len = padded.len();
    if !(MIN_PADDED_LEN..=MAX_PADDED_LEN).contains(&len) || !len.is_power_of_two() {
        return None;
    }
    let marker = padded.iter().rposition(|&b| b != 0)?;
    if padded[marker] != 0x80 || padded_len(marker).ok()? != len {
        return None;
    }
    padded.truncate(marker);
    Some(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(padded_len(0), Ok(64));
        assert_eq!(padded_len(63), Ok(64));
        assert_eq!(padded_len(64), Ok(128));
        assert_eq!(padded_len(65535), Ok(65536));
        assert!(padded_len(65536).is_err());
    }

    #[test]
    fn round_trip_and_strictness() {
        for len in [0, 1, 63, 64, 100, 1000, 65535] {
            let msg = vec![0xAB; len];
            assert_eq!(unpad(pad(&msg).unwrap()), Some(msg));
        }
        assert_eq!(unpad(vec![0; 64]), None, "no marker");
        let mut p = pad(b"hi").unwrap();
        p[2] = 0x81;
        assert_eq!(unpad(p), None, "wrong marker");
        // A valid marker but in a bucket too large for the content is not canonical.
        let mut p = pad(b"hi").unwrap();
        p.resize(128, 0);
        assert_eq!(unpad(p), None);
        assert_eq!(unpad(vec![0x80; 65]), None, "not a bucket size");
    }
}
