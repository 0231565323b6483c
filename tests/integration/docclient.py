#!/usr/bin/python3
"""docclient: a minimal gradpool agent written from docs/protocol.md and
docs/client.md alone, to check that those documents are enough to write a
conforming client (no C source was read to write it).

What it implements: the token ("Invite tokens"), Noise IKpsk2 for the first
join and IK for every later connection ("Noise handshake and transport",
written here from the Noise Protocol Framework, revision 34, and checked
against the cacophony vectors with --selftest), frames, transport records
(MSG, BEGIN + pieces, PING, CLOSE), rekeying every 2^20 messages, the
message header and TLV fields, JOIN with caps 0, WORK_REQUEST once,
PARAM_SHARDS in f32 (and f16, which the decoder accepts although caps 0
never gets it), MINIBATCH with pixels and labels, the gradient of the MLP of
"The model" in NumPy, UPDATE form 0 in f32, PING keep-alive from a thread
of its own while computing, BYE 0 + CLOSE on leaving.

What it leaves out (client.md, "What a client may leave out"): every
capability (F16, LOCAL_STEP, SUMS, MOMENTUM, LOCAL_DATA), JOIN.device,
HEARTBEAT messages, PAUSE/RESUME, beacons, reconnecting with backoff (one
connection per run; the caller runs it again).

Usage:
  docclient.py run --state DIR [--token TOKEN] [--name NAME]
               [--max-updates N] [--poison nan,shape,...]
  docclient.py handshake --state DIR --token TOKEN [--join-version V]
               (the handshake alone, and the verdict; or a JOIN of
               message version V and what comes back)
  docclient.py selftest VECTORS.json

Exit status of run: 0 job done (BYE 2) or left on purpose, 2 refused
(verdict or REJECT; the code is printed), 3 message 2 did not authenticate
(key mismatch), 4 refuse frame, 5 EOF/closed otherwise, 6 BYE other than 2.
"""

import argparse
import hashlib
import hmac
import json
import os
import queue
import socket
import struct
import sys
import threading
import time

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey, X25519PublicKey)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives import serialization


def log(msg):
    sys.stdout.write("docclient: %s\n" % msg)
    sys.stdout.flush()


# ---------------------------------------------------------------- Noise
# The Noise Protocol Framework, revision 34, for 25519/ChaChaPoly/BLAKE2b.
HASHLEN = 64
PROLOGUE = b"gradpool-channel-1"
MAX_NONCE = 2 ** 64 - 1
REKEY_INTERVAL = 2 ** 20


def _hash(data):
    return hashlib.blake2b(data, digest_size=64).digest()


def _hmac(key, data):
    return hmac.new(key, data, lambda: hashlib.blake2b(digest_size=64)) \
        .digest()


def _hkdf(ck, ikm, n):
    temp = _hmac(ck, ikm)
    o1 = _hmac(temp, b"\x01")
    o2 = _hmac(temp, o1 + b"\x02")
    if n == 2:
        return o1, o2
    return o1, o2, _hmac(temp, o2 + b"\x03")


def _pub(priv):
    return priv.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw)


def _priv_bytes(priv):
    return priv.private_bytes(serialization.Encoding.Raw,
                              serialization.PrivateFormat.Raw,
                              serialization.NoEncryption())


def _dh(priv, pub):
    return priv.exchange(X25519PublicKey.from_public_bytes(pub))


def _nonce(n):
    return b"\x00" * 4 + struct.pack("<Q", n)


