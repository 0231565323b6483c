#!/usr/bin/env python3
"""A pool owner's own data set (issue 12.3): Fashion-MNIST converted by this
test to NumPy .npy files (float32 N x 1 x 28 x 28 images, int64 labels) in
the coordinator's directory only, with the test set held out by the job's
test_share. The agents do not hold it: each fetches it once as
content-addressed shards, which land in its cache directory, and then
computes minibatches given as indices. One agent is stopped once it holds
the set, two of its cached shards are damaged (one byte flipped, one file
cut short), and on its restart it finds both, removes them and fetches
only those two again. The pool learns: the ledger's best epoch's test
accuracy is well above chance, and every minibatch is applied exactly
once.

From the documents alone (docs/protocol.md "Data shards", with
docclient.py's channel): the manifest in WELCOME parses as documented, a
shard fetched with DATA_REQUEST has the documented BLAKE2b digest and
holds the documented stream (the first samples' float32 elements); a
request beyond the manifest, or without the capability, ends the
connection with BYE 4; and a client without the capability is refused
with REJECT 6, since this data set's samples are not bytes."""
import argparse
import glob
import gzip
import hashlib
import os
import struct
import sys

import numpy as np

import gppool
from gppool import check, log

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import docclient as dc  # noqa: E402

SAMPLES = 20000          # of the 60,000: a quick job, 61 MiB as float32
TEST_SHARE = 0.1
EPOCHS = 3
BATCH = 64
TARGET = 0.70            # chance is 0.10


def target():
    """What "well above chance" asks of the best of the 3 epochs'
    evaluations: 0.70, and 0.65 for ASan builds, whose agents compute
    several times slower, so that the loopback links they measure look slow
    (13-21 Mbit/s in a CI run), clocks grow to 450-570 ms and the 843
    minibatches of the job merge less often: the same job ended at 0.739
    there. The last epoch is not the measure: 18,000 samples at 3,000 to
    180,000 a second are a noisy run (one CI run went 71.4, 81.8 then
    77.6 %, a run alone 69.7, 78.9 then 73.8 %). Wrong or shuffled labels,
    or samples read from the wrong offsets, stay near 0.10."""
    return 0.65 if gppool.sanitized() else TARGET


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    nd = magic & 0xff
    dims = struct.unpack(">" + "I" * nd, data[4:4 + 4 * nd])
    return np.frombuffer(data, dtype=np.uint8,
                         offset=4 + 4 * nd).reshape(dims)


def write_npy(d):
    src = os.environ.get("GP_DATA_DIR", "/usr/share/datasets/fashion-mnist")
    x = read_idx(os.path.join(src, "train-images-idx3-ubyte.gz"))[:SAMPLES]
    y = read_idx(os.path.join(src, "train-labels-idx1-ubyte.gz"))[:SAMPLES]
    os.makedirs(d)
    xi = os.path.join(d, "images.npy")
    yi = os.path.join(d, "labels.npy")
    np.save(xi, (x.astype(np.float32) / 255.0).reshape(SAMPLES, 1, 28, 28))
    np.save(yi, y.astype(np.int64))
    return xi, yi


def probe(pool, name, caps, requests):
    """Joins as a docclient-made member asking for caps, sends DATA_REQUEST
    for each shard in requests once WELCOME came, and returns (WELCOME's
    fields, [DATA_SHARD fields], the BYE or REJECT fields or None)."""
    args = argparse.Namespace(state=os.path.join(pool.dir, "probe-" + name),
                              token=pool.invite(uses=1), name=name)
    c = dc.Session(args)
    c.connect()
    ch = c.ch
    ch.send_msg(dc.encode_msg(dc.JOIN, [dc.tlv(1, name.encode()),
                                        dc.tlv(4, struct.pack("<I", caps))]))
    welcome, shards, end = None, [], None
    while True:
        rec = ch.recv_record()
        if rec is None:
            continue
        if rec[0] != "msg":
            break
        mtype, f = dc.decode_msg(rec[1])
        if mtype == dc.WELCOME:
            welcome = f
            for i in requests:
                ch.send_msg(dc.encode_msg(16, [dc.tlv(1, struct.pack("<I",
                                                                     i))]))
            if not requests:
                break
        elif mtype == 17:
            shards.append(f)
            if len(shards) == len(requests):
                break
        elif mtype in (dc.BYE, dc.REJECT):
            end = (mtype, dc.u(f, 1), dc.raw(f, 2).decode())
            break
    ch.close(0, "probe done")
    return welcome, shards, end


