#!/usr/bin/python3
"""The PyTorch DistributedDataParallel peer for tools/bench-pool and
tools/bench-wan.

Trains the same MLP (784-256-128-10) on Fashion-MNIST with DDP over gloo,
WORLD workers, a global batch split evenly between them, SGD with momentum
(or AdamW: --optimizer adamw, at --lr, PyTorch's default betas and eps,
--weight-decay), until rank 0's test accuracy reaches the target. Evaluation time is
excluded from the training time. One worker can be slowed by a fixed delay
per step to play a straggler. Prints one JSON object as its last line.

Two ways to run it:

- all workers on this machine (the default, tools/bench-pool): this process
  spawns WORLD workers that meet over 127.0.0.1;
- one worker per process (--rank R --store HOST:PORT, tools/bench-wan): each
  worker runs where it was started (e.g. in its own network namespace) and
  finds the others through a TCPStore that one more process holds
  (--store-server HOST:PORT, e.g. in the hub's namespace). Gloo then
  connects the workers to each other; GLOO_SOCKET_IFNAME picks the
  interface. Rank 0 prints the JSON object.

Options for slow links: --powersgd RANK registers PyTorch's PowerSGD
communication hook (powerSGD_hook, error feedback and warm start on) with
that matrix approximation rank after --powersgd-start plain steps;
--time-limit S ends the run as not reached (time_to_target_s null) at the
first evaluation past S seconds of wall time; --progress prints each of rank
0's evaluations to stderr as "eval at T s  N samples  test accuracy X%".
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(datadir):
    def images(name):
        x = read_idx(os.path.join(datadir, name))
        return torch.from_numpy(x.reshape(x.shape[0], -1).astype(np.float32) / 255.0)

    def labels(name):
        return torch.from_numpy(read_idx(os.path.join(datadir, name)).astype(np.int64))

    return (images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz"),
            images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz"))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def host_port(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def worker(rank, args, port, out):
    """One DDP worker. With out (a queue) rank 0 puts its result there,
    else it prints it as one JSON line."""
    torch.set_num_threads(1)
    store = None
    if args.store:
        host, sport = host_port(args.store)
        store = dist.TCPStore(host, sport, args.world, False,
                              timedelta(seconds=args.store_timeout))
        dist.init_process_group("gloo", store=store, rank=rank,
                                world_size=args.world)
    else:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        dist.init_process_group("gloo", rank=rank, world_size=args.world)
    torch.manual_seed(args.seed)
    xtr, ytr, xte, yte = load(args.data)
    model = nn.parallel.DistributedDataParallel(MLP())
    if args.powersgd > 0:
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook
        state = powerSGD_hook.PowerSGDState(
            process_group=None, matrix_approximation_rank=args.powersgd,
            start_powerSGD_iter=args.powersgd_start)
        model.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    if args.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr,
                                weight_decay=args.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr,
                              momentum=args.momentum)
    local = args.batch // args.world
    n = xtr.shape[0]
    steps_per_epoch = n // args.batch
    train_s = 0.0
    samples = 0
    reached = None
    acc = 0.0
    stop = torch.zeros(1)
    start = time.monotonic()
    for epoch in range(args.max_epochs):
        g = torch.Generator().manual_seed(args.seed + epoch)
        perm = torch.randperm(n, generator=g)
        for step in range(steps_per_epoch):
            t0 = time.perf_counter()
            idx = perm[step * args.batch + rank * local: step * args.batch + (rank + 1) * local]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if rank == 1 and args.straggle_ms > 0:
                time.sleep(args.straggle_ms / 1000.0)
            train_s += time.perf_counter() - t0
            samples += args.batch
            if (step + 1) % args.eval_every == 0 or step + 1 == steps_per_epoch:
                if rank == 0:
                    with torch.no_grad():
                        acc = (model(xte).argmax(1) == yte).float().mean().item()
                    stop[0] = 1.0 if acc >= args.target else 0.0
                    if (stop[0] == 0 and args.time_limit > 0 and
                            time.monotonic() - start > args.time_limit):
                        stop[0] = 2.0
                    if args.progress:
                        sys.stderr.write("eval at %.3f s  %d samples  test "
                                         "accuracy %.2f%%\n" %
                                         (train_s, samples, 100.0 * acc))
                        sys.stderr.flush()
                dist.broadcast(stop, 0)
                if stop[0] > 0:
                    if stop[0] == 1.0:
                        reached = train_s
                    break
        if stop[0] > 0:
            break
    if rank == 0:
        result = {"time_to_target_s": reached, "train_s": train_s,
                  "wall_s": time.monotonic() - start,
                  "samples_per_s": samples / train_s if train_s > 0 else 0.0,
                  "test_accuracy": acc, "samples": samples,
                  "time_limit_hit": bool(stop[0] == 2.0),
                  "powersgd_rank": args.powersgd or None}
        if out is not None:
            out.put(result)
        else:
            print(json.dumps(result))
            sys.stdout.flush()
    if store is not None:
        # Tells --store-server that this worker no longer needs it.
        store.add("bench/finished", 1)
    dist.destroy_process_group()


def store_server(args):
    """Holds the TCPStore the workers meet at until all of them are done
    (or --store-timeout passes)."""
    host, port = host_port(args.store_server)
    store = dist.TCPStore(host, port, args.world, True,
                          timedelta(seconds=args.store_timeout),
                          wait_for_workers=False)
    deadline = time.monotonic() + args.store_timeout
    while store.add("bench/finished", 0) < args.world:
        if time.monotonic() > deadline:
            return 1
        time.sleep(0.2)
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd",
                   help="sgd: SGD with --momentum (the default); adamw")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="AdamW's decoupled weight decay (0)")
    p.add_argument("--straggle-ms", type=float, default=0.0)
    p.add_argument("--target", type=float, default=0.85)
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rank", type=int, default=-1,
                   help="run only this worker (needs --store)")
    p.add_argument("--store", help="HOST:PORT of the TCPStore to meet at")
    p.add_argument("--store-server", help="hold the TCPStore at HOST:PORT")
    p.add_argument("--store-timeout", type=float, default=900.0)
    p.add_argument("--powersgd", type=int, default=0,
                   help="PowerSGD hook with this rank (0: plain all-reduce)")
    p.add_argument("--powersgd-start", type=int, default=20)
    p.add_argument("--time-limit", type=float, default=0.0)
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    if args.store_server:
        return store_server(args)
    if args.rank >= 0:
        if not args.store:
            p.error("--rank needs --store")
        worker(args.rank, args, None, None)
        return 0
    port = args.port
    if port == 0:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, args, port, out)) for r in range(args.world)]
    for proc in procs:
        proc.start()
    result = out.get()
    for proc in procs:
        proc.join()
    print(json.dumps(result))
    return 0 if result["time_to_target_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
