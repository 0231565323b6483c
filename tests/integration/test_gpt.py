#!/usr/bin/env python3
"""A GPT language model trained by a real pool: two agents, AdamW on the
coordinator, byte-level token files made by gp-tokens from two files of
Debian's fortunes (90/10 split). One agent holds the same train.tok (its
windows come as indices), the other none (each window comes as its
bytes). The ledger's held-out loss must fall from the untrained 8 bits
per byte (ln 256 nats) to well below; every minibatch is applied exactly
once; the newest checkpoint carries the AdamW state (GP_CKPT_OPTIM, tag
7) and a resume restores it. The shipped packaging/etc/gpt.ini parses
and names packaging/etc/gpt.model, a description the coordinator takes.
The trained model leaves by `export --format safetensors`, loads into the
equivalent PyTorch module (tests/lib/gptref.py) and gives the ledger's
held-out loss within 1 %; ONNX export refuses it by name. `sample`
writes the prompt and the asked-for bytes, the same for the same seed.
`job add` queues the shipped gpt.ini as it is. An epoch's evaluation
lost to a kill is run again by the resumed serve. With inner_optimizer =
adamw the agents' local AdamW steps train it as well (inner_adamw).
Verification recomputes its updates from the token windows, under AdamW
and SGD with momentum, with no honest update mismatched (verified)."""
import configparser
import json
import math
import os
import re
import sqlite3
import struct
import subprocess
import time

import gppool
import gptref
import torch
from gppool import check, log

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ETC = os.path.join(ROOT, "packaging", "etc")
CORPUS = "/usr/share/games/fortunes"
# Held-out bits per byte the pool must reach (untrained: 8).
TARGET_BPB = 4.5

MODEL = """gradpool-model 1
# One block of width 64, 4 heads, a context of 64 bytes.
input shape=64
embedding tok vocab=256 dim=64
posembed pos
layernorm h0ln1 in=pos
linear h0qkv out=192
attention h0attn heads=4
linear h0proj out=64
add h0res1 in=pos,h0proj
layernorm h0ln2
linear h0fc out=256
gelu h0act
linear h0fc2 out=64
add h0out in=h0res1,h0fc2
layernorm lnf
linear head out=256
seq_xent loss
"""


def gp_tokens():
    """$GP_TOKENS (meson sets it), else the build folder's."""
    build = os.environ.get("GP_BUILD_DIR", os.path.join(ROOT, "build"))
    return os.environ.get("GP_TOKENS",
                          os.path.join(build, "tools", "gp-tokens"))


def checkpoint_sections(blob):
    """{tag: bytes} of a checkpoint blob (coordinator/checkpoint.h)."""
    check(blob[:4] == b"GPCK", "checkpoint magic %r" % blob[:4])
    count = struct.unpack_from("<I", blob, 8)[0]
    off, out = 32, {}
    for _ in range(count):
        tag, _, n = struct.unpack_from("<IIQ", blob, off)
        out[tag] = blob[off + 16:off + 16 + n]
        off += 16 + ((n + 7) & ~7)
    return out


def adamw_steps(pool):
    """The coordinator's AdamW step count in the job's newest checkpoint
    (its AdamW section, 7, must be there)."""
    blob = pool.query("SELECT blob FROM checkpoints WHERE job_id = ? "
                      "ORDER BY seq DESC LIMIT 1", (pool.job_id(),))[0][0]
    sec = checkpoint_sections(bytes(blob))
    check(7 in sec and sec[7][:4] == b"GPOP",
          "the newest checkpoint has no AdamW section")
    return struct.unpack_from("<Q", sec[7], 12 + 1 + 16)[0]


def token_job(pool, *corpora, verbose=False):
    """Turns the fortunes corpora named into the pool's token files and
    writes its job with MODEL over them; returns the token directory."""
    tok = os.path.join(pool.dir, "tokens")
    r = subprocess.run([gp_tokens(), tok] +
                       [os.path.join(CORPUS, c) for c in corpora],
                       capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "gp-tokens failed: %s" % r.stderr)
    if verbose:
        log(r.stdout.strip())
    # The windows of the model's 64 tokens: (train tokens - 1) / 64.
    train_tokens = int(r.stdout.split("train.tok ")[1].split()[0])
    pool.train_samples = (train_tokens - 1) // 64
    model = os.path.join(pool.dir, "gpt.model")
    with open(model, "w") as f:
        f.write(MODEL)
    pool.job["model"]["file"] = model
    pool.job["data"]["dir"] = tok
    pool.write_job()
    return tok


