"""gptref: a gradpool language model (docs/models.md "Language models") as
the equivalent PyTorch module, built from the model description itself;
the token files (docs/models.md "Token files") and their windows; and a
reader for the exported safetensors file. Shared by tests/integration/
test_gpt.py (the exported model's held-out loss against the ledger's)
and tools/bench/gpt.py (PyTorch's training step and its AdamW run on the
identical model).

The module's parameters are named as gradpool names them ("h0qkv.weight"),
so an exported file loads with load_state_dict() as it is."""
import json
import math
import struct
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def parse_model(text):
    """The layers of a "gradpool-model 1" description: [(type, name,
    {key: value}, [input names])], inputs resolved as the format says."""
    layers = []
    for raw in text.replace(";", "\n").splitlines():
        line = raw.split("#", 1)[0].split()
        if not line or line[0] == "gradpool-model":
            continue
        kind = line[0]
        if kind == "input":
            name, kv = "input", line[1:]
        else:
            name, kv = line[1], line[2:]
        keys = dict(w.split("=", 1) for w in kv)
        ins = keys.pop("in", None)
        ins = ins.split(",") if ins else ([layers[-1][1]] if layers else [])
        layers.append((kind, name, keys, ins))
    return layers


class GraphModel(nn.Module):
    """The description's graph in PyTorch: nn.Embedding, nn.Linear,
    nn.LayerNorm and nn.GELU modules named as the layers, causal
    attention through F.scaled_dot_product_attention's definition."""

    def __init__(self, text):
        super().__init__()
        self.layers = parse_model(text)
        widths = {}
        for kind, name, k, ins in self.layers:
            if kind == "input":
                self.t = int(k["shape"])
                widths[name] = 1
            elif kind == "embedding":
                self.add_module(name, nn.Embedding(int(k["vocab"]),
                                                   int(k["dim"])))
                widths[name] = int(k["dim"])
            elif kind == "posembed":
                self.add_module(name, nn.Embedding(self.t,
                                                   widths[ins[0]]))
                widths[name] = widths[ins[0]]
            elif kind == "linear":
                self.add_module(name, nn.Linear(widths[ins[0]],
                                                int(k["out"])))
                widths[name] = int(k["out"])
            elif kind == "layernorm":
                self.add_module(name, nn.LayerNorm(
                    widths[ins[0]], eps=float(k.get("eps", 1e-5))))
                widths[name] = widths[ins[0]]
            elif kind == "attention":
                widths[name] = widths[ins[0]] // 3
            elif kind in ("gelu", "add", "dropout", "seq_xent"):
                widths[name] = widths[ins[0]]
            else:
                raise ValueError("no PyTorch form for layer type %s" % kind)

    def forward(self, idx):
        """idx: [N, T] token ids (long); returns the logits [N, T, V]."""
        v = {}
        for kind, name, k, ins in self.layers:
            a = v.get(ins[0]) if ins else None
            if kind == "input":
                v[name] = idx
            elif kind == "embedding":
                v[name] = getattr(self, name)(a)
            elif kind == "posembed":
                pos = torch.arange(a.shape[1], device=a.device)
                v[name] = a + getattr(self, name)(pos)
            elif kind in ("linear", "layernorm"):
                v[name] = getattr(self, name)(a)
            elif kind == "gelu":
                v[name] = F.gelu(a)
            elif kind == "dropout":
                v[name] = F.dropout(a, float(k["p"]), self.training)
            elif kind == "add":
                v[name] = a + v[ins[1]]
            elif kind == "attention":
                n, t, w = a.shape
                d, h = w // 3, int(k["heads"])
                q, kk, vv = a.split(d, dim=2)
                q = q.view(n, t, h, d // h).transpose(1, 2)
                kk = kk.view(n, t, h, d // h).transpose(1, 2)
                vv = vv.view(n, t, h, d // h).transpose(1, 2)
                att = (q @ kk.transpose(-2, -1)) / math.sqrt(d // h)
                mask = torch.ones(t, t, dtype=torch.bool,
                                  device=a.device).tril()
                att = att.masked_fill(~mask, float("-inf")).softmax(-1)
                v[name] = (att @ vv).transpose(1, 2).reshape(n, t, d)
            elif kind == "seq_xent":
                return a
        raise ValueError("the description has no seq_xent loss")


def lm_loss(logits, targets):
    """seq_xent: cross-entropy over every position, nats a token."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                           targets.reshape(-1))


def read_tokens(path):
    """A token file's ids (np.int64), checked as kernels/tokens.c does."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"GPTOKENS":
        raise ValueError("%s: not a token file" % path)
    version, vocab, width, crc, count = struct.unpack_from("<IIIIQ", data, 8)
    body = data[32:]
    if version != 1 or width not in (1, 2) or len(body) != count * width:
        raise ValueError("%s: bad header" % path)
    if zlib.crc32(body) != crc:
        raise ValueError("%s: CRC mismatch" % path)
    ids = np.frombuffer(body, dtype=np.uint8 if width == 1 else "<u2")
    return ids.astype(np.int64), vocab


def windows(ids, t, idx=None):
    """Windows idx (all when None) of context t: (x [n, t], y [n, t])."""
    n = (len(ids) - 1) // t
    idx = np.arange(n) if idx is None else np.asarray(idx)
    rows = idx[:, None] * t + np.arange(t + 1)[None, :]
    w = torch.from_numpy(ids[rows])
    return w[:, :-1], w[:, 1:]


def heldout_loss(model, ids, t, batch=64):
    """The mean loss in nats a token over every window, as the
    coordinator's evaluation computes it."""
    x, y = windows(ids, t)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for b in range(0, len(x), batch):
            logits = model(x[b:b + batch])
            total += float(lm_loss(logits, y[b:b + batch])) * len(
                x[b:b + batch])
            count += len(x[b:b + batch])
    return total / count


def read_safetensors(path):
    """{name: torch.Tensor} of a safetensors file (F32 only)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    buf = data[8 + n:]
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = torch.from_numpy(
            np.frombuffer(buf[b:e], dtype="<f4").reshape(
                info["shape"]).copy())
    return out