class CipherState:
    def __init__(self, k=None):
        self.k = k
        self.n = 0

    def encrypt(self, ad, pt):
        if self.k is None:
            return pt
        if self.n >= MAX_NONCE:
            raise ConnectionError("nonce exhausted")
        ct = ChaCha20Poly1305(self.k).encrypt(_nonce(self.n), pt, ad)
        self.n += 1
        return ct

    def decrypt(self, ad, ct):
        if self.k is None:
            return ct
        if self.n >= MAX_NONCE:
            raise ConnectionError("nonce exhausted")
        pt = ChaCha20Poly1305(self.k).decrypt(_nonce(self.n), ct, ad)
        self.n += 1
        return pt

    def rekey_if_due(self):
        """protocol.md "Rekey": after message n, if n + 1 is a multiple of
        2^20, k = first 32 bytes of ENCRYPT(k, 2^64-1, empty, 32 zeros)."""
        if self.n % REKEY_INTERVAL == 0:
            self.k = ChaCha20Poly1305(self.k).encrypt(
                _nonce(MAX_NONCE), b"\x00" * 32, b"")[:32]


class Initiator:
    """The initiator side of IK or IKpsk2 (the agent is always the
    initiator). ephemeral: a fixed private key for the test vectors."""

    def __init__(self, psk_mode, s, rs, prologue, psk=None, ephemeral=None):
        name = ("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b" if psk_mode
                else "Noise_IK_25519_ChaChaPoly_BLAKE2b").encode()
        self.h = name.ljust(HASHLEN, b"\x00") if len(name) <= HASHLEN \
            else _hash(name)
        self.ck = self.h
        self.cs = CipherState()
        self.psk_mode = psk_mode
        self.psk = psk
        self.s = s
        self.rs = rs
        self.e = ephemeral or X25519PrivateKey.generate()
        self.mix_hash(prologue)
        self.mix_hash(rs)               # pre-message: <- s

    def mix_hash(self, data):
        self.h = _hash(self.h + data)

    def mix_key(self, ikm):
        self.ck, k = _hkdf(self.ck, ikm, 2)
        self.cs = CipherState(k[:32])

    def mix_key_and_hash(self, ikm):
        self.ck, th, k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(th)
        self.cs = CipherState(k[:32])

    def encrypt_and_hash(self, pt):
        ct = self.cs.encrypt(self.h, pt)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ct):
        pt = self.cs.decrypt(self.h, ct)
        self.mix_hash(ct)
        return pt

    def write_message1(self, payload):
        epub = _pub(self.e)
        self.mix_hash(epub)
        if self.psk_mode:
            self.mix_key(epub)
        self.mix_key(_dh(self.e, self.rs))                  # es
        out = epub + self.encrypt_and_hash(_pub(self.s))    # s
        self.mix_key(_dh(self.s, self.rs))                  # ss
        return out + self.encrypt_and_hash(payload)

    def read_message2(self, msg):
        """Returns the payload; raises InvalidTag (cryptography) if it does
        not authenticate."""
        if len(msg) < 48:
            raise ValueError("message 2 too short")
        re = msg[:32]
        self.mix_hash(re)
        if self.psk_mode:
            self.mix_key(re)
        self.mix_key(_dh(self.e, re))                       # ee
        self.mix_key(_dh(self.s, re))                       # se
        if self.psk_mode:
            self.mix_key_and_hash(self.psk)                 # psk
        return self.decrypt_and_hash(msg[32:])

    def split(self):
        k1, k2 = _hkdf(self.ck, b"", 2)
        return CipherState(k1[:32]), CipherState(k2[:32])


