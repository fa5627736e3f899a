//! Scene 9, group chats: Sender Keys over the pairwise sessions with an owner-signed roster.
//! Alice owns a group with Bob and Carol. The attacker (the proxy, acting as a malicious relay)
//! keeps delivering to Carol after her removal, replays old ciphertexts to Dave who joined later,
//! adds a non-member (Eve) to a fan-out and delivers a group message "from Eve"; a thief copies
//! Carol's and then Bob's group state out of their profiles and tries the recorded ciphertexts.
//!
//! ```text
//!   create + add bob, carol ─▶ "hello" ─▶ remove carol (all rotate) ─▶ add dave ─▶ relay adds eve
//!   ─▶ thief copies Bob's state ─▶ next message ─▶ dave leaves (all rotate) ─▶ next message
//! ```

use std::sync::{Arc, Mutex};

use sotto_client::{Client, Direction, Event};
use sotto_protocol::IdentityKey;
use sotto_wire::{ClientFrame, DeliverIn, MessageId, RelayFrame};

use crate::proxy::{FrameLog, Verdict};
use crate::thief::{GroupThief, contains};
use crate::world::{PASSPHRASE, World, introduce, sync};
use crate::{Ctx, Error, Evidence, Outcome, Scenario, ScenarioFuture};

use super::{id_bytes, name};

/// Scene 9.
pub struct Groups;

impl Scenario for Groups {
    fn id(&self) -> &'static str {
        "groups"
    }
    fn title(&self) -> &'static str {
        "Group chats"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

const GROUP: &str = "team";

/// What the malicious relay does next: add recipients to Alice's next fan-out, and deliver
/// extra frames to a client just before its next `Drained`.
#[derive(Default)]
struct Plan {
    add_to_next_fanout: Vec<(IdentityKey, String)>,
    inject: Vec<(IdentityKey, Vec<u8>, String)>,
}

/// Syncs every client `rounds` times, in order (control messages need a round to arrive and
/// another for the keys they trigger); returns each client's events.
async fn settle(clients: &mut [&mut Client], rounds: usize) -> Result<Vec<Vec<Event>>, Error> {
    let mut out = vec![Vec::new(); clients.len()];
    for _ in 0..rounds {
        for (i, c) in clients.iter_mut().enumerate() {
            out[i].extend(sync(c).await?);
        }
    }
    Ok(out)
}

fn warnings(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::GroupWarning { warning, .. } => Some(warning.clone()),
            _ => None,
        })
        .collect()
}

/// The text `c` read for the group message `id` (hex), or why it did not.
fn read(c: &Client, id: &str) -> Result<Result<String, String>, Error> {
    let m = c
        .group_messages(None)?
        .into_iter()
        .find(|m| m.id == id && m.direction == Direction::In);
    Ok(match m {
        Some(m) => match m.text {
            Some(t) => Ok(t),
            None => Err(m
                .error
                .unwrap_or_else(|| crate::state_word(m.state).to_owned())),
        },
        None => Err("not in the history".into()),
    })
}

/// The recorded body of group message `id` (hex) as Alice uploaded it.
fn recorded(log: &[FrameLog], id: &str) -> Result<Vec<u8>, Error> {
    let want = id_bytes(id)?;
    log.iter()
        .find(|f| f.kind == "SendMulti" && f.message_id == Some(want))
        .and_then(|f| f.body.clone())
        .ok_or_else(|| Error::Scene(format!("group message {id} was not recorded")))
}

/// Whether the relay delivered message `id` (hex) to `who`.
fn delivered_to(log: &[FrameLog], id: &str, who: &IdentityKey) -> bool {
    let want = id_bytes(id).ok();
    log.iter().any(|f| {
        f.kind == "Deliver" && f.who == Some(*who) && f.message_id.is_some() && f.message_id == want
    })
}