def docs_checks(pool, xi):
    x = np.load(xi)
    # A client with the capability: the manifest and a shard as documented.
    welcome, shards, end = probe(pool, "probe-ok", 1 << 9, [0, 1])
    check(end is None and welcome is not None, "probe: %r" % (end,))
    check(dc.u(welcome, 7) & (1 << 9), "DATA_SHARDS not granted")
    m = dc.raw(welcome, 11)
    check(m[:4] == b"GPDM" and m[4] == 1 and m[5] == 1,
          "manifest header %r" % m[:8])
    count, c, h, w, classes, size = struct.unpack_from("<6I", m, 8)
    total, n = struct.unpack_from("<QI", m, 32)
    check((count, c, h, w, classes) == (18000, 1, 28, 28, 10),
          "manifest shape %r" % ((count, c, h, w, classes),))
    check(total == count * c * h * w * 4 + count and
          n == (total + size - 1) // size and len(m) == 44 + 32 * n,
          "manifest sizes: total %d, shard_size %d, n %d, length %d"
          % (total, size, n, len(m)))
    for k, f in enumerate(shards):
        data = dc.raw(f, 2)
        check(dc.u(f, 1) == k and len(data) == size,
              "DATA_SHARD %d: %d bytes" % (dc.u(f, 1), len(data)))
        check(hashlib.blake2b(data, digest_size=32).digest() ==
              m[44 + 32 * k:76 + 32 * k], "shard %d: digest" % k)
    # The stream: the training part's samples as float32, in file order
    # minus the held-out ones; the first sample is one of the file's.
    first = np.frombuffer(dc.raw(shards[0], 2)[:784 * 4], dtype="<f4")
    check(any(np.array_equal(first, x[i].reshape(-1)) for i in range(40)),
          "shard 0 does not start with a sample of the file")
    log("from the documents: manifest of %d shards, shards 0 and 1 match "
        "their BLAKE2b digests" % n)
    # Beyond the manifest, and without the capability: BYE 4.
    _, _, end = probe(pool, "probe-far", 1 << 9, [n])
    check(end and end[0] == dc.BYE and end[1] == 4 and
          "bad data request" in end[2], "a request beyond: %r" % (end,))
    _, _, end = probe(pool, "probe-nocap", 1 << 7, [])
    check(end and end[0] == dc.REJECT and end[1] == 6 and
          "travels as shards" in end[2], "no capability: %r" % (end,))
    log("refused: a shard beyond the manifest (BYE 4), a client that "
        "cannot fetch (REJECT 6)")


def shard_files(agent):
    return sorted(glob.glob(os.path.join(agent.state, "data-cache",
                                         "*.shard")))