def selftest(path):
    """Checks the initiator against the cacophony vectors of IK and
    IKpsk2: message 1 byte for byte, message 2's payload, the transport
    messages both ways, the handshake hash."""
    with open(path) as f:
        vectors = json.load(f)["vectors"]
    done = 0
    for v in vectors:
        name = v["protocol_name"]
        if name not in ("Noise_IK_25519_ChaChaPoly_BLAKE2b",
                        "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b"):
            continue
        b = bytes.fromhex
        psk_mode = "psk2" in name
        ini = Initiator(psk_mode,
                        X25519PrivateKey.from_private_bytes(
                            b(v["init_static"])),
                        b(v["init_remote_static"]), b(v["init_prologue"]),
                        psk=b(v["init_psks"][0]) if psk_mode else None,
                        ephemeral=X25519PrivateKey.from_private_bytes(
                            b(v["init_ephemeral"])))
        m = v["messages"]
        got = ini.write_message1(b(m[0]["payload"]))
        assert got == b(m[0]["ciphertext"]), name + ": message 1"
        assert ini.read_message2(b(m[1]["ciphertext"])) == \
            b(m[1]["payload"]), name + ": message 2"
        assert ini.h == b(v["handshake_hash"]), name + ": handshake hash"
        send, recv = ini.split()
        for i, msg in enumerate(m[2:]):
            if i % 2 == 0:
                assert send.encrypt(b"", b(msg["payload"])) == \
                    b(msg["ciphertext"]), "%s: transport %d" % (name, i)
            else:
                assert recv.decrypt(b"", b(msg["ciphertext"])) == \
                    b(msg["payload"]), "%s: transport %d" % (name, i)
        done += 1
    assert done == 2, "IK and IKpsk2 vectors not both found"
    log("selftest: IK and IKpsk2 vectors pass")


# ---------------------------------------------------------------- token
B32 = "0123456789abcdefghjkmnpqrstvwxyz"


class TokenError(ValueError):
    pass


def b32_decode(text):
    vals = []
    for ch in text.lower():
        if ch in "- \t\r\n":
            continue
        ch = {"i": "1", "l": "1", "o": "0"}.get(ch, ch)
        if ch not in B32:
            raise TokenError("the token has a typo (checksum mismatch)")
        vals.append(B32.index(ch))
    bits = 0
    nbits = 0
    out = bytearray()
    for v in vals:
        bits = (bits << 5) | v
        nbits += 5
        if nbits >= 8:
            nbits -= 8
            out.append((bits >> nbits) & 0xff)
    if bits & ((1 << nbits) - 1):
        raise TokenError("the token has a typo (checksum mismatch)")
    return bytes(out)


def b32_encode(blob):
    bits = 0
    nbits = 0
    out = []
    for byte in blob:
        bits = (bits << 8) | byte
        nbits += 8
        while nbits >= 5:
            nbits -= 5
            out.append(B32[(bits >> nbits) & 31])
    if nbits:
        out.append(B32[(bits << (5 - nbits)) & 31])
    s = "".join(out)
    return "gp1-" + "-".join(s[i:i + 5] for i in range(0, len(s), 5))


def token_checksum(body):
    return hashlib.blake2b(b"gradpool token check v1" + body,
                           digest_size=16).digest()[:5]


def parse_token(text):
    """Returns dict(id, secret, key, expires, endpoints)."""
    text = text.strip()
    if not text.lower().startswith("gp"):
        raise TokenError("not a gradpool token")
    if not text.lower().startswith("gp1-"):
        raise TokenError("a token of an unsupported version")
    blob = b32_decode(text[4:])
    if len(blob) < 6 or token_checksum(blob[:-5]) != blob[-5:]:
        raise TokenError("the token has a typo (checksum mismatch)")
    body = blob[:-5]
    if len(body) < 82 or body[0] != 1:
        raise TokenError("malformed token")
    tok = {"id": body[1:9], "secret": body[9:41], "key": body[41:73],
           "expires": struct.unpack_from("<Q", body, 73)[0],
           "endpoints": []}
    n = body[81]
    off = 82
    if not 1 <= n <= 8:
        raise TokenError("malformed token")
    for _ in range(n):
        if off >= len(body):
            raise TokenError("malformed token")
        ln = body[off]
        ep = body[off + 1:off + 1 + ln]
        if ln == 0 or len(ep) != ln:
            raise TokenError("malformed token")
        tok["endpoints"].append(ep.decode("ascii"))
        off += 1 + ln
    if off != len(body):
        raise TokenError("malformed token")
    return tok


