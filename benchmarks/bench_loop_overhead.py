"""Training-loop overhead: mlmm's Trainer vs a bare hand-written PyTorch loop, as a ratio in one run.

Same method (masked-mean), same standardised handwritten data (entry rate 0.5,
seed 0), same epochs, batch size, AdamW settings and gradient clipping, and
both validate once per epoch. The bare loop is what a user would write by hand;
the Trainer adds batch selection through ``Batch``, model selection (state
copies), history records and the early-stopping bookkeeping. Modality dropout
is off in both (it is a modelling choice, not loop overhead). The two loops
alternate over --repeats rounds so machine load hits both alike; the ratio of
medians is printed.

Usage: python benchmarks/bench_loop_overhead.py [--epochs 20] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mlmm.data.preprocess import Standardizer
from mlmm.data.registry import load_dataset
from mlmm.data.splits import make_splits
from mlmm.missing import Scenario, make_protocol
from mlmm.train.loop import TrainConfig, Trainer, build_method, effective_batch_size


def data():
    ds = load_dataset("handwritten")
    train, val, _ = make_splits(ds, "random", 0)
    scenario = Scenario.same(make_protocol("entry", rate=0.5))
    return scenario.apply(train, "train", 0)[0], scenario.apply(val, "val", 0)[0]


def library_loop(train, val, config: TrainConfig) -> float:
    method = build_method("masked-mean", train.spec, seed=0)
    start = time.perf_counter()
    Trainer(config).fit(method, train, val, seed=0)
    return time.perf_counter() - start


def bare_loop(train, val, config: TrainConfig) -> float:
    method = build_method("masked-mean", train.spec, seed=0)
    start = time.perf_counter()
    standardizer = Standardizer(train.spec).fit(train.as_batch())
    tr, va = standardizer(train.as_batch()), standardizer(val.as_batch())
    xs = [tr.inputs[m] for m in train.spec.modality_names]
    opt = torch.optim.AdamW(method.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch_size = effective_batch_size(tr.size, config)
    g = torch.Generator().manual_seed(0)
    for _ in range(config.max_epochs):
        method.train()
        order = torch.randperm(tr.size, generator=g)
        for i in range(0, tr.size, batch_size):
            idx = order[i:i + batch_size]
            batch = type(tr)(dict(zip(train.spec.modality_names, (x[idx] for x in xs))), tr.mask[idx], tr.target[idx])
            loss = F.cross_entropy(method(batch).logits, batch.target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(method.parameters(), config.grad_clip)
            opt.step()
        method.eval()
        with torch.no_grad():
            F.cross_entropy(method(va).logits, va.target)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, val = data()
    # patience = epochs: both loops run every epoch.
    config = TrainConfig(max_epochs=args.epochs, patience=args.epochs, modality_dropout=0.0)
    lib, bare = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(train, val, config))
        lib.append(library_loop(train, val, config))
    b, lib_s = statistics.median(bare), statistics.median(lib)
    print(f"bare loop    {b:6.2f} s  ({1000 * b / args.epochs:.0f} ms/epoch)")
    print(f"mlmm Trainer {lib_s:6.2f} s  ({1000 * lib_s / args.epochs:.0f} ms/epoch)")
    print(f"ratio Trainer / bare = {lib_s / b:.3f}   "
          f"(median of {args.repeats}, {args.epochs} epochs, threads {args.threads})")


if __name__ == "__main__":
    main()
