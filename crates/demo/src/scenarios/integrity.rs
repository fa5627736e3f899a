//! Scene 2, integrity: the attacker flips single bits in a prekey bundle, an initial
//! (handshake) message, a ratchet header and a ciphertext, and injects a forged message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sotto_client::DeliveryState;
use sotto_protocol::Envelope;
use sotto_wire::{DeliverIn, MessageId, RelayFrame};

use crate::proxy::{Dir, Verdict};
use crate::world::{World, inbox, introduce, relay_healthy, send, sync};
use crate::{Ctx, Error, Evidence, Outcome, Scenario, ScenarioFuture};

use super::{id_bytes, name};

/// Scene 2.
pub struct Integrity;

impl Scenario for Integrity {
    fn id(&self) -> &'static str {
        "integrity"
    }
    fn title(&self) -> &'static str {
        "Integrity"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

/// Where to flip a bit in a delivered envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spot {
    /// EK_A, the initiator's ephemeral key in an initial message.
    Handshake,
    /// The ratchet public key in the header.
    Header,
    /// The ciphertext.
    Ciphertext,
}

impl Spot {
    fn label(self) -> &'static str {
        match self {
            Self::Handshake => "initial message: one bit of EK_A (handshake key)",
            Self::Header => "ratchet header: one bit of the ratchet public key",
            Self::Ciphertext => "ciphertext: one bit",
        }
    }
}

/// Flips one bit at `spot`; returns the byte offset, or None if the envelope has no such part.
fn flip(body: &mut [u8], spot: Spot) -> Option<usize> {
    let env = Envelope::decode(body).ok()?;
    let ratchet_start = match &env {
        Envelope::Ratchet(_) => 0,
        Envelope::Prekey(p) => body.len() - p.message.as_bytes().len(),
    };
    let at = match (spot, &env) {
        (Spot::Handshake, Envelope::Prekey(_)) => 1 + 32 + 5, // inside EK_A (bytes 33..65)
        (Spot::Handshake, _) => return None,
        (Spot::Header, _) => ratchet_start + 1 + 9, // inside the DH public key
        (Spot::Ciphertext, _) => ratchet_start + 41 + 7,
    };
    *body.get_mut(at)? ^= 0x01;
    Some(at)
}

async fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new(
        "integrity",
        "Integrity",
        "flip one bit in: Bob's prekey bundle on its way to Alice, Alice's initial (handshake) message, a ratchet header, a ciphertext; inject a forged message claiming to be from Alice",
        "each is rejected with an authentication error and shown as a failed message; the next messages still decrypt; the relay keeps running",
    );
    o.headline = "flip bits in bundle, handshake, header, ciphertext; forge".into();
    let w = World::start().await?;
    let mut alice = w.client("alice").await?;
    let mut bob = w.client("bob").await?;
    name(&mut o, &alice, "alice");
    name(&mut o, &bob, "bob");
    introduce(&mut alice, "alice", &mut bob, "bob")?;
    let (a_key, b_key) = (alice.identity(), bob.identity());

    // The attacker's plan: message id -> where to flip; plus one-shot bundle tampering and a
    // forged delivery injected before Bob's next `Drained`.
    let targets: Arc<Mutex<HashMap<[u8; 16], Spot>>> = Arc::default();
    let tamper_bundle = Arc::new(Mutex::new(false));
    let forge = Arc::new(Mutex::new(None::<Vec<u8>>));
    let flips: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    {
        let (targets, tamper_bundle, forge, flips) = (
            targets.clone(),
            tamper_bundle.clone(),
            forge.clone(),
            flips.clone(),
        );
        w.proxy.set_policy(Box::new(move |ic| {
            if ic.dir != Dir::ToClient {
                return Verdict::Forward;
            }
            match ic.relay_frame() {
                Some(RelayFrame::Bundle(mut b)) if ic.who == Some(a_key) => {
                    let mut t = tamper_bundle.lock().unwrap_or_else(|e| e.into_inner());
                    if !*t {
                        return Verdict::Forward;
                    }
                    *t = false;
                    let at = b.signed_prekey.blob.len().saturating_sub(1);
                    if let Some(x) = b.signed_prekey.blob.get_mut(at) {
                        *x ^= 0x01;
                    }
                    Verdict::Replace(
                        vec![RelayFrame::Bundle(b).encode()],
                        "bundle: one bit of the signed prekey's signature".into(),
                    )
                }
                Some(RelayFrame::Deliver(mut d)) if ic.who == Some(b_key) => {
                    let spot = targets
                        .lock()
                        .ok()
                        .and_then(|t| t.get(&d.message_id.0).copied());
                    let Some(spot) = spot else {
                        return Verdict::Forward;
                    };
                    match flip(&mut d.body, spot) {
                        Some(at) => {
                            if let Ok(mut f) = flips.lock() {
                                f.push((spot.label().to_owned(), at));
                            }
                            Verdict::Replace(
                                vec![RelayFrame::Deliver(d).encode()],
                                format!("{} (byte {at})", spot.label()),
                            )
                        }
                        None => Verdict::Forward,
                    }
                }
                Some(RelayFrame::Drained) if ic.who == Some(b_key) => {
                    match forge.lock().ok().and_then(|mut f| f.take()) {
                        Some(forged) => Verdict::Replace(
                            vec![forged, ic.payload.to_vec()],
                            "injected a forged message from \"alice\"".into(),
                        ),
                        None => Verdict::Forward,
                    }
                }
                _ => Verdict::Forward,
            }
        }));
    }

    let mut rows = Vec::new();

    // 1. The bundle: Alice cannot start a session from a tampered bundle.
    ctx.say("      flipping a bit in Bob's prekey bundle on its way to Alice");
    if let Ok(mut t) = tamper_bundle.lock() {
        *t = true;
    }
    let id0 = send(&mut alice, "bob", "integrity 0: hello Bob").await?;
    let m0 = alice
        .messages(Some("bob"))?
        .into_iter()
        .find(|m| m.id == id0);
    let e0 = m0
        .as_ref()
        .and_then(|m| m.error.clone())
        .unwrap_or_default();
    let ok0 = m0
        .as_ref()
        .is_some_and(|m| m.state == DeliveryState::Failed)
        && e0.contains("signature");
    rows.push(vec![
        "prekey bundle (relay → Alice)".into(),
        "one bit of the signed prekey's signature".into(),
        format!(
            "Alice: {}",
            m0.map(|m| crate::describe(&m))
                .unwrap_or_else(|| "nothing".into())
        ),
    ]);
    o.check(
        ok0,
        format!("tampered bundle: Alice's message failed before anything was sent ({e0})"),
    );

    // 2-5. Messages to Bob, some tampered on the way.
    let plan: [(&str, Option<Spot>); 5] = [
        ("integrity 1: are you there?", Some(Spot::Handshake)),
        ("integrity 2: second try", None),
        ("integrity 3: the plan is on", Some(Spot::Header)),
        ("integrity 4: bring the keys", Some(Spot::Ciphertext)),
        ("integrity 5: still talking", None),
    ];
    let mut ids = Vec::new();
    for (i, (text, spot)) in plan.iter().enumerate() {
        let id = alice.compose("bob", text, false)?;
        if let Some(s) = spot {
            ctx.say(&format!("      flipping {}", s.label()));
            if let Ok(mut t) = targets.lock() {
                t.insert(id_bytes(&id)?, *s);
            }
        }
        sync(&mut alice).await?;
        sync(&mut bob).await?;
        ids.push(id);
        if i == 1 {
            // Bob answers, so that Alice's next messages are plain ratchet messages.
            send(&mut bob, "alice", "integrity: got your second message").await?;
            sync(&mut alice).await?;
        }
    }
    // 6. A forged message injected straight into Bob's connection.
    ctx.say("      injecting a forged message \"from alice\" into Bob's connection");
    // A plausible forgery: the header of the last real message to Bob with the next counter,
    // and random bytes where the ciphertext goes.
    let last = w
        .proxy
        .log()
        .into_iter()
        .rev()
        .filter(|f| f.kind == "Deliver" && f.who == Some(b_key) && f.peer == Some(a_key))
        .find_map(|f| f.body.filter(|b| b.first() == Some(&0x01)))
        .ok_or_else(|| Error::Scene("no ratchet message to Bob was seen".into()))?;
    let mut forged_body = last[..41].to_vec();
    let n = u32::from_be_bytes([last[37], last[38], last[39], last[40]]).wrapping_add(1);
    forged_body[37..41].copy_from_slice(&n.to_be_bytes());
    let mut rnd = vec![0u8; last.len() - 41];
    getrandom::fill(&mut rnd).map_err(|e| Error::Setup(e.to_string()))?;
    forged_body.extend_from_slice(&rnd);
    let forged_id = [0x66u8; 16];
    if let Ok(mut f) = forge.lock() {
        *f = Some(
            RelayFrame::Deliver(DeliverIn {
                delivery_id: 9_999_999,
                sender: a_key,
                message_id: MessageId(forged_id),
                timestamp_ms: 0,
                body: forged_body,
            })
            .encode(),
        );
    }
    sync(&mut bob).await?;
    let injected = forge.lock().map(|f| f.is_none()).unwrap_or(false);
    o.check(
        injected,
        "the forged message was injected into Bob's connection",
    );

    let bob_in = inbox(&bob, "alice")?;
    let state_of = |id: &str| bob_in.iter().find(|m| m.id == id).cloned();
    for (i, (text, spot)) in plan.iter().enumerate() {
        let m = state_of(&ids[i]);
        let desc = m
            .as_ref()
            .map(crate::describe)
            .unwrap_or_else(|| "missing".into());
        match spot {
            Some(s) => {
                let ok = m.as_ref().is_some_and(|m| {
                    m.state == DeliveryState::Failed
                        && m.text.is_none()
                        && m.error
                            .as_deref()
                            .is_some_and(|e| e.contains("authentication"))
                });
                rows.push(vec![
                    format!("message {} (relay → Bob)", i + 1),
                    s.label().into(),
                    format!("Bob: {desc}"),
                ]);
                o.check(
                    ok,
                    format!("{}: Bob shows a failed message ({desc})", s.label()),
                );
            }
            None => {
                let ok = m.as_ref().is_some_and(|m| m.text.as_deref() == Some(*text));
                rows.push(vec![
                    format!("message {} (relay → Bob)", i + 1),
                    "untouched".into(),
                    format!("Bob: {desc}"),
                ]);
                o.check(
                    ok,
                    format!(
                        "untouched message {} after the tampering decrypted ({desc})",
                        i + 1
                    ),
                );
            }
        }
    }
    let forged = bob_in.iter().find(|m| m.id == hex::encode(forged_id));
    let fdesc = forged
        .map(crate::describe)
        .unwrap_or_else(|| "missing".into());
    rows.push(vec![
        "forged message (injected → Bob)".into(),
        "real header with the next counter, random ciphertext, sender \"alice\"".into(),
        format!("Bob: {fdesc}"),
    ]);
    o.check(
        forged.is_some_and(|m| {
            m.state == DeliveryState::Failed
                && m.error
                    .as_deref()
                    .is_some_and(|e| e.contains("authentication"))
        }),
        format!("forged message: Bob shows a failed message ({fdesc})"),
    );
    // The relay is still up and the session still works in both directions.
    let healthy = match &w.relay {
        Some(r) => relay_healthy(r.addr()).await,
        None => false,
    };
    o.check(healthy, "the relay kept running (GET /healthz → 200)");
    send(&mut bob, "alice", "integrity: all good on my side").await?;
    sync(&mut alice).await?;
    let back = inbox(&alice, "bob")?
        .iter()
        .any(|m| m.text.as_deref() == Some("integrity: all good on my side"));
    o.check(
        back,
        "the session keeps working: Bob's reply after the attacks decrypted at Alice",
    );
    o.evidence.push(Evidence::Table {
        caption: "What the attacker changed and what the user saw".into(),
        header: vec!["frame".into(), "bit flipped".into(), "result".into()],
        rows,
    });
    o.pcap = ctx.save_pcap(&w.proxy.capture(), "integrity.pcap")?;
    o.log = w.proxy.log();
    Ok(o)
}
