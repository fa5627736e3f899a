//! Scene 3, replay: the attacker re-sends a captured message, once as it was and once under a
//! fresh message id (the id is outside the encryption, so the client's duplicate check by id
//! cannot catch that one; the ratchet must).

use std::sync::{Arc, Mutex};

use sotto_client::DeliveryState;
use sotto_wire::{ClientFrame, MessageId, RelayFrame};

use crate::proxy::{Dir, Verdict};
use crate::world::{World, inbox, introduce, send, sync};
use crate::{Ctx, Error, Evidence, Outcome, Scenario, ScenarioFuture};

use super::{id_bytes, name};

/// Scene 3.
pub struct Replay;

impl Scenario for Replay {
    fn id(&self) -> &'static str {
        "replay"
    }
    fn title(&self) -> &'static str {
        "Replay"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

const TRANSFER: &str = "Please transfer 100 EUR to Carol";

async fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new(
        "replay",
        "Replay",
        "capture Alice's message on its way to the relay and send it again twice: unchanged, and under a fresh message id",
        "Bob's client shows the message once; the same-id copy is dropped as a duplicate; the re-labelled copy is rejected by the ratchet as a duplicate",
    );
    o.headline = "re-send a captured message (same id, new id)".into();
    let w = World::start().await?;
    let mut alice = w.client("alice").await?;
    let mut bob = w.client("bob").await?;
    name(&mut o, &alice, "alice");
    name(&mut o, &bob, "bob");
    introduce(&mut alice, "alice", &mut bob, "bob")?;
    let a_key = alice.identity();
    let b_key = bob.identity();

    ctx.say("      a normal exchange first, so the session is established");
    send(&mut alice, "bob", "replay: hi Bob").await?;
    sync(&mut bob).await?;
    send(&mut bob, "alice", "replay: hi Alice").await?;
    sync(&mut alice).await?;

    let target: Arc<Mutex<Option<[u8; 16]>>> = Arc::default();
    let fresh_id = [0x5au8; 16];
    {
        let target = target.clone();
        w.proxy.set_policy(Box::new(move |ic| {
            let t = target.lock().ok().and_then(|t| *t);
            match (ic.dir, ic.client_frame(), ic.relay_frame()) {
                (Dir::ToRelay, Some(ClientFrame::Send(s)), _)
                    if ic.who == Some(a_key) && Some(s.message_id.0) == t =>
                {
                    let mut relabelled = s.clone();
                    relabelled.message_id = MessageId(fresh_id);
                    Verdict::Replace(
                        vec![
                            ic.payload.to_vec(),
                            ic.payload.to_vec(),
                            ClientFrame::Send(relabelled).encode(),
                        ],
                        "re-sent the captured Send (same id; then under a fresh id)".into(),
                    )
                }
                // Hide the relay's acceptance of the copies from Alice.
                (Dir::ToClient, _, Some(RelayFrame::Accepted(id)))
                    if ic.who == Some(a_key) && id.0 == fresh_id =>
                {
                    Verdict::Drop("hid the relay's Accepted for the replay".into())
                }
                _ => Verdict::Forward,
            }
        }));
    }
    ctx.say("      Alice sends a payment request; the attacker replays it to the relay twice");
    let id = alice.compose("bob", TRANSFER, false)?;
    let idb = id_bytes(&id)?;
    if let Ok(mut t) = target.lock() {
        *t = Some(idb);
    }
    sync(&mut alice).await?;
    sync(&mut bob).await?;
    w.proxy.clear_policy();

    let log = w.proxy.log();
    let body_to_bob: Vec<&crate::proxy::FrameLog> = log
        .iter()
        .filter(|f| f.kind == "Deliver" && f.who == Some(b_key))
        .collect();
    let original = body_to_bob
        .iter()
        .find(|f| f.message_id == Some(idb))
        .and_then(|f| f.body.clone());
    let copies = body_to_bob
        .iter()
        .filter(|f| original.is_some() && f.body == original)
        .count();
    o.check(
        copies == 3,
        format!("the relay delivered the captured ciphertext to Bob's client {} (1 original + 2 replays)", crate::times(copies)),
    );
    let bob_in = inbox(&bob, "alice")?;
    let shown = bob_in
        .iter()
        .filter(|m| m.text.as_deref() == Some(TRANSFER))
        .count();
    o.check(
        shown == 1,
        format!("Bob's history shows the request {}", crate::times(shown)),
    );
    let same_id_entries = bob_in.iter().filter(|m| m.id == id).count();
    o.check(
        same_id_entries == 1,
        format!(
            "the same-id replay was dropped by message id ({} with that id)",
            crate::count(same_id_entries, "entry", "entries")
        ),
    );
    let relabelled = bob_in.iter().find(|m| m.id == hex::encode(fresh_id));
    let rdesc = relabelled
        .map(crate::describe)
        .unwrap_or_else(|| "missing".into());
    o.check(
        relabelled.is_some_and(|m| {
            m.state == DeliveryState::Failed
                && m.text.is_none()
                && m.error.as_deref().is_some_and(|e| e.contains("duplicate"))
        }),
        format!("the re-labelled replay was rejected by the ratchet ({rdesc})"),
    );
    send(&mut alice, "bob", "replay: after the attack").await?;
    sync(&mut bob).await?;
    let after = inbox(&bob, "alice")?
        .iter()
        .any(|m| m.text.as_deref() == Some("replay: after the attack"));
    o.check(after, "the session keeps working after the replays");
    o.evidence.push(Evidence::Text(format!(
        "The replayed ciphertext ({} bytes) reached Bob three times; the relay cannot tell a replay from a new message (it never sees content), so the defence is end to end: the client's seen-id table and the ratchet's consumed message keys.",
        original.map(|b| b.len()).unwrap_or(0)
    )));
    o.pcap = ctx.save_pcap(&w.proxy.capture(), "replay.pcap")?;
    o.log = log;
    Ok(o)
}
