#!/usr/bin/env python3
"""An independent checker for `ratchet-vectors/1` files (shared/VECTORS.md).

It re-implements the Double Ratchet and the X3DH/PQXDH key agreement from the specifications on
top of Python's `cryptography` (OpenSSL) and PyNaCl (libsodium), reading every parameter from the
vector file, so it shares no code with sotto. It checks the handshake section, then replays the
schedule: re-encrypting every `send` and comparing header, message key and ciphertext bytes and
`state_after`; decrypting every `recv`, and checking that `expect: fail` messages are rejected and
leave the state unchanged.

Usage: python3 tools/check_vectors.py FILE...   (pip install cryptography pynacl)
"""
import copy
import hashlib
import hmac
import json
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl.bindings import (crypto_aead_xchacha20poly1305_ietf_decrypt,
                           crypto_aead_xchacha20poly1305_ietf_encrypt,
                           crypto_core_ed25519_is_valid_point)

HASHES = {"sha256": (hashes.SHA256, hashlib.sha256, 32), "sha512": (hashes.SHA512, hashlib.sha512, 64)}


def field(obj, name, default=None):
    """A hex field, or its `<name>_utf8` form."""
    if name in obj:
        return bytes.fromhex(obj[name]) if obj[name] is not None else None
    if name + "_utf8" in obj:
        return obj[name + "_utf8"].encode()
    return default


def hkdf(hash_name, salt, ikm, info, length):
    return HKDF(algorithm=HASHES[hash_name][0](), length=length, salt=salt, info=info).derive(ikm)


def dh(priv, pub):
    out = X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(pub))
    assert out != bytes(32), "non-contributory DH"
    return out


def x_pub(priv):
    return X25519PrivateKey.from_private_bytes(priv).public_key().public_bytes_raw()


