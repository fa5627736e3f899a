//! Signed rosters and Sender Keys groups: forgery, wrong hashes and epochs, rotation, removal and
//! addition secrecy, deferred distributions, snapshots.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use sotto_protocol::IdentityKeyPair;
use sotto_protocol::group::{
    ChangeOutcome, DistributionError, DistributionOutcome, GroupSession, ROTATE_AFTER_MESSAGES,
    ROTATE_AFTER_MS, SenderKeyGroup,
};
use sotto_protocol::roster::{
    Adopted, MAX_GROUP_SIZE, ROSTER_CHANGE_LEN, Roster, RosterChange, RosterError, RosterOp,
    derive_group_id,
};
use sotto_protocol::sender_keys::{
    ChainContext, GroupDecryptError, GroupEncryptError, SenderChain,
};

const NONCE: [u8; 32] = *b"nonce of the group under test...";

fn ids(n: u8) -> Vec<IdentityKeyPair> {
    (0..n)
        .map(|i| IdentityKeyPair::from_seed(&[i + 1; 32]))
        .collect()
}

/// Owner `ids[0]` creates the group and adds everyone else.
fn roster_of(ids: &[IdentityKeyPair]) -> Roster {
    let mut r = Roster::create_with_nonce(&ids[0], NONCE);
    for m in &ids[1..] {
        let c = r.propose_add(&ids[0], m.public()).unwrap();
        r.apply(&c).unwrap();
    }
    r
}

#[test]
fn roster_round_trips_and_verifies_from_the_log() {
    let p = ids(4);
    let r = roster_of(&p);
    assert_eq!(r.epoch(), 3);
    assert_eq!(r.members().len(), 4);
    let again = Roster::decode_log(&r.encode_log()).unwrap();
    assert_eq!(again, r);
    for c in r.log() {
        assert_eq!(c.encode().len(), ROSTER_CHANGE_LEN);
        assert_eq!(RosterChange::decode(&c.encode()).unwrap(), *c);
    }
    // Every truncation and every single-bit flip of the log is rejected.
    let log = r.encode_log();
    for n in 0..log.len() {
        assert!(Roster::decode_log(&log[..n]).is_err());
    }
    for bit in (0..log.len() * 8).step_by(7) {
        let mut t = log.clone();
        t[bit / 8] ^= 1 << (bit % 8);
        assert!(Roster::decode_log(&t).is_err(), "bit {bit}");
    }
}

#[test]
fn non_owner_changes_wrong_hash_and_wrong_epoch_are_rejected() {
    let p = ids(4);
    let mut r = roster_of(&p[..3]);
    let before = r.clone();
    let eve = &p[3];
    let gid = r.group_id();
    // A member (not the owner) tries to add someone.
    let forged = RosterChange::sign(
        &p[1],
        gid,
        r.epoch() + 1,
        r.hash(),
        RosterOp::Add,
        eve.public(),
    );
    assert_eq!(r.apply(&forged), Err(RosterError::BadSignature));
    // A member tries to remove another member.
    let forged = RosterChange::sign(
        &p[1],
        gid,
        r.epoch() + 1,
        r.hash(),
        RosterOp::Remove,
        p[2].public(),
    );
    assert_eq!(r.apply(&forged), Err(RosterError::BadSignature));
    // The owner's own change with a wrong previous hash or epoch.
    let wrong_hash = RosterChange::sign(
        &p[0],
        gid,
        r.epoch() + 1,
        [7; 32],
        RosterOp::Add,
        eve.public(),
    );
    assert_eq!(r.apply(&wrong_hash), Err(RosterError::WrongPreviousHash));
    for epoch in [r.epoch(), r.epoch() + 2, 0] {
        let c = RosterChange::sign(&p[0], gid, epoch, r.hash(), RosterOp::Add, eve.public());
        assert_eq!(r.apply(&c), Err(RosterError::WrongEpoch));
    }
    let other_group = RosterChange::sign(
        &p[0],
        [9; 16],
        r.epoch() + 1,
        r.hash(),
        RosterOp::Add,
        eve.public(),
    );
    assert_eq!(r.apply(&other_group), Err(RosterError::WrongGroup));
    // Replaying an old, once-valid change.
    let old = r.log()[1];
    assert_eq!(r.apply(&old), Err(RosterError::WrongEpoch));
    // A leave signed by someone other than the leaver; the owner cannot be removed.
    let c = RosterChange::sign(
        &p[0],
        gid,
        r.epoch() + 1,
        r.hash(),
        RosterOp::Leave,
        p[1].public(),
    );
    assert_eq!(r.apply(&c), Err(RosterError::BadSignature));
    assert_eq!(
        r.propose_remove(&p[0], p[0].public()),
        Err(RosterError::InvalidOperation)
    );
    assert_eq!(r.propose_leave(&p[0]), Err(RosterError::InvalidOperation));
    assert_eq!(
        r.propose_add(&p[0], p[1].public()),
        Err(RosterError::InvalidOperation)
    );
    assert_eq!(r, before, "rejections leave the roster unchanged");
    // A valid leave by the member itself.
    let leave = r.propose_leave(&p[2]).unwrap();
    r.apply(&leave).unwrap();
    assert!(!r.is_member(&p[2].public()));
    // A forged log (member-signed add spliced in) does not verify.
    let mut log: Vec<RosterChange> = before.log().to_vec();
    log.push(RosterChange::sign(
        &p[1],
        gid,
        before.epoch() + 1,
        before.hash(),
        RosterOp::Add,
        eve.public(),
    ));
    assert_eq!(Roster::from_log(&log), Err(RosterError::BadSignature));
}