def shipped_job_parses():
    ini = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    ini.read(os.path.join(ETC, "gpt.ini"))
    check(ini["train"]["optimizer"] == "adamw", "gpt.ini: not adamw")
    check(ini["data"]["set"] == "tokens", "gpt.ini: not token data")
    check(os.path.exists(os.path.join(ETC, ini["model"]["file"])),
          "gpt.ini names a missing model file")


def lost_evaluation():
    """An epoch's evaluation runs in the background after the epoch: a
    kill before its row is written lost that epoch's held-out loss for
    good. Killed in epoch 2 with epoch 1's row taken out of the ledger
    (what such a kill leaves), the resumed serve evaluates epoch 1 again
    and the ledger ends with both rows."""
    with gppool.Pool("gpt-lost-eval", model={"spec": None, "file": None},
                     train={"epochs": 2, "batch_size": 16,
                            "optimizer": "adamw", "learning_rate": 0.003,
                            "checkpoint_interval": "40 minibatches"},
                     data={"set": "tokens"},
                     pool={"int8": "false"}) as pool:
        tok = token_job(pool, "computers")
        pool.serve()
        for a in pool.agents(2):
            a.run(delay_ms=10, extra=("--data-dir", tok))
        pool.wait_for("a checkpoint in epoch 2", lambda: pool.query(
            "SELECT 1 FROM checkpoints WHERE job_id = ? AND epoch >= 1",
            (pool.job_id(),)), timeout=300, poll=0.05)
        pool.serve_proc.kill9()
        con = sqlite3.connect(pool.ledger_path, timeout=10)
        with con:
            con.execute("DELETE FROM evals WHERE job_id = ? AND epoch = 0",
                        (pool.job_id(),))
        con.close()
        pool.serve()
        pool.wait_serve(timeout=600, agents_exit=True)
        err = pool.serve_proc.stderr()
        check("epoch 1's evaluation was lost" in err,
              "the resumed serve did not redo epoch 1's evaluation:\n%s" %
              err[-1500:])
        evals = pool.query("SELECT epoch, test_loss FROM evals WHERE "
                           "job_id = ? ORDER BY epoch", (pool.job_id(),))
        log("evaluations after the resume: %r" % (evals,))
        check([e for e, _ in evals] == [0, 1],
              "want the evaluations of epochs 0 and 1, got %r" % (evals,))
        check(all(0 < loss < math.log(256) for _, loss in evals),
              "held-out losses %r not below the untrained ln 256" %
              (evals,))