class Spec:
    def __init__(self, v):
        self.v = v
        assert v["format"] == "ratchet-vectors/1"
        assert v.get("curve", "x25519") == "x25519"
        self.rk = v["kdf_rk"]
        self.ck = v["kdf_ck"]
        self.aead = v["aead"]
        self.header = v.get("header", {"encoding": "fixed", "prefix": "", "fields": ["dh", "pn", "n"], "int": "u32be"})
        self.ad_parts = v.get("aead_ad", ["ad", "header"])
        limits = v.get("limits", {})
        self.max_skip = limits.get("max_skip", 1000)
        self.max_stored = limits.get("max_stored_skipped")

    def kdf_rk(self, rk, dh_out):
        okm = hkdf(self.rk["hash"], rk, dh_out, field(self.rk, "info"), 64)
        order = self.rk.get("output", ["root_key", "chain_key"])
        parts = {order[0]: okm[:32], order[1]: okm[32:]}
        return parts["root_key"], parts["chain_key"]

    def kdf_ck(self, ck):
        h = HASHES[self.ck["hash"]][1]
        mk = hmac.new(ck, field(self.ck, "mk_const", b"\x01"), h).digest()[:32]
        nck = hmac.new(ck, field(self.ck, "ck_const", b"\x02"), h).digest()[:32]
        return nck, mk

    def encode_header(self, dh_pub, pn, n):
        h = self.header
        assert h["encoding"] == "fixed", "opaque headers are not supported by this checker"
        size, order = int(h["int"][1:3]), "big" if h["int"].endswith("be") else "little"
        vals = {"dh": dh_pub, "pn": pn.to_bytes(size // 8, order), "n": n.to_bytes(size // 8, order)}
        return field(h, "prefix", b"") + b"".join(vals[f] for f in h["fields"])

    def decode_header(self, raw):
        h = self.header
        size, order = int(h["int"][1:3]) // 8, "big" if h["int"].endswith("be") else "little"
        prefix = field(h, "prefix", b"")
        assert raw.startswith(prefix)
        at, out = len(prefix), {}
        for f in h["fields"]:
            n = 32 if f == "dh" else size
            out[f] = raw[at:at + n] if f == "dh" else int.from_bytes(raw[at:at + n], order)
            at += n
        return out

    def aad(self, ad, header):
        out = b""
        for part in self.ad_parts:
            if part == "ad":
                out += ad
            elif part == "header":
                out += header
            else:
                raise ValueError(f"unsupported aead_ad part {part}")
        return out

    def keys(self, mk):
        assert self.aead["name"] == "xchacha20poly1305", "this checker supports xchacha20poly1305"
        kd = self.aead["key_derivation"]
        assert kd["type"] == "hkdf"
        salt = field(kd, "salt", bytes(HASHES[kd["hash"]][2]))
        okm = hkdf(kd["hash"], salt, mk, field(kd, "info"), 56)
        order = kd.get("output", ["key", "nonce"])
        parts = {order[0]: okm[:32] if order[0] == "key" else okm[:24]}
        parts[order[1]] = okm[len(parts[order[0]]):]
        return parts["key"], parts["nonce"]

    def encrypt(self, mk, pt, aad):
        key, nonce = self.keys(mk)
        return crypto_aead_xchacha20poly1305_ietf_encrypt(pt, aad, nonce, key)

    def decrypt(self, mk, ct, aad):
        key, nonce = self.keys(mk)
        return crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, key)


class Party:
    def __init__(self, spec, privs):
        self.spec, self.privs = spec, list(privs)
        self.rk = self.dhs = self.dhr = self.cks = self.ckr = None
        self.ns = self.nr = self.pn = 0
        self.skipped = {}  # (dh, n) -> mk, insertion ordered

    def next_priv(self):
        return self.privs.pop(0)

    def init_alice(self, sk, bob_pub):
        self.dhs = self.next_priv()
        self.dhr = bob_pub
        self.rk, self.cks = self.spec.kdf_rk(sk, dh(self.dhs, bob_pub))

    def init_bob(self, sk, priv):
        self.dhs, self.rk = priv, sk

    def send(self, pt, ad):
        self.cks, mk = self.spec.kdf_ck(self.cks)
        header = self.spec.encode_header(x_pub(self.dhs), self.pn, self.ns)
        self.ns += 1
        return header, mk, self.spec.encrypt(mk, pt, self.spec.aad(ad, header))

    def _skip(self, until):
        if self.ckr is None:
            return
        if until - self.nr > self.spec.max_skip:
            raise ValueError("beyond MAX_SKIP")
        while self.nr < until:
            self.ckr, mk = self.spec.kdf_ck(self.ckr)
            self.skipped[(self.dhr, self.nr)] = mk
            self.nr += 1
            if self.spec.max_stored is not None and len(self.skipped) > self.spec.max_stored:
                del self.skipped[next(iter(self.skipped))]

    def recv(self, header, ct, ad):
        f = self.spec.decode_header(header)
        aad = self.spec.aad(ad, header)
        if (f["dh"], f["n"]) in self.skipped:
            mk = self.skipped[(f["dh"], f["n"])]
            pt = self.spec.decrypt(mk, ct, aad)
            del self.skipped[(f["dh"], f["n"])]
            return pt, mk
        if f["dh"] != self.dhr or self.ckr is None and self.dhr == f["dh"]:
            self._skip(f["pn"])
            self.pn, self.ns, self.nr, self.dhr = self.ns, 0, 0, f["dh"]
            self.rk, self.ckr = self.spec.kdf_rk(self.rk, dh(self.dhs, self.dhr))
            self.dhs = self.next_priv()
            self.rk, self.cks = self.spec.kdf_rk(self.rk, dh(self.dhs, self.dhr))
        self._skip(f["n"])
        self.ckr, mk = self.spec.kdf_ck(self.ckr)
        self.nr += 1
        return self.spec.decrypt(mk, ct, aad), mk

    def state(self):
        return {
            "root_key": self.rk.hex(), "send_chain_key": self.cks.hex() if self.cks else None,
            "recv_chain_key": self.ckr.hex() if self.ckr else None, "ns": self.ns, "nr": self.nr,
            "pn": self.pn, "dh_pub": x_pub(self.dhs).hex(), "remote_dh_pub": self.dhr.hex() if self.dhr else None,
            "skipped_count": len(self.skipped),
        }


def check_x3dh(v):
    x = v["x3dh"]
    expected = x["expected"]
    fmt = x.get("identity_key_format", "curve25519")
    enc = x.get("pubkey_encoding", {})
    cpre, epre = field(enc, "curve25519_prefix", b"\x05"), field(enc, "ed25519_prefix", b"")

    def identity(side):
        secret = bytes.fromhex(side["identity_secret"])
        assert side["identity_secret_type"] == "seed", "this checker supports seed identities"
        ed = Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()
        h = bytearray(hashlib.sha512(secret).digest()[:32])
        h[0] &= 248; h[31] &= 127; h[31] |= 64
        return ed, bytes(h)

    a_ed, a_x = identity(x["alice"])
    b_ed, b_x = identity(x["bob"])
    spk, ek = bytes.fromhex(x["bob"]["signed_prekey_priv"]), bytes.fromhex(x["alice"]["ephemeral_priv"])
    if fmt == "ed25519":
        a_id, b_id, pre, b_verify = a_ed, b_ed, epre, b_ed
    else:
        # Montgomery identity keys; XEdDSA signatures verify against the Edwards form, sign bit 0.
        a_id, b_id, pre = x_pub(a_x), x_pub(b_x), cpre
        p = 2**255 - 19
        u = int.from_bytes(b_id, "little")
        y = (u - 1) * pow(u + 1, p - 2, p) % p
        b_verify = y.to_bytes(32, "little")
    Ed25519PublicKey.from_public_bytes(b_verify).verify(bytes.fromhex(x["bob"]["signed_prekey_sig"]), cpre + x_pub(spk))
    dhs = [dh(a_x, x_pub(spk)), dh(ek, x_pub(b_x)), dh(ek, x_pub(spk))]
    if x["bob"].get("one_time_prekey_priv"):
        dhs.append(dh(ek, x_pub(bytes.fromhex(x["bob"]["one_time_prekey_priv"]))))
    ikm = b"\xff" * 32 + b"".join(dhs)
    if "kem_shared_secret" in x:
        ss = bytes.fromhex(x["kem_shared_secret"])
        if "kem_secret_key_seed" in x:
            from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey
            assert x["kem"] == "ml-kem-768"
            dk = MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(x["kem_secret_key_seed"]))
            assert dk.public_key().public_bytes_raw() == bytes.fromhex(x["kem_public_key"]), "KEM public key"
            assert dk.decapsulate(bytes.fromhex(x["kem_ciphertext"])) == ss, "KEM shared secret"
        ikm += ss
    sk = hkdf(x["hash"], bytes(HASHES[x["hash"]][2]), ikm, field(x, "info"), 32)
    ad = pre + a_id + pre + b_id + field(x, "ad_appendix", b"")
    assert sk.hex() == expected["shared_secret"], "shared secret"
    assert ad.hex() == expected["associated_data"], "associated data"
    for key, val in [("alice_identity_pub", a_id), ("bob_identity_pub", b_id), ("signed_prekey_pub", x_pub(spk)), ("ephemeral_pub", x_pub(ek))]:
        if key in expected:
            assert expected[key] == val.hex(), key
    if x.get("link_to_ratchet", True):
        assert v["initial_root_key"] == expected["shared_secret"]
        assert v["bob"]["initial_ratchet_priv"] == x["bob"]["signed_prekey_priv"]
        assert v["ad"] == expected["associated_data"]


