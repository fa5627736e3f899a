//! Captures of the attacker's TCP connections, written as classic pcap files that Wireshark and
//! `tshark -r` open.
//!
//! The proxy sees byte streams, not packets, so the capture synthesizes the framing around every
//! chunk of bytes read or written: Ethernet II, IPv4 (with header checksum) and TCP (with
//! pseudo-header checksum), a three-way handshake when a connection opens, consistent sequence
//! and acknowledgement numbers, and FIN/ACK when it closes. Payload bytes are exactly the bytes
//! that crossed the socket. Segments are at most [`MSS`] bytes.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapPacket, PcapWriter};

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
    payload_bytes: u64,
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

    fn push(&self, frame: Vec<u8>, payload: usize) {
        if let Ok(mut g) = self.inner.lock() {
            g.payload_bytes += payload as u64;
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
        self.push(frame(&client, &server, isn_c, 0, TCP_SYN, &[], id), 0);
        self.push(
            frame(
                &server,
                &client,
                isn_s,
                isn_c.wrapping_add(1),
                TCP_SYN | TCP_ACK,
                &[],
                id.wrapping_add(1),
            ),
            0,
        );
        self.push(
            frame(
                &client,
                &server,
                isn_c.wrapping_add(1),
                isn_s.wrapping_add(1),
                TCP_ACK,
                &[],
                id.wrapping_add(2),
            ),
            0,
        );
        Arc::new(Flow {
            capture: self.clone(),
            client,
            server,
            seq: Mutex::new((isn_c.wrapping_add(1), isn_s.wrapping_add(1), false)),
        })
    }

    /// Number of packets captured so far.
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

    /// Total TCP payload bytes captured so far.
    pub fn payload_bytes(&self) -> u64 {
        self.inner.lock().map(|g| g.payload_bytes).unwrap_or(0)
    }

    /// Writes the capture as a pcap file (Ethernet link type, microsecond timestamps).
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        let packets = self
            .inner
            .lock()
            .map(|g| g.packets.clone())
            .unwrap_or_default();
        let file = std::fs::File::create(path)?;
        let mut w =
            PcapWriter::new(std::io::BufWriter::new(file)).map_err(std::io::Error::other)?;
        for p in &packets {
            let pkt = PcapPacket::new(p.ts, p.frame.len() as u32, &p.frame);
            w.write_packet(&pkt).map_err(std::io::Error::other)?;
        }
        let mut inner = w.into_writer();
        inner.flush()
    }
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
            self.capture.push(
                frame(src, dst, s, a, TCP_PSH | TCP_ACK, chunk, id),
                chunk.len(),
            );
            let next = s.wrapping_add(chunk.len() as u32);
            if from_client {
                seq.0 = next;
            } else {
                seq.1 = next;
            }
            self.capture.push(
                frame(dst, src, a, next, TCP_ACK, &[], id.wrapping_add(1)),
                0,
            );
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
            .push(frame(src, dst, s, a, TCP_FIN | TCP_ACK, &[], id), 0);
        self.capture.push(
            frame(
                dst,
                src,
                a,
                s.wrapping_add(1),
                TCP_FIN | TCP_ACK,
                &[],
                id.wrapping_add(1),
            ),
            0,
        );
        self.capture.push(
            frame(
                src,
                dst,
                s.wrapping_add(1),
                a.wrapping_add(1),
                TCP_ACK,
                &[],
                id.wrapping_add(2),
            ),
            0,
        );
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
        ip[20] ^= 1;
        assert_ne!(checksum(&[&ip[14..34]]), 0);
    }
}