def inner_adamw():
    """inner_optimizer = adamw: both agents take their own AdamW steps
    (GP_CAP_INNER_ADAMW) and send each run's change (GP_UPDATE_DELTA),
    which the coordinator subtracts. The held-out loss must fall below
    the same bound as the coordinator's AdamW (a delta applied with the
    wrong sign climbs from 8 bits instead), every minibatch is applied
    exactly once across a SIGKILL of the coordinator and its resume (the
    agents rejoin with fresh moments), and the coordinator's own AdamW
    never stepped (its checkpointed step count is 0): every applied
    update was a delta.
    verify_rate stays at its default: the deltas cannot be recomputed
    and must not be picked (a mismatch would roll them back)."""
    with gppool.Pool("gpt-inner", model={"spec": None, "file": None},
                     train={"epochs": 2, "batch_size": 16,
                            "optimizer": "adamw", "learning_rate": 0.003,
                            "beta1": 0.9, "beta2": 0.95,
                            "weight_decay": 0.01, "warmup_epochs": 0.1,
                            "inner_optimizer": "adamw",
                            "checkpoint_interval": "40 minibatches"},
                     data={"set": "tokens"},
                     pool={"int8": "false", "clip_grad_norm": 1}) as pool:
        tok = token_job(pool, "fortunes", "computers")
        pool.serve()
        t0 = time.monotonic()
        a, b = pool.agents(2)
        a.run(extra=("--data-dir", tok))
        b.run(extra=("--data-dir", "none"))
        # A coordinator killed past a checkpoint with updates: the agents
        # reconnect, their moments start again at zero (a new WELCOME),
        # and nothing is applied twice.
        # In the first epoch: on a quiet machine the job is done in 4 s,
        # and a time interval's first checkpoint was its last.
        pool.wait_for("a checkpoint with updates", lambda: pool.query(
            "SELECT 1 FROM checkpoints WHERE job_id = ? AND clock > 0"
            " AND epoch = 0", (pool.job_id(),)), timeout=300, poll=0.05)
        pool.serve_proc.kill9()
        log("coordinator killed; resuming")
        pool.serve()
        pool.wait_serve(timeout=900, agents_exit=True)
        log("2 epochs with local AdamW steps in %.1fs" %
            (time.monotonic() - t0))
        pool.check_exactly_once()
        evals = pool.query("SELECT epoch, test_loss FROM evals WHERE "
                           "job_id = ? ORDER BY epoch", (pool.job_id(),))
        check(len(evals) == 2, "want 2 evaluations, got %r" % (evals,))
        bpb = [loss / math.log(2) for _, loss in evals]
        log("local AdamW steps: held-out bits per byte by epoch: %s" %
            ", ".join("%.3f" % x for x in bpb))
        check(bpb[-1] < TARGET_BPB,
              "held-out %.3f bits per byte with local AdamW steps, want "
              "< %.1f" % (bpb[-1], TARGET_BPB))
        steps = adamw_steps(pool)
        check(steps == 0, "the coordinator's AdamW took %d steps: not "
              "every update was a delta" % steps)
        per_agent = pool.query("SELECT agent_id, COUNT(*) FROM updates "
                               "WHERE job_id = ? AND " +
                               pool.applied_filter() + " GROUP BY agent_id",
                               (pool.job_id(),))
        log("applied minibatches by agent: %r" % (per_agent,))
        check(len(per_agent) == 2 and all(n > 0 for _, n in per_agent),
              "both agents' deltas applied: %r" % (per_agent,))
        # A run of local steps goes as one delta: its rows share the
        # message's receive time. One delta a minibatch (the agent not
        # keeping MINIBATCH.group) would send the whole model each step,
        # and no delta would carry two. How long the runs are follows the
        # agents' speed and the measured link (under ASan the sync
        # interval fell to 40-115 ms and most runs were of 1 or 2
        # minibatches: 84 of 378 deltas carried several in one CI run):
        # the check is that some do.
        sizes = pool.query("SELECT COUNT(*) FROM updates WHERE job_id = ?"
                           " AND " + pool.applied_filter() +
                           " GROUP BY agent_id, received_at",
                           (pool.job_id(),))
        msgs = len(sizes)
        multi = sum(1 for (n,) in sizes if n >= 2)
        rows = sum(n for _, n in per_agent)
        log("%d minibatches applied from %d deltas, %d of them of several"
            % (rows, msgs, multi))
        check(msgs < rows and multi >= 1,
              "%d deltas for %d minibatches, %d of several: the runs were "
              "not grouped" % (msgs, rows, multi))