# ---------------------------------------------------------------------------------------------
# Sender Keys (`sender-key-vectors/2`), checked against the constants of docs/PROTOCOL.md §10–11,
# written down here rather than read from the vector file.

SK_MESSAGE_TYPE = 0x07
SK_DISTRIBUTION_TYPE = 0x08
SK_INFO = b"sotto sender key v2 message keys"
SK_BINDING_TAG = b"sotto-sender-key-v2"
SK_MK_CONST, SK_CK_CONST = b"\x01", b"\x02"
SK_HEADER_LEN = 65            # type, group id 16, epoch 8, roster hash 32, chain id 4, iteration 4
SK_AD_LEN = SK_HEADER_LEN + 32
SK_DISTRIBUTION_LEN = 233
SK_MAX_JUMP = 25000
ROSTER_CHANGE_TYPE, ROSTER_LOG_TYPE = 0x09, 0x0A
ROSTER_TAG = b"sotto-roster-v2"
GROUP_ID_TAG = b"sotto group id v2"
ROSTER_CHANGE_LEN = 154
ROSTER_OPS = {1: "create", 2: "add", 3: "remove", 4: "leave"}
PAD_BUCKETS = [64 << k for k in range(11)]


def valid_point(key):
    """Canonical, of prime order, torsion-free (libsodium's check)."""
    return len(key) == 32 and crypto_core_ed25519_is_valid_point(key)


