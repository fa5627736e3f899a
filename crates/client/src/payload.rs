//! The typed plaintext inside a session message.
//!
//! ```text
//!   Text    = 0x01 ‖ message id (16) ‖ sent_ms (u64 BE) ‖ UTF-8 text
//!   Receipt = 0x02 ‖ n (u16 BE) ‖ n × message id (16)      "these arrived and were stored"
//!   Group   = 0x03 ‖ group control (invite, roster change or sender key; see `group.rs`)
//! ```

/// A decoded inner payload.
pub(crate) enum Payload {
    Text {
        id: [u8; 16],
        sent_ms: u64,
        text: String,
    },
    Receipt(Vec<[u8; 16]>),
    /// Group control; it may hold a chain key, so it is zeroized on drop.
    Group(zeroize::Zeroizing<Vec<u8>>),
}

impl Payload {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Self::Text { id, sent_ms, text } => {
                let mut v = vec![0x01];
                v.extend_from_slice(id);
                v.extend_from_slice(&sent_ms.to_be_bytes());
                v.extend_from_slice(text.as_bytes());
                v
            }
            Self::Receipt(ids) => {
                let mut v = vec![0x02];
                v.extend_from_slice(&(ids.len().min(u16::MAX as usize) as u16).to_be_bytes());
                for id in ids.iter().take(u16::MAX as usize) {
                    v.extend_from_slice(id);
                }
                v
            }
            Self::Group(control) => {
                let mut v = vec![0x03];
                v.extend_from_slice(control);
                v
            }
        }
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Self> {
        match b.split_first()? {
            (0x01, rest) if rest.len() >= 24 => {
                let id = rest[..16].try_into().ok()?;
                let sent_ms = u64::from_be_bytes(rest[16..24].try_into().ok()?);
                let text = String::from_utf8(rest[24..].to_vec()).ok()?;
                Some(Self::Text { id, sent_ms, text })
            }
            (0x02, rest) if rest.len() >= 2 => {
                let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
                let ids = rest[2..].chunks_exact(16);
                if ids.len() != n || !ids.remainder().is_empty() {
                    return None;
                }
                Some(Self::Receipt(
                    ids.filter_map(|c| c.try_into().ok()).collect(),
                ))
            }
            (0x03, rest) if !rest.is_empty() => {
                Some(Self::Group(zeroize::Zeroizing::new(rest.to_vec())))
            }
            _ => None,
        }
    }
}
