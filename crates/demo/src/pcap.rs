//! Captures of the attacker's TCP connections, written as classic pcap files that Wireshark and
//! `tshark -r` open.
//!
//! The proxy sees byte streams, not packets, so the capture synthesizes the framing around every
//! chunk of bytes read or written: Ethernet II, IPv4 (with header checksum) and TCP (with
//! pseudo-header checksum), a three-way handshake when a connection opens, consistent sequence
//! and acknowledgement numbers, and FIN/ACK when it closes. Payload bytes are exactly the bytes
//! that crossed the socket. Segments are at most [`MSS`] bytes.
//!
//! What the report says about a capture is counted from the written file ([`read`]), never from
//! the capture in memory: connections keep closing (FIN segments) after a scene saves its
//! capture, so only the file is the evidence.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Largest TCP payload per synthesized segment (an Ethernet MTU of 1500).
pub const MSS: usize = 1460;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// One synthesized packet: capture time and the Ethernet frame.
#[derive(Clone)]
struct Packet {
    ts: Duration,
    frame: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    packets: Vec<Packet>,
}

/// A shared, in-memory capture. Clones share the same packet list.
#[derive(Clone, Default)]
pub struct Capture {
    inner: Arc<Mutex<Inner>>,
}

/// One TCP connection inside a [`Capture`]: `client` opened it to `server`.
pub struct Flow {
    capture: Capture,
    client: SocketAddr,
    server: SocketAddr,
    /// Next sequence number of the client and of the server, and whether the flow is closed.
    seq: Mutex<(u32, u32, bool)>,
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn ipv4(a: &SocketAddr) -> [u8; 4] {
    match a {
        SocketAddr::V4(v) => v.ip().octets(),
        SocketAddr::V6(v) => v
            .ip()
            .to_ipv4_mapped()
            .unwrap_or(Ipv4Addr::LOCALHOST)
            .octets(),
    }
}

/// A locally administered MAC address derived from the IPv4 address.
fn mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0x00, ip[0], ip[1], ip[2], ip[3]]
}

/// The Internet checksum (RFC 1071) over `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds one Ethernet/IPv4/TCP frame.
fn frame(
    src: &SocketAddr,
    dst: &SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
    ip_id: u16,
) -> Vec<u8> {
    let (sip, dip) = (ipv4(src), ipv4(dst));
    let mut tcp = Vec::with_capacity(20 + payload.len());
    tcp.extend_from_slice(&src.port().to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.push(5 << 4); // data offset: 5 words, no options
    tcp.push(flags);
    tcp.extend_from_slice(&65535u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0]); // checksum, filled below
    tcp.extend_from_slice(&[0, 0]); // urgent pointer
    tcp.extend_from_slice(payload);
    let tcp_len = tcp.len() as u16;
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&sip);
    pseudo.extend_from_slice(&dip);
    pseudo.push(0);
    pseudo.push(6);
    pseudo.extend_from_slice(&tcp_len.to_be_bytes());
    let c = checksum(&[&pseudo, &tcp]);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());

    let mut ip = Vec::with_capacity(20);
    ip.push(0x45);
    ip.push(0);
    ip.extend_from_slice(&(20 + tcp_len).to_be_bytes());
    ip.extend_from_slice(&ip_id.to_be_bytes());
    ip.extend_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
    ip.push(64); // TTL
    ip.push(6); // TCP
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&sip);
    ip.extend_from_slice(&dip);
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let mut out = Vec::with_capacity(14 + 20 + tcp.len());
    out.extend_from_slice(&mac(dip));
    out.extend_from_slice(&mac(sip));
    out.extend_from_slice(&0x0800u16.to_be_bytes());
    out.extend_from_slice(&ip);
    out.extend_from_slice(&tcp);
    out
}