def make_token(tok):
    """The inverse of parse_token (tests forge tokens with it)."""
    body = bytes([1]) + tok["id"] + tok["secret"] + tok["key"] + \
        struct.pack("<QB", tok["expires"], len(tok["endpoints"]))
    for ep in tok["endpoints"]:
        body += bytes([len(ep)]) + ep.encode("ascii")
    return b32_encode(body + token_checksum(body))


def token_psk(secret):
    return hashlib.blake2b(b"", digest_size=32, key=secret,
                           person=b"gp-psk-v1", salt=b"\x00" * 16).digest()


# ---------------------------------------------------------------- messages
MSG_HEADER = 8
FRAME_HANDSHAKE, FRAME_TRANSPORT, FRAME_REFUSE = 1, 2, 3
REC_MSG, REC_BEGIN, REC_PING, REC_CLOSE = 1, 2, 3, 4
MAX_PT = 65519
MAX_MSG_RECORD = MAX_PT - 1     # 65518

JOIN, WELCOME, REJECT, HEARTBEAT, WORK_REQUEST, MINIBATCH = 1, 2, 3, 4, 5, 6
PARAM_SHARDS, UPDATE, CLOCK, BYE = 8, 9, 10, 14


def tlv(tag, value):
    return struct.pack("<HI", tag, len(value)) + value


def encode_msg(mtype, fields):
    body = b"".join(fields)
    return struct.pack("<BBHI", 1, mtype, 0, len(body)) + body


def decode_fields(body):
    """Returns [(tag, bytes)] of a TLV body."""
    out = []
    off = 0
    while off < len(body):
        if len(body) - off < 6:
            raise ValueError("field header cut short")
        tag, ln = struct.unpack_from("<HI", body, off)
        off += 6
        if ln > len(body) - off:
            raise ValueError("field past the end")
        out.append((tag, body[off:off + ln]))
        off += ln
    return out


def decode_msg(data):
    if len(data) < MSG_HEADER:
        raise ValueError("message shorter than its header")
    ver, mtype, _flags, blen = struct.unpack_from("<BBHI", data, 0)
    if ver != 1 or blen != len(data) - MSG_HEADER:
        raise ValueError("bad header")
    return mtype, decode_fields(data[MSG_HEADER:])


def u(fields, tag, default=0):
    for t, v in fields:
        if t == tag:
            return int.from_bytes(v, "little")
    return default


def raw(fields, tag, default=b""):
    for t, v in fields:
        if t == tag:
            return v
    return default


# ---------------------------------------------------------------- model
def model_shapes(spec):
    widths = [int(w) for w in spec.split("-")]
    shapes = []
    for i in range(1, len(widths)):
        shapes.append((widths[i], widths[i - 1]))
        shapes.append((widths[i], 1))
    return shapes


def gradient(params, pixels, labels, n):
    """protocol.md "Forward, loss, gradient": mean softmax cross-entropy
    and its gradient for every tensor, in float32 (float64 for the
    softmax)."""
    x = np.frombuffer(pixels, dtype=np.uint8).reshape(n, -1) \
        .astype(np.float32) * np.float32(1.0 / 255.0)
    y = np.frombuffer(labels, dtype=np.uint8).astype(np.int64)
    L = len(params) // 2
    acts = [x]
    a = x
    for l in range(L):
        W, b = params[2 * l], params[2 * l + 1]
        z = a @ W.T + b[:, 0]
        if l < L - 1:
            a = np.maximum(z, 0)
            acts.append(a)
    z = z.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    loss = float(-np.log(p[np.arange(n), y]).mean())
    dz = p
    dz[np.arange(n), y] -= 1.0
    dz = (dz / n).astype(np.float32)
    grads = [None] * len(params)
    for l in range(L - 1, -1, -1):
        grads[2 * l] = dz.T @ acts[l]
        grads[2 * l + 1] = dz.sum(axis=0).reshape(-1, 1)
        if l > 0:
            dz = (dz @ params[2 * l]) * (acts[l] > 0)
    return loss, grads