def verified(optimizer):
    """Verification of a language model's updates: the coordinator
    recomputes picked clocks' gradients (AdamW: one minibatch a clock)
    or groups (SGD with momentum: local steps, two sums) from the token
    windows, as the agents computed them from the windows' bytes or
    their own token file. Honest agents: some updates verified, none
    mismatched, no rejection, every minibatch applied once."""
    train = {"epochs": 1, "batch_size": 16, "warmup_epochs": 0.1,
             "optimizer": optimizer}
    if optimizer == "adamw":
        train.update({"learning_rate": 0.003, "beta1": 0.9,
                      "beta2": 0.95})
    else:
        train.update({"learning_rate": 0.05, "momentum": 0.9})
    with gppool.Pool("gpt-verify-" + optimizer,
                     model={"spec": None, "file": None}, train=train,
                     data={"set": "tokens"},
                     pool={"int8": "false", "verify_rate": 0.5}) as pool:
        tok = token_job(pool, "fortunes")
        pool.serve()
        a, b = pool.agents(2)
        a.run(extra=("--data-dir", tok))
        b.run(extra=("--data-dir", "none"))
        pool.wait_serve(timeout=600, agents_exit=True)
        err = pool.serve_proc.stderr()
        m = re.search(r"(\d+) update\(s\) checked: (\d+) verified, "
                      r"(\d+) mismatched", err)
        check(m is not None, "no verification summary:\n%s" % err[-2000:])
        log("%s: %s updates checked, %s verified, %s mismatched" %
            (optimizer, m.group(1), m.group(2), m.group(3)))
        check(int(m.group(2)) >= 1, "no update verified")
        check(int(m.group(3)) == 0, "honest updates mismatched:\n%s" %
              err[-2000:])
        rej = pool.query("SELECT COUNT(*) FROM rejections")[0][0]
        check(rej == 0, "%d rejections of honest agents" % rej)
        pool.check_exactly_once()