impl Capture {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&self, frame: Vec<u8>) {
        if let Ok(mut g) = self.inner.lock() {
            g.packets.push(Packet { ts: now(), frame });
        }
    }

    fn next_ip_id(&self) -> u16 {
        self.inner
            .lock()
            .map(|g| g.packets.len() as u16)
            .unwrap_or(0)
    }

    /// Starts a connection from `client` to `server`: records the three-way handshake.
    pub fn open(&self, client: SocketAddr, server: SocketAddr) -> Arc<Flow> {
        // Initial sequence numbers derived from the ports: deterministic, distinct per flow.
        let isn_c = u32::from(client.port()).wrapping_mul(0x9e37_79b9);
        let isn_s = u32::from(server.port()).wrapping_mul(0x85eb_ca6b) ^ isn_c;
        let id = self.next_ip_id();
        self.push(frame(&client, &server, isn_c, 0, TCP_SYN, &[], id));
        self.push(frame(
            &server,
            &client,
            isn_s,
            isn_c.wrapping_add(1),
            TCP_SYN | TCP_ACK,
            &[],
            id.wrapping_add(1),
        ));
        self.push(frame(
            &client,
            &server,
            isn_c.wrapping_add(1),
            isn_s.wrapping_add(1),
            TCP_ACK,
            &[],
            id.wrapping_add(2),
        ));
        Arc::new(Flow {
            capture: self.clone(),
            client,
            server,
            seq: Mutex::new((isn_c.wrapping_add(1), isn_s.wrapping_add(1), false)),
        })
    }

    /// Number of packets captured so far (the capture keeps growing while connections close:
    /// report what [`read`] counts in the written file instead).
    pub fn packet_count(&self) -> usize {
        self.inner.lock().map(|g| g.packets.len()).unwrap_or(0)
    }

    /// Every captured frame (Ethernet and up), in order.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        self.inner
            .lock()
            .map(|g| g.packets.iter().map(|p| p.frame.clone()).collect())
            .unwrap_or_default()
    }

    /// The capture as the bytes of a pcap file (Ethernet link type, microsecond timestamps).
    pub fn to_pcap(&self) -> std::io::Result<Vec<u8>> {
        let packets = self
            .inner
            .lock()
            .map(|g| g.packets.clone())
            .unwrap_or_default();
        let mut w = PcapWriter::new(Vec::new()).map_err(std::io::Error::other)?;
        for p in &packets {
            let pkt = PcapPacket::new(p.ts, p.frame.len() as u32, &p.frame);
            w.write_packet(&pkt).map_err(std::io::Error::other)?;
        }
        Ok(w.into_writer())
    }

    /// Writes the capture as a pcap file (see [`Capture::to_pcap`]).
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let bytes = self.to_pcap()?;
        let mut f = std::fs::File::create(path)?;
        f.write_all(&bytes)?;
        f.sync_all()
    }
}

/// Why a pcap file could not be read back.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Not a pcap file, or a truncated one.
    #[error("not a readable pcap file: {0}")]
    Format(String),
    /// A packet that is not Ethernet II / IPv4 / TCP as this module writes them.
    #[error("packet {0} is not Ethernet/IPv4/TCP")]
    NotTcp(usize),
}

/// What a pcap file holds, counted from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Number of packets (records) in the file.
    pub packets: usize,
    /// Sum of the TCP payload lengths (what `tshark -T fields -e tcp.len` adds up to).
    pub payload_bytes: u64,
    /// Size of the file in bytes.
    pub file_bytes: u64,
    /// SHA-256 of the whole file.
    pub sha256: [u8; 32],
}