def ed_verify(pub, sig, msg):
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
        return True
    except Exception:
        return False


def check_padding(padded, unpadded=None):
    assert len(padded) in PAD_BUCKETS, "padded length is not a bucket"
    body = padded.rstrip(b"\x00")
    assert body.endswith(b"\x80"), "padding marker"
    content = body[:-1]
    assert min(b for b in PAD_BUCKETS if b >= len(content) + 1) == len(padded), "not the smallest bucket"
    if unpadded is not None:
        assert content == unpadded, "unpadded text"


def sk_keys(seed):
    okm = hkdf("sha256", bytes(32), seed, SK_INFO, 56)
    return okm[:32], okm[32:]


def sk_chain_at(ck, n):
    for _ in range(n):
        ck = hmac.new(ck, SK_CK_CONST, hashlib.sha256).digest()
    return ck


def parse_group_message(raw):
    assert len(raw) >= SK_HEADER_LEN + 80 + 64, "group message too short"
    assert raw[0] == SK_MESSAGE_TYPE, "group message type byte"
    return {
        "header": raw[:SK_HEADER_LEN], "group_id": raw[1:17],
        "epoch": int.from_bytes(raw[17:25], "big"), "roster_hash": raw[25:57],
        "chain_id": int.from_bytes(raw[57:61], "big"), "iteration": int.from_bytes(raw[61:65], "big"),
        "ct": raw[SK_HEADER_LEN:-64], "sig": raw[-64:],
    }


def parse_distribution(raw):
    assert len(raw) == SK_DISTRIBUTION_LEN and raw[0] == SK_DISTRIBUTION_TYPE, "distribution layout"
    return {
        "group_id": raw[1:17], "sender": raw[17:49], "epoch": int.from_bytes(raw[49:57], "big"),
        "roster_hash": raw[57:89], "chain_id": int.from_bytes(raw[89:93], "big"),
        "iteration": int.from_bytes(raw[93:97], "big"), "chain_key": raw[97:129],
        "signing_pub": raw[129:161], "prev_chain_id": int.from_bytes(raw[161:165], "big"),
        "prev_end": int.from_bytes(raw[165:169], "big"), "binding": raw[169:233],
    }


def binding_message(d):
    return (SK_BINDING_TAG + d["group_id"] + d["sender"] + d["epoch"].to_bytes(8, "big")
            + d["roster_hash"] + d["chain_id"].to_bytes(4, "big") + d["signing_pub"])


def distribution_ok(raw):
    """Why a distribution would be refused, or None."""
    d = parse_distribution(raw)
    if not valid_point(d["sender"]):
        return "sender identity is not a valid prime-order point"
    if not valid_point(d["signing_pub"]):
        return "signing key is not a valid prime-order point"
    if not ed_verify(d["signing_pub"], d["binding"], binding_message(d)):
        return "binding signature"
    return None


