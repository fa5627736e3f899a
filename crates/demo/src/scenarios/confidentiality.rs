//! Scene 1, confidentiality: everything on the wire is recorded; no plaintext is in it.

use crate::proxy::Dir;
use crate::world::{World, inbox, introduce, send, sync};
use crate::{Ctx, Error, Evidence, Outcome, Scenario, ScenarioFuture};

use super::{leaks, name};

/// The texts of the conversation (what the attacker must not find).
pub const ALICE_TEXTS: [&str; 3] = [
    "Meet me at the old lighthouse at 21:00",
    "The vault code is 7-3-9-1-4",
    "Bring the blue folder, not the red one",
];
/// Bob's answers.
pub const BOB_TEXTS: [&str; 2] = ["Understood: lighthouse at nine", "Blue folder it is"];

/// Scene 1.
pub struct Confidentiality;

impl Scenario for Confidentiality {
    fn id(&self) -> &'static str {
        "confidentiality"
    }
    fn title(&self) -> &'static str {
        "Confidentiality"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

async fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new(
        "confidentiality",
        "Confidentiality",
        "record every byte between the clients and the relay (both TCP legs) into a pcap file and search it for the plaintexts",
        "no 8-byte piece of any message text appears, neither in the raw capture nor in the unmasked WebSocket payloads",
    );
    o.headline = "record all traffic to pcap, search it for plaintext".into();
    ctx.say("      starting a relay, the attacker proxy, Alice and Bob (throwaway profiles)");
    let w = World::start().await?;
    let mut alice = w.client("alice").await?;
    let mut bob = w.client("bob").await?;
    name(&mut o, &alice, "alice");
    name(&mut o, &bob, "bob");
    introduce(&mut alice, "alice", &mut bob, "bob")?;

    ctx.say("      Alice → Bob: 3 messages; Bob → Alice: 2 answers; the proxy records everything");
    for t in ALICE_TEXTS {
        send(&mut alice, "bob", t).await?;
    }
    sync(&mut bob).await?;
    for t in BOB_TEXTS {
        send(&mut bob, "alice", t).await?;
    }
    sync(&mut alice).await?;
    sync(&mut bob).await?;

    let got_bob: Vec<String> = inbox(&bob, "alice")?
        .into_iter()
        .filter_map(|m| m.text)
        .collect();
    let got_alice: Vec<String> = inbox(&alice, "bob")?
        .into_iter()
        .filter_map(|m| m.text)
        .collect();
    o.check(
        got_bob == ALICE_TEXTS && got_alice == BOB_TEXTS,
        format!(
            "the conversation happened: Bob read {}/3, Alice read {}/2 messages",
            got_bob.len(),
            got_alice.len()
        ),
    );

    // Everything below is counted and searched in the pcap file as written (read back from
    // disk), so the report's figures are the file's.
    let (pcap, contents) = ctx.save_and_read_pcap(&w.proxy.capture(), "confidentiality.pcap")?;
    o.pcap = pcap;
    let frames = contents.frames;
    let (packets, payload_bytes) = (contents.summary.packets, contents.summary.payload_bytes);
    let log = w.proxy.log();
    ctx.say(&format!(
        "      captured {packets} packets, {payload_bytes} payload bytes, {} sotto frames",
        log.len()
    ));
    let texts: Vec<&str> = ALICE_TEXTS
        .iter()
        .chain(BOB_TEXTS.iter())
        .copied()
        .collect();
    let raw_leaks = texts
        .iter()
        .filter(|t| frames.iter().any(|f| leaks(f, t.as_bytes())))
        .count();
    let ws_leaks = texts
        .iter()
        .filter(|t| log.iter().any(|f| leaks(&f.payload, t.as_bytes())))
        .count();
    o.check(
        raw_leaks == 0,
        format!(
            "raw capture ({packets} packets, {payload_bytes} TCP payload bytes, as in the pcap file): {raw_leaks} of {} texts found",
            texts.len()
        ),
    );
    o.check(
        ws_leaks == 0,
        format!(
            "unmasked WebSocket payloads ({} frames): {ws_leaks} of {} texts found",
            log.len(),
            texts.len()
        ),
    );
    // Control: the same search does find what really is in the clear (public identity keys).
    let bob_key = bob.identity();
    let control = log
        .iter()
        .any(|f| leaks(&f.payload, bob_key.as_bytes()) && f.dir == Dir::ToRelay);
    o.check(
        control,
        "control: the same search finds Bob's public identity key in the frames (so a plaintext would be found)",
    );
    if let Some(d) = log
        .iter()
        .find(|f| f.kind == "Deliver" && f.who == Some(bob_key))
    {
        o.evidence.push(Evidence::Hex {
            caption: format!(
                "the first Deliver frame to Bob as the attacker saw it ({} bytes; first 160 shown): frame header, sender key, message id, timestamp, then ciphertext",
                d.payload.len()
            ),
            bytes: d.payload.iter().take(160).copied().collect(),
        });
    }
    o.evidence.push(Evidence::Text(format!(
        "The capture holds both TCP legs (client ↔ attacker and attacker ↔ relay): {packets} packets with {payload_bytes} bytes of TCP payload. The Capture part of this section shows how to count and decode them yourself."
    )));
    o.log = log;
    Ok(o)
}