/// Whether `thief` reads `text` in `body` from `sender`; the failure reason otherwise.
fn thief_reads(thief: &mut GroupThief, sender: &IdentityKey, body: &[u8], text: &str) -> String {
    match thief.try_open(sender, body) {
        Ok(pt) if contains(&pt, text.as_bytes()) => "READ".into(),
        Ok(_) => "decrypted, text not found".into(),
        Err(e) => format!("no: {e}"),
    }
}

fn compose(c: &mut Client, text: &str) -> Result<String, Error> {
    Ok(c.group_compose(GROUP, text)?)
}

fn all_keys(c: &Client) -> Result<(u64, bool), Error> {
    let g = c.group(GROUP)?;
    Ok((g.epoch, g.members.iter().all(|m| m.has_key)))
}

#[allow(clippy::too_many_lines)]
async fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new(
        "groups",
        "Group chats",
        "as a malicious relay: keep delivering to a removed member, replay old group messages to a member added later, add a non-member to a fan-out and deliver a group message \"from\" her; as a thief: copy a removed member's and a current member's group state out of their profiles and decrypt the recorded ciphertexts",
        "the removed member (and her stolen state) cannot read new messages; the late member cannot read earlier ones; the non-member gets no sender keys and the relay's injection raises a warning; the stolen current state reads the next message and nothing after the next rotation",
    );
    o.headline = "removed/late/injected members; stolen group state".into();
    let w = World::start().await?;
    let mut alice = w.client("alice").await?;
    let mut bob = w.client("bob").await?;
    let mut carol = w.client("carol").await?;
    let mut dave = w.client("dave").await?;
    let mut eve = w.client("eve").await?;
    for (c, n) in [
        (&alice, "alice"),
        (&bob, "bob"),
        (&carol, "carol"),
        (&dave, "dave"),
        (&eve, "eve (not a member)"),
    ] {
        name(&mut o, c, n);
    }
    introduce(&mut alice, "alice", &mut bob, "bob")?;
    introduce(&mut alice, "alice", &mut carol, "carol")?;
    introduce(&mut alice, "alice", &mut dave, "dave")?;
    introduce(&mut bob, "bob", &mut carol, "carol")?;
    introduce(&mut bob, "bob", &mut dave, "dave")?;
    introduce(&mut carol, "carol", &mut dave, "dave")?;
    // The members compared safety numbers with Alice: an invite from anyone else would wait for
    // their consent (`sotto group invites`) before their client did anything with it.
    for c in [&mut bob, &mut carol, &mut dave] {
        c.verify("alice", None)?;
    }
    let (a_key, b_key, c_key, d_key, e_key) = (
        alice.identity(),
        bob.identity(),
        carol.identity(),
        dave.identity(),
        eve.identity(),
    );

    let plan: Arc<Mutex<Plan>> = Arc::default();
    {
        let plan = plan.clone();
        w.proxy.set_policy(Box::new(move |ic| {
            let Ok(mut p) = plan.lock() else {
                return Verdict::Forward;
            };
            match (ic.client_frame(), ic.relay_frame()) {
                (Some(ClientFrame::SendMulti(mut s)), _)
                    if ic.who == Some(a_key) && !p.add_to_next_fanout.is_empty() =>
                {
                    let extra = std::mem::take(&mut p.add_to_next_fanout);
                    let note = extra
                        .iter()
                        .map(|(_, n)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    s.recipients.extend(extra.into_iter().map(|(k, _)| k));
                    Verdict::Replace(
                        vec![ClientFrame::SendMulti(s).encode()],
                        format!("relay adds {note} to the fan-out"),
                    )
                }
                (_, Some(RelayFrame::Drained))
                    if p.inject.iter().any(|(k, ..)| Some(*k) == ic.who) =>
                {
                    let mut frames = Vec::new();
                    let mut notes = Vec::new();
                    p.inject.retain(|(k, f, n)| {
                        if Some(*k) == ic.who {
                            frames.push(f.clone());
                            notes.push(n.clone());
                            false
                        } else {
                            true
                        }
                    });
                    frames.push(ic.payload.to_vec());
                    Verdict::Replace(frames, format!("injected: {}", notes.join("; ")))
                }
                _ => Verdict::Forward,
            }
        }));
    }
    let deliver = |sender: IdentityKey, id: [u8; 16], body: Vec<u8>| {
        RelayFrame::Deliver(DeliverIn {
            delivery_id: 8_000_000 + u64::from(id[0]),
            sender,
            message_id: MessageId(id),
            timestamp_ms: 0,
            body,
        })
        .encode()
    };
    let mut thefts: Vec<Vec<String>> = Vec::new();

    // 1. The group and a first message.
    ctx.say("      Alice creates the group with Bob and Carol and says hello");
    alice.group_create(GROUP)?;
    alice.group_add(GROUP, "bob")?;
    alice.group_add(GROUP, "carol")?;
    let ev = settle(&mut [&mut alice, &mut bob, &mut carol], 3).await?;
    let setup_warnings: usize = ev.iter().map(|e| warnings(e).len()).sum();
    let t1 = "groups 1: hello team, the meeting is at nine";
    let m1 = compose(&mut alice, t1)?;
    settle(&mut [&mut alice, &mut bob, &mut carol], 2).await?;
    let (b1, c1) = (read(&bob, &m1)?, read(&carol, &m1)?);
    o.check(
        b1.as_deref() == Ok(t1) && c1.as_deref() == Ok(t1) && setup_warnings == 0,
        format!(
            "1. Bob and Carol read Alice's first group message (one upload, fanned out by the relay; {setup_warnings} warnings while setting up)"
        ),
    );

    // 2. Carol is removed.
    ctx.say("      the thief copies Carol's group state; Alice then removes Carol");
    w.proxy
        .note(Some(c_key), "the thief copies the group state");
    let mut carol_thief = GroupThief::steal(&w.profile_dir("carol"), PASSPHRASE, GROUP)?;
    let t2 = "groups 2: last message Carol may read";
    let m2 = compose(&mut alice, t2)?;
    settle(&mut [&mut alice, &mut bob, &mut carol], 2).await?;
    let log = w.proxy.log();
    let control2 = thief_reads(&mut carol_thief, &a_key, &recorded(&log, &m2)?, t2);
    thefts.push(vec![
        "Carol's (before her removal)".into(),
        t2.into(),
        control2.clone(),
    ]);
    o.check(
        control2 == "READ" && read(&carol, &m2)?.as_deref() == Ok(t2),
        "2. control: before the removal Carol, and a thief with her copied state, read Alice's message",
    );
    alice.group_remove(GROUP, "carol")?;
    let ev = settle(&mut [&mut alice, &mut bob, &mut carol], 3).await?;
    let removed_seen = ev[2]
        .iter()
        .any(|e| matches!(e, Event::GroupChanged { change, .. } if change == "you were removed"));
    let (ea, ka) = all_keys(&alice)?;
    let (eb, kb) = all_keys(&bob)?;
    o.check(
        removed_seen && !carol.group(GROUP)?.active && ka && kb && ea == eb,
        format!(
            "2. Carol was told she was removed; Alice and Bob both rotated (each holds a fresh key of every remaining member for roster epoch {ea})"
        ),
    );
    ctx.say("      the relay keeps delivering to Carol after her removal");
    let t3 = "groups 3: Carol is gone, the new plan is secret";
    if let Ok(mut p) = plan.lock() {
        p.add_to_next_fanout.push((c_key, "carol (removed)".into()));
    }
    let m3 = compose(&mut alice, t3)?;
    settle(&mut [&mut alice, &mut bob, &mut carol], 2).await?;
    let log = w.proxy.log();
    let body3 = recorded(&log, &m3)?;
    let carol3 = read(&carol, &m3)?;
    o.check(
        read(&bob, &m3)?.as_deref() == Ok(t3),
        "2. Bob reads the first message after the removal",
    );
    o.check(
        delivered_to(&log, &m3, &c_key) && carol3.is_err(),
        format!(
            "2. the relay delivered it to Carol anyway; her client cannot read it ({})",
            carol3.as_ref().err().map_or("?", String::as_str)
        ),
    );
    let thief3 = thief_reads(&mut carol_thief, &a_key, &body3, t3);
    thefts.push(vec![
        "Carol's (before her removal)".into(),
        t3.into(),
        thief3.clone(),
    ]);
    o.check(
        thief3.starts_with("no"),
        format!("2. a thief with Carol's pre-removal state cannot read it either ({thief3})"),
    );

    // 3. Dave joins later.
    ctx.say("      Alice adds Dave; the relay replays the 3 earlier group messages to him");
    alice.group_add(GROUP, "dave")?;
    settle(&mut [&mut alice, &mut bob, &mut dave], 3).await?;
    let t4 = "groups 4: welcome Dave";
    let m4 = compose(&mut alice, t4)?;
    settle(&mut [&mut alice, &mut bob, &mut dave], 2).await?;
    o.check(
        read(&dave, &m4)?.as_deref() == Ok(t4) && read(&bob, &m4)?.as_deref() == Ok(t4),
        "3. control: Dave, added later, reads the first message sent after he joined",
    );
    let log = w.proxy.log();
    let earlier = [(&m1, t1), (&m2, t2), (&m3, t3)];
    w.proxy
        .note(Some(d_key), "the thief copies the group state");
    let mut dave_thief = GroupThief::steal(&w.profile_dir("dave"), PASSPHRASE, GROUP)?;
    let mut stolen_read = 0;
    if let Ok(mut p) = plan.lock() {
        for (id, _) in earlier {
            let body = recorded(&log, id)?;
            p.inject.push((
                d_key,
                deliver(a_key, id_bytes(id)?, body.clone()),
                "an earlier group message replayed to dave".into(),
            ));
        }
    }
    for (id, text) in earlier {
        if thief_reads(&mut dave_thief, &a_key, &recorded(&log, id)?, text) == "READ" {
            stolen_read += 1;
        }
    }
    sync(&mut dave).await?;
    let mut dave_read = 0;
    let mut dave_why = Vec::new();
    for (id, _) in earlier {
        match read(&dave, id)? {
            Ok(_) => dave_read += 1,
            Err(e) => dave_why.push(e),
        }
    }
    dave_why.dedup();
    let log = w.proxy.log();
    let replayed = earlier
        .iter()
        .filter(|(id, _)| delivered_to(&log, id, &d_key))
        .count();
    o.check(
        dave_read == 0 && replayed == 3,
        format!(
            "3. the earlier messages, replayed to Dave's client by the relay ({replayed} of 3 delivered): {dave_read} read ({})",
            dave_why.join("; ")
        ),
    );
    o.check(
        stolen_read == 0,
        format!(
            "3. with Dave's whole group state (epoch {}) the recorded earlier ciphertexts decrypt {stolen_read} of 3",
            dave_thief.epoch()
        ),
    );

    // 4. The relay injects a non-member.
    ctx.say(
        "      the relay adds Eve (no member) to a fan-out and delivers a message \"from\" her",
    );
    let t5 = "groups 5: members only";
    if let Ok(mut p) = plan.lock() {
        p.add_to_next_fanout.push((e_key, "eve".into()));
    }
    let m5 = compose(&mut alice, t5)?;
    settle(&mut [&mut alice, &mut bob, &mut dave], 2).await?;
    let eve_ev = sync(&mut eve).await?;
    let log = w.proxy.log();
    let body5 = recorded(&log, &m5)?;
    let eve_warn = warnings(&eve_ev);
    o.check(
        delivered_to(&log, &m5, &e_key)
            && read(&eve, &m5)?.is_err()
            && eve.groups()?.is_empty()
            && !eve_warn.is_empty(),
        format!(
            "4. Eve, added to the fan-out by the relay, got the ciphertext and no group: her client warns \"{}\"",
            eve_warn.first().map_or("", String::as_str)
        ),
    );
    let forged_id = [0xEE; 16];
    if let Ok(mut p) = plan.lock() {
        p.inject.push((
            b_key,
            deliver(e_key, forged_id, body5),
            "a group message delivered to bob as from eve".into(),
        ));
    }
    let bob_ev = sync(&mut bob).await?;
    let bob_warn = warnings(&bob_ev);
    let shown = read(&bob, &hex::encode(forged_id))?.is_ok();
    o.check(
        !shown && bob_warn.iter().any(|w| w.contains("not on the verified roster")),
        format!(
            "4. a group message the relay delivered to Bob as from Eve was dropped with a GroupWarning: \"{}\"",
            bob_warn.first().map_or("", String::as_str)
        ),
    );

    // 5. A thief copies Bob's state.
    ctx.say("      the thief copies Bob's group state; Alice sends the next message");
    w.proxy
        .note(Some(b_key), "the thief copies the group state");
    let mut bob_thief = GroupThief::steal(&w.profile_dir("bob"), PASSPHRASE, GROUP)?;
    let t6 = "groups 6: the next message after the theft";
    let m6 = compose(&mut alice, t6)?;
    settle(&mut [&mut alice, &mut bob, &mut dave], 2).await?;
    let r6 = thief_reads(&mut bob_thief, &a_key, &recorded(&w.proxy.log(), &m6)?, t6);
    thefts.push(vec![
        "Bob's (copied before the next message)".into(),
        t6.into(),
        r6.clone(),
    ]);
    o.check(
        r6 == "READ",
        "5. a thief with Bob's copied group state reads the next group message (the compromise is real)",
    );
    ctx.say("      Dave leaves: every member rotates; Alice sends again");
    dave.group_leave(GROUP)?;
    settle(&mut [&mut dave, &mut alice, &mut bob], 3).await?;
    let (ea, ka) = all_keys(&alice)?;
    let t7 = "groups 7: after the rotation";
    let m7 = compose(&mut alice, t7)?;
    settle(&mut [&mut alice, &mut bob], 2).await?;
    let r7 = thief_reads(&mut bob_thief, &a_key, &recorded(&w.proxy.log(), &m7)?, t7);
    thefts.push(vec![
        "Bob's (copied before the rotation)".into(),
        t7.into(),
        r7.clone(),
    ]);
    o.check(
        ka && read(&bob, &m7)?.as_deref() == Ok(t7),
        format!("5. after Dave left everyone rotated (epoch {ea}); Bob reads the next message"),
    );
    o.check(
        r7.starts_with("no"),
        format!("5. after the rotation the thief with Bob's copied state cannot read it ({r7})"),
    );

    // 6. Over the whole scene: nobody ever sent Eve (part 4) anything pairwise, so no sender key.
    let log = w.proxy.log();
    let pairwise_to = |k: &IdentityKey| {
        log.iter()
            .filter(|f| f.kind == "Send" && f.peer == Some(*k))
            .count()
    };
    let (to_eve, to_dave) = (pairwise_to(&e_key), pairwise_to(&d_key));
    o.check(
        to_eve == 0 && to_dave > 0,
        format!(
            "6. over the whole scene the members sent Eve {to_eve} pairwise messages (no sender keys; the relay added her in part 4), Dave {to_dave} while he was a member"
        ),
    );

    o.evidence.push(Evidence::Table {
        caption:
            "What the thieves' copied group states decrypted (recorded ciphertexts from Alice)"
                .into(),
        header: vec!["stolen state".into(), "message".into(), "result".into()],
        rows: thefts,
    });
    o.evidence.push(Evidence::Text(
        "Rotation here is triggered by a removal and by a leave; chains also rotate on a schedule (after 1,000 messages or 7 days), which this scene does not wait for. The thieves hold only the group state: the copied profile also holds the pairwise sessions that carry new sender keys, so a thief following those as well (scene post-compromise) could learn a new key until those sessions take their next ratchet step. Not measured here.".into(),
    ));
    o.pcap = ctx.save_pcap(&w.proxy.capture(), "groups.pcap")?;
    o.log = w.proxy.log();
    Ok(o)
}