def test():
    shipped_job_parses()
    inner_adamw()
    lost_evaluation()
    verified("adamw")
    verified("sgd-momentum")
    with gppool.Pool("gpt", model={"spec": None, "file": None},
                     train={"epochs": 2, "batch_size": 16,
                            "optimizer": "adamw", "learning_rate": 0.003,
                            "beta1": 0.9, "beta2": 0.95,
                            "weight_decay": 0.01, "warmup_epochs": 0.1,
                            "checkpoint_interval": "40 minibatches"},
                     data={"set": "tokens"},
                     pool={"int8": "false", "clip_grad_norm": 1}) as pool:
        tok = token_job(pool, "fortunes", "computers", verbose=True)
        pool.serve()
        a, b = pool.agents(2)
        t0 = time.monotonic()
        a.run(extra=("--data-dir", tok))
        b.run(extra=("--data-dir", "none"))
        # The AdamW state is in the checkpoints: kill the coordinator
        # once a checkpoint holds some steps, resume, finish.
        pool.wait_for("a checkpoint with AdamW state", lambda: any(
            7 in checkpoint_sections(bytes(row[0])) for row in pool.query(
                "SELECT blob FROM checkpoints WHERE job_id = ? AND "
                "clock > 0 AND epoch = 0", (pool.job_id(),))),
            timeout=300, poll=0.05)
        pool.serve_proc.kill9()
        log("coordinator killed; resuming")
        pool.serve()
        pool.wait_serve(timeout=900, agents_exit=True)
        log("2 epochs in %.1fs" % (time.monotonic() - t0))
        err = pool.serve_proc.stderr()
        check("no AdamW state" not in err,
              "the resume lost the AdamW state:\n%s" % err[-2000:])

        steps = adamw_steps(pool)
        applied = pool.query("SELECT COUNT(*) FROM updates WHERE job_id = ?"
                             " AND " + pool.applied_filter(),
                             (pool.job_id(),))[0][0]
        log("AdamW steps in the last checkpoint: %d (applied rows %d)" %
            (steps, applied))
        check(steps > 0, "no AdamW step in the checkpoint")

        pool.check_exactly_once()
        evals = pool.query("SELECT epoch, test_loss, test_accuracy FROM "
                           "evals WHERE job_id = ? ORDER BY epoch",
                           (pool.job_id(),))
        check(len(evals) == 2, "want 2 evaluations, got %r" % (evals,))
        bpb = [loss / math.log(2) for _, loss, _ in evals]
        log("held-out bits per byte by epoch: %s (next-byte accuracy %s)" %
            (", ".join("%.3f" % x for x in bpb),
             ", ".join("%.1f%%" % (100 * e[2]) for e in evals)))
        check(bpb[-1] < TARGET_BPB,
              "held-out %.3f bits per byte, want < %.1f" % (bpb[-1],
                                                            TARGET_BPB))
        out = pool.serve_proc.stdout()
        check("test bits/token" in out,
              "serve's epoch line lacks the bits a token:\n%s" % out[-1500:])
        st = pool.coord("status").stdout
        log("status:\n%s" % st)
        check("bits/byte" in st, "status shows no bits per byte")

        # The model out, into PyTorch: the same held-out loss.
        out = os.path.join(pool.dir, "gpt.safetensors")
        pool.coord("export", "--format", "safetensors", out)
        torch.set_num_threads(1)
        m = gptref.GraphModel(MODEL)
        m.load_state_dict(gptref.read_safetensors(out), strict=True)
        ids, _ = gptref.read_tokens(os.path.join(tok, "test.tok"))
        loss = gptref.heldout_loss(m, ids, 64)
        log("PyTorch on the export: held-out %.5f nats a byte, the "
            "ledger's %.5f" % (loss, evals[-1][1]))
        check(abs(loss - evals[-1][1]) <= 0.01 * evals[-1][1],
              "the exported model's held-out loss %.5f is not within 1 %% "
              "of the ledger's %.5f" % (loss, evals[-1][1]))
        # With AdamW's state: each parameter's two moments, and the step.
        out2 = os.path.join(pool.dir, "gpt-adamw.safetensors")
        pool.coord("export", "--optimizer-state", "--format", "safetensors",
                   out2)
        full = gptref.read_safetensors(out2)
        with open(out2, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            meta = json.loads(f.read(n))["__metadata__"]
        names = [k for k in m.state_dict()]
        check(sorted(full) == sorted(
            names + ["optimizer.exp_avg." + k for k in names] +
            ["optimizer.exp_avg_sq." + k for k in names]),
              "optimizer-state export: tensors %r" % sorted(full))
        check(meta.get("gradpool.optimizer") == "adamw" and
              int(meta["gradpool.adamw.step"]) == steps and
              meta["gradpool.adamw.betas"] == "0.9,0.95",
              "optimizer-state export: metadata %r" % meta)
        check(all(float(full["optimizer.exp_avg_sq." + k].min()) >= 0
                  for k in names), "a negative second moment")
        log("optimizer state exported: %d tensors, step %s" %
            (len(full), meta["gradpool.adamw.step"]))
        r = pool.coord("export", "--format", "onnx",
                       os.path.join(pool.dir, "gpt.onnx"), expect_ok=False)
        check(r.returncode != 0 and "no ONNX form" in r.stderr,
              "ONNX export of a GPT: want a refusal naming the layer, got "
              "%d: %s" % (r.returncode, r.stderr))

        # Text from the trained model, repeatable by its seed; bytes, as
        # a byte-level model may write any.
        argv = [pool.coord_bin, "sample", "--prompt", "Q:", "--length",
                "120", "--seed", "7", "--state", pool.state]
        s1, s2 = (subprocess.run(argv, capture_output=True, timeout=60)
                  for _ in range(2))
        log("sample: %r" % s1.stdout)
        check(s1.returncode == 0, "sample failed: %r" % s1.stderr)
        check(s1.stdout == s2.stdout, "two samples with one seed differ")
        check(s1.stdout.startswith(b"Q:") and len(s1.stdout) == 2 + 120 + 1,
              "sample wrote %r" % s1.stdout)

        # The shipped job queues as it is: `job add` checked every model
        # against Fashion-MNIST's shape and refused gpt.ini's (128 inputs,
        # 256 classes); serve checks token data when it starts the job.
        r = pool.coord("job", "add", os.path.join(ETC, "gpt.ini"),
                       expect_ok=False)
        m = re.match(r"job (\d+) queued: ", r.stdout)
        check(r.returncode == 0 and m,
              "job add of the shipped gpt.ini: %d %r %r" %
              (r.returncode, r.stdout, r.stderr))
        queued = pool.query("SELECT state FROM jobs WHERE id = ?",
                            (int(m.group(1)),))
        check(queued == [("queued",)],
              "the shipped job's row: %r" % (queued,))
        pool.coord("job", "cancel", m.group(1))


if __name__ == "__main__":
    gppool.main(test)