#[test]
fn group_size_is_bounded() {
    let owner = IdentityKeyPair::from_seed(&[1; 32]);
    let mut r = Roster::create(&mut common::rng(2), &owner);
    let mut rng = common::rng(3);
    for _ in 1..MAX_GROUP_SIZE {
        let m = IdentityKeyPair::generate(&mut rng);
        r.apply(&r.propose_add(&owner, m.public()).unwrap())
            .unwrap();
    }
    let extra = IdentityKeyPair::generate(&mut rng);
    assert_eq!(
        r.propose_add(&owner, extra.public()),
        Err(RosterError::Full)
    );
}

struct Member {
    id: IdentityKeyPair,
    group: SenderKeyGroup,
}

/// Everyone rotates and installs everyone else's distribution.
fn rotate_all(members: &mut [Member], rng: &mut impl rand_core::CryptoRng) {
    let dists: Vec<_> = members
        .iter_mut()
        .map(|m| (m.id.public(), m.group.rotate(rng, 0).unwrap()))
        .collect();
    for m in members.iter_mut() {
        for (sender, d) in &dists {
            if *sender != m.id.public() && m.group.roster().is_member(sender) {
                assert_eq!(
                    m.group.process_distribution(sender, d),
                    Ok(DistributionOutcome::Installed)
                );
            }
        }
    }
}

