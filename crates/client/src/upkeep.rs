//! Prekey upkeep: keeping one-time prekeys on the relay, and rotating the signed prekey.
//!
//! ```text
//!   AuthOk or PrekeysLow (counts possibly stale) ─▶ top-up due
//!   top-up ─▶ empty UploadPrekeys ─▶ PrekeysStored(fresh counts)
//!          ─▶ per kind below PREKEY_LOW: evict our oldest unused keys beyond LOCAL_MAX
//!          ─▶ per chunk: generate, persist the private halves, upload ─▶ fresh counts
//!             PrekeyLimit ─▶ the relay is full: forget the chunk (never published), stop
//! ```
//!
//! Why this shape (issue 12, item 3): a stranger can fetch a victim's bundle in bursts, and every
//! low fetch sends the owner a `PrekeysLow`. Topping up from the counts in each notice overshot
//! the relay's cap (`PrekeyLimit`), and the private halves of keys handed out but never used
//! filled the local store until no new key could be made. Now a top-up is computed from counts
//! the relay gives at that moment, any number of notices cause at most one top-up at a time, a
//! full relay is not an error, and the oldest unused keys are evicted so new ones can always be
//! made. The relay hands out the lowest id first, so the keys it still holds are our newest:
//! eviction keeps at least [`LOCAL_MAX`] − [`PREKEY_TARGET`] of the newest, more than the relay
//! can hold after a top-up. The residual cost: someone whose fetched key was evicted before they
//! used it (after a drain of ~900 keys) sends an initial message the owner cannot decrypt.

use sotto_protocol::PrekeyStore;
use sotto_transport::Outcome;
use sotto_wire::{ErrorCode, PrekeyCounts, PrekeyRecord, UploadPrekeysOut};

use crate::Error;
use crate::client::{Client, Event, SIGNED_PREKEY_ROTATION, now_ms};

/// One-time prekeys of each kind the client keeps on the relay.
pub(crate) const PREKEY_TARGET: u32 = 100;
/// Top up when the relay holds fewer than this (the relay's default notice threshold).
pub(crate) const PREKEY_LOW: u32 = 20;
/// Unused one-time prekeys of each kind kept locally; the oldest beyond it are evicted.
pub(crate) const LOCAL_MAX: usize = 1000;
/// ML-KEM public keys are large: this many per upload frame.
const KEM_PER_UPLOAD: usize = 25;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    X25519,
    Kem,
}

impl Client {
    /// Runs the prekey top-up if one is due (and only one at a time).
    pub(crate) async fn upkeep(&mut self) -> Result<Vec<Event>, Error> {
        if !self.prekeys_due || self.relay.is_none() {
            return Ok(vec![]);
        }
        self.prekeys_due = false;
        self.top_up(false).await
    }

    /// The relay's counts now (an empty upload stores nothing and answers with them).
    async fn fresh_counts(&mut self) -> Result<PrekeyCounts, Error> {
        match self
            .call(|s| s.upload_prekeys(UploadPrekeysOut::default()))
            .await?
        {
            Outcome::PrekeysStored(c) => Ok(c),
            Outcome::Rejected(e) => Err(Error::Rejected(e.code)),
            _ => Err(Error::Unreachable("unexpected reply to an upload".into())),
        }
    }

    /// Uploads one chunk; `Ok(None)` when the relay is full (`PrekeyLimit`).
    async fn upload_chunk(&mut self, up: UploadPrekeysOut) -> Result<Option<PrekeyCounts>, Error> {
        match self.call(|s| s.upload_prekeys(up)).await? {
            Outcome::PrekeysStored(c) => Ok(Some(c)),
            Outcome::Rejected(e) if e.code == ErrorCode::PrekeyLimit => Ok(None),
            Outcome::Rejected(e) => Err(Error::Rejected(e.code)),
            _ => Err(Error::Unreachable("unexpected reply to an upload".into())),
        }
    }

