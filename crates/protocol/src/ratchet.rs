//! The Double Ratchet (Signal specification, sections 3 and 5.2).
//!
//! ```text
//!            RK ──KDF_RK(DH(DHs, DHr))──▶ RK' ──KDF_RK──▶ RK'' ...
//!                        │                        │
//!                        ▼                        ▼
//!                  CKr ─KDF_CK─▶ CKr' ...    CKs ─KDF_CK─▶ CKs' ...
//!                        │                        │
//!                        ▼                        ▼
//!                       MK                       MK  ── ENCRYPT(MK, pad(m), AD ‖ header)
//! ```
//!
//! Decryption is staged: every new chain key, skipped message key and root key is computed into
//! local variables, and the state is only updated once the AEAD tag has verified. A message that
//! is forged, tampered with, replayed or too far ahead therefore leaves the state exactly as it
//! was. A new ratchet key pair is generated only after that, when the DH ratchet step commits.

use std::collections::VecDeque;

use rand_core::CryptoRng;
use x25519_dalek::PublicKey;

use crate::aead;
use crate::codec::{DecodeError, Reader, Writer};
use crate::error::{DecryptError, EncryptError};
use crate::kdf::{kdf_ck, kdf_rk};
use crate::keys::{ChainKey, MessageKey, RootKey, SharedSecret, X25519KeyPair, x25519_public};

/// MAX_SKIP: how many message keys one received header may make us derive and store, per chain.
pub const MAX_SKIP: u32 = 1000;
/// The cap on stored skipped-message keys over all chains; the oldest are evicted first.
pub const MAX_STORED_SKIPPED: usize = 2000;
/// How many previous remote ratchet keys are remembered to recognise replays on old chains.
pub const REMEMBERED_REMOTE_KEYS: usize = 8;
/// First byte of every ratchet header (message type and version).
pub const HEADER_VERSION: u8 = 0x01;
/// Length of an encoded header: version, DH public key, PN, N.
pub const HEADER_LEN: usize = 1 + 32 + 4 + 4;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;

/// A message header: the sender's current ratchet public key, the length of its previous sending
/// chain (PN) and the message number in the current one (N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// DHs of the sender.
    pub dh: PublicKey,
    /// PN: number of messages in the sender's previous sending chain.
    pub pn: u32,
    /// N: number of this message in the current sending chain.
    pub n: u32,
}

impl Header {
    /// `0x01 ‖ dh ‖ pn (u32be) ‖ n (u32be)`.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = HEADER_VERSION;
        out[1..33].copy_from_slice(self.dh.as_bytes());
        out[33..37].copy_from_slice(&self.pn.to_be_bytes());
        out[37..41].copy_from_slice(&self.n.to_be_bytes());
        out
    }

    /// Decodes a header from the front of `r`.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != HEADER_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let dh = x25519_public(r.bytes(32)?)?;
        Ok(Self {
            dh,
            pn: r.u32()?,
            n: r.u32()?,
        })
    }
}

/// A skipped message key, kept until its message arrives or it is evicted.
#[derive(Clone)]
struct SkippedKey {
    dh: [u8; 32],
    n: u32,
    key: MessageKey,
}

/// The full Double Ratchet state of one party.
#[derive(Clone)]
pub(crate) struct RatchetState {
    root: RootKey,
    dh_self: X25519KeyPair,
    dh_remote: Option<PublicKey>,
    send: Option<ChainKey>,
    recv: Option<ChainKey>,
    ns: u32,
    nr: u32,
    pn: u32,
    skipped: VecDeque<SkippedKey>,
    previous_remote: VecDeque<[u8; 32]>,
}