#[test]
fn removal_and_addition_secrecy() {
    let mut rng = common::rng(5);
    let p = ids(4);
    let r = roster_of(&p[..3]);
    let mut ms: Vec<Member> = p[..3]
        .iter()
        .map(|id| Member {
            id: id.clone(),
            group: SenderKeyGroup::new(id.public(), r.clone()),
        })
        .collect();
    rotate_all(&mut ms, &mut rng);
    let early = ms[0].group.encrypt(b"before dave").unwrap();
    let alice = p[0].public();
    assert_eq!(ms[1].group.decrypt(&alice, &early).unwrap(), b"before dave");
    assert_eq!(ms[2].group.decrypt(&alice, &early).unwrap(), b"before dave");

    // Carol is removed: everyone applies the change and rotates.
    let removal = ms[0]
        .group
        .roster()
        .propose_remove(&p[0], p[2].public())
        .unwrap();
    let mut carol = ms.pop().unwrap();
    for m in &mut ms {
        m.group.apply_change(&removal).unwrap();
        assert!(m.group.needs_rotation(0));
        assert_eq!(m.group.encrypt(b"x"), Err(GroupEncryptError::NoSenderChain));
    }
    carol.group.apply_change(&removal).unwrap();
    assert!(!carol.group.is_active());
    rotate_all(&mut ms, &mut rng);
    let after = ms[0].group.encrypt(b"after carol").unwrap();
    assert_eq!(ms[1].group.decrypt(&alice, &after).unwrap(), b"after carol");
    assert!(carol.group.decrypt(&alice, &after).is_err());
    // Even with Carol's pre-removal state (a stolen copy), the new chain is unknown.
    let mut stolen = SenderKeyGroup::new(p[2].public(), r.clone());
    let d_old = ms[1].group.current_distribution().unwrap();
    assert_eq!(
        stolen.process_distribution(&p[1].public(), &d_old),
        Ok(DistributionOutcome::Deferred),
        "a key for a later epoch is held, not installed"
    );
    assert_eq!(
        stolen.decrypt(&alice, &after),
        Err(GroupDecryptError::RosterAhead)
    );
    // And Carol's messages are no longer accepted from her.
    assert_eq!(
        ms[1].group.decrypt(&p[2].public(), &early),
        Err(GroupDecryptError::NotMember)
    );

    // Dave is added later: he cannot read what was sent before.
    let add = ms[0]
        .group
        .roster()
        .propose_add(&p[0], p[3].public())
        .unwrap();
    for m in &mut ms {
        m.group.apply_change(&add).unwrap();
    }
    let mut roster_d = ms[0].group.roster().clone();
    roster_d = Roster::decode_log(&roster_d.encode_log()).unwrap();
    ms.push(Member {
        id: p[3].clone(),
        group: SenderKeyGroup::new(p[3].public(), roster_d),
    });
    rotate_all(&mut ms, &mut rng);
    for old in [&early, &after] {
        assert!(ms[2].group.decrypt(&alice, old).is_err());
    }
    let now = ms[0].group.encrypt(b"welcome dave").unwrap();
    assert_eq!(ms[2].group.decrypt(&alice, &now).unwrap(), b"welcome dave");
    assert_eq!(ms[1].group.decrypt(&alice, &now).unwrap(), b"welcome dave");
}

#[test]
fn distributions_from_non_members_and_other_rosters_are_refused() {
    let mut rng = common::rng(6);
    let p = ids(4);
    let r = roster_of(&p[..3]);
    let mut bob = SenderKeyGroup::new(p[1].public(), r.clone());
    let mut eve_view = SenderKeyGroup::new(p[3].public(), {
        // Eve builds her own group that lists Bob and Carol (she cannot reuse Alice's group id).
        let mut own = Roster::create_with_nonce(&p[3], NONCE);
        own.apply(&own.propose_add(&p[3], p[1].public()).unwrap())
            .unwrap();
        own.apply(&own.propose_add(&p[3], p[2].public()).unwrap())
            .unwrap();
        own
    });
    let d = eve_view.rotate(&mut rng, 0).unwrap();
    let before = bob.snapshot();
    assert_eq!(
        bob.process_distribution(&p[3].public(), &d),
        Err(DistributionError::WrongGroup)
    );
    assert_eq!(bob.snapshot(), before, "refused: unchanged");
    let mut alice = SenderKeyGroup::new(p[0].public(), r.clone());
    let d_old = alice.rotate(&mut rng, 0).unwrap();
    // The roster moves on; a key for the old epoch is another roster's.
    let c = r.propose_remove(&p[0], p[2].public()).unwrap();
    bob.apply_change(&c).unwrap();
    assert_eq!(
        bob.process_distribution(&p[0].public(), &d_old),
        Err(DistributionError::AnotherRoster)
    );
    // A message from a relay-injected non-member is refused before any crypto.
    let mut eve_msgs = eve_view.clone();
    let m = eve_msgs.encrypt(b"i am in").unwrap();
    assert_eq!(
        bob.decrypt(&p[3].public(), &m),
        Err(GroupDecryptError::NotMember)
    );
}

#[test]
fn deferred_distribution_installs_when_the_roster_catches_up() {
    let mut rng = common::rng(7);
    let p = ids(3);
    let r = roster_of(&p[..3]);
    let mut alice = SenderKeyGroup::new(p[0].public(), r.clone());
    let mut bob = SenderKeyGroup::new(p[1].public(), r.clone());
    let mut carol = SenderKeyGroup::new(p[2].public(), r.clone());
    let leave = r.propose_leave(&p[2]).unwrap();
    // Alice processes the leave and rotates; Bob receives her key before the leave itself.
    alice.apply_change(&leave).unwrap();
    carol.apply_change(&leave).unwrap();
    let d = alice.rotate(&mut rng, 0).unwrap();
    assert_eq!(
        bob.process_distribution(&p[0].public(), &d),
        Ok(DistributionOutcome::Deferred)
    );
    let m = alice.encrypt(b"hi").unwrap();
    assert_eq!(
        bob.decrypt(&p[0].public(), &m),
        Err(GroupDecryptError::RosterAhead)
    );
    bob.apply_change(&leave).unwrap();
    assert_eq!(bob.decrypt(&p[0].public(), &m).unwrap(), b"hi");
}

