#!/usr/bin/python3
"""The GPT benchmark of tools/bench-compute (issue 13), two parts:

1. Speed: the training step of packaging/etc/gpt.model (4 blocks of width
   128, 4 heads, context 128, bytes; batch 16) in tokens a second, on the
   CPU backend (build/tools/bench-gpt) and in PyTorch on the identical
   module (tests/lib/gptref.py), each forward + backward + SGD-momentum
   update. Rounds interleave the two; each configuration (1 and 2 BLAS or
   intra-op threads) keeps its best round, and the best configuration of
   each side is compared: gpt_tokens_per_s, gpt_pytorch_tokens_per_s,
   gpt_vs_pytorch.
2. Quality: a pool (a coordinator and 2 agents on this machine, the
   real protocol) trains a small GPT (1 block of width 64, context 64) with
   AdamW on two files of fortunes for EPOCHS epochs; PyTorch trains the
   same module from the same initial parameters (the job's first
   checkpoint, exported) with torch.optim.AdamW, the same batch, learning
   rate schedule (warm-up, cosine by minibatch), clipping and token
   budget, in one process. Both held-out losses in bits per byte:
   gpt_bpb (the ledger's), gpt_pytorch_bpb, gpt_bpb_ratio.

Prints a table to stderr and one JSON object as the last line of stdout.
Environment: GP_BENCH_ROUNDS (3), GP_BENCH_SECONDS (3 per run),
GP_BENCH_GPT_QUALITY (1; 0 skips part 2), GP_BENCH_GPT_EPOCHS (2),
GP_BENCH_GPT_AGENTS (2: the pool's agents; 1 has no staleness, so it
shows what the rest of the pool's path costs against PyTorch),
GP_BENCH_GPT_INNER (none; adamw: the job's inner_optimizer, the agents
taking their own AdamW steps and sending each run's change),
GP_BENCH_GPT_OUTER (none; nesterov: the job's outer_optimizer, with
verify_rate 0 and the job's default outer_lr and outer_momentum)."""
import json
import math
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

import gptref  # noqa: E402
import torch  # noqa: E402

BUILD = os.environ.get("GP_BUILD_DIR", os.path.join(ROOT, "build"))
CORPUS = "/usr/share/games/fortunes"
SMALL = """gradpool-model 1
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
# The quality run's job, shared by the pool and PyTorch.
HP = {"batch_size": 16, "learning_rate": 0.003, "beta1": 0.9,
      "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.01,
      "warmup_epochs": 0.1, "clip_grad_norm": 1.0}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def make_tokens(out, paths=()):
    r = subprocess.run([os.path.join(BUILD, "tools", "gp-tokens"), out] +
                       list(paths), capture_output=True, text=True,
                       check=True)
    log(r.stdout.strip())


def torch_step(model_path, tok_path, batch, seconds, threads):
    """PyTorch's step on the identical module: tokens a second."""
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    with open(model_path) as f:
        m = gptref.GraphModel(f.read())
    ids, _ = gptref.read_tokens(tok_path)
    t = m.t
    n = (len(ids) - 1) // t
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9,
                          foreach=True)
    g = torch.Generator().manual_seed(1)
    steps, t0 = 0, time.monotonic()
    while True:
        idx = torch.randint(0, n, (batch,), generator=g).numpy()
        x, y = gptref.windows(ids, t, idx)
        opt.zero_grad(set_to_none=True)
        loss = gptref.lm_loss(m(x), y)
        loss.backward()
        opt.step()
        float(loss)
        steps += 1
        if steps == 1:
            t0 = time.monotonic()
        spent = time.monotonic() - t0
        if steps >= 3 and spent >= seconds:
            break
    return {"backend": "pytorch", "threads": threads,
            "tokens_per_s": (steps - 1) * batch * t / spent}


