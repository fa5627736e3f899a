//! Just enough RFC 6455 to read and write the WebSocket frames between a sotto client and relay:
//! the proxy forwards the HTTP upgrade untouched, then splits each direction into frames.

/// Opcode of a binary data frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;

/// One WebSocket frame as it was on the wire.
#[derive(Clone, Debug)]
pub struct WsFrame {
    /// FIN bit.
    pub fin: bool,
    /// The opcode (low 4 bits of the first byte).
    pub opcode: u8,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
    /// The exact bytes of the frame on the wire (masked if the client sent it).
    pub raw: Vec<u8>,
}

/// Parses one frame from the front of `buf`. `Ok(None)`: more bytes are needed. `Err`: not a
/// frame this proxy understands (the connection is then passed through unparsed).
pub fn parse(buf: &[u8]) -> Result<Option<(WsFrame, usize)>, &'static str> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let len7 = buf[1] & 0x7f;
    let mut pos = 2usize;
    let len = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            pos = 4;
            u64::from(u16::from_be_bytes([buf[2], buf[3]]))
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            pos = 10;
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > 16 * 1024 * 1024 {
        return Err("frame too large");
    }
    let len = len as usize;
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    if buf.len() < pos + len {
        return Ok(None);
    }
    let mut payload = buf[pos..pos + len].to_vec();
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    let end = pos + len;
    Ok(Some((
        WsFrame {
            fin,
            opcode,
            payload,
            raw: buf[..end].to_vec(),
        },
        end,
    )))
}

/// Encodes a final frame; `masked` (client to server) uses a fresh random masking key.
pub fn encode(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | (opcode & 0x0f));
    let mbit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mbit | n as u8),
        n if n <= 0xffff => {
            out.push(mbit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mbit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let mut m = [0u8; 4];
        // A predictable mask only weakens proxy cache-poisoning defences, irrelevant here.
        let _ = getrandom::fill(&mut m);
        out.extend_from_slice(&m);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// The end of the HTTP header block (`\r\n\r\n`), if present: the index just after it.
pub fn http_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_masked_and_unmasked() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let p: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for masked in [false, true] {
                let raw = encode(OP_BINARY, &p, masked);
                assert!(parse(&raw[..raw.len() - 1]).unwrap().is_none() || len == 0);
                let (f, n) = parse(&raw).unwrap().unwrap();
                assert_eq!(n, raw.len());
                assert_eq!(f.payload, p);
                assert_eq!(f.raw, raw);
                assert!(f.fin);
                assert_eq!(f.opcode, OP_BINARY);
            }
        }
    }
}
