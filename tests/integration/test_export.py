#!/usr/bin/python3
"""The trained model out (issue 12, item 4), with real processes.

1. A pool (coordinator + 2 agents) trains the MLP job; `gradpool-coordinator
   export` writes its newest checkpoint as safetensors and as ONNX.
   - The safetensors file is read by a strict reader written from the
     published format (below, not the project's code), loaded into the
     equivalent PyTorch module with load_state_dict(strict=True), and its
     Fashion-MNIST test accuracy matches the coordinator's own from the
     ledger within 0.1 points.
   - The ONNX file passes onnx.checker.check_model(full_check=True) and
     strict shape inference, and a small evaluator written from ONNX's
     operator definitions (numpy; onnx 1.12 has no reference evaluator)
     gives PyTorch's outputs.
2. Bad input: an unknown format, an unwritable or missing folder, a folder
   as OUT, a checkpoint that does not exist, a damaged checkpoint (named:
   an error, the OUT already there untouched; unnamed: the next intact
   one, with a warning), an unknown job. No temporary file is left.
3. A pool (coordinator + 2 agents) trains the shipped CNN job's model
   (packaging/etc/cnn.model) for an epoch, one agent on an OpenCL device
   where there is one (PoCL here: convolutions and pooling on OpenCL); its
   export loads into PyTorch with the ledger's test accuracy within 0.1
   points, and its ONNX file is valid and agrees with PyTorch.
4. Every layer kind (conv2d, both poolings, flatten, gelu, dropout,
   layernorm on 4-D and flat values, groupnorm (lowered to
   InstanceNormalization in ONNX), a residual add, dense on a 4-D value,
   a conv after a flat value, mse) through export-fixture, which writes with
   the same writers: PyTorch and the ONNX evaluator reproduce the project's
   own per-sample losses and test accuracy.
"""
import gzip
import json
import math
import os
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile

import gppool
from gppool import check, log

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:
    # tools/lib/setup.sh installs python3-torch; a package build may not.
    print("SKIP: %s (python3-torch, python3-numpy)" % e)
    sys.exit(77)

HAVE_ONNX = os.environ.get("GP_HAVE_ONNX", "1") == "1"
if HAVE_ONNX:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        print("SKIP: %s (python3-onnx)" % e)
        sys.exit(77)

DATA_DIR = os.environ.get("GP_DATA_DIR", "/usr/share/datasets/fashion-mnist")

# ---- the published safetensors format, read strictly -----------------


