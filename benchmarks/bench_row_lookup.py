"""CPU time per training epoch of mmin and cpm-nets against the number of training rows.

Both keep per-row state for training samples (cpm-nets: a free latent per row; mmin used to
keep a copy of every training row for its teacher). Rows used to be identified by comparing a
batch with all N stored rows (a (B, N, M) tensor per step: quadratic in N per epoch); they now
come with their index (``Batch.index``, set by the loop) or need no lookup at all (mmin's
teacher sees the complete batch, the loop's modality dropout being off for it).

Usage:
    python benchmarks/bench_row_lookup.py [--rows 10000,30000,100000] [--methods mmin,cpm-nets]

One epoch per stage (mmin: teacher + student; cpm-nets: one full-batch epoch = 5 decoder +
5 latent steps, its test-time fit on the validation rows included), synthetic data with 3
modalities of 16 features, 200 validation rows, one torch thread. Reports process CPU seconds
of ``Trainer.fit`` divided by the number of epochs run, and the per-row cost, which stays flat
when the cost grows linearly. Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from mlmm.data.datasets import make_synthetic
from mlmm.train.loop import TrainConfig, Trainer, build_method

PARAMS = {"mmin": {}, "cpm-nets": {"epochs": 1}}


def epoch_seconds(method_name: str, n_rows: int) -> tuple[float, int]:
    data = make_synthetic(n_samples=n_rows + 200, n_classes=4, n_modalities=3, dims=16, seed=0)
    rows = torch.arange(n_rows + 200)
    train, val = data.subset(rows[:n_rows].numpy()), data.subset(rows[n_rows:].numpy())
    method = build_method(method_name, data.spec, 0, **PARAMS[method_name])
    config = TrainConfig(max_epochs=1, batch_size=128, patience=1, modality_dropout=0.3)
    start = time.process_time()
    fit = Trainer(config).fit(method, train, val, seed=0)
    return time.process_time() - start, len(fit.history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,30000,100000")
    parser.add_argument("--methods", default="mmin,cpm-nets")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| method | training rows | CPU s per epoch | CPU µs per row |")
    print("|---|---:|---:|---:|")
    for name in args.methods.split(","):
        for n in (int(r) for r in args.rows.split(",")):
            seconds, epochs = epoch_seconds(name, n)
            per_epoch = seconds / epochs
            print(f"| {name} | {n:,} | {per_epoch:.2f} | {1e6 * per_epoch / n:.1f} |", flush=True)


if __name__ == "__main__":
    main()
