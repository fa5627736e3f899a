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
                           crypto_aead_xchacha20poly1305_ietf_encrypt)

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


def check_sender_keys(v):
    """`sender-key-vectors/1`: chain KDF, AEAD, Ed25519 signatures, wire layout, rejections."""
    kd = v["aead"]["key_derivation"]
    assert v["aead"]["name"] == "xchacha20poly1305" and v["signature"] == "ed25519"
    h = HASHES[v["kdf_ck"]["hash"]][1]
    mk_c, ck_c = field(v["kdf_ck"], "mk_const", b"\x01"), field(v["kdf_ck"], "ck_const", b"\x02")
    checked = 0
    for chain in v["chains"]:
        ck, it = bytes.fromhex(chain["initial_chain_key"]), chain.get("initial_iteration", 0)
        sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(chain["signing_seed"]))
        pub = sk.public_key()
        assert pub.public_bytes_raw().hex() == chain["signing_pub"], "signing_pub"
        for m in chain["messages"]:
            while it < m["iteration"]:
                ck, it = hmac.new(ck, ck_c, h).digest()[:32], it + 1
            seed = hmac.new(ck, mk_c, h).digest()[:32]
            assert seed.hex() == m["message_key"], f"iteration {it}: message key"
            okm = hkdf(kd["hash"], field(kd, "salt", bytes(HASHES[kd["hash"]][2])), seed, field(kd, "info"), 56)
            key, nonce = (okm[:32], okm[32:]) if kd.get("output", ["key", "nonce"])[0] == "key" else (okm[24:], okm[:24])
            ad, pt = bytes.fromhex(m["ad"]), bytes.fromhex(m["plaintext"])
            ct = crypto_aead_xchacha20poly1305_ietf_encrypt(pt, ad, nonce, key)
            assert ct.hex() == m["ciphertext"], f"iteration {it}: ciphertext"
            signed = bytes.fromhex(m["signed_part"])
            pub.verify(bytes.fromhex(m["signature"]), signed)
            assert bytes.fromhex(m["message"]) == signed + bytes.fromhex(m["signature"]), "wire layout"
            checked += 1
    for r in v.get("rejects", []):
        pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(v["chains"][r["chain"]]["signing_pub"]))
        raw = bytes.fromhex(r["message"])
        if r["why"] in ("tampered", "wrong-signer"):
            try:
                pub.verify(raw[-64:], raw[:-64])
                raise AssertionError(f"reject {r['why']}: signature verifies")
            except Exception as e:
                if isinstance(e, AssertionError):
                    raise
        checked += 1
    return checked


def check(path):
    v = json.load(open(path))
    if v.get("format") == "sender-key-vectors/1":
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