def check_roster(r):
    """A `0x0A` log: creation with a derived group id, hash chain, signatures; the final roster."""
    log = bytes.fromhex(r["log"])
    assert log[0] == ROSTER_LOG_TYPE, "roster log type"
    n = int.from_bytes(log[1:5], "big")
    assert len(log) == 5 + n * ROSTER_CHANGE_LEN, "roster log length"
    members, owner, prev, group_id = [], None, None, None
    for i in range(n):
        c = log[5 + i * ROSTER_CHANGE_LEN:5 + (i + 1) * ROSTER_CHANGE_LEN]
        assert c[0] == ROSTER_CHANGE_TYPE, "roster change type"
        gid, epoch, prev_hash, op, member, sig = c[1:17], int.from_bytes(c[17:25], "big"), c[25:57], c[57], c[58:90], c[90:154]
        assert op in ROSTER_OPS and epoch == i and valid_point(member)
        if i == 0:
            assert ROSTER_OPS[op] == "create"
            owner, group_id = member, gid
            assert hashlib.sha256(GROUP_ID_TAG + owner + prev_hash).digest()[:16] == gid, "group id derivation"
        else:
            assert gid == group_id and prev_hash == prev, "hash chain"
        signer = member if ROSTER_OPS[op] == "leave" else owner
        assert ed_verify(signer, sig, ROSTER_TAG + c[:90]), f"roster change {i}: signature"
        if ROSTER_OPS[op] in ("create", "add"):
            assert member not in members
            members.append(member)
        elif ROSTER_OPS[op] in ("remove", "leave"):
            assert member in members and member != owner
            members.remove(member)
        prev = hashlib.sha256(c).digest()
    assert group_id.hex() == r["group_id"] and owner.hex() == r["owner"], "roster group id / owner"
    assert prev.hex() == r["hash"] and n - 1 == r["epoch"], "roster hash / epoch"
    return {"group_id": group_id, "hash": prev, "epoch": n - 1, "members": members}


class SkChain:
    def __init__(self, c):
        self.sender = bytes.fromhex(c["sender_identity"])
        assert valid_point(self.sender), "chain sender_identity is not a valid point"
        self.ck0 = bytes.fromhex(c["initial_chain_key"])
        self.start = c.get("initial_iteration", 0)
        seed = bytes.fromhex(c["signing_seed"])
        self.pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        assert self.pub.hex() == c["signing_pub"], "signing_pub"
        self.chain_id = c.get("chain_id")
        self.received = set()

    def seed(self, iteration):
        return hmac.new(sk_chain_at(self.ck0, iteration - self.start), SK_MK_CONST, hashlib.sha256).digest()

    def genuine(self, m, sender=None, roster_hash=None):
        """(signature ok, AEAD ok) of a parsed message with these AD fields filled in."""
        header = m["header"] if roster_hash is None else m["header"][:25] + roster_hash + m["header"][57:]
        ad = header + (self.sender if sender is None else sender)
        sig_ok = ed_verify(self.pub, m["sig"], ad + m["ct"])
        key, nonce = sk_keys(self.seed(m["iteration"]))
        try:
            crypto_aead_xchacha20poly1305_ietf_decrypt(m["ct"], ad, nonce, key)
            aead_ok = True
        except Exception:
            aead_ok = False
        return sig_ok, aead_ok

    def fresh(self, iteration):
        nxt = max(self.received) + 1 if self.received else self.start
        return iteration not in self.received and iteration - nxt <= SK_MAX_JUMP


