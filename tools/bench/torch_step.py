#!/usr/bin/python3
"""PyTorch's training step on the same model and batch as bench-compute:
MLP 784-256-128-10, batch 256, or (cnn) the CNN of tools/bench-compute
(two conv 3x3 + ReLU + max-pool 2 blocks of 32 and 64 channels, dense 128,
dense 10) at batch 64; forward + backward + SGD-momentum update, reading
the loss back each step (as gp_model_train_step() does).

Usage: torch_step.py SECONDS INTRA_OP_THREADS [eager|jit] [mlp|cnn]
jit traces the model with torch.jit.trace (about 10 % faster here); the
optimizer uses the foreach (multi-tensor) update. The BLAS thread count is
the caller's (OPENBLAS_NUM_THREADS), since OpenBLAS reads it when it loads.
Prints one JSON object."""
import json
import os
import sys
import time

import torch


def main():
    seconds = float(sys.argv[1])
    threads = int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "eager"
    which = sys.argv[4] if len(sys.argv) > 4 else "mlp"
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    nn = torch.nn
    if which == "cnn":
        batch = 64
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
            nn.Linear(128, 10))
        x = torch.rand(batch, 1, 28, 28)
    else:
        batch = 256
        model = nn.Sequential(
            nn.Linear(784, 256), nn.ReLU(),
            nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 10))
        x = torch.rand(batch, 784)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                          foreach=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    y = torch.arange(batch) % 10
    if mode == "jit":
        model = torch.jit.trace(model, x)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(10):
        step()
    steps = 0
    t0 = time.perf_counter()
    while True:
        step()
        steps += 1
        t = time.perf_counter() - t0
        if steps >= 5 and t >= seconds:
            break
    print(json.dumps({
        "backend": "pytorch",
        "version": torch.__version__,
        "model": which,
        "mode": mode,
        "intra_op_threads": threads,
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "batch": batch,
        "samples_per_s": round(steps * batch / t),
    }))


if __name__ == "__main__":
    main()