    /// Tops one-time prekeys up to [`PREKEY_TARGET`] from fresh counts (`force`: add a full set
    /// of each kind whatever the counts). A transient refusal (rate limit,
    /// overload) leaves the top-up due for the next round instead of failing the caller.
    pub(crate) async fn top_up(&mut self, force: bool) -> Result<Vec<Event>, Error> {
        match self.top_up_inner(force).await {
            Err(Error::Rejected(code)) if code.is_transient() => {
                self.prekeys_due = true;
                Ok(vec![])
            }
            r => r,
        }
    }

    async fn top_up_inner(&mut self, force: bool) -> Result<Vec<Event>, Error> {
        let counts = self.fresh_counts().await?;
        let mut added = (0u32, 0u32);
        for kind in [Kind::X25519, Kind::Kem] {
            let have = match kind {
                Kind::X25519 => counts.x25519,
                Kind::Kem => counts.kem,
            };
            if !force && have >= PREKEY_LOW {
                continue;
            }
            let want = PREKEY_TARGET.saturating_sub(if force { 0 } else { have }) as usize;
            let n = self.publish(kind, want).await?;
            match kind {
                Kind::X25519 => added.0 = n,
                Kind::Kem => added.1 = n,
            }
        }
        Ok(if added == (0, 0) {
            vec![]
        } else {
            vec![Event::PrekeysReplenished {
                x25519: added.0,
                kem: added.1,
            }]
        })
    }

    /// Generates and uploads `want` one-time prekeys of `kind`, chunk by chunk; returns how many
    /// the relay stored.
    async fn publish(&mut self, kind: Kind, want: usize) -> Result<u32, Error> {
        let chunk = match kind {
            Kind::X25519 => sotto_wire::MAX_PREKEYS_PER_UPLOAD,
            Kind::Kem => KEM_PER_UPLOAD,
        };
        let mut stored = 0u32;
        let mut left = want;
        while left > 0 {
            let n = left.min(chunk);
            let before: PrekeyStore = self.prekeys.clone();
            let up = self.stage_chunk(kind, n);
            let made = up.one_time_x25519.len() + up.one_time_kem.len();
            if made == 0 {
                break;
            }
            // The private halves are on disk before the public halves leave.
            self.save_prekeys_and_account()?;
            match self.upload_chunk(up).await {
                Ok(Some(_)) => {
                    stored += made as u32;
                    left = left.saturating_sub(made);
                }
                Ok(None) => {
                    // The relay is full (`PrekeyLimit` is "full", not an error): nothing of this
                    // chunk was stored, so nobody can ever be handed these keys. Forget them
                    // (their ids were never published, so they may be allocated again).
                    self.prekeys = before;
                    self.save_prekeys_and_account()?;
                    break;
                }
                Err(e) => {
                    // Unknown whether the relay stored the chunk: keep the keys (eviction drops
                    // them in time if they were never published).
                    return Err(e);
                }
            }
        }
        Ok(stored)
    }

    /// Makes `n` new one-time prekeys of `kind` (evicting our oldest unused ones beyond
    /// [`LOCAL_MAX`] first, so this always succeeds) and returns their upload.
    fn stage_chunk(&mut self, kind: Kind, n: usize) -> UploadPrekeysOut {
        let keep = LOCAL_MAX.saturating_sub(n);
        match kind {
            Kind::X25519 => {
                self.prekeys.evict_oldest_one_time_prekeys(keep, usize::MAX);
                let keys = self
                    .prekeys
                    .generate_one_time_prekeys(&mut self.store.rng, n);
                UploadPrekeysOut {
                    one_time_x25519: keys
                        .iter()
                        .map(|p| PrekeyRecord {
                            id: p.id,
                            blob: p.encode(),
                        })
                        .collect(),
                    ..Default::default()
                }
            }
            Kind::Kem => {
                self.prekeys.evict_oldest_one_time_prekeys(usize::MAX, keep);
                let keys =
                    self.prekeys
                        .generate_kem_prekeys(&mut self.store.rng, &self.identity, n);
                UploadPrekeysOut {
                    one_time_kem: keys
                        .iter()
                        .map(|p| PrekeyRecord {
                            id: p.id,
                            blob: p.encode(),
                        })
                        .collect(),
                    ..Default::default()
                }
            }
        }
    }