def check_sender_keys(v):
    """`sender-key-vectors/2`: every message rebuilt from the documented layout, re-encrypted and
    verified; every reject refused for its stated reason alone; the distributions and the roster."""
    assert v["format"] == "sender-key-vectors/2"
    # The file's declared parameters must be the documented ones.
    assert v.get("max_jump", SK_MAX_JUMP) == SK_MAX_JUMP
    assert v["kdf_ck"] == {"type": "hmac", "hash": "sha256", "mk_const": "01", "ck_const": "02"}
    kd = v["aead"]["key_derivation"]
    assert v["aead"]["name"] == "xchacha20poly1305" and v["signature"] == "ed25519"
    assert kd["type"] == "hkdf" and kd["hash"] == "sha256" and field(kd, "info") == SK_INFO
    assert kd.get("output", ["key", "nonce"]) == ["key", "nonce"] and field(kd, "salt") is None
    roster = check_roster(v["roster"]) if "roster" in v else None
    checked = 0
    chains = [SkChain(c) for c in v["chains"]]
    for chain, c in zip(chains, v["chains"]):
        if roster:
            assert chain.sender in roster["members"], "chain owner is not a roster member"
        for m in c["messages"]:
            raw = bytes.fromhex(m["message"])
            p = parse_group_message(raw)
            it = m["iteration"]
            assert p["iteration"] == it and (chain.chain_id is None or p["chain_id"] == chain.chain_id)
            if roster:
                assert p["group_id"] == roster["group_id"] and p["roster_hash"] == roster["hash"]
                assert p["epoch"] == roster["epoch"]
            assert p["roster_hash"].hex() == m["roster_hash"], "roster_hash field"
            seed = chain.seed(it)
            assert seed.hex() == m["message_key"], f"iteration {it}: message key"
            ad = p["header"] + chain.sender
            assert len(ad) == SK_AD_LEN and ad.hex() == m["ad"], f"iteration {it}: ad"
            assert (ad + p["ct"]).hex() == m["signed_part"], f"iteration {it}: signed_part"
            assert p["sig"].hex() == m["signature"], f"iteration {it}: signature field"
            key, nonce = sk_keys(seed)
            pt = bytes.fromhex(m["plaintext"])
            check_padding(pt, m["unpadded_utf8"].encode() if "unpadded_utf8" in m else None)
            assert crypto_aead_xchacha20poly1305_ietf_encrypt(pt, ad, nonce, key) == p["ct"], f"iteration {it}: ciphertext"
            assert p["ct"].hex() == m["ciphertext"]
            assert ed_verify(chain.pub, p["sig"], ad + p["ct"]), f"iteration {it}: signature"
            chain.received.add(it)
            checked += 1
    seen_why = set()
    for r in v.get("rejects", []):
        chain, why = chains[r["chain"]], r["why"]
        m = parse_group_message(bytes.fromhex(r["message"]))
        fresh = chain.fresh(m["iteration"])
        nxt = max(chain.received) + 1
        sig_ok, aead_ok = chain.genuine(m)
        if why == "tampered":
            assert not sig_ok, "tampered: the signature verifies"
        elif why == "wrong-signer":
            assert not sig_ok and aead_ok and fresh, "wrong-signer: must be genuine but for its signer"
        elif why == "replay":
            assert sig_ok and aead_ok and m["iteration"] in chain.received, "replay: not a genuine received message"
        elif why == "jump":
            assert sig_ok and aead_ok, "jump: not genuine"
            assert m["iteration"] - nxt > SK_MAX_JUMP and m["iteration"] not in chain.received, "jump: within max_jump"
        elif why == "wrong-sender":
            claimed = bytes.fromhex(r["claimed_sender"])
            assert claimed != chain.sender and valid_point(claimed)
            assert sig_ok and aead_ok and fresh, "wrong-sender: not genuine under its real sender"
            assert chain.genuine(m, sender=claimed) == (False, False), "wrong-sender: accepted as the claimed sender"
        elif why == "old-roster":
            current = bytes.fromhex(r["current_roster_hash"])
            if roster:
                assert current == roster["hash"], "old-roster: current roster hash"
            assert m["roster_hash"] != current, "old-roster: same roster"
            if "roster_hash" in r:
                assert m["roster_hash"].hex() == r["roster_hash"]
            assert sig_ok and aead_ok and fresh, "old-roster: not genuine (or not fresh)"
            assert chain.genuine(m, roster_hash=current) == (False, False), "old-roster: accepted under the current roster"
        else:
            raise AssertionError(f"unknown reject reason {why}")
        seen_why.add(why)
        checked += 1
    assert {"tampered", "wrong-signer", "replay", "jump", "wrong-sender", "old-roster"} <= seen_why, "missing reject kinds"
    for d in v.get("distribution", []):
        raw = bytes.fromhex(d["message"])
        assert distribution_ok(raw) is None, f"distribution refused: {distribution_ok(raw)}"
        p = parse_distribution(raw)
        for k in ("group_id", "roster_hash", "chain_key", "signing_pub"):
            assert p[k].hex() == d[k], f"distribution {k}"
        assert p["sender"].hex() == d["sender_identity"]
        for k in ("epoch", "chain_id", "iteration", "prev_chain_id", "prev_end"):
            assert p[k] == d[k], f"distribution {k}"
        owner = [ch for ch in chains if ch.sender == p["sender"]]
        assert owner and owner[0].pub == p["signing_pub"] and sk_chain_at(owner[0].ck0, p["iteration"] - owner[0].start) == p["chain_key"]
        if roster:
            assert p["group_id"] == roster["group_id"] and p["roster_hash"] == roster["hash"]
        checked += 1
    expected = {"bad-binding": "binding signature", "torsion-sender": "sender identity is not a valid prime-order point",
                "torsion-signing-key": "signing key is not a valid prime-order point"}
    for r in v.get("distribution_rejects", []):
        raw = bytes.fromhex(r["message"])
        assert distribution_ok(raw) == expected[r["why"]], f"distribution reject {r['why']}: {distribution_ok(raw)}"
        checked += 1
    return checked


