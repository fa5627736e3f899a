//! Scene 4, availability: Bob's connection is cut mid-conversation and his client dies; Alice
//! keeps sending; Bob comes back and gets everything in order. Then the relay is killed with
//! messages queued, restarted on the same database, and still delivers them.

use std::time::Duration;

use sotto_client::{Client, DeliveryState};
use sotto_wire::RelayFrame;

use crate::proxy::{Dir, Verdict};

use crate::world::{PASSPHRASE, World, inbox, introduce, relay_healthy, send, sync, timed};
use crate::{Ctx, Error, Evidence, Outcome, Scenario, ScenarioFuture};

use super::name;

/// Scene 4.
pub struct Availability;

impl Scenario for Availability {
    fn id(&self) -> &'static str {
        "availability"
    }
    fn title(&self) -> &'static str {
        "Availability"
    }
    fn run<'a>(&'a self, ctx: &'a Ctx) -> ScenarioFuture<'a> {
        Box::pin(run(ctx))
    }
}

async fn run(ctx: &Ctx) -> Result<Outcome, Error> {
    let mut o = Outcome::new(
        "availability",
        "Availability",
        "cut Bob's connection mid-conversation (and kill his client) while Alice keeps sending; slow his link when he returns; then kill the relay outright with messages queued and restart it on the same database",
        "the relay keeps serving Alice; Bob reconnects and receives every message in order; after the relay restart the queued messages are still delivered",
    );
    o.headline = "cut Bob off; kill and restart the relay".into();
    let mut w = World::start().await?;
    let mut alice = w.client("alice").await?;
    let mut bob = w.client("bob").await?;
    name(&mut o, &alice, "alice");
    name(&mut o, &bob, "bob");
    introduce(&mut alice, "alice", &mut bob, "bob")?;
    let b_key = bob.identity();

    ctx.say("      Bob online (live connection); Alice sends the first message");
    timed(bob.connect()).await??;
    send(&mut alice, "bob", "avail 1: are you online?").await?;
    let mut got_live = false;
    for _ in 0..10 {
        timed(bob.next_events()).await??;
        if inbox(&bob, "alice")?.len() == 1 {
            got_live = true;
            break;
        }
    }
    o.check(got_live, "Bob received message 1 over his live connection");

    ctx.say("      the attacker cuts Bob's connection; Bob's client dies");
    let cut = w.proxy.sever(&b_key);
    drop(bob);
    o.check(
        cut >= 1,
        format!(
            "Bob's connection was cut ({})",
            crate::count(cut, "connection", "connections")
        ),
    );
    let mut sent = vec!["avail 1: are you online?".to_owned()];
    for i in 2..=6 {
        let t = format!("avail {i}: message while Bob is away");
        send(&mut alice, "bob", &t).await?;
        sent.push(t);
    }
    let accepted = alice
        .messages(Some("bob"))?
        .iter()
        .filter(|m| m.state >= DeliveryState::Accepted && m.state != DeliveryState::Failed)
        .count();
    o.check(
        accepted == 6,
        format!(
            "the relay kept serving Alice: {accepted}/6 of her messages accepted while Bob was gone"
        ),
    );

    ctx.say("      Bob restarts his client and reconnects over a link the attacker slows down");
    let mut bob = Client::open(&w.profile_dir("bob"), PASSPHRASE)?;
    w.proxy.set_policy(Box::new(move |ic| {
        if ic.dir == Dir::ToClient
            && ic.who == Some(b_key)
            && matches!(ic.relay_frame(), Some(RelayFrame::Deliver(_)))
        {
            Verdict::Delay(Duration::from_millis(40), "slowed Bob's link".into())
        } else {
            Verdict::Forward
        }
    }));
    sync(&mut bob).await?;
    w.proxy.clear_policy();
    let delayed = w
        .proxy
        .log()
        .iter()
        .filter(|f| f.action.starts_with("delayed"))
        .count();
    o.check(
        delayed >= 5,
        format!("the attacker held back each of the {delayed} deliveries to Bob by 40 ms"),
    );
    let texts: Vec<String> = inbox(&bob, "alice")?
        .into_iter()
        .filter_map(|m| m.text)
        .collect();
    o.check(
        texts == sent,
        format!(
            "after reconnecting Bob has {}/6 messages, {}",
            texts.len(),
            if texts == sent {
                "in the order sent"
            } else {
                "NOT all, or not in the order sent"
            }
        ),
    );

    ctx.say("      Alice sends 3 more while Bob is offline; then the relay is killed");
    for i in 7..=9 {
        let t = format!("avail {i}: queued before the crash");
        send(&mut alice, "bob", &t).await?;
        sent.push(t);
    }
    let old_addr = w.relay.as_ref().map(|r| r.addr());
    w.kill_relay();
    let down = match old_addr {
        Some(a) => !relay_healthy(a).await,
        None => false,
    };
    o.check(
        down,
        "the relay process is gone (its port no longer answers)",
    );
    let offline = sync(&mut bob).await;
    o.check(
        offline.is_err(),
        "while the relay is down Bob's sync fails cleanly (no crash, messages stay queued)",
    );
    ctx.say("      restarting the relay on the same SQLite file");
    let addr = w.restart_relay()?;
    o.check(relay_healthy(addr).await, "the restarted relay answers");
    sync(&mut bob).await?;
    let texts: Vec<String> = inbox(&bob, "alice")?
        .into_iter()
        .filter_map(|m| m.text)
        .collect();
    o.check(
        texts == sent,
        format!(
            "after the restart Bob has {}/9 messages, {}",
            texts.len(),
            if texts == sent {
                "in the order sent"
            } else {
                "NOT all, or not in the order sent"
            }
        ),
    );
    sync(&mut alice).await?;
    let delivered = alice
        .messages(Some("bob"))?
        .iter()
        .filter(|m| m.state == DeliveryState::Delivered)
        .count();
    o.check(
        delivered == 9,
        format!("Alice's client shows {delivered}/9 messages delivered (receipts came back)"),
    );
    o.evidence.push(Evidence::Table {
        caption: "Bob's history at the end (arrival order)".into(),
        header: vec!["#".into(), "text".into()],
        rows: texts
            .iter()
            .enumerate()
            .map(|(i, t)| vec![(i + 1).to_string(), t.clone()])
            .collect(),
    });
    o.pcap = ctx.save_pcap(&w.proxy.capture(), "availability.pcap")?;
    o.log = w.proxy.log();
    Ok(o)
}