# ---------------------------------------------------------------- channel
class Refused(Exception):
    def __init__(self, how, code=None, text=""):
        super().__init__("%s %s %s" % (how, code, text))
        self.how = how
        self.code = code
        self.text = text


class Channel:
    """One TCP connection: frames, the handshake, records. Sending is
    serialised by a lock (a BEGIN and its pieces must not be split by a
    PING from the keep-alive thread)."""

    def __init__(self, endpoint, timeout=10.0):
        host, port = endpoint.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout)
        self.sock.settimeout(timeout)
        self.lock = threading.Lock()
        self.last_send = time.monotonic()
        self.send_cs = self.recv_cs = None
        self.sent_bytes = 0

    def _recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("EOF" if not buf else "truncated frame")
            buf += chunk
        return bytes(buf)

    def send_frame(self, kind, body):
        assert len(body) <= 65535
        self.sock.sendall(struct.pack("<IB", len(body), kind) + body)
        self.sent_bytes += 5 + len(body)

    def recv_frame(self):
        hdr = self._recv_exact(5)
        ln, kind = struct.unpack("<IB", hdr)
        if ln > 65535:
            raise ConnectionError("oversized frame")
        return kind, self._recv_exact(ln)

    def handshake(self, s, rs, token=None):
        """IKpsk2 with the token (first join), else IK. Returns on an
        accepting verdict; raises Refused otherwise."""
        if token is not None:
            ini = Initiator(True, s, rs, PROLOGUE, psk=token_psk(
                token["secret"]))
            self.send_frame(FRAME_HANDSHAKE, b"\x02" +
                            ini.write_message1(token["id"]))
        else:
            ini = Initiator(False, s, rs, PROLOGUE)
            self.send_frame(FRAME_HANDSHAKE, b"\x01" + ini.write_message1(b""))
        try:
            kind, body = self.recv_frame()
        except EOFError:
            raise Refused("eof")
        if kind == FRAME_REFUSE:
            raise Refused("refuse-frame")
        if kind != FRAME_HANDSHAKE:
            raise Refused("protocol", kind)
        try:
            verdict = ini.read_message2(body)
        except Exception:
            raise Refused("key-mismatch")
        if verdict[:1] == b"\x00":
            self.send_cs, self.recv_cs = ini.split()
            return
        if verdict[:1] == b"\x01" and len(verdict) >= 3:
            raise Refused("verdict", struct.unpack_from("<H", verdict, 1)[0],
                          verdict[3:].decode("utf-8", "replace"))
        raise Refused("malformed-verdict")

    # -- transport ------------------------------------------------------
    def _send_transport(self, pt):
        self.send_frame(FRAME_TRANSPORT, self.send_cs.encrypt(b"", pt))
        self.send_cs.rekey_if_due()

    def send_record(self, rec, data=b""):
        with self.lock:
            self._send_transport(bytes([rec]) + data)
            self.last_send = time.monotonic()

    def send_msg(self, msg):
        with self.lock:
            if len(msg) <= MAX_MSG_RECORD:
                self._send_transport(bytes([REC_MSG]) + msg)
            else:
                self._send_transport(bytes([REC_BEGIN]) +
                                     struct.pack("<I", len(msg)))
                for off in range(0, len(msg), MAX_PT):
                    self._send_transport(msg[off:off + MAX_PT])
            self.last_send = time.monotonic()

    def recv_transport(self):
        kind, body = self.recv_frame()
        if kind != FRAME_TRANSPORT:
            raise ConnectionError("frame of kind %d after the handshake"
                                  % kind)
        pt = self.recv_cs.decrypt(b"", body)
        self.recv_cs.rekey_if_due()
        return pt

    def recv_record(self):
        """Returns ("msg", bytes), ("close", code, text) or None (PING or
        unknown record). Reassembles BEGIN + pieces."""
        pt = self.recv_transport()
        if not pt:
            raise ConnectionError("empty plaintext")
        rec = pt[0]
        if rec == REC_MSG:
            return ("msg", pt[1:])
        if rec == REC_BEGIN:
            if len(pt) != 5:
                raise ConnectionError("malformed BEGIN")
            total = struct.unpack_from("<I", pt, 1)[0]
            if total > 64 << 20:
                raise ConnectionError("oversized message")
            buf = bytearray()
            while len(buf) < total:
                piece = self.recv_transport()
                want = min(MAX_PT, total - len(buf))
                if len(piece) != want:
                    raise ConnectionError("piece of %d bytes, want %d" %
                                          (len(piece), want))
                buf += piece
            return ("msg", bytes(buf))
        if rec == REC_CLOSE:
            code = struct.unpack_from("<H", pt, 1)[0] if len(pt) >= 3 else 0
            return ("close", code, pt[3:].decode("utf-8", "replace"))
        return None

    def close(self, code=0, text=""):
        """CLOSE record, shut down our side, read until EOF or 2 s."""
        try:
            self.send_record(REC_CLOSE, struct.pack("<H", code) +
                             text.encode())
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(2.0)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------- agent
def load_identity(state):
    os.makedirs(state, exist_ok=True)
    path = os.path.join(state, "identity.key")
    if os.path.exists(path):
        with open(path, "rb") as f:
            return X25519PrivateKey.from_private_bytes(f.read())
    key = X25519PrivateKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(_priv_bytes(key))
    return key