impl Summary {
    /// The SHA-256 in lower-case hex, as `sha256sum` prints it.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// A pcap file read back: its summary and every packet's frame (Ethernet and up), in order.
#[derive(Clone, Debug)]
pub struct Contents {
    /// Counts and hash.
    pub summary: Summary,
    /// The frames.
    pub frames: Vec<Vec<u8>>,
}

/// The TCP payload length of an Ethernet/IPv4/TCP frame, from its headers.
fn tcp_payload_len(frame: &[u8]) -> Option<usize> {
    let ip = frame.get(14..)?;
    if frame.get(12..14)? != [0x08, 0x00] || ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    let ihl = usize::from(ip.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let doff = usize::from(ip.get(ihl + 12)? >> 4) * 4;
    if ihl < 20 || doff < 20 || total > ip.len() {
        return None;
    }
    total.checked_sub(ihl + doff)
}

/// Reads a pcap file's bytes: counts its packets and TCP payload bytes and hashes it.
pub fn read(bytes: &[u8]) -> Result<Contents, ReadError> {
    let mut reader = PcapReader::new(bytes).map_err(|e| ReadError::Format(e.to_string()))?;
    let mut frames = Vec::new();
    let mut payload_bytes = 0u64;
    while let Some(p) = reader.next_packet() {
        let p = p.map_err(|e| ReadError::Format(e.to_string()))?;
        let n = tcp_payload_len(&p.data).ok_or(ReadError::NotTcp(frames.len() + 1))?;
        payload_bytes += n as u64;
        frames.push(p.data.into_owned());
    }
    Ok(Contents {
        summary: Summary {
            packets: frames.len(),
            payload_bytes,
            file_bytes: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        },
        frames,
    })
}

impl Flow {
    /// The connecting side's address.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    /// The listening side's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Records `data` sent by the client (`from_client`) or by the server, split into segments,
    /// each acknowledged by the peer.
    pub fn data(&self, from_client: bool, data: &[u8]) {
        let Ok(mut seq) = self.seq.lock() else {
            return;
        };
        if seq.2 {
            return;
        }
        for chunk in data.chunks(MSS) {
            let (s, a, src, dst) = if from_client {
                (seq.0, seq.1, &self.client, &self.server)
            } else {
                (seq.1, seq.0, &self.server, &self.client)
            };
            let id = self.capture.next_ip_id();
            self.capture
                .push(frame(src, dst, s, a, TCP_PSH | TCP_ACK, chunk, id));
            let next = s.wrapping_add(chunk.len() as u32);
            if from_client {
                seq.0 = next;
            } else {
                seq.1 = next;
            }
            self.capture
                .push(frame(dst, src, a, next, TCP_ACK, &[], id.wrapping_add(1)));
        }
    }

    /// Records an orderly close started by the client (`from_client`) or the server.
    pub fn close(&self, from_client: bool) {
        let Ok(mut seq) = self.seq.lock() else {
            return;
        };
        if seq.2 {
            return;
        }
        let (s, a, src, dst) = if from_client {
            (seq.0, seq.1, &self.client, &self.server)
        } else {
            (seq.1, seq.0, &self.server, &self.client)
        };
        let id = self.capture.next_ip_id();
        self.capture
            .push(frame(src, dst, s, a, TCP_FIN | TCP_ACK, &[], id));
        self.capture.push(frame(
            dst,
            src,
            a,
            s.wrapping_add(1),
            TCP_FIN | TCP_ACK,
            &[],
            id.wrapping_add(1),
        ));
        self.capture.push(frame(
            src,
            dst,
            s.wrapping_add(1),
            a.wrapping_add(1),
            TCP_ACK,
            &[],
            id.wrapping_add(2),
        ));
        seq.2 = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 section 3 example bytes: sum 0xddf2, checksum its complement.
        let c = checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]);
        assert_eq!(c, !0xddf2);
        // A buffer with its checksum in place sums to zero.
        let mut ip = frame(
            &"127.0.0.1:1".parse().unwrap(),
            &"127.0.0.1:2".parse().unwrap(),
            1,
            2,
            TCP_ACK,
            b"hello",
            7,
        );
        assert_eq!(checksum(&[&ip[14..34]]), 0);
        assert_eq!(tcp_payload_len(&ip), Some(5));
        ip[20] ^= 1;
        assert_ne!(checksum(&[&ip[14..34]]), 0);
    }

    #[test]
    fn read_counts_what_was_written_and_rejects_garbage() {
        let c = Capture::new();
        let f = c.open(
            "127.0.0.1:4000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        f.data(true, &[7u8; 3000]); // three segments, each acknowledged
        f.data(false, b"ok");
        f.close(true);
        let bytes = c.to_pcap().unwrap();
        let r = read(&bytes).unwrap();
        assert_eq!(r.summary.packets, 3 + 3 * 2 + 2 + 3);
        assert_eq!(r.summary.packets, c.packet_count());
        assert_eq!(r.summary.payload_bytes, 3002);
        assert_eq!(r.summary.file_bytes, bytes.len() as u64);
        assert_eq!(r.frames, c.frames());
        assert!(read(&bytes[..bytes.len() - 1]).is_err(), "truncated");
        assert!(read(b"not a pcap file at all").is_err());
    }
}
