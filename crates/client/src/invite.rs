//! Invites: the compact string a user hands to a contact (and its QR code).
//!
//! ```text
//!   invite = "SOTTO1:" ‖ BASE32( 0x01 ‖ IK (32) ‖ len (1) ‖ relay URL (len) ‖ check (4) )
//!   check  = SHA-256("sotto invite v1" ‖ everything before it)[..4]
//! ```
//! BASE32 is RFC 4648 without padding, upper case, so the whole string fits a QR code's
//! alphanumeric mode. Parsing ignores case and whitespace; a typo or a truncation fails the
//! checksum (or the length) and is reported as such.

use sha2::{Digest, Sha256};
use sotto_protocol::IdentityKey;
use thiserror::Error;

/// The prefix of every invite string.
pub const PREFIX: &str = "SOTTO1:";
const VERSION: u8 = 0x01;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// The longest relay URL an invite can carry.
pub const MAX_URL_LEN: usize = 255;

/// Why an invite string was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InviteError {
    /// It does not start with `SOTTO1:`.
    #[error("not a sotto invite (expected it to start with {PREFIX})")]
    Prefix,
    /// A character outside the invite alphabet.
    #[error("invite contains an invalid character")]
    Character,
    /// Too short or with bytes missing: probably truncated when copied.
    #[error("invite is truncated")]
    Truncated,
    /// The checksum does not match: a typo or a damaged copy.
    #[error("invite checksum mismatch (typo or damaged copy)")]
    Checksum,
    /// An unknown invite version.
    #[error("unsupported invite version")]
    Version,
    /// The identity key or the URL is invalid.
    #[error("invite holds an invalid identity key or relay URL")]
    Content,
}

/// A decoded invite: who, and where to reach them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    /// The inviter's identity key.
    pub identity: IdentityKey,
    /// The relay the inviter is registered at.
    pub relay: String,
}

fn checksum(body: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(b"sotto invite v1");
    h.update(body);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

impl Invite {
    /// Encodes to the invite string. URLs longer than [`MAX_URL_LEN`] are rejected.
    pub fn encode(&self) -> Result<String, InviteError> {
        let url = self.relay.as_bytes();
        let len = u8::try_from(url.len()).map_err(|_| InviteError::Content)?;
        let mut body = vec![VERSION];
        body.extend_from_slice(self.identity.as_bytes());
        body.push(len);
        body.extend_from_slice(url);
        let check = checksum(&body);
        body.extend_from_slice(&check);
        Ok(format!("{PREFIX}{}", base32_encode(&body)))
    }

    /// Parses an invite string (case and whitespace insensitive).
    pub fn decode(s: &str) -> Result<Self, InviteError> {
        let s: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        let rest = s.strip_prefix(PREFIX).ok_or(InviteError::Prefix)?;
        let bytes = base32_decode(rest)?;
        if bytes.len() < 1 + 32 + 1 + 4 {
            return Err(InviteError::Truncated);
        }
        let (body, check) = bytes.split_at(bytes.len() - 4);
        let url_len = body[33] as usize;
        if body.len() < 34 + url_len {
            return Err(InviteError::Truncated);
        }
        if checksum(body) != check {
            return Err(InviteError::Checksum);
        }
        if body.len() != 34 + url_len {
            return Err(InviteError::Content);
        }
        if body[0] != VERSION {
            return Err(InviteError::Version);
        }
        let identity = IdentityKey::from_slice(&body[1..33]).map_err(|_| InviteError::Content)?;
        let relay = std::str::from_utf8(&body[34..])
            .map_err(|_| InviteError::Content)?
            .to_owned();
        if !(relay.starts_with("ws://") || relay.starts_with("wss://")) {
            return Err(InviteError::Content);
        }
        Ok(Self { identity, relay })
    }
}

fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn base32_decode(s: &str) -> Result<Vec<u8>, InviteError> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .ok_or(InviteError::Character)? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sotto_protocol::IdentityKeyPair;

    fn invite() -> Invite {
        Invite {
            identity: IdentityKeyPair::from_seed(&[3; 32]).public(),
            relay: "ws://127.0.0.1:7878/".into(),
        }
    }

    #[test]
    fn round_trip() {
        let s = invite().encode().unwrap();
        assert!(s.starts_with(PREFIX));
        assert_eq!(Invite::decode(&s).unwrap(), invite());
        assert_eq!(Invite::decode(&s.to_lowercase()).unwrap(), invite());
    }

    #[test]
    fn truncated_and_typos_fail() {
        let s = invite().encode().unwrap();
        for cut in [8, 20, s.len() - 1, s.len() - 5] {
            assert!(Invite::decode(&s[..cut]).is_err(), "cut at {cut}");
        }
        let mut typo = s.clone().into_bytes();
        let i = typo.len() / 2;
        typo[i] = if typo[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            Invite::decode(std::str::from_utf8(&typo).unwrap()),
            Err(InviteError::Checksum)
        );
        assert_eq!(Invite::decode("hello"), Err(InviteError::Prefix));
        assert_eq!(Invite::decode("SOTTO1:!!"), Err(InviteError::Character));
    }
}