def load_membership(state):
    path = os.path.join(state, "membership.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        m = json.load(f)
    return {"key": bytes.fromhex(m["key"]), "endpoints": m["endpoints"]}


def save_membership(state, key, endpoints):
    with open(os.path.join(state, "membership.json"), "w") as f:
        json.dump({"key": key.hex(), "endpoints": endpoints}, f)


class Session:
    def __init__(self, args):
        self.args = args
        self.s = load_identity(args.state)
        self.inbox = queue.Queue()
        self.stop = threading.Event()
        self.params = None
        self.shapes = None
        self.heartbeat_s = 5.0
        self.updates_sent = 0
        self.poisoned = 0
        self.ch = None

    def connect(self):
        tok = parse_token(self.args.token) if self.args.token else None
        member = load_membership(self.args.state)
        if tok is None and member is None:
            raise SystemExit("docclient: no token and no membership")
        if member is not None:
            rs, endpoints, use = member["key"], member["endpoints"], None
        else:
            rs, endpoints, use = tok["key"], tok["endpoints"], tok
        last = None
        for ep in endpoints:
            try:
                ch = Channel(ep)
            except OSError as e:
                last = e
                continue
            ch.handshake(self.s, rs, use)
            log("connected to %s with %s" % (ep, "IKpsk2" if use else "IK"))
            self.ch = ch
            self.endpoints = endpoints
            self.rs = rs
            return
        raise SystemExit("docclient: no endpoint answered (%s)" % last)

    def reader(self):
        try:
            while not self.stop.is_set():
                r = self.ch.recv_record()
                if r is not None:
                    self.inbox.put(r)
        except Exception as e:
            self.inbox.put(("eof", repr(e)))

    def keepalive(self):
        while not self.stop.wait(0.1):
            if time.monotonic() - self.ch.last_send >= self.heartbeat_s / 2:
                try:
                    self.ch.send_record(REC_PING)
                except OSError:
                    return

    def run(self):
        self.connect()
        ch = self.ch
        ch.sock.settimeout(None)
        ch.send_record(REC_PING)
        threading.Thread(target=self.reader, daemon=True).start()
        threading.Thread(target=self.keepalive, daemon=True).start()
        ch.send_msg(encode_msg(JOIN, [
            tlv(1, self.args.name.encode()),
            tlv(4, struct.pack("<I", 0))]))
        try:
            return self.loop()
        finally:
            self.stop.set()

    def leave(self, reason=0, text="leaving"):
        """BYE then CLOSE record (protocol.md "Pausing and leaving")."""
        self.ch.send_msg(encode_msg(BYE, [tlv(1, struct.pack("<H", reason)),
                                          tlv(2, text.encode())]))
        self.stop.set()
        self.ch.close(0, text)

    def loop(self):
        while True:
            item = self.inbox.get()
            if item[0] == "eof":
                log("connection ended: %s" % item[1])
                return 5
            if item[0] == "close":
                log("CLOSE record %d %r" % (item[1], item[2]))
                return 5
            mtype, f = decode_msg(item[1])
            if mtype == WELCOME:
                self.on_welcome(f)
            elif mtype == REJECT:
                log("REJECT %d %r" % (u(f, 1), raw(f, 2).decode()))
                print("REJECT %d" % u(f, 1))
                self.stop.set()
                self.ch.sock.close()
                return 2
            elif mtype == BYE:
                reason = u(f, 1)
                log("BYE %d %r" % (reason, raw(f, 2).decode()))
                print("BYE %d" % reason)
                self.stop.set()
                self.ch.close(0, "bye")
                return 0 if reason == 2 else 6
            elif mtype == PARAM_SHARDS:
                self.on_shards(f)
            elif mtype == MINIBATCH:
                self.on_minibatch(f)
                if self.args.max_updates and \
                        self.updates_sent >= self.args.max_updates:
                    log("leaving after %d updates" % self.updates_sent)
                    self.leave()
                    return 0
            # HEARTBEAT, CLOCK, STATS, unknown types: ignored.

    def on_welcome(self, f):
        spec = raw(f, 3).decode()
        self.shapes = model_shapes(spec)
        self.params = [np.zeros(s, dtype=np.float32) for s in self.shapes]
        hb = u(f, 6)
        if hb:
            self.heartbeat_s = hb / 1000.0
        log("WELCOME agent %d job %d model %s batch %d caps %d hb %d ms" %
            (u(f, 1), u(f, 2), spec, u(f, 4), u(f, 7), hb))
        save_membership(self.args.state, self.rs, self.endpoints)
        self.ch.send_msg(encode_msg(WORK_REQUEST,
                                    [tlv(1, struct.pack("<I", 1))]))

    def on_shards(self, f):
        for tag, val in f:
            if tag != 2:
                continue
            b = decode_fields(val)
            t, row0, rows = u(b, 1), u(b, 2), u(b, 3)
            count, dtype, data = u(b, 5), u(b, 6), raw(b, 8)
            if t >= len(self.params):
                continue                # momentum: never asked for
            rows_t, cols = self.shapes[t]
            if rows == 0:
                rows = rows_t
            if count != rows * cols or row0 + rows > rows_t:
                raise ValueError("PARAM_SHARDS block of tensor %d: rows %d"
                                 "..%d, count %d" % (t, row0, rows, count))
            if dtype == 0:
                vals = np.frombuffer(data, dtype="<f4", count=count)
            elif dtype == 1:
                vals = np.frombuffer(data, dtype="<f2", count=count) \
                    .astype(np.float32)
            else:
                raise ValueError("dtype %d in PARAM_SHARDS" % dtype)
            flat = self.params[t].reshape(-1)
            flat[row0 * cols:row0 * cols + count] = vals

    def on_minibatch(self, f):
        t0 = time.monotonic()
        n = u(f, 4)
        loss, grads = gradient(self.params, raw(f, 6), raw(f, 7), n)
        us = int((time.monotonic() - t0) * 1e6)
        plan = self.args.poison.split(",") if self.args.poison else []
        poison = plan[self.poisoned] if self.poisoned < len(plan) else None
        if poison == "nan":
            grads[0] = grads[0].copy()
            grads[0][0, 0] = np.nan
        blocks = []
        for t, g in enumerate(grads):
            if poison == "shape" and t == 5:
                break               # five blocks instead of six
            g = np.ascontiguousarray(g, dtype="<f4")
            blocks.append(tlv(10, b"".join([
                tlv(1, struct.pack("<I", t)),
                tlv(2, struct.pack("<I", 0)),
                tlv(3, struct.pack("<I", g.shape[0])),
                tlv(5, struct.pack("<I", g.size)),
                tlv(6, b"\x00"),
                tlv(8, g.tobytes())])))
        if poison:
            self.poisoned += 1
        msg = encode_msg(UPDATE, [
            tlv(1, raw(f, 1)), tlv(2, raw(f, 2)), tlv(3, raw(f, 3)),
            tlv(5, struct.pack("<f", loss)),
            tlv(7, struct.pack("<Q", us))] + blocks)
        self.ch.send_msg(msg)
        self.updates_sent += 1
        if self.updates_sent % 50 == 0 or self.updates_sent <= 2:
            log("update %d: epoch %d minibatch %d clock %d loss %.4f"
                " (%d us)" % (self.updates_sent, u(f, 1), u(f, 2), u(f, 3),
                              loss, us))


def cmd_handshake(args):
    """Only the handshake and, if accepted, a JOIN: prints the outcome."""
    args.max_updates = 0
    sess = Session(args)
    try:
        sess.connect()
    except Refused as r:
        print("REFUSED %s %s %s" % (r.how, r.code, r.text))
        return {"verdict": 2, "key-mismatch": 3, "refuse-frame": 4}.get(
            r.how, 5)
    print("ACCEPTED")
    if args.join_version:
        # A JOIN of another message version: protocol.md "Versioning
        # rules" says REJECT 6 with the versions the coordinator speaks
        # (tags 4 and 5), then CLOSE 6.
        ch = sess.ch
        ch.send_record(REC_PING)
        join = bytearray(encode_msg(JOIN, [tlv(1, args.name.encode()),
                                           tlv(4, struct.pack("<I", 0))]))
        join[0] = args.join_version
        ch.send_msg(bytes(join))
        try:
            while True:
                r = ch.recv_record()
                if r is None:
                    continue
                if r[0] == "close":
                    print("CLOSE %d %s" % (r[1], r[2]))
                    break
                mtype, f = decode_msg(r[1])
                print("MSG %d %d %s" % (mtype, u(f, 1),
                                        raw(f, 2).decode("utf-8", "replace")))
                if mtype == REJECT and any(t == 4 for t, _ in f):
                    print("VERSIONS %d %d" % (u(f, 4), u(f, 5)))
        except (EOFError, ConnectionError, OSError) as e:
            print("EOF %r" % e)
    sess.ch.close()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for c in ("run", "handshake"):
        p = sub.add_parser(c)
        p.add_argument("--state", required=True)
        p.add_argument("--token")
        p.add_argument("--name", default="docclient")
        if c == "handshake":
            p.add_argument("--join-version", type=int, default=0,
                           help="then send a JOIN of this message version")
        if c == "run":
            p.add_argument("--max-updates", type=int, default=0)
            p.add_argument("--poison", help="comma list of nan|shape: "
                           "the first updates are spoiled so, in order")
    p = sub.add_parser("selftest")
    p.add_argument("vectors")
    args = ap.parse_args()
    if args.cmd == "selftest":
        selftest(args.vectors)
        return 0
    if args.cmd == "handshake":
        return cmd_handshake(args)
    try:
        return Session(args).run()
    except Refused as r:
        log("refused: %s %s %s" % (r.how, r.code, r.text))
        print("REFUSED %s %s" % (r.how, r.code))
        return {"verdict": 2, "key-mismatch": 3, "refuse-frame": 4}.get(
            r.how, 5)
    except TokenError as e:
        log("token: %s" % e)
        return 7


if __name__ == "__main__":
    sys.exit(main())
