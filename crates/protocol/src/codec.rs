//! A tiny, total, bounded binary codec shared by every sotto wire format.
//!
//! Every sotto structure on the wire is a concatenation of fixed-size fields, big-endian integers
//! and length-prefixed byte strings. [`Reader`] decodes them from an untrusted slice: every read
//! checks the remaining length first, so any input yields a value or a [`DecodeError`], never a
//! panic, and a length prefix can never make us allocate more than the input actually holds.

use thiserror::Error;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the structure was complete.
    #[error("input is truncated")]
    Truncated,
    /// The input has bytes left over after a complete structure.
    #[error("input has trailing bytes")]
    TrailingBytes,
    /// A version or type byte names something this implementation does not know.
    #[error("unknown version or type {0:#04x}")]
    UnknownVersion(u8),
    /// A length, count or tag is outside the range the format allows.
    #[error("field out of range: {0}")]
    OutOfRange(&'static str),
    /// A public key does not decode to a valid, non-degenerate key.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
}

/// A cursor over untrusted input. All reads are bounds-checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `input` from its first byte.
    pub fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.input.len()
    }

    /// Takes the next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.input.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.input.split_at(n);
        self.input = tail;
        Ok(head)
    }

    /// Takes the next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// Takes one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Takes a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Takes a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Takes a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Takes a boolean encoded as `0x00` or `0x01`; any other byte is an error.
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::OutOfRange("boolean")),
        }
    }

    /// Takes a byte string with a `u32` big-endian length prefix of at most `max` bytes.
    pub fn var_bytes(&mut self, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::OutOfRange("length prefix"));
        }
        self.bytes(len)
    }

    /// Takes a `u32` element count of at most `max` elements, also checking that `min_size`
    /// bytes per element remain, so a count can never promise more than the input holds.
    pub fn count(&mut self, max: usize, min_size: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::OutOfRange("element count"));
        }
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.input)
    }

    /// Decodes all of `input` with `read`: trailing bytes are an error.
    pub fn decode_all<T>(
        input: &'a [u8],
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let mut r = Self::new(input);
        let value = read(&mut r)?;
        r.finish()?;
        Ok(value)
    }

    /// Succeeds only if every byte has been consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Appends sotto wire fields to a byte vector.
pub trait Writer {
    /// Appends a big-endian `u16`.
    fn put_u16(&mut self, v: u16);
    /// Appends a big-endian `u32`.
    fn put_u32(&mut self, v: u32);
    /// Appends a big-endian `u64`.
    fn put_u64(&mut self, v: u64);
    /// Appends a boolean as `0x00`/`0x01`.
    fn put_bool(&mut self, v: bool);
    /// Appends a byte string with a `u32` big-endian length prefix.
    fn put_var_bytes(&mut self, v: &[u8]);
}

impl Writer for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_bool(&mut self, v: bool) {
        self.push(u8::from(v));
    }
    fn put_var_bytes(&mut self, v: &[u8]) {
        // Every caller bounds its byte strings far below 4 GiB; saturate rather than wrap.
        self.put_u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.extend_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let mut r = Reader::new(&[0, 0, 0, 200, 1, 2]);
        assert_eq!(r.clone().var_bytes(1000), Err(DecodeError::Truncated));
        assert_eq!(
            r.var_bytes(10),
            Err(DecodeError::OutOfRange("length prefix"))
        );
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r.count(usize::MAX, 1), Err(DecodeError::Truncated));
    }

    #[test]
    fn round_trip_and_trailing() {
        let mut v = Vec::new();
        v.put_u32(7);
        v.put_var_bytes(b"abc");
        v.put_bool(true);
        let mut r = Reader::new(&v);
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.var_bytes(3), Ok(&b"abc"[..]));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.finish(), Ok(()));
        let mut r = Reader::new(&[2]);
        assert!(r.bool().is_err());
        assert_eq!(Reader::new(&[1]).finish(), Err(DecodeError::TrailingBytes));
    }
}