#[test]
fn rotation_schedule_and_snapshots() {
    let mut rng = common::rng(8);
    let p = ids(2);
    let r = roster_of(&p);
    let mut a = SenderKeyGroup::new(p[0].public(), r.clone());
    let mut b = SenderKeyGroup::new(p[1].public(), r);
    assert!(a.needs_rotation(0));
    let d = a.rotate(&mut rng, 1_000).unwrap();
    b.process_distribution(&p[0].public(), &d).unwrap();
    assert!(!a.needs_rotation(1_000));
    assert!(a.needs_rotation(1_000 + ROTATE_AFTER_MS));
    let mut msgs = Vec::new();
    for i in 0..ROTATE_AFTER_MESSAGES {
        assert!(!a.needs_rotation(2_000));
        msgs.push(a.encrypt(format!("m{i}").as_bytes()).unwrap());
    }
    assert!(a.needs_rotation(2_000), "1000 messages: rotate");
    // Snapshots survive a restart on both sides; skipped seeds stay bounded.
    let last = msgs.pop().unwrap();
    let mut b2 = SenderKeyGroup::restore(&b.snapshot()).unwrap();
    assert_eq!(b2.decrypt(&p[0].public(), &last).unwrap(), b"m999");
    assert_eq!(b2.skipped_count(), 999);
    let a2 = SenderKeyGroup::restore(&a.snapshot()).unwrap();
    assert_eq!(a2.snapshot(), a.snapshot());
    assert_eq!(a2.own_iteration(), Some(ROTATE_AFTER_MESSAGES));
    // Truncated snapshots are errors, not panics.
    let snap = b2.snapshot();
    for n in (0..snap.len()).step_by(97) {
        assert!(SenderKeyGroup::restore(&snap[..n]).is_err());
    }
}

#[test]
fn restoring_our_own_log_checks_structure_but_not_signatures() {
    let p = ids(4);
    let r = roster_of(&p);
    assert_eq!(Roster::restore_log(&r.encode_log()).unwrap(), r);
    // A network log with a bad signature is refused; `restore_log` (our own sealed snapshots
    // only) does not spend an Ed25519 verification per change, so it does not notice.
    let mut bad_sig = r.encode_log();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    assert_eq!(Roster::decode_log(&bad_sig), Err(RosterError::BadSignature));
    assert!(Roster::restore_log(&bad_sig).is_ok());
    // Everything else is still checked: the hash chain, the epochs, truncation.
    let mut log: Vec<RosterChange> = r.log().to_vec();
    log[2].prev_hash[0] ^= 1;
    let mut bytes = r.encode_log();
    bytes.truncate(5);
    for c in &log {
        bytes.extend_from_slice(&c.encode());
    }
    assert_eq!(
        Roster::restore_log(&bytes),
        Err(RosterError::WrongPreviousHash)
    );
    let log = r.encode_log();
    for n in 0..log.len() {
        assert!(Roster::restore_log(&log[..n]).is_err());
    }
}

fn group(id: &IdentityKeyPair, r: &Roster) -> SenderKeyGroup {
    SenderKeyGroup::new(id.public(), r.clone())
}

#[test]
fn a_group_id_cannot_be_squatted() {
    let p = ids(3);
    let real = roster_of(&p[..2]);
    assert_eq!(real.group_id(), derive_group_id(&p[0].public(), &NONCE));
    // Eve signs a creation carrying Alice's group id (with Alice's nonce, or any other).
    for nonce in [NONCE, [5; 32]] {
        let squat = RosterChange::sign(
            &p[2],
            real.group_id(),
            0,
            nonce,
            RosterOp::Create,
            p[2].public(),
        );
        assert_eq!(Roster::from_log(&[squat]), Err(RosterError::WrongGroupId));
        assert_eq!(
            Roster::restore_log(&{
                let mut b = vec![0x0A, 0, 0, 0, 1];
                b.extend_from_slice(&squat.encode());
                b
            }),
            Err(RosterError::WrongGroupId),
            "checked on every replay, our own storage included"
        );
    }
    // Alice's own creation with a changed nonce is refused too.
    let mut log = real.log().to_vec();
    log[0].prev_hash[0] ^= 1;
    assert!(Roster::from_log(&log).is_err());
}