impl std::fmt::Debug for RatchetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RatchetState")
            .field("ns", &self.ns)
            .field("nr", &self.nr)
            .field("pn", &self.pn)
            .field("skipped", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

/// Everything a successful decryption will change, computed before anything is changed.
struct Staged {
    skipped: Vec<SkippedKey>,
    step: Option<(RootKey, PublicKey)>,
    /// The receiving chain key for message `nr`; `None` when that is the current one unchanged.
    recv: Option<ChainKey>,
    nr: u32,
}

impl RatchetState {
    /// RatchetInitAlice: SK from the handshake, Bob's signed prekey as his first ratchet key.
    pub(crate) fn init_alice<R: CryptoRng + ?Sized>(
        rng: &mut R,
        sk: &SharedSecret,
        bob_ratchet_key: PublicKey,
    ) -> Result<Self, EncryptError> {
        let dh_self = X25519KeyPair::generate(rng);
        let dh_out = dh_self
            .dh(&bob_ratchet_key)
            .map_err(|_| EncryptError::InvalidRemoteKey)?;
        let (root, send) = kdf_rk(&RootKey::new(*sk.as_bytes()), &dh_out);
        Ok(Self {
            root,
            dh_self,
            dh_remote: Some(bob_ratchet_key),
            send: Some(send),
            recv: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            previous_remote: VecDeque::new(),
        })
    }

    /// RatchetInitBob: SK from the handshake, the signed prekey pair as the first ratchet key.
    pub(crate) fn init_bob(sk: &SharedSecret, signed_prekey: X25519KeyPair) -> Self {
        Self {
            root: RootKey::new(*sk.as_bytes()),
            dh_self: signed_prekey,
            dh_remote: None,
            send: None,
            recv: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            previous_remote: VecDeque::new(),
        }
    }

    /// RatchetEncrypt: derives the next sending message key and seals `plaintext` (already padded)
    /// under `AD ‖ header`. Returns `header ‖ ciphertext`.
    pub(crate) fn encrypt(&mut self, plaintext: &[u8], ad: &[u8]) -> Result<Vec<u8>, EncryptError> {
        let send = self.send.as_ref().ok_or(EncryptError::NoSendingChain)?;
        let next_ns = self.ns.checked_add(1).ok_or(EncryptError::ChainExhausted)?;
        let (next_chain, mk) = kdf_ck(send);
        let header = Header {
            dh: self.dh_self.public(),
            pn: self.pn,
            n: self.ns,
        }
        .encode();
        // `header ‖ plaintext`, encrypted in place after the header: one allocation per message.
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&header);
        out.extend_from_slice(plaintext);
        aead::seal_in_place(&mk.aead_keys(), &mut out, HEADER_LEN, &[ad, &header])
            .ok_or(EncryptError::TooLong)?;
        self.send = Some(next_chain);
        self.ns = next_ns;
        Ok(out)
    }

    /// RatchetDecrypt of `header ‖ ciphertext`, then `accept` on the plaintext (the caller's
    /// unpadding). The state changes only if this returns `Ok`.
    pub(crate) fn decrypt<R: CryptoRng + ?Sized, T>(
        &mut self,
        rng: &mut R,
        message: &[u8],
        ad: &[u8],
        accept: impl FnOnce(Vec<u8>) -> Option<T>,
    ) -> Result<T, DecryptError> {
        if message.len() < HEADER_LEN + TAG_LEN {
            return Err(DecryptError::Malformed(DecodeError::Truncated));
        }
        let (header_bytes, ciphertext) = message.split_at(HEADER_LEN);
        let header =
            Header::decode(&mut Reader::new(header_bytes)).map_err(DecryptError::Malformed)?;
        let dh = header.dh.to_bytes();

        // 1. A message whose key we skipped earlier.
        if let Some(index) = self
            .skipped
            .iter()
            .position(|s| s.n == header.n && s.dh == dh)
        {
            let plaintext = open(&self.skipped[index].key, ciphertext, ad, header_bytes)?;
            let plaintext = accept(plaintext).ok_or(DecryptError::AuthenticationFailed)?;
            self.skipped.remove(index);
            return Ok(plaintext);
        }

        // 2. A message on the current receiving chain, or 3. on a new one.
        let current = self.dh_remote.is_some_and(|k| k.as_bytes() == &dh) && self.recv.is_some();
        let staged = if current {
            if header.n < self.nr {
                return Err(DecryptError::Duplicate);
            }
            let mut staged = Vec::new();
            let recv = self
                .recv
                .as_ref()
                .ok_or(DecryptError::AuthenticationFailed)?;
            let chain = skip(recv, self.nr, header.n, &dh, &mut staged)?;
            Staged {
                skipped: staged,
                step: None,
                recv: chain,
                nr: header.n,
            }
        } else {
            if self.previous_remote.contains(&dh) {
                return Err(DecryptError::Duplicate);
            }
            let mut staged = Vec::new();
            if let (Some(recv), Some(remote)) = (&self.recv, &self.dh_remote) {
                skip(recv, self.nr, header.pn, remote.as_bytes(), &mut staged)?;
            }
            let dh_out = self
                .dh_self
                .dh(&header.dh)
                .map_err(|_| DecryptError::AuthenticationFailed)?;
            let (root, recv) = kdf_rk(&self.root, &dh_out);
            let chain = skip(&recv, 0, header.n, &dh, &mut staged)?;
            Staged {
                skipped: staged,
                step: Some((root, header.dh)),
                recv: Some(chain.unwrap_or(recv)),
                nr: header.n,
            }
        };

        let chain = staged
            .recv
            .as_ref()
            .or(self.recv.as_ref())
            .ok_or(DecryptError::AuthenticationFailed)?;
        let (next_chain, mk) = kdf_ck(chain);
        let plaintext = open(&mk, ciphertext, ad, header_bytes)?;
        let plaintext = accept(plaintext).ok_or(DecryptError::AuthenticationFailed)?;
        let nr = staged.nr.checked_add(1).ok_or(DecryptError::TooFarAhead)?;

        // Authenticated: commit.
        for key in staged.skipped {
            if self.skipped.len() == MAX_STORED_SKIPPED {
                self.skipped.pop_front();
            }
            self.skipped.push_back(key);
        }
        if let Some((root, remote)) = staged.step {
            if let Some(old) = self.dh_remote.replace(remote) {
                if self.previous_remote.len() == REMEMBERED_REMOTE_KEYS {
                    self.previous_remote.pop_front();
                }
                self.previous_remote.push_back(old.to_bytes());
            }
            self.pn = self.ns;
            self.ns = 0;
            self.dh_self = X25519KeyPair::generate(rng);
            // DH(DHs, DHr) already succeeded with this remote key, and a fresh scalar times a
            // point of large order cannot be zero; map the impossible case to an error anyway.
            let dh_out = self
                .dh_self
                .dh(&remote)
                .map_err(|_| DecryptError::AuthenticationFailed)?;
            let (root, send) = kdf_rk(&root, &dh_out);
            self.root = root;
            self.send = Some(send);
        }
        self.recv = Some(next_chain);
        self.nr = nr;
        Ok(plaintext)
    }

    /// Number of stored skipped-message keys.
    pub(crate) fn skipped_count(&self) -> usize {
        self.skipped.len()
    }

    /// Our current ratchet public key.
    pub(crate) fn dh_public(&self) -> PublicKey {
        self.dh_self.public()
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.root.as_bytes());
        out.extend_from_slice(&self.dh_self.secret_bytes());
        put_opt(out, self.dh_remote.as_ref().map(|k| k.as_bytes()));
        put_opt(out, self.send.as_ref().map(|k| k.as_bytes()));
        put_opt(out, self.recv.as_ref().map(|k| k.as_bytes()));
        out.put_u32(self.ns);
        out.put_u32(self.nr);
        out.put_u32(self.pn);
        out.put_u32(self.skipped.len() as u32);
        for s in &self.skipped {
            out.extend_from_slice(&s.dh);
            out.put_u32(s.n);
            out.extend_from_slice(s.key.as_bytes());
        }
        out.put_u32(self.previous_remote.len() as u32);
        for k in &self.previous_remote {
            out.extend_from_slice(k);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let root = RootKey::new(r.array()?);
        let dh_self = X25519KeyPair::from_secret_bytes(r.array()?);
        let dh_remote = get_opt(r)?.map(PublicKey::from);
        let send = get_opt(r)?.map(ChainKey::new);
        let recv = get_opt(r)?.map(ChainKey::new);
        let (ns, nr, pn) = (r.u32()?, r.u32()?, r.u32()?);
        let count = r.count(MAX_STORED_SKIPPED, 68)?;
        let mut skipped = VecDeque::with_capacity(count);
        for _ in 0..count {
            skipped.push_back(SkippedKey {
                dh: r.array()?,
                n: r.u32()?,
                key: MessageKey::new(r.array()?),
            });
        }
        let count = r.count(REMEMBERED_REMOTE_KEYS, 32)?;
        let mut previous_remote = VecDeque::with_capacity(count);
        for _ in 0..count {
            previous_remote.push_back(r.array()?);
        }
        Ok(Self {
            root,
            dh_self,
            dh_remote,
            send,
            recv,
            ns,
            nr,
            pn,
            skipped,
            previous_remote,
        })
    }

    #[cfg(feature = "hazmat")]
    pub(crate) fn inspect(&self) -> crate::hazmat::RatchetView {
        crate::hazmat::RatchetView {
            root_key: *self.root.as_bytes(),
            send_chain_key: self.send.as_ref().map(|k| *k.as_bytes()),
            recv_chain_key: self.recv.as_ref().map(|k| *k.as_bytes()),
            ns: self.ns,
            nr: self.nr,
            pn: self.pn,
            dh_pub: self.dh_self.public().to_bytes(),
            dh_priv: self.dh_self.secret_bytes(),
            remote_dh_pub: self.dh_remote.map(|k| k.to_bytes()),
            skipped_count: self.skipped.len(),
        }
    }
}