def check(path):
    v = json.load(open(path))
    if v.get("format") == "sender-key-vectors/2":
        return check_sender_keys(v)
    spec = Spec(v)
    if "x3dh" in v:
        check_x3dh(v)
    sk, ad = bytes.fromhex(v["initial_root_key"]), bytes.fromhex(v["ad"])
    alice = Party(spec, [bytes.fromhex(p) for p in v["alice"]["ratchet_privs"]])
    bob = Party(spec, [bytes.fromhex(p) for p in v["bob"]["ratchet_privs"]])
    bob_initial = bytes.fromhex(v["bob"]["initial_ratchet_priv"])
    alice.init_alice(sk, x_pub(bob_initial))
    bob.init_bob(sk, bob_initial)
    msgs = {m.get("id", i): m for i, m in enumerate(v["messages"])}
    schedule = v.get("schedule") or [e for m in v["messages"] for e in ({"op": "send", "msg": m.get("id")}, {"op": "recv", "msg": m.get("id")})]
    checked = 0
    for event in schedule:
        m = msgs[event["msg"]]
        sender = alice if m["from"] == "alice" else bob
        receiver = bob if sender is alice else alice
        m_ad = field(m, "ad", ad)
        if event["op"] == "send":
            header, mk, ct = sender.send(field(m, "plaintext"), m_ad)
            assert header.hex() == m["header"], f"msg {event['msg']}: header"
            assert ct.hex() == m["ciphertext"], f"msg {event['msg']}: ciphertext"
            if "message_key" in m:
                assert mk.hex() == m["message_key"], f"msg {event['msg']}: message key"
            actor = sender
        else:
            actor = receiver
            before = copy.deepcopy(receiver.__dict__)
            try:
                pt, _ = receiver.recv(bytes.fromhex(m["header"]), bytes.fromhex(m["ciphertext"]), m_ad)
                ok = True
            except Exception:
                ok = False
                receiver.__dict__.update(before)
            if event.get("expect", "ok") == "fail":
                assert not ok, f"msg {event['msg']}: accepted, expected rejection"
            else:
                assert ok, f"msg {event['msg']}: rejected"
                assert pt.hex() == m["plaintext"], f"msg {event['msg']}: plaintext"
        for key, val in event.get("state_after", {}).items():
            assert actor.state()[key] == val, f"after {event['op']} {event['msg']}: {key}"
        checked += 1
    return checked


if __name__ == "__main__":
    failed = 0
    for path in sys.argv[1:]:
        try:
            print(f"{path}: {check(path)} events OK")
        except AssertionError as e:
            failed += 1
            print(f"{path}: FAIL {e}")
    sys.exit(1 if failed else 0)