#[test]
fn a_forwarded_distribution_is_refused_and_the_ciphertext_is_not_mallorys() {
    let mut rng = common::rng(20);
    let p = ids(3); // Alice (owner), Bob, Mallory
    let r = roster_of(&p);
    let (alice, bob, mallory) = (p[0].public(), p[1].public(), p[2].public());
    let mut a = group(&p[0], &r);
    let mut b = group(&p[1], &r);
    let d = b.rotate(&mut rng, 0).unwrap();
    // Mallory forwards Bob's distribution over her own pairwise session.
    let before = a.snapshot();
    assert_eq!(
        a.process_distribution(&mallory, &d),
        Err(DistributionError::WrongSender)
    );
    assert_eq!(a.snapshot(), before);
    // Bob's own copy installs; Mallory re-uploads his ciphertext as hers.
    a.process_distribution(&bob, &d).unwrap();
    let m = b.encrypt(b"bob's words").unwrap();
    assert!(a.decrypt(&mallory, &m).is_err(), "not shown as Mallory's");
    assert_eq!(a.decrypt(&bob, &m).unwrap(), b"bob's words");
    // A Mallory who even holds Bob's signing seed (say, stolen) and binds it to herself: the
    // signing key is already installed for Bob.
    let stolen = SenderChain::from_parts(
        ChainContext {
            group_id: r.group_id(),
            sender: mallory,
            epoch: r.epoch(),
            roster_hash: r.hash(),
        },
        7,
        0,
        [9; 32],
        &signing_seed_of(&b),
        (0, 0),
    );
    assert_eq!(
        a.process_distribution(&mallory, &stolen.distribution()),
        Err(DistributionError::SigningKeyInUse)
    );
    // And our own signing key bound to someone else.
    a.rotate(&mut rng, 0).unwrap();
    let ours = SenderChain::from_parts(
        ChainContext {
            group_id: r.group_id(),
            sender: mallory,
            epoch: r.epoch(),
            roster_hash: r.hash(),
        },
        8,
        0,
        [9; 32],
        &signing_seed_of(&a),
        (0, 0),
    );
    assert_eq!(
        a.process_distribution(&mallory, &ours.distribution()),
        Err(DistributionError::SigningKeyInUse)
    );
    let _ = alice;
}

fn signing_seed_of(g: &SenderKeyGroup) -> [u8; 32] {
    // The seed behind the group's current chain, via its snapshot (bytes 1 + 32 + 4 + log ...).
    let snap = g.snapshot();
    let log_len = u32::from_be_bytes(snap[33..37].try_into().unwrap()) as usize;
    let chain = 37 + log_len + 1;
    let chain =
        SenderChain::restore(&snap[chain..chain + 1 + 16 + 32 + 8 + 32 + 4 + 4 + 32 + 32 + 8])
            .unwrap();
    chain.hazmat_signing_seed()
}

#[test]
fn a_thief_with_bobs_state_from_before_a_rotation_cannot_forge_after_it() {
    let mut rng = common::rng(21);
    let p = ids(3);
    let r = roster_of(&p);
    let (alice_id, bob_id) = (p[0].public(), p[1].public());
    let mut a = group(&p[0], &r);
    let mut b = group(&p[1], &r);
    a.process_distribution(&bob_id, &b.rotate(&mut rng, 0).unwrap())
        .unwrap();
    let in_flight = b.encrypt(b"sent before the change").unwrap();
    let mut thief = b.clone();
    // Carol leaves: everyone applies it, Bob rotates and Alice installs his new chain.
    let leave = r.propose_leave(&p[2]).unwrap();
    a.apply_change(&leave).unwrap();
    b.apply_change(&leave).unwrap();
    a.process_distribution(&bob_id, &b.rotate(&mut rng, 0).unwrap())
        .unwrap();
    // What Bob sent before still reads (announced end: 1 message); the thief's forgery on the
    // old chain does not, and neither does one claiming the new roster.
    assert_eq!(
        a.decrypt(&bob_id, &in_flight).unwrap(),
        b"sent before the change"
    );
    let before = a.snapshot();
    let forged = thief.encrypt(b"forged by the thief").unwrap();
    assert_eq!(a.decrypt(&bob_id, &forged), Err(GroupDecryptError::Retired));
    assert_eq!(a.snapshot(), before);
    assert_eq!(
        a.decrypt(&bob_id, &b.encrypt(b"new").unwrap()).unwrap(),
        b"new"
    );
    let _ = alice_id;
}