def main():
    with gppool.Pool("npy", train={"epochs": EPOCHS, "batch_size": BATCH},
                     model={"spec": "784-128-10"}) as pool:
        xi, yi = write_npy(os.path.join(pool.dir, "coord-data"))
        pool.job["data"] = {"set": "fmnist-npy", "format": "npy",
                            "train_images": xi, "train_labels": yi,
                            "test_share": TEST_SHARE}
        pool.write_job()
        pool.serve()
        serve_log = pool.serve_proc.stderr()
        check("training set: 18000 samples of 1x28x28 float32, 10 classes; "
              "test set: 2000 samples" in serve_log,
              "serve did not describe the .npy data set:\n%s" % serve_log)
        docs_checks(pool, xi)
        a1, a2 = pool.agents(2)

        # a1 alone, slowed down, until it holds the whole set.
        p = a1.run(delay_ms=300)
        pool.wait_for("a1 to fetch the data set",
                      lambda: "the data set is complete" in p.stderr(),
                      timeout=120)
        p.end()
        files = shard_files(a1)
        n_shards = len(files)
        check(n_shards >= 50, "a1 cached %d shard files, want the whole "
              "set (55 MiB in 1 MiB shards)" % n_shards)
        check("fetching the data set: %d shard(s) missing" % n_shards in
              p.stderr(), "a1 did not fetch every shard:\n%s" % p.stderr())
        # Damage two cached shards: a flipped byte, a cut file.
        with open(files[3], "r+b") as f:
            f.seek(1000)
            b = f.read(1)
            f.seek(1000)
            f.write(bytes([b[0] ^ 0x40]))
        with open(files[7], "r+b") as f:
            f.truncate(4096)
        log("a1 fetched %d shards; damaged two of them" % n_shards)

        # a1 slowed again: alone it could finish the job while a2 still
        # fetches (seen with two suites beside it on 2 cores), and a2's
        # cache would then be short.
        p = a1.run(delay_ms=50)
        # a2 once a1 has its two shards back: a2 alone fetches the set
        # and trains the whole small job in about 2 s, and a1, checking
        # its cache and measuring its device first, once connected only
        # after the job was done, its cache still short (tools/test,
        # 2026-12-07).
        pool.wait_for("a1 fetching its two shards again",
                      lambda: "the data set is complete" in p.stderr(),
                      timeout=120)
        q = a2.run()
        pool.wait_serve(timeout=400, agents_exit=True)
        err1, err2 = p.stderr(), q.stderr()
        check(err1.count("is corrupt: removed, fetching it again") == 2,
              "a1 did not find both damaged shards:\n%s" % err1)
        check("%d of them cached" % (n_shards - 2) in err1 and
              "fetching the data set: 2 shard(s) missing" in err1,
              "a1 did not fetch just the two damaged shards:\n%s" % err1)
        check("fetching the data set: %d shard(s) missing" % n_shards in
              err2, "a2 did not fetch the set:\n%s" % err2)
        check(len(shard_files(a1)) == n_shards and
              len(shard_files(a2)) == n_shards,
              "the caches do not hold every shard")
        for f in shard_files(a1):
            check(os.path.getsize(f) <= 1 << 20, "%s: too large" % f)
        check(not os.path.exists(os.path.join(a1.state, "data-cache",
                                              "images.npy")),
              "the agent holds the owner's file")

        # Exactly once, on the held-out split's training part.
        per = (SAMPLES - int(SAMPLES * TEST_SHARE + 0.5) + BATCH - 1) // BATCH
        rows = pool.applied()
        seen = {}
        for (_id, _agent, _clock, epoch, mb, _n, _st) in rows:
            seen[(epoch, mb)] = seen.get((epoch, mb), 0) + 1
        check(len(seen) == per * EPOCHS and set(seen.values()) == {1},
              "%d distinct minibatches applied (want %d), duplicates %r" %
              (len(seen), per * EPOCHS,
               [k for k, v in seen.items() if v != 1][:5]))
        agents = {r[1] for r in rows}
        check(len(agents) == 2, "updates from %d agents" % len(agents))
        accs = [a for (_epoch, a) in pool.evals()]
        check(len(accs) == EPOCHS, "want %d evaluations, got %r" %
              (EPOCHS, accs))
        log("test accuracy by epoch %s (target %.2f for the best)" %
            (", ".join("%.4f" % a for a in accs), target()))
        check(max(accs) >= target(), "best accuracy %.4f below %.2f" %
              (max(accs), target()))


if __name__ == "__main__":
    gppool.main(main)