def read_safetensors(path):
    """Returns (metadata, {name: np.float32 array}) or raises ValueError.
    Checks what the format's reference reader checks: the header length,
    UTF-8 JSON starting with '{', dtype/shape/offsets per tensor, offsets
    that tile the byte buffer without holes or overlaps; and what this
    project promises on top: 8-byte alignment (space padding) and the
    tensors in file order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError("shorter than 8 bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > 100_000_000 or 8 + n > len(data):
        raise ValueError("bad header length %d" % n)
    raw = data[8:8 + n]
    text = raw.decode("utf-8")
    if not text.startswith("{"):
        raise ValueError("header does not start with '{'")
    if (8 + n) % 8 or text != text.rstrip(" ") + " " * (len(text) - len(text.rstrip(" "))):
        raise ValueError("data not 8-byte aligned")

    def no_dups(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError("duplicate keys")
        return dict(pairs)

    header = json.loads(text, object_pairs_hook=no_dups)
    meta = header.pop("__metadata__", {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError("__metadata__ is not str -> str")
    buf = data[8 + n:]
    spans = []
    tensors = {}
    for name, info in header.items():
        if set(info) != {"dtype", "shape", "data_offsets"}:
            raise ValueError("%s: keys %s" % (name, sorted(info)))
        if info["dtype"] != "F32":
            raise ValueError("%s: dtype %s" % (name, info["dtype"]))
        b, e = info["data_offsets"]
        count = int(np.prod(info["shape"])) if info["shape"] else 1
        if e - b != 4 * count or b < 0 or e > len(buf):
            raise ValueError("%s: offsets %d..%d for shape %s"
                             % (name, b, e, info["shape"]))
        spans.append((b, e, name))
        tensors[name] = np.frombuffer(buf[b:e], dtype="<f4").reshape(
            info["shape"]).copy()
    spans.sort()
    at = 0
    for b, e, name in spans:
        if b != at:
            raise ValueError("%s: hole or overlap at %d" % (name, b))
        at = e
    if at != len(buf):
        raise ValueError("the tensors do not cover the byte buffer")
    return meta, tensors, [name for _, _, name in spans]


# ---- the model description, as docs/models.md defines it ---------------

def parse_description(text):
    """Parses the canonical description ("gradpool-model 1; input ...;")
    into [(type, name, {key: value}, [inputs])] with shapes (c, h, w)."""
    parts = [p.strip() for p in re.split(r"[;\n]", text) if p.strip()]
    check(parts[0] == "gradpool-model 1", "description header: %r" % parts[0])
    layers = []
    for p in parts[1:]:
        words = p.split()
        typ = words[0]
        if typ == "input":
            name, rest = "input", words[1:]
        else:
            name, rest = words[1], words[2:]
        kv = dict(w.split("=", 1) for w in rest)
        ins = kv.pop("in").split(",") if "in" in kv else (
            [layers[-1][1]] if layers else [])
        layers.append([typ, name, kv, ins, None])
    shapes = {}
    for l in layers:
        typ, name, kv, ins = l[:4]
        a = shapes.get(ins[0]) if ins else None
        if typ == "input":
            d = [int(x) for x in kv["shape"].split("x")]
            s = (1, 1, d[0]) if len(d) == 1 else tuple(d)
        elif typ == "dense":
            s = (1, 1, int(kv["out"]))
        elif typ == "conv2d":
            k, st, p = int(kv["kernel"]), int(kv["stride"]), int(kv["padding"])
            s = (int(kv["out"]), (a[1] + 2 * p - k) // st + 1,
                 (a[2] + 2 * p - k) // st + 1)
        elif typ in ("maxpool2d", "avgpool2d"):
            k, st = int(kv["kernel"]), int(kv["stride"])
            s = (a[0], (a[1] - k) // st + 1, (a[2] - k) // st + 1)
        elif typ == "flatten":
            s = (1, 1, a[0] * a[1] * a[2])
        elif typ in ("softmax_xent", "mse"):
            s = (1, 1, 1)
        else:
            s = a
        shapes[name] = s
        l[4] = s
    return layers


class Described(nn.Module):
    """The PyTorch module a description stands for: parameters named as
    the export names them, values flat ([N, W]) or 4-D ([N, C, H, W]) as
    the ONNX graph has them."""

    def __init__(self, text):
        super().__init__()
        self.layers = parse_description(text)
        self.shape = {l[1]: l[4] for l in self.layers}
        for typ, name, kv, ins, s in self.layers:
            a = self.shape[ins[0]] if ins else None
            if typ == "dense":
                self.add_module(name, nn.Linear(a[0] * a[1] * a[2],
                                                int(kv["out"])))
            elif typ == "conv2d":
                self.add_module(name, nn.Conv2d(
                    a[0], int(kv["out"]), int(kv["kernel"]),
                    stride=int(kv["stride"]), padding=int(kv["padding"])))
            elif typ == "layernorm":
                self.add_module(name, nn.LayerNorm(a[2], eps=float(kv["eps"])))
            elif typ == "groupnorm":
                self.add_module(name, nn.GroupNorm(int(kv["groups"]), a[0],
                                                   eps=float(kv["eps"])))
            elif typ == "maxpool2d":
                self.add_module(name, nn.MaxPool2d(int(kv["kernel"]),
                                                   int(kv["stride"])))
            elif typ == "avgpool2d":
                self.add_module(name, nn.AvgPool2d(int(kv["kernel"]),
                                                   int(kv["stride"])))
            elif typ == "gelu":
                self.add_module(name, nn.GELU())
            elif typ == "dropout":
                self.add_module(name, nn.Dropout(float(kv["p"])))
        self.loss_type = self.layers[-1][0]

    def four_d(self, x, name):
        c, h, w = self.shape[name]
        return x if x.dim() == 4 else x.reshape(-1, c, h, w)

    def forward(self, x):
        """x: [N, 784]; returns the loss layer's input, flattened."""
        v = {}
        for typ, name, kv, ins, s in self.layers:
            a = v.get(ins[0]) if ins else None
            if typ == "input":
                y = x if s[0] == 1 and s[1] == 1 else x.reshape(-1, *s)
            elif typ == "dense":
                y = getattr(self, name)(a.flatten(1))
            elif typ in ("conv2d", "maxpool2d", "avgpool2d", "groupnorm"):
                y = getattr(self, name)(self.four_d(a, ins[0]))
            elif typ == "flatten":
                y = a.flatten(1)
            elif typ == "relu":
                y = F.relu(a)
            elif typ in ("gelu", "dropout", "layernorm"):
                y = getattr(self, name)(a)
            elif typ == "add":
                b = v[ins[1]]
                if a.dim() != b.dim():
                    a, b = self.four_d(a, ins[0]), self.four_d(b, ins[1])
                y = a + b
            else:
                return a.flatten(1)
            v[name] = y
        raise AssertionError("no loss layer")

    def losses(self, out, labels):
        """Per-sample losses as the project's loss layers define them."""
        if self.loss_type == "softmax_xent":
            return F.cross_entropy(out, labels, reduction="none")
        t = F.one_hot(labels, out.shape[1]).float()
        return ((out - t) ** 2).mean(dim=1)


