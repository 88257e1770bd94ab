"""Ratios behind two training-loop choices, measured in one run on the same machine.

1. AdamW with foreach=True (one multi-tensor kernel per step) vs torch's CPU
   default (a Python loop over parameters).
2. One torch thread vs two for these small models.

Usage: python benchmarks/bench_train_step.py [--method masked-mean] [--steps 200]
Each variant runs forward + backward + optimiser step on handwritten batches of 128.
Not a test: figures depend on the machine and on what else runs on it.
"""

import argparse
import time

import torch

from mlmm import Standardizer, build_method, load_dataset
from mlmm.train.loop import drop_modalities


def time_steps(method_name: str, steps: int, foreach: bool | None, threads: int) -> float:
    torch.set_num_threads(threads)
    data = load_dataset("handwritten")
    method = build_method(method_name, data.spec, seed=0)
    standardizer = Standardizer(data.spec).fit(data.as_batch())
    full = standardizer(data.as_batch())
    method.prepare(full, standardizer)
    optimiser = torch.optim.AdamW(method.parameters(), lr=1e-3, foreach=foreach)
    generator = torch.Generator().manual_seed(0)
    method.train()

    def step(i: int) -> None:
        batch = full.select(torch.arange(i * 128 % 1792, i * 128 % 1792 + 128))
        batch = batch.with_mask(drop_modalities(batch.mask, 0.3, generator))
        loss = sum(method.loss(batch, method(batch)).values())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for i in range(10):  # warm-up (lazy imports, allocator)
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    return 1000 * (time.perf_counter() - start) / steps


parser = argparse.ArgumentParser()
parser.add_argument("--method", default="masked-mean")
parser.add_argument("--steps", type=int, default=200)
args = parser.parse_args()
single = time_steps(args.method, args.steps, foreach=False, threads=1)
multi = time_steps(args.method, args.steps, foreach=True, threads=1)
two = time_steps(args.method, args.steps, foreach=True, threads=2)
print(f"{args.method}: ms per training step (batch 128)")
print(f"  AdamW single-tensor, 1 thread : {single:6.2f}")
print(f"  AdamW foreach,       1 thread : {multi:6.2f}   (foreach speed-up x{single / multi:.2f})")
print(f"  AdamW foreach,       2 threads: {two:6.2f}   (1 thread vs 2: x{two / multi:.2f})")
