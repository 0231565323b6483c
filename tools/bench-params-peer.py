#!/usr/bin/python3
"""The peer for tools/bench-params: one torch.optim.SGD step (momentum 0.9,
weight decay 1e-4) after clip_grad_norm_(5.0) on the same MLP shapes, one
thread. Usage: bench-params-peer.py [ITERATIONS]"""
import sys
import time

import torch

iters = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
torch.set_num_threads(1)
shapes = [(784, 256), (1, 256), (256, 128), (1, 128), (128, 10), (1, 10)]
params = [torch.zeros(r, c, requires_grad=True) for r, c in shapes]
for p in params:
    p.grad = torch.randn_like(p) * 1e-3
opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-4)
for _ in range(50):
    torch.nn.utils.clip_grad_norm_(params, 5.0)
    opt.step()
w0, c0 = time.monotonic(), time.process_time()
for _ in range(iters):
    torch.nn.utils.clip_grad_norm_(params, 5.0)
    opt.step()
wall, cpu = time.monotonic() - w0, time.process_time() - c0
print(f"peer: torch {torch.__version__} SGD step + clip  "
      f"{wall / iters * 1e6:9.1f} us wall {cpu / iters * 1e6:9.1f} us cpu  "
      f"({iters / cpu:.0f}/s per CPU second)")