/// Advances `chain` from message number `from` to `until`, staging the skipped keys. `None`
/// when there is nothing to skip (the common case): the caller keeps using `chain`, uncloned.
fn skip(
    chain: &ChainKey,
    from: u32,
    until: u32,
    dh: &[u8; 32],
    staged: &mut Vec<SkippedKey>,
) -> Result<Option<ChainKey>, DecryptError> {
    // `until < from` (PN below what we already received) skips nothing.
    if until.saturating_sub(from) > MAX_SKIP {
        return Err(DecryptError::TooFarAhead);
    }
    let mut advanced: Option<ChainKey> = None;
    for n in from..until {
        let (next, key) = kdf_ck(advanced.as_ref().unwrap_or(chain));
        staged.push(SkippedKey { dh: *dh, n, key });
        advanced = Some(next);
    }
    Ok(advanced)
}

fn open(
    mk: &MessageKey,
    ciphertext: &[u8],
    ad: &[u8],
    header: &[u8],
) -> Result<Vec<u8>, DecryptError> {
    aead::open(&mk.aead_keys(), ciphertext, &[ad, header]).ok_or(DecryptError::AuthenticationFailed)
}

fn put_opt(out: &mut Vec<u8>, value: Option<&[u8; 32]>) {
    match value {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v);
        }
        None => out.push(0),
    }
}

fn get_opt(r: &mut Reader<'_>) -> Result<Option<[u8; 32]>, DecodeError> {
    Ok(if r.bool()? { Some(r.array()?) } else { None })
}