    /// Publishes the signed and last-resort prekeys and a full set of one-time prekeys (a new
    /// relay has none).
    pub(crate) async fn publish_all(&mut self) -> Result<Vec<Event>, Error> {
        let upload = UploadPrekeysOut {
            signed_prekey: self.prekeys.signed_prekey().map(|s| PrekeyRecord {
                id: s.id,
                blob: s.encode(),
            }),
            last_resort_kem: self.prekeys.last_resort_kem_prekey().map(|k| PrekeyRecord {
                id: k.id,
                blob: k.encode(),
            }),
            ..Default::default()
        };
        match self.upload_chunk(upload).await? {
            Some(_) => {}
            None => return Err(Error::Rejected(ErrorCode::PrekeyLimit)),
        }
        self.prekeys_due = false;
        let mut events = self.top_up(false).await?;
        events.append(&mut self.pending);
        Ok(events)
    }

    /// Rotates the signed and last-resort prekeys when they are older than
    /// [`SIGNED_PREKEY_ROTATION`], and publishes them; a rotation whose upload was refused (rate
    /// limit) is published at the next connection, never rotated again first (the keys the
    /// relay serves must stay among the retained ones).
    pub(crate) async fn rotate_if_due(&mut self) -> Result<Vec<Event>, Error> {
        let age = now_ms().saturating_sub(self.account.signed_prekey_rotated_ms);
        let due = u128::from(age) >= SIGNED_PREKEY_ROTATION.as_millis();
        if !due && !self.account.signed_prekey_unpublished {
            return Ok(vec![]);
        }
        if due && !self.account.signed_prekey_unpublished {
            self.prekeys
                .rotate_signed_prekey(&mut self.store.rng, &self.identity);
            self.prekeys
                .rotate_last_resort_kem_prekey(&mut self.store.rng, &self.identity);
            self.account.signed_prekey_rotated_ms = now_ms();
            self.account.signed_prekey_unpublished = true;
            self.save_prekeys_and_account()?;
        }
        let up = UploadPrekeysOut {
            signed_prekey: self.prekeys.signed_prekey().map(|s| PrekeyRecord {
                id: s.id,
                blob: s.encode(),
            }),
            last_resort_kem: self.prekeys.last_resort_kem_prekey().map(|k| PrekeyRecord {
                id: k.id,
                blob: k.encode(),
            }),
            ..Default::default()
        };
        match self.upload_chunk(up).await {
            Ok(_) => {
                self.account.signed_prekey_unpublished = false;
                self.save_prekeys_and_account()?;
                Ok(vec![Event::SignedPrekeyRotated])
            }
            Err(Error::Rejected(code)) if code.is_transient() => Ok(vec![]),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KdfParams;

    /// A victim whose keys were handed out ten thousand times over (the protocol store's cap)
    /// still makes a full chunk of new ones, evicting the oldest, and keeps the newest.
    #[test]
    fn new_one_time_prekeys_can_always_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Client::init(dir.path(), b"pw", KdfParams::INSECURE_TEST).unwrap();
        let cap = sotto_protocol::prekeys::MAX_ONE_TIME_PREKEYS;
        c.prekeys.generate_one_time_prekeys(&mut c.store.rng, cap);
        assert_eq!(c.prekeys.one_time_prekey_count(), cap);
        assert!(
            c.prekeys
                .generate_one_time_prekeys(&mut c.store.rng, 1)
                .is_empty(),
            "the protocol store is full"
        );
        let up = c.stage_chunk(Kind::X25519, 100);
        assert_eq!(up.one_time_x25519.len(), 100, "no new keys at the cap");
        assert_eq!(c.prekeys.one_time_prekey_count(), LOCAL_MAX);
        // ML-KEM the same way (a smaller fill: each key is a KEM key pair).
        c.prekeys
            .generate_kem_prekeys(&mut c.store.rng, &c.identity, LOCAL_MAX);
        let up = c.stage_chunk(Kind::Kem, 25);
        assert_eq!(up.one_time_kem.len(), 25);
        assert_eq!(c.prekeys.one_time_kem_prekey_count(), LOCAL_MAX);
        assert!(
            c.prekeys.last_resort_kem_prekey().is_some(),
            "never evicted"
        );
    }
}
