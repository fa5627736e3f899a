//! The demo's captures read back independently of the code that wrote and counted them: with the
//! pcap-file crate and this file's own header parsing (every packet is Ethernet/IPv4/TCP with
//! valid checksums, and no plaintext in any TCP stream), with `sha256sum`, and, where `tshark`
//! is installed, with `tshark -r` and the repository's Lua dissector (tools/wireshark/sotto.lua).
//!
//! Without tshark the tshark parts print a SKIPPED line; in CI (`CI` set) a missing tshark is a
//! failure, since `.ci/run` installs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use pcap_file::pcap::PcapReader;
use sotto_client::rng::OsRng;
use sotto_demo::pcap::{Capture, checksum};
use sotto_demo::scenarios::confidentiality::{ALICE_TEXTS, BOB_TEXTS};
use sotto_demo::{Ctx, Outcome, scenarios, ws};
use sotto_protocol::{IdentityKey, IdentityKeyPair};
use sotto_wire::{
    AuthenticateOut, BundleIn, ChallengeIn, ClientFrame, DeliverIn, ErrorCode, ErrorContext,
    ErrorIn, MessageId, PrekeyCounts, PrekeyRecord, RelayFrame, RelayId, SendMultiOut, SendOut,
    UploadPrekeysOut,
};

const DISSECTOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tools/wireshark/sotto.lua"
);

/// What this file's own reading of a pcap finds.
struct Independent {
    packets: usize,
    payload_bytes: u64,
    syns: usize,
    /// TCP payload per (source address and port, destination port), in order.
    streams: HashMap<([u8; 6], u32), Vec<u8>>,
}

