//! Safety numbers: what two people compare to rule out a man in the middle.
//!
//! Each identity key gets a fingerprint by iterated hashing (as Signal's `NumericFingerprint`
//! version 2, with our own label in place of a phone number):
//!
//! ```text
//! H_0 = SHA-512(0x00 0x02 ‖ IK ‖ "sotto safety number v1")
//! H_i = SHA-512(H_{i-1} ‖ IK)            for i = 1 .. 5200
//! fingerprint(IK) = H_5200[0..32]
//! ```
//!
//! The displayed number is 30 digits per identity: the first 30 bytes of the fingerprint in six
//! 5-byte big-endian chunks, each `mod 100000`. The two halves are ordered numerically (smaller
//! first), so both people see the same 60 digits, shown as 12 groups of 5. That is ≈99.7 bits per
//! identity against a second-preimage search, and 5200 iterations make each guess ≈2^12 times
//! dearer. The QR payload carries both full 256-bit fingerprints: `0x01 ‖ fp_low ‖ fp_high`.

use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use crate::codec::DecodeError;
use crate::identity::IdentityKey;

/// Number of hash iterations.
pub const ITERATIONS: usize = 5200;
/// The label hashed in place of Signal's stable identifier.
pub const LABEL: &[u8] = b"sotto safety number v1";
/// Fingerprint format version (Signal's scheme is version 2).
pub const FINGERPRINT_VERSION: [u8; 2] = [0x00, 0x02];
/// Version byte of the QR payload.
pub const QR_VERSION: u8 = 0x01;
/// Length of the QR payload.
pub const QR_PAYLOAD_LEN: usize = 1 + 32 + 32;

/// The safety number of a pair of identities; the same whichever side computes it.
#[derive(Clone, PartialEq, Eq)]
pub struct SafetyNumber {
    /// The two fingerprints, smaller displayable half first.
    low: [u8; 32],
    high: [u8; 32],
    digits: String,
}

impl std::fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SafetyNumber({})", self.grouped())
    }
}

fn fingerprint(key: &IdentityKey) -> [u8; 32] {
    let mut hash = Sha512::new()
        .chain_update(FINGERPRINT_VERSION)
        .chain_update(key.as_bytes())
        .chain_update(LABEL)
        .finalize();
    for _ in 0..ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(key.as_bytes())
            .finalize();
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&hash[..32]);
    out
}

fn displayable(fp: &[u8; 32]) -> String {
    fp[..30]
        .chunks(5)
        .map(|c| {
            let v = c.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", v % 100_000)
        })
        .collect()
}

impl SafetyNumber {
    /// Computes the safety number of `ours` and `theirs` (order does not matter).
    pub fn new(ours: &IdentityKey, theirs: &IdentityKey) -> Self {
        let (a, b) = (fingerprint(ours), fingerprint(theirs));
        let (da, db) = (displayable(&a), displayable(&b));
        let ((low, dl), (high, dh)) = if (&da, &a) <= (&db, &b) {
            ((a, da), (b, db))
        } else {
            ((b, db), (a, da))
        };
        Self {
            low,
            high,
            digits: dl + &dh,
        }
    }

    /// The 60 digits, without spaces.
    pub fn digits(&self) -> &str {
        &self.digits
    }

    /// The 60 digits in 12 groups of 5, separated by spaces.
    pub fn grouped(&self) -> String {
        let groups: Vec<&str> = (0..12).map(|i| &self.digits[i * 5..i * 5 + 5]).collect();
        groups.join(" ")
    }

    /// The bytes to encode in a QR code.
    pub fn qr_payload(&self) -> [u8; QR_PAYLOAD_LEN] {
        let mut out = [0u8; QR_PAYLOAD_LEN];
        out[0] = QR_VERSION;
        out[1..33].copy_from_slice(&self.low);
        out[33..].copy_from_slice(&self.high);
        out
    }

    /// Compares a scanned QR payload with ours in constant time.
    pub fn matches_qr(&self, scanned: &[u8]) -> Result<bool, DecodeError> {
        match scanned.first() {
            None => return Err(DecodeError::Truncated),
            Some(&QR_VERSION) => {}
            Some(&v) => return Err(DecodeError::UnknownVersion(v)),
        }
        if scanned.len() != QR_PAYLOAD_LEN {
            return Err(DecodeError::OutOfRange("QR payload length"));
        }
        Ok(bool::from(self.qr_payload().ct_eq(scanned)))
    }

    /// Compares a typed or pasted number (spaces and dashes ignored) in constant time.
    pub fn matches_digits(&self, typed: &str) -> bool {
        let cleaned: Vec<u8> = typed.bytes().filter(|b| !b" -\t\n".contains(b)).collect();
        cleaned.len() == self.digits.len() && bool::from(cleaned.ct_eq(self.digits.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentityKeyPair;

    #[test]
    fn symmetric_and_distinct() {
        let a = IdentityKeyPair::from_seed(&[1; 32]).public();
        let b = IdentityKeyPair::from_seed(&[2; 32]).public();
        let c = IdentityKeyPair::from_seed(&[3; 32]).public();
        let ab = SafetyNumber::new(&a, &b);
        assert_eq!(ab, SafetyNumber::new(&b, &a));
        assert_ne!(ab.digits(), SafetyNumber::new(&a, &c).digits());
        assert_eq!(ab.digits().len(), 60);
        assert!(ab.digits().bytes().all(|d| d.is_ascii_digit()));
        assert_eq!(ab.grouped().split(' ').count(), 12);
        assert!(ab.matches_digits(&ab.grouped()));
        assert!(!ab.matches_digits(&SafetyNumber::new(&a, &c).grouped()));
        assert_eq!(
            ab.matches_qr(&SafetyNumber::new(&b, &a).qr_payload()),
            Ok(true)
        );
        assert_eq!(
            ab.matches_qr(&SafetyNumber::new(&a, &c).qr_payload()),
            Ok(false)
        );
        assert!(ab.matches_qr(&[1, 2, 3]).is_err());
    }
}