def fashion_mnist_test():
    def idx(name):
        with gzip.open(os.path.join(DATA_DIR, name)) as f:
            data = f.read()
        ndim = data[3]
        dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
        return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)
    images = idx("t10k-images-idx3-ubyte.gz").reshape(-1, 784)
    labels = idx("t10k-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.astype(np.float32) * np.float32(1.0 / 255.0))
    return x, torch.from_numpy(labels.astype(np.int64))


def load_module(path):
    meta, tensors, order = read_safetensors(path)
    model = Described(meta["gradpool.model"])
    want = list(model.state_dict().keys())
    check(order == want, "tensor order %s, the model's %s" % (order, want))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()},
                          strict=True)
    model.eval()
    return meta, model


def torch_eval(model, x, y):
    with torch.no_grad():
        out = torch.cat([model(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    acc = float((out.argmax(1) == y).float().mean())
    return out, acc


# ---- ONNX, evaluated from its operator definitions -----------------------

def onnx_check(path, classes_or_shape):
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(m, check_type=True,
                                                 strict_mode=True)
    check(m.ir_version == 8 and m.opset_import[0].version == 17,
          "ir %d opset %d" % (m.ir_version, m.opset_import[0].version))
    out = inferred.graph.output[0]
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in out.type.tensor_type.shape.dim]
    check(dims == ["batch"] + list(classes_or_shape),
          "output shape %s" % dims)
    return m


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def onnx_run(m, x):
    """Evaluates graph m on x ([N, ...] float32) with numpy, following the
    operator definitions of opset 17; torch only for erf, convolution and
    pooling arithmetic."""
    env = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    env[m.graph.input[0].name] = x
    for n in m.graph.node:
        a = attrs(n)
        i = [env[k] for k in n.input]
        op = n.op_type
        if op == "Gemm":
            check(a == {"transB": 1}, "Gemm attributes %s" % a)
            y = i[0] @ i[1].T + i[2]
        elif op == "Conv":
            check(set(a) == {"kernel_shape", "strides", "pads"}, str(a))
            p = a["pads"]
            check(p[0] == p[1] == p[2] == p[3], "pads %s" % p)
            check(list(a["kernel_shape"]) == list(i[1].shape[2:]), "kernel")
            y = F.conv2d(torch.tensor(i[0]), torch.tensor(i[1]),
                         torch.tensor(i[2]), stride=tuple(a["strides"]),
                         padding=p[0]).numpy()
        elif op in ("MaxPool", "AveragePool"):
            check(set(a) == {"kernel_shape", "strides"}, str(a))
            f = F.max_pool2d if op == "MaxPool" else F.avg_pool2d
            y = f(torch.tensor(i[0]), tuple(a["kernel_shape"]),
                  tuple(a["strides"])).numpy()
        elif op == "Flatten":
            check(a == {"axis": 1}, str(a))
            y = i[0].reshape(i[0].shape[0], -1)
        elif op == "Reshape":
            check(not a, "Reshape attributes %s" % a)
            # 0 copies the input's dimension (allowzero is 0).
            y = i[0].reshape([i[0].shape[k] if d == 0 else d
                              for k, d in enumerate(i[1])])
        elif op == "InstanceNormalization":
            check(set(a) == {"epsilon"}, str(a))
            axes = tuple(range(2, i[0].ndim))
            mu = i[0].mean(axis=axes, keepdims=True)
            var = ((i[0] - mu) ** 2).mean(axis=axes, keepdims=True)
            per = (1, -1) + (1,) * (i[0].ndim - 2)
            y = ((i[0] - mu) / np.sqrt(var + a["epsilon"]) *
                 i[1].reshape(per) + i[2].reshape(per))
        elif op == "Relu":
            y = np.maximum(i[0], 0)
        elif op == "Erf":
            y = torch.erf(torch.tensor(i[0])).numpy()
        elif op == "Mul":
            y = i[0] * i[1]
        elif op == "Add":
            y = i[0] + i[1]
        elif op in ("Dropout", "Identity"):
            check(len(n.input) <= 2 and not a, "%s inference only" % op)
            y = i[0]
        elif op == "LayerNormalization":
            check(a.get("axis") == -1, str(a))
            mu = i[0].mean(axis=-1, keepdims=True)
            var = ((i[0] - mu) ** 2).mean(axis=-1, keepdims=True)
            y = (i[0] - mu) / np.sqrt(var + a["epsilon"]) * i[1] + i[2]
        elif op == "Softmax":
            check(a == {"axis": 1}, str(a))
            e = np.exp(i[0] - i[0].max(axis=1, keepdims=True))
            y = e / e.sum(axis=1, keepdims=True)
        else:
            raise gppool.Failure("unexpected operator %s" % op)
        env[n.output[0]] = y.astype(np.float32)
    return {o.name: env[o.name] for o in m.graph.output}


# ---- 1 and 2: a pool's model through the real command ------------------

def export(pool, *args, expect_ok=True):
    r = pool.coord("export", *args, expect_ok=expect_ok)
    return r


def run_coord(*args):
    return subprocess.run([gppool.binaries()[0]] + list(args),
                          capture_output=True, text=True, timeout=60)


def no_temporaries(folder):
    left = [f for f in os.listdir(folder) if f.startswith(".")]
    check(not left, "temporary files left in %s: %s" % (folder, left))


def test_pool(out):
    with gppool.Pool("export", train={"epochs": 2, "staleness": 3,
                                      "checkpoint_keep": 3}) as pool:
        pool.serve()
        for a in pool.agents(2):
            a.run()
        pool.wait_serve(timeout=400, agents_exit=True)
        acc = pool.final_accuracy()
        cks = [c[0] for c in pool.checkpoints()]
        log("trained: test accuracy %.2f%%, checkpoints %s"
            % (100 * acc, cks))
        newest = max(cks)

        st = os.path.join(out, "mlp.safetensors")
        r = export(pool, "--format", "safetensors", st)
        check("exported checkpoint %d of job" % newest in r.stdout, r.stdout)
        meta, model = load_module(st)
        check(meta["gradpool.checkpoint"] == str(newest), str(meta))
        check(meta["gradpool.job_id"] == str(pool.job_id()), str(meta))
        check(meta["gradpool.model_source"] == "784-256-128-10", str(meta))
        check(meta["format"] == "pt", "format")
        x, y = fashion_mnist_test()
        logits, tacc = torch_eval(model, x, y)
        log("PyTorch on the exported safetensors: %.2f%%, the ledger's "
            "%.2f%%" % (100 * tacc, 100 * acc))
        check(abs(tacc - acc) <= 0.001,
              "PyTorch %.4f against the ledger's %.4f" % (tacc, acc))
        check(abs(float(meta["gradpool.test_accuracy"]) - acc) < 1e-6,
              "metadata accuracy %s" % meta["gradpool.test_accuracy"])

        if HAVE_ONNX:
            on = os.path.join(out, "mlp.onnx")
            export(pool, "--format", "onnx", on)
            m = onnx_check(on, [10])
            props = {p.key: p.value for p in m.metadata_props}
            check(props["gradpool.checkpoint"] == str(newest), str(props))
            res = onnx_run(m, x.numpy())
            probs = torch.softmax(logits, 1).numpy()
            diff = float(np.abs(res["output"] - probs).max())
            oacc = float((res["output"].argmax(1) == y.numpy()).mean())
            log("ONNX: accuracy %.2f%%, max |p - PyTorch's| %.2g"
                % (100 * oacc, diff))
            check(diff < 1e-4, "ONNX and PyTorch differ by %g" % diff)
            check(abs(oacc - acc) <= 0.001, "ONNX accuracy %.4f" % oacc)
            check(np.abs(res["logits"] - logits.numpy()).max() < 1e-3,
                  "logits")
            # The format from the name.
            export(pool, os.path.join(out, "named.onnx"))
            check(onnx.load(os.path.join(out, "named.onnx")).graph.node,
                  "named.onnx")
        export(pool, os.path.join(out, "named.safetensors"))
        read_safetensors(os.path.join(out, "named.safetensors"))

        bad_input(pool, out, newest, cks)
        no_temporaries(out)


def bad_input(pool, out, newest, cks):
    def refused(args, rc, words):
        r = export(pool, *args, expect_ok=False)
        check(r.returncode == rc, "export %s: rc %d, not %d (%s)"
              % (args, r.returncode, rc, r.stderr))
        for w in words:
            check(w in r.stderr, "export %s: %r not in %r"
                  % (args, w, r.stderr))
        return r

    target = os.path.join(out, "bad.safetensors")
    refused(["--format", "pickle", target], 2, ["unknown format 'pickle'"])
    refused([os.path.join(out, "model.bin")], 2, ["give --format"])
    refused(["--format", "safetensors"], 2, ["give one file"])
    refused(["--checkpoint", "x", target], 2, ["not a checkpoint number"])
    refused(["--format", "safetensors", "/nonexistent-gp/m.safetensors"], 1,
            ["cannot write /nonexistent-gp/m.safetensors",
             "No such file or directory"])
    refused(["--format", "safetensors", out], 1, ["is a folder"])
    refused(["--checkpoint", "999", target], 1,
            ["has no checkpoint 999", "it keeps: %s"
             % ", ".join(str(c) for c in sorted(cks))])
    refused(["--job", "77", target], 1, ["no job 77"])
    check(not os.path.exists(target), "a refused export wrote a file")
    ro = os.path.join(out, "ro")
    os.mkdir(ro, 0o500)
    if os.geteuid() != 0:
        refused([os.path.join(ro, "m.safetensors")], 1, ["Permission denied"])

    # Damage the newest checkpoint, in a copy of the state folder.
    damaged = os.path.join(out, "damaged-state")
    subprocess.run(["cp", "-a", pool.state, damaged], check=True)
    db = sqlite3.connect(os.path.join(damaged, "ledger.db"))
    blob = bytearray(db.execute("SELECT blob FROM checkpoints WHERE seq = ?",
                                (newest,)).fetchone()[0])
    blob[len(blob) // 2] ^= 0x40
    db.execute("UPDATE checkpoints SET blob = ? WHERE seq = ?",
               (bytes(blob), newest))
    db.commit()
    db.close()
    keep = os.path.join(out, "kept.safetensors")
    with open(keep, "wb") as f:
        f.write(b"the file that was there")
    r = run_coord("export", "--state", damaged, "--checkpoint", str(newest),
                  keep)
    check(r.returncode == 1, "damaged named checkpoint: rc %d" % r.returncode)
    check("checkpoint %d of job" % newest in r.stderr and
          "checksum or layout is wrong" in r.stderr, r.stderr)
    with open(keep, "rb") as f:
        check(f.read() == b"the file that was there", "OUT was overwritten")
    r = run_coord("export", "--state", damaged, keep)
    check(r.returncode == 0, "export of the damaged state: %s" % r.stderr)
    check("checkpoint %d of job %d skipped: its checksum or layout is wrong"
          % (newest, pool.job_id()) in r.stderr, r.stderr)
    meta, _, _ = read_safetensors(keep)
    older = max(c for c in cks if c != newest)
    check(meta["gradpool.checkpoint"] == str(older),
          "took checkpoint %s, not %d" % (meta["gradpool.checkpoint"], older))
    log("bad input: every refusal clear, nothing half-written")


# ---- 3: every layer kind, through the writers ---------------------------

MODELS = {
    "cnn": """# docs/models.md's example, smaller
gradpool-model 1
input shape=1x28x28
conv2d conv1 out=8 kernel=3 padding=1
relu relu1
maxpool2d pool1 kernel=2
conv2d conv2 out=16 kernel=3 padding=1
relu relu2
maxpool2d pool2 kernel=2
flatten flat
dense fc1 out=64
relu relu3
dense fc2 out=10
softmax_xent loss
""",
    "every-layer": """gradpool-model 1
input shape=1x28x28
conv2d c1 out=6 kernel=5 stride=2 padding=2
layernorm ln1
gelu g1
conv2d c2 out=6 kernel=3 padding=1
add res in=g1,c2
avgpool2d ap kernel=2
maxpool2d mp kernel=3 stride=2
dropout drop p=0.25
dense output out=48
layernorm ln2 eps=1e-4
gelu g2
dense fc3 out=10
softmax_xent loss
""",
    "groupnorm": """gradpool-model 1
input shape=1x28x28
conv2d c1 out=8 kernel=3 padding=1
groupnorm gn1 groups=4
relu r1
maxpool2d p1 kernel=2
conv2d c2 out=8 kernel=3 padding=1
groupnorm gn2 groups=1 eps=1e-3
gelu g2
avgpool2d p2 kernel=2
flatten f
dense fc out=10
softmax_xent loss
""",
    "flat-conv-mse": """gradpool-model 1
input shape=784
conv2d c1 out=4 kernel=1 stride=3
relu r1
dense logits out=32
relu r2
dense fc2 out=10
mse loss
""",
}


def test_layers(out):
    x, y = fashion_mnist_test()
    for name, text in MODELS.items():
        d = os.path.join(out, name)
        os.mkdir(d)
        path = os.path.join(d, "model.txt")
        with open(path, "w") as f:
            f.write(text)
        subprocess.run([os.environ["GP_EXPORT_FIXTURE"], path, d, "150"],
                       check=True)
        ref = {}
        samples = []
        for line in open(os.path.join(d, "reference.txt")):
            w = line.split()
            if w[0] == "sample":
                samples.append((float(w[2]), int(w[3])))
            else:
                ref[w[0]] = float(w[1])
        meta, model = load_module(os.path.join(d, "model.safetensors"))
        out_t, acc = torch_eval(model, x, y)
        with torch.no_grad():
            losses = model.losses(out_t[:len(samples)], y[:len(samples)])
        want = torch.tensor([s[0] for s in samples])
        rel = float(((losses - want).abs() / want.abs().clamp(min=1e-3)).max())
        log("%s: project %.2f%% / PyTorch %.2f%%, per-sample loss rel. "
            "diff %.2g" % (name, 100 * ref["accuracy"], 100 * acc, rel))
        check(rel < 1e-3, "%s: per-sample losses differ by %g" % (name, rel))
        check(abs(acc - ref["accuracy"]) <= 0.001,
              "%s: accuracy %.4f against %.4f" % (name, acc, ref["accuracy"]))
        # Chance is 10 %; the mse model learns slowest.
        check(ref["accuracy"] > 0.3, "%s did not train" % name)
        if HAVE_ONNX:
            shape = [10]
            m = onnx_check(os.path.join(d, "model.onnx"), shape)
            res = onnx_run(m, onnx_input(x[:2000], model.shape["input"]))
            got = res["output"]
            ref_out = (torch.softmax(out_t[:2000], 1)
                       if model.loss_type == "softmax_xent"
                       else out_t[:2000]).numpy()
            diff = float(np.abs(got - ref_out).max())
            log("%s: ONNX against PyTorch, max diff %.2g" % (name, diff))
            check(diff < 1e-4, "%s: ONNX differs by %g" % (name, diff))


def test_model_file_job(out):
    """A job whose model is a description file ([model] file): serve
    starts it (the checkpoint written before it listens, and the one
    SIGTERM writes) and export writes the checkpoint through the real
    command. The pool cannot train such a model yet (the agents take the
    shorthand only), so the parameters are the seeded initial ones:
    bit for bit what the writers give for the same model and seed
    (export-fixture, 0 steps)."""
    text = MODELS["every-layer"]
    with gppool.Pool("export-file", train={"epochs": 1}) as pool:
        with open(os.path.join(pool.dir, "every-layer.model"), "w") as f:
            f.write(text)
        pool.job["model"] = {"file": "every-layer.model", "seed": 1}
        pool.write_job()
        pool.serve()
        pool.serve_proc.signal(signal.SIGTERM)
        pool.serve_proc.wait(60)
        newest = max(c[0] for c in pool.checkpoints())
        st = os.path.join(out, "file-job.safetensors")
        r = export(pool, st)
        check("exported checkpoint %d of job" % newest in r.stdout, r.stdout)
        meta, model = load_module(st)
        check(meta["gradpool.model_source"] == meta["gradpool.model"],
              "model_source %r" % meta["gradpool.model_source"])
        check("[model]\nfile = every-layer.model" in meta["gradpool.job"],
              "job text %r" % meta["gradpool.job"])
        check("gradpool.test_accuracy" not in meta, "an accuracy for an "
              "unfinished job")
        d = os.path.join(out, "file-job")
        os.mkdir(d)
        with open(os.path.join(d, "model.txt"), "w") as f:
            f.write(text)
        subprocess.run([os.environ["GP_EXPORT_FIXTURE"],
                        os.path.join(d, "model.txt"), d, "0"], check=True)
        _, mine, order = read_safetensors(st)
        _, ref, _ = read_safetensors(os.path.join(d, "model.safetensors"))
        for name in order:
            check(np.array_equal(mine[name], ref[name]),
                  "%s differs from the seeded initial values" % name)
        if HAVE_ONNX:
            on = os.path.join(out, "file-job.onnx")
            export(pool, on)
            m = onnx_check(on, [10])
            x, _ = fashion_mnist_test()
            res = onnx_run(m, onnx_input(x[:500], model.shape["input"]))
            with torch.no_grad():
                probs = torch.softmax(model(x[:500]), 1).numpy()
            diff = float(np.abs(res["output"] - probs).max())
            check(diff < 1e-4, "ONNX differs from PyTorch by %g" % diff)
        log("a [model] file job: exported checkpoint %d, the seeded "
            "values bit for bit" % newest)


def test_cnn_pool(out):
    """The shipped CNN (packaging/etc/cnn.model), trained by a pool of two
    agents for one epoch (the whole job of 12 is integration/cnn's), out
    as safetensors and ONNX."""
    etc = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                       "..", "packaging", "etc")
    with gppool.Pool("export-cnn", train={"epochs": 1, "batch_size": 64,
                                          "staleness": 3}) as pool:
        with open(os.path.join(etc, "cnn.model")) as f:
            text = f.read()
        with open(os.path.join(pool.dir, "cnn.model"), "w") as f:
            f.write(text)
        pool.job["model"] = {"file": "cnn.model", "seed": 1}
        pool.job["pool"]["int8"] = "false"
        pool.write_job()
        pool.serve()
        agents = pool.agents(2)
        cl = opencl_device()
        for i, a in enumerate(agents):
            a.run(extra=("--device", "opencl:0") if cl and i == 0 else ())
        pool.wait_serve(timeout=500, agents_exit=True)
        acc = pool.final_accuracy()
        if cl:
            err = agents[0].proc.stderr()
            check("computing on opencl" in err.lower() and
                  "computing on the CPU instead" not in err,
                  "the OpenCL agent did not compute the CNN on OpenCL:\n%s"
                  % err)
            n = pool.query("SELECT COUNT(*) FROM updates WHERE agent_id = ?"
                           " AND outcome = 'applied'",
                           (agents[0].agent_id(),))[0][0]
            check(n > 0, "no update of the OpenCL agent was applied")
            log("the OpenCL agent computed the CNN on OpenCL: %d updates "
                "applied" % n)
        newest = max(c[0] for c in pool.checkpoints())
        st = os.path.join(out, "cnn.safetensors")
        r = export(pool, "--format", "safetensors", st)
        check("exported checkpoint %d of job" % newest in r.stdout, r.stdout)
        meta, model = load_module(st)
        check(meta["gradpool.model_source"] == meta["gradpool.model"] and
              meta["gradpool.model"].startswith("gradpool-model 1; input "
                                                "shape=1x28x28; conv2d conv1"),
              "model %r" % meta["gradpool.model"])
        x, y = fashion_mnist_test()
        logits, tacc = torch_eval(model, x, y)
        log("pool-trained CNN, 1 epoch: PyTorch on the export %.2f%%, the "
            "ledger's %.2f%%" % (100 * tacc, 100 * acc))
        check(acc > 0.8, "the CNN did not learn: %.4f" % acc)
        check(abs(tacc - acc) <= 0.001,
              "PyTorch %.4f against the ledger's %.4f" % (tacc, acc))
        if HAVE_ONNX:
            on = os.path.join(out, "cnn.onnx")
            export(pool, "--format", "onnx", on)
            m = onnx_check(on, [10])
            # The numpy evaluator is slow on convolutions: 2,000 test
            # images, against PyTorch's outputs on them.
            res = onnx_run(m, onnx_input(x[:2000], model.shape["input"]))
            probs = torch.softmax(logits[:2000], 1).numpy()
            diff = float(np.abs(res["output"] - probs).max())
            same = float((res["output"].argmax(1) ==
                          probs.argmax(1)).mean())
            log("pool-trained CNN in ONNX: max |p - PyTorch's| %.2g on "
                "2000 images, the same class for %.2f%%" % (diff, 100 * same))
            check(diff < 1e-4, "ONNX and PyTorch differ by %g" % diff)
            check(same == 1.0, "ONNX and PyTorch classify differently")


def opencl_device():
    if not shutil.which("clinfo"):
        return False
    r = subprocess.run(["clinfo", "-l"], capture_output=True, text=True)
    return "Device" in r.stdout


def onnx_input(x, shape):
    return x.numpy() if shape[0] == 1 and shape[1] == 1 else \
        x.numpy().reshape(-1, *shape)


def test():
    with tempfile.TemporaryDirectory(prefix="gp-export-") as out:
        test_layers(out)
        test_model_file_job(out)
        test_pool(out)
        test_cnn_pool(out)


if __name__ == "__main__":
    gppool.main(test)