def speed(tok_dir):
    rounds = int(os.environ.get("GP_BENCH_ROUNDS", "3"))
    seconds = os.environ.get("GP_BENCH_SECONDS", "3")
    model = os.path.join(ROOT, "packaging", "etc", "gpt.model")
    tok = os.path.join(tok_dir, "train.tok")
    best = {}
    for r in range(rounds):
        log("speed round %d/%d" % (r + 1, rounds))
        for threads in (1, 2):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads),
                       OMP_NUM_THREADS=str(threads))
            out = subprocess.run(
                [os.path.join(BUILD, "tools", "bench-gpt"), "--model",
                 model, "--tokens", tok, "--batch", "16", "--seconds",
                 seconds, "--threads", str(threads)],
                capture_output=True, text=True, env=env, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            key = "cpu threads=%d" % threads
            if key not in best or res["tokens_per_s"] > best[key]:
                best[key] = res["tokens_per_s"]
            out = subprocess.run(
                [sys.executable, __file__, "torch-step", model, tok, "16",
                 seconds, str(threads)],
                capture_output=True, text=True, env=env, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            key = "pytorch threads=%d" % threads
            if key not in best or res["tokens_per_s"] > best[key]:
                best[key] = res["tokens_per_s"]
    for k in sorted(best):
        log("%-22s %10.0f tokens/s" % (k, best[k]))
    cpu = max((v, k) for k, v in best.items() if k.startswith("cpu"))
    pt = max((v, k) for k, v in best.items() if k.startswith("pytorch"))
    return {"gpt_tokens_per_s": round(cpu[0]), "gpt_config": cpu[1],
            "gpt_pytorch_tokens_per_s": round(pt[0]),
            "gpt_pytorch_config": pt[1],
            "gpt_vs_pytorch": round(cpu[0] / pt[0], 3)}


def lr_at(index, total, per_epoch):
    """coordinator/job.c's gp_job_lr_at(), cosine with warm-up."""
    lr = HP["learning_rate"]
    warm = HP["warmup_epochs"] * per_epoch
    t = min(index + 0.5, total)
    lr *= 0.5 * (1 + math.cos(math.pi * t / total))
    if warm > 0 and t < warm:
        lr *= t / warm
    return lr


def torch_adamw(init, tok_dir, epochs):
    """Single-process AdamW from the pool's initial parameters: held-out
    nats a byte after the same token budget."""
    torch.set_num_threads(2)
    m = gptref.GraphModel(SMALL)
    m.load_state_dict(gptref.read_safetensors(init), strict=True)
    ids, _ = gptref.read_tokens(os.path.join(tok_dir, "train.tok"))
    test, _ = gptref.read_tokens(os.path.join(tok_dir, "test.tok"))
    t, b = m.t, HP["batch_size"]
    n = (len(ids) - 1) // t
    per = (n + b - 1) // b
    total = per * epochs
    decay = [p for name, p in m.named_parameters()]
    opt = torch.optim.AdamW(decay, lr=HP["learning_rate"],
                            betas=(HP["beta1"], HP["beta2"]),
                            eps=HP["eps"],
                            weight_decay=HP["weight_decay"])
    g = torch.Generator().manual_seed(1)
    step = 0
    m.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g).numpy()
        for k in range(per):
            x, y = gptref.windows(ids, t, order[k * b:(k + 1) * b])
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, per)
            opt.zero_grad(set_to_none=True)
            loss = gptref.lm_loss(m(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(),
                                           HP["clip_grad_norm"])
            opt.step()
            step += 1
    return gptref.heldout_loss(m, test, t)


def quality(tmp):
    import gppool

    epochs = int(os.environ.get("GP_BENCH_GPT_EPOCHS", "2"))
    n_agents = int(os.environ.get("GP_BENCH_GPT_AGENTS", "2"))
    if not 1 <= n_agents <= 8:
        raise SystemExit("GP_BENCH_GPT_AGENTS must be 1 to 8, not %d"
                         % n_agents)
    tok = os.path.join(tmp, "small")
    make_tokens(tok, [os.path.join(CORPUS, "fortunes"),
                      os.path.join(CORPUS, "computers")])
    model = os.path.join(tmp, "small.model")
    with open(model, "w") as f:
        f.write(SMALL)
    # Every checkpoint kept: the first (the fresh start) is PyTorch's
    # starting point.
    train = {"epochs": epochs, "optimizer": "adamw", "checkpoint_interval":
             "60s", "checkpoint_keep": 1000}
    train.update({k: v for k, v in HP.items() if k != "clip_grad_norm"})
    inner = os.environ.get("GP_BENCH_GPT_INNER", "none")
    if inner not in ("none", "adamw"):
        raise SystemExit("GP_BENCH_GPT_INNER must be none or adamw, not %r"
                         % inner)
    train["inner_optimizer"] = inner
    outer = os.environ.get("GP_BENCH_GPT_OUTER", "none")
    if outer not in ("none", "nesterov"):
        raise SystemExit("GP_BENCH_GPT_OUTER must be none or nesterov, "
                         "not %r" % outer)
    train["outer_optimizer"] = outer
    pool_keys = {"int8": "false", "clip_grad_norm": HP["clip_grad_norm"]}
    if outer != "none":
        pool_keys["verify_rate"] = 0
    os.environ.setdefault("GP_BUILD_DIR", BUILD)
    with gppool.Pool("bench-gpt", model={"spec": None, "file": model},
                     data={"set": "tokens", "dir": tok}, train=train,
                     pool=pool_keys) as pool:
        pool.serve()
        agents = pool.agents(n_agents)
        t0 = time.monotonic()
        for a in agents:
            a.run(extra=("--data-dir", tok))
        pool.wait_serve(timeout=3600, agents_exit=True)
        pool_s = time.monotonic() - t0
        loss = pool.query("SELECT test_loss FROM evals WHERE job_id = ? "
                          "ORDER BY epoch DESC LIMIT 1",
                          (pool.job_id(),))[0][0]
        init = os.path.join(tmp, "init.safetensors")
        first = pool.query("SELECT MIN(seq) FROM checkpoints WHERE "
                           "job_id = ?", (pool.job_id(),))[0][0]
        # The first checkpoint is the fresh start's, before any update;
        # older ones are pruned by checkpoint_keep, so it is written
        # again from the job's seed when it is gone.
        r = pool.coord("export", "--checkpoint", str(first), "--format",
                       "safetensors", init)
        log(r.stdout.strip())
        up = pool.query("SELECT clock FROM checkpoints WHERE seq = ? AND "
                        "job_id = ?", (first, pool.job_id()))[0][0]
        if up != 0:
            raise SystemExit("the first checkpoint kept is not the fresh "
                             "start's; raise checkpoint_keep")
    t0 = time.monotonic()
    ref = torch_adamw(init, tok, epochs)
    torch_s = time.monotonic() - t0
    out = {"gpt_bpb": round(loss / math.log(2), 4),
           "gpt_pytorch_bpb": round(ref / math.log(2), 4),
           "gpt_bpb_ratio": round(loss / ref, 4),
           "gpt_quality_epochs": epochs,
           "gpt_quality_agents": n_agents,
           "gpt_inner_optimizer": inner,
           "gpt_outer_optimizer": outer,
           "gpt_pool_seconds": round(pool_s, 1),
           "gpt_pytorch_seconds": round(torch_s, 1)}
    log("quality: pool %.4f bits/byte in %.0f s, PyTorch AdamW %.4f in "
        "%.0f s" % (out["gpt_bpb"], pool_s, out["gpt_pytorch_bpb"],
                    torch_s))
    return out


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "torch-step":
        _, _, model, tok, batch, seconds, threads = sys.argv
        print(json.dumps(torch_step(model, tok, int(batch), float(seconds),
                                    int(threads))))
        return
    with tempfile.TemporaryDirectory(prefix="gp-bench-gpt-") as tmp:
        full = os.path.join(tmp, "fortunes")
        make_tokens(full)
        out = speed(full)
        if os.environ.get("GP_BENCH_GPT_QUALITY", "1") != "0":
            out.update(quality(tmp))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
