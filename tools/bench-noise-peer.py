#!/usr/bin/python3
"""bench-noise-peer.py [SECONDS]: the peer for tools/bench-noise. Times
complete in-process Noise_IK_25519_ChaChaPoly_BLAKE2b handshakes (both sides,
static keys made once, split included) with dissononce, Debian's
python3-dissononce (X25519 and ChaCha20-Poly1305 from OpenSSL through
python3-cryptography), and prints the same line format as bench-noise."""
import sys
import time

from dissononce.cipher.chachapoly import ChaChaPolyCipher
from dissononce.dh.x25519.x25519 import X25519DH
from dissononce.hash.blake2b import Blake2bHash
from dissononce.processing.handshakepatterns.interactive.IK import \
    IKHandshakePattern
from dissononce.processing.impl.cipherstate import CipherState
from dissononce.processing.impl.handshakestate import HandshakeState
from dissononce.processing.impl.symmetricstate import SymmetricState


def new_state():
    return HandshakeState(
        SymmetricState(CipherState(ChaChaPolyCipher()), Blake2bHash()),
        X25519DH())


def main():
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    dh = X25519DH()
    init_s = dh.generate_keypair()
    resp_s = dh.generate_keypair()
    prologue = b"gradpool bench"
    n = 0
    t0 = time.monotonic()
    c0 = time.process_time()
    while True:
        for _ in range(20):
            i, r = new_state(), new_state()
            i.initialize(IKHandshakePattern(), True, prologue, s=init_s,
                         rs=resp_s.public)
            r.initialize(IKHandshakePattern(), False, prologue, s=resp_s)
            m1 = bytearray()
            i.write_message(b"hello", m1)
            r.read_message(bytes(m1), bytearray())
            m2 = bytearray()
            r_split = r.write_message(b"", m2)
            i_split = i.read_message(bytes(m2), bytearray())
            assert r_split is not None and i_split is not None
            n += 1
        t = time.monotonic() - t0
        if t >= secs:
            break
    c = time.process_time() - c0
    print("dissononce %s: %.0f complete handshakes/s, %.0f per CPU second "
          "(%d in %.2f s, both sides, one thread)"
          % (i.protocol_name, n / t, n / c, n, t))


if __name__ == "__main__":
    main()