/// Carol leaves while Alice (the owner) adds Dave: both changes extend the same roster.
struct Fork {
    p: Vec<IdentityKeyPair>,
    r: Roster,
    leave: RosterChange,
    add: RosterChange,
}

fn fork() -> Fork {
    let p = ids(4);
    let r = roster_of(&p[..3]);
    let leave = r.propose_leave(&p[2]).unwrap();
    let add = r.propose_add(&p[0], p[3].public()).unwrap();
    Fork { p, r, leave, add }
}

#[test]
fn a_roster_fork_is_resolved_by_the_owners_log() {
    let mut rng = common::rng(22);
    let Fork { p, r, leave, add } = fork();
    let (alice, bob, carol) = (p[0].public(), p[1].public(), p[2].public());
    let mut a = group(&p[0], &r);
    let mut b = group(&p[1], &r);
    // The relay gives Alice her own add first and Bob the leave first.
    a.apply_change(&add).unwrap();
    b.receive_change(&leave).unwrap();
    assert_eq!(a.roster().epoch(), b.roster().epoch());
    assert_ne!(a.roster().hash(), b.roster().hash());
    // Keys do not cross branches: Bob's key for his branch is refused as a fork at Alice's.
    let bobs_fork_key = b.rotate(&mut rng, 0).unwrap();
    assert_eq!(
        a.process_distribution(&bob, &bobs_fork_key),
        Err(DistributionError::UnknownRoster)
    );
    // Bob receives the owner's add: the owner's branch replaces the leave.
    assert_eq!(
        b.receive_change(&add),
        Ok(ChangeOutcome::Adopted(vec![leave]))
    );
    assert_eq!(b.roster(), a.roster());
    assert!(b.roster().is_member(&carol));
    // Alice receives the leave: it forks off her log, so she re-issues it as a removal.
    assert!(a.receive_change(&leave).is_err());
    assert!(a.forked_leave(&leave));
    let remove = a.roster().propose_remove(&p[0], carol).unwrap();
    a.apply_change(&remove).unwrap();
    assert_eq!(b.receive_change(&remove), Ok(ChangeOutcome::Applied));
    assert_eq!(a.roster(), b.roster());
    assert!(!a.roster().is_member(&carol));
    // The branches are one again: keys install, messages read, Bob's old fork key stays out.
    assert_eq!(
        a.process_distribution(&bob, &bobs_fork_key),
        Err(DistributionError::UnknownRoster)
    );
    a.process_distribution(&bob, &b.rotate(&mut rng, 0).unwrap())
        .unwrap();
    b.process_distribution(&alice, &a.rotate(&mut rng, 0).unwrap())
        .unwrap();
    assert_eq!(
        a.decrypt(&bob, &b.encrypt(b"one roster").unwrap()).unwrap(),
        b"one roster"
    );
    assert_eq!(
        b.decrypt(&alice, &a.encrypt(b"again").unwrap()).unwrap(),
        b"again"
    );
    // The same leave replayed later is not re-issued (Carol is no longer a member).
    assert!(!a.forked_leave(&leave));
}

#[test]
fn the_owners_branch_never_undoes_owner_changes_or_our_own_leave() {
    let Fork { p, r, leave, add } = fork();
    // Carol's own view: her leave is not undone by the owner's add.
    let mut c = group(&p[2], &r);
    c.apply_change(&leave).unwrap();
    assert_eq!(c.receive_change(&add), Err(RosterError::Conflict));
    assert!(!c.is_active());
    // Two owner-signed changes for one position: equivocation, refused.
    let other_add = r
        .propose_add(&p[0], IdentityKeyPair::from_seed(&[77; 32]).public())
        .unwrap();
    let mut b = group(&p[1], &r);
    b.apply_change(&add).unwrap();
    let before = b.snapshot();
    assert_eq!(
        b.receive_change(&other_add),
        Err(RosterError::OwnerEquivocation)
    );
    assert_eq!(b.snapshot(), before);
    // A leave replayed from before the member was re-added is not re-issued by the owner.
    let mut a = group(&p[0], &r);
    a.apply_change(&leave).unwrap();
    let re_add = a.roster().propose_add(&p[0], p[2].public()).unwrap();
    a.apply_change(&re_add).unwrap();
    assert!(!a.forked_leave(&leave));
}