/// Reads a pcap with pcap-file and parses every header here, checking the checksums.
fn independent_read(path: &Path) -> Independent {
    let mut reader = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    assert_eq!(
        reader.header().datalink,
        pcap_file::DataLink::ETHERNET,
        "link type"
    );
    let mut r = Independent {
        packets: 0,
        payload_bytes: 0,
        syns: 0,
        streams: HashMap::new(),
    };
    while let Some(p) = reader.next_packet() {
        let p = p.unwrap();
        let f = &p.data;
        r.packets += 1;
        assert_eq!(&f[12..14], &[0x08, 0x00], "IPv4 ethertype");
        let ip = &f[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(ip[9], 6, "TCP");
        assert_eq!(checksum(&[ip]), 0, "IPv4 header checksum");
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        assert_eq!(total + 14, f.len());
        let tcp = &f[34..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        assert_eq!(checksum(&[&pseudo, tcp]), 0, "TCP checksum");
        if tcp[13] & 0x02 != 0 {
            r.syns += 1;
        }
        let mut key = [0u8; 6];
        key[..4].copy_from_slice(&ip[12..16]);
        key[4..].copy_from_slice(&tcp[0..2]);
        let dport = u32::from(u16::from_be_bytes([tcp[2], tcp[3]]));
        let payload = &tcp[usize::from(tcp[12] >> 4) * 4..];
        r.payload_bytes += payload.len() as u64;
        r.streams
            .entry((key, dport))
            .or_default()
            .extend_from_slice(payload);
    }
    r
}

/// `tshark`, if installed; otherwise a SKIPPED line (and a failure in CI, which installs it).
fn tshark(what: &str) -> Option<&'static str> {
    if Command::new("tshark").arg("--version").output().is_ok() {
        return Some("tshark");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "tshark is missing in CI (.ci/run installs it): {what} cannot run"
    );
    eprintln!("SKIPPED: tshark is not installed (apt-get install tshark): {what}");
    None
}

/// Runs tshark with `args`; returns stdout (asserting success and no Lua error).
fn run_tshark(args: &[&str]) -> String {
    let out = Command::new("tshark").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark {args:?} failed: {stderr}");
    assert!(
        !stderr.contains("Lua: Error") && !stderr.contains("lua_script"),
        "the dissector did not load: {stderr}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// tshark with the dissector and the HTTP heuristic (the demo's ports are arbitrary), as the
/// report's commands run it, printing `fields` of every sotto packet, tab-separated.
fn dissect(path: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let lua = format!("lua_script:{DISSECTOR}");
    let mut args = vec![
        "-X",
        &lua,
        "--enable-heuristic",
        "http_tcp",
        "-r",
        path.to_str().unwrap(),
        "-Y",
        "sotto",
        "-T",
        "fields",
    ];
    for f in fields {
        args.push("-e");
        args.push(f);
    }
    run_tshark(&args)
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

async fn confidentiality(dir: &Path) -> Outcome {
    let ctx = Ctx::new(Some(dir.to_owned()), |_| {});
    let all = scenarios::all();
    let s = all.iter().find(|s| s.id() == "confidentiality").unwrap();
    let o = s.run(&ctx).await.unwrap();
    assert!(o.pass);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_parses_and_holds_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    confidentiality(dir.path()).await;
    let path = dir.path().join("confidentiality.pcap");
    let r = independent_read(&path);
    assert!(r.packets > 100, "{} packets", r.packets);
    assert!(r.syns >= 4, "connections open with a handshake");
    assert!(r.streams.values().any(|s| s.starts_with(b"GET / HTTP/1.1")));
    for t in ALICE_TEXTS.iter().chain(BOB_TEXTS.iter()) {
        for s in r.streams.values() {
            assert!(
                !s.windows(t.len()).any(|w| w == t.as_bytes()),
                "plaintext {t:?} in a TCP stream"
            );
        }
    }

    // tshark, where installed (CI installs it): it reads every packet and flags nothing.
    let Some(tshark) = tshark("reading the capture with tshark -r") else {
        return;
    };
    let out = Command::new(tshark).arg("-r").arg(&path).output().unwrap();
    assert!(out.status.success(), "tshark -r failed: {out:?}");
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(lines, r.packets, "tshark saw every packet");
    let bad = run_tshark(&[
        "-r",
        path.to_str().unwrap(),
        "-Y",
        "_ws.malformed or tcp.analysis.flags or _ws.expert.severity >= 6291456",
    ]);
    assert!(bad.trim().is_empty(), "tshark flagged packets:\n{bad}");
}

/// The figures the report gives for a capture are the file's: one run once said 1354 packets
/// and 564090 bytes of a file that held 1344 and 564078 (it counted the capture in memory, which
/// kept growing while connections closed). Three runs, each checked against this file's own
/// reading of the pcap, `sha256sum` and tshark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_figures_equal_the_written_file_over_repeated_runs() {
    let has_tshark = tshark("comparing the report's counts with tshark's").is_some();
    for run in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let o = confidentiality(dir.path()).await;
        let p = o.pcap.as_ref().expect("the scene wrote its capture");
        assert_eq!(p.name, PathBuf::from("confidentiality.pcap"));
        let path = dir.path().join(&p.name);
        let r = independent_read(&path);
        let s = &p.summary;
        assert_eq!(
            (s.packets, s.payload_bytes),
            (r.packets, r.payload_bytes),
            "run {run}: the outcome's figures are not the file's"
        );
        assert_eq!(s.file_bytes, std::fs::metadata(&path).unwrap().len());
        let claim = format!(
            "raw capture ({} packets, {} TCP payload bytes",
            r.packets, r.payload_bytes
        );
        assert!(
            o.find(&claim).is_some(),
            "run {run}: no observation says {claim:?}: {:?}",
            o.observed.iter().map(|c| &c.what).collect::<Vec<_>>()
        );
        let sum = Command::new("sha256sum").arg(&path).output().unwrap();
        let sum = String::from_utf8_lossy(&sum.stdout);
        assert_eq!(sum.split_whitespace().next(), Some(s.sha256_hex().as_str()));
        if has_tshark {
            let packets = run_tshark(&["-r", path.to_str().unwrap()]).lines().count();
            let payload: u64 = run_tshark(&[
                "-r",
                path.to_str().unwrap(),
                "-T",
                "fields",
                "-e",
                "tcp.len",
            ])
            .lines()
            .map(|l| l.trim().parse::<u64>().unwrap())
            .sum();
            assert_eq!(
                (packets, payload),
                (s.packets, s.payload_bytes),
                "run {run}: tshark counts differently"
            );
        }
    }
}

/// The dissector on a real demo capture: it finds the frame types of a conversation, and the
/// message and delivery ids the attacker's log recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dissector_decodes_a_demo_capture() {
    let Some(_) = tshark("the Wireshark dissector test on a demo pcap") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = confidentiality(dir.path()).await;
    let rows = dissect(
        &dir.path().join("confidentiality.pcap"),
        &["sotto.type_name", "sotto.message_id", "sotto.delivery_id"],
    );
    let mut types = std::collections::BTreeSet::new();
    let mut ids = std::collections::BTreeSet::new();
    let mut deliveries = std::collections::BTreeSet::new();
    for r in &rows {
        types.extend(r[0].split(',').map(str::to_owned));
        ids.extend(r[1].split(',').filter(|s| !s.is_empty()).map(str::to_owned));
        deliveries.extend(r[2].split(',').filter(|s| !s.is_empty()).map(str::to_owned));
    }
    for t in [
        "Challenge",
        "Authenticate",
        "AuthOk",
        "UploadPrekeys",
        "PrekeysStored",
        "FetchBundle",
        "Bundle",
        "Send",
        "Accepted",
        "Deliver",
        "Ack",
        "Drained",
    ] {
        assert!(types.contains(t), "no {t} frame decoded; saw {types:?}");
    }
    // Every message id and delivery id the proxy logged is in the dissector's output.
    for f in o
        .log
        .iter()
        .filter(|f| f.kind == "Send" || f.kind == "Deliver")
    {
        let id = hex::encode(f.message_id.unwrap());
        assert!(
            ids.contains(&id),
            "message id {id} of a {} not decoded",
            f.kind
        );
    }
    let logged_deliveries: Vec<u64> = o
        .log
        .iter()
        .filter_map(|f| match sotto_wire::RelayFrame::decode(&f.payload) {
            Ok(RelayFrame::Deliver(d)) if f.kind == "Deliver" => Some(d.delivery_id),
            _ => None,
        })
        .collect();
    assert!(!logged_deliveries.is_empty());
    for d in logged_deliveries {
        assert!(deliveries.contains(&d.to_string()), "delivery id {d}");
    }
}

fn key(rng: &mut OsRng) -> IdentityKey {
    IdentityKeyPair::generate(rng).public()
}

fn record(id: u32, len: usize) -> PrekeyRecord {
    PrekeyRecord {
        id,
        blob: vec![id as u8; len],
    }
}

/// One frame of every type (and an error of every code), encoded by sotto-wire, in a pcap with a
/// WebSocket upgrade on an arbitrary port; the dissector names each and decodes its ids, sizes
/// and codes, and ignores payloads that are not whole sotto frames.
#[test]
fn dissector_decodes_every_frame_type() {
    let Some(_) = tshark("the Wireshark dissector test on every frame type") else {
        return;
    };
    let mut rng = OsRng::new().unwrap();
    let (k1, k2, k3) = (key(&mut rng), key(&mut rng), key(&mut rng));
    let mid = |b: u8| MessageId([b; 16]);
    let counts = PrekeyCounts { x25519: 99, kem: 7 };
    let client = [
        ClientFrame::Authenticate(AuthenticateOut {
            identity: k1,
            signature: [7; 64],
            invite: Some(b"invite-token".to_vec()),
        }),
        ClientFrame::UploadPrekeys(UploadPrekeysOut {
            signed_prekey: Some(record(1, 100)),
            last_resort_kem: None,
            one_time_x25519: vec![record(2, 32), record(3, 32)],
            one_time_kem: vec![],
        }),
        ClientFrame::FetchBundle(k2),
        ClientFrame::Send(SendOut {
            recipient: k2,
            message_id: mid(0x11),
            body: vec![1; 121],
        }),
        ClientFrame::Ack(vec![5, 6, 7]),
        ClientFrame::Ping(42),
        ClientFrame::SendMulti(SendMultiOut {
            recipients: vec![k2, k3],
            message_id: mid(0x22),
            body: vec![3; 200],
        }),
    ];
    let mut relay = vec![
        RelayFrame::Challenge(ChallengeIn {
            relay_id: RelayId([9; 32]),
            nonce: [8; 32],
            max_frame_len: 131_072,
            max_body_len: 98_304,
        }),
        RelayFrame::AuthOk(counts),
        RelayFrame::Accepted(mid(0x11)),
        RelayFrame::Deliver(DeliverIn {
            delivery_id: 123_456_789_012,
            sender: k1,
            message_id: mid(0x33),
            timestamp_ms: 1_700_000_000_000,
            body: vec![2; 300],
        }),
        RelayFrame::Bundle(BundleIn {
            identity: k2,
            signed_prekey: record(4, 100),
            one_time_x25519: Some(record(5, 32)),
            kem: record(6, 200),
            kem_is_last_resort: true,
        }),
        RelayFrame::PrekeysLow(counts),
        RelayFrame::PrekeysStored(counts),
        RelayFrame::Pong(42),
        RelayFrame::Drained,
    ];
    // Every error code sotto-wire knows (it numbers them from 1), and one it does not.
    let mut codes: Vec<u16> = (1..=u16::MAX)
        .take_while(|&c| !matches!(ErrorCode::from_u16(c), ErrorCode::Unknown(_)))
        .collect();
    assert!(codes.len() >= 19, "{codes:?}");
    codes.push(999);
    for (i, &c) in codes.iter().enumerate() {
        let context = match i % 3 {
            0 => ErrorContext::None,
            1 => ErrorContext::Message(mid(0x44)),
            _ => ErrorContext::Identity(k3),
        };
        relay.push(RelayFrame::Error(ErrorIn {
            code: ErrorCode::from_u16(c),
            context,
        }));
    }

    let capture = Capture::new();
    let c: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let s: SocketAddr = "127.0.0.1:7878".parse().unwrap();
    let flow = capture.open(c, s);
    flow.data(
        true,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:7878\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    flow.data(
        false,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    );
    let mut expected: Vec<Vec<u8>> = Vec::new();
    for f in &client {
        let b = f.encode();
        assert!(ClientFrame::decode(&b).is_ok());
        flow.data(true, &ws::encode(ws::OP_BINARY, &b, true));
        expected.push(b);
    }
    for f in &relay {
        let b = f.encode();
        assert!(RelayFrame::decode(&b).is_ok());
        flow.data(false, &ws::encode(ws::OP_BINARY, &b, false));
        expected.push(b);
    }
    // Malformed frames (a truncated Send, a Drained with a trailing byte), and a payload that is
    // not sotto at all (an unknown type).
    for junk in [&[1u8, 0x44, 0, 0][..], &[1, 0x0A, 0], &[1, 0x7f]] {
        flow.data(false, &ws::encode(ws::OP_BINARY, junk, false));
    }
    flow.close(true);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frames.pcap");
    capture.write_to(&path).unwrap();

    let rows = dissect(
        &path,
        &[
            "sotto.type",
            "sotto.type_name",
            "sotto.frame_len",
            "sotto.message_id",
            "sotto.delivery_id",
            "sotto.body_len",
            "sotto.error.code",
            "sotto.error.name",
            "sotto.ack_id",
            "sotto.recipient_count",
            "sotto.error.context",
            "sotto.malformed",
        ],
    );
    assert_eq!(
        rows.len(),
        client.len() + relay.len() + 2,
        "one sotto frame per frame, none for the unknown type: {rows:?}"
    );
    let (rows, junk) = rows.split_at(client.len() + relay.len());
    assert!(rows.iter().all(|r| r[11].is_empty()), "{rows:?}");
    assert_eq!(junk[0][1], "Send");
    assert!(junk[0][11].starts_with("truncated"), "{junk:?}");
    assert_eq!(junk[1][1], "Drained");
    assert_eq!(junk[1][11], "1 trailing byte");
    let names = [
        "Authenticate",
        "UploadPrekeys",
        "FetchBundle",
        "Send",
        "Ack",
        "Ping",
        "SendMulti",
        "Challenge",
        "AuthOk",
        "Accepted",
        "Deliver",
        "Bundle",
        "PrekeysLow",
        "PrekeysStored",
        "Pong",
        "Drained",
    ];
    for (i, (r, bytes)) in rows.iter().zip(&expected).enumerate() {
        assert_eq!(
            r[0],
            format!("0x{:02x}", bytes[1]),
            "row {i}: type byte: {r:?}"
        );
        let name = names.get(i).copied().unwrap_or("Error");
        assert_eq!(r[1], name, "row {i}: {r:?}");
        assert_eq!(r[2], bytes.len().to_string(), "row {i}: frame length");
    }
    let row = |name: &str| rows.iter().find(|r| r[1] == name).unwrap();
    assert_eq!(row("Send")[3], "11".repeat(16));
    assert_eq!(row("Send")[5], "121");
    assert_eq!(row("SendMulti")[3], "22".repeat(16));
    assert_eq!(row("SendMulti")[5], "200");
    assert_eq!(row("SendMulti")[9], "2");
    assert_eq!(row("Accepted")[3], "11".repeat(16));
    assert_eq!(row("Deliver")[3], "33".repeat(16));
    assert_eq!(row("Deliver")[4], "123456789012");
    assert_eq!(row("Deliver")[5], "300");
    assert_eq!(row("Ack")[8], "5,6,7");
    let errors: Vec<&Vec<String>> = rows.iter().filter(|r| r[1] == "Error").collect();
    assert_eq!(errors.len(), codes.len());
    for (i, (r, &c)) in errors.iter().zip(&codes).enumerate() {
        assert_eq!(r[6], c.to_string(), "{r:?}");
        let want = match ErrorCode::from_u16(c) {
            ErrorCode::Unknown(_) => format!("unknown ({c})"),
            known => known.label().to_owned(),
        };
        assert_eq!(r[7], want, "error code {c}: the dissector's name");
        assert_eq!(r[10], (i % 3).to_string(), "error context");
        if i % 3 == 1 {
            assert_eq!(r[3], "44".repeat(16), "the error's message id");
        }
    }

    // The Info column names the frames as well (what `-Y sotto` shows a reader).
    let lua = format!("lua_script:{DISSECTOR}");
    let info = run_tshark(&[
        "-X",
        &lua,
        "--enable-heuristic",
        "http_tcp",
        "-r",
        path.to_str().unwrap(),
        "-Y",
        "sotto",
    ]);
    assert!(info.contains("Deliver delivery 123456789012"), "{info}");
    assert!(info.contains("Error quota_full (6)"), "{info}");
    assert!(info.contains("Error unknown (999), id 44444444"), "{info}");
    assert_eq!(info.matches("[malformed").count(), 2, "{info}");
}