#[test]
fn a_later_roster_key_shows_a_withheld_removal_and_pauses_sending() {
    let mut rng = common::rng(23);
    let p = ids(3);
    let r = roster_of(&p);
    let (alice, carol) = (p[0].public(), p[2].public());
    let mut a = group(&p[0], &r);
    let mut b = group(&p[1], &r);
    b.rotate(&mut rng, 0).unwrap();
    assert!(b.encrypt(b"before").is_ok());
    // Alice removes Carol; the relay withholds the change from Bob but not Alice's new key.
    let remove = r.propose_remove(&p[0], carol).unwrap();
    a.apply_change(&remove).unwrap();
    let d = a.rotate(&mut rng, 0).unwrap();
    assert_eq!(
        b.process_distribution(&alice, &d),
        Ok(DistributionOutcome::Deferred)
    );
    assert!(b.is_paused());
    assert_eq!(b.roster_ahead(), Some((alice, 1 + r.epoch())));
    assert_eq!(
        b.encrypt(b"to a chain Carol knows"),
        Err(GroupEncryptError::RosterBehind)
    );
    // The owner's log arrives (Bob asked for it): Bob catches up, Carol is out, sending resumes.
    let owners = Roster::decode_log(&a.roster().encode_log()).unwrap();
    assert_eq!(b.sync_from_owner(&owners), Ok(Adopted::Extended));
    assert!(!b.is_paused());
    assert!(!b.roster().is_member(&carol));
    assert!(b.has_current_key(&alice), "the deferred key installed");
    assert_eq!(b.encrypt(b"x"), Err(GroupEncryptError::NoSenderChain));
    b.rotate(&mut rng, 0).unwrap();
    assert!(b.encrypt(b"after").is_ok());
    // The owner never pauses.
    let mut a2 = group(&p[0], &r);
    let mut c = group(&p[2], &r);
    let leave = r.propose_leave(&p[2]).unwrap();
    c.apply_change(&leave).unwrap();
    let mut b2 = group(&p[1], &r);
    b2.apply_change(&leave).unwrap();
    assert_eq!(
        a2.process_distribution(&p[1].public(), &b2.rotate(&mut rng, 0).unwrap()),
        Ok(DistributionOutcome::Deferred)
    );
    assert!(!a2.is_paused());
}

#[test]
fn non_members_cannot_fill_the_deferred_keys() {
    let mut rng = common::rng(24);
    let p = ids(4);
    let r = roster_of(&p[..3]);
    let mut b = group(&p[1], &r);
    let outsider = SenderChain::new(
        &mut rng,
        ChainContext {
            group_id: r.group_id(),
            sender: p[3].public(),
            epoch: r.epoch() + 5,
            roster_hash: [1; 32],
        },
        None,
    );
    let before = b.snapshot();
    assert_eq!(
        b.process_distribution(&p[3].public(), &outsider.distribution()),
        Err(DistributionError::NotMember)
    );
    assert_eq!(b.snapshot(), before);
    assert!(!b.is_paused());
    // A member gets one deferred key at a time: a second replaces the first.
    let member = |epoch, h| {
        SenderChain::new(
            &mut common::rng(h),
            ChainContext {
                group_id: r.group_id(),
                sender: p[2].public(),
                epoch,
                roster_hash: [h; 32],
            },
            None,
        )
        .distribution()
    };
    for (e, h) in [(5, 1), (6, 2), (7, 3)] {
        assert_eq!(
            b.process_distribution(&p[2].public(), &member(r.epoch() + e, h)),
            Ok(DistributionOutcome::Deferred)
        );
    }
    let one = b.snapshot().len();
    b.process_distribution(&p[2].public(), &member(r.epoch() + 8, 4))
        .unwrap();
    assert_eq!(b.snapshot().len(), one);
}
