"""All-subsets evaluation on memory-mapped data vs one evaluation pass: time and peak memory (issue 12).

For each N (a fresh subprocess per N), on ``write_synthetic_memmap`` data of N rows x 4 vector
modalities x 256 float32 features (30 % of entries missing), a model trained one epoch on 2,000
training rows (the cost of evaluating does not depend on how well it is trained) is evaluated on
ALL N memory-mapped rows, read 1,024 rows at a time (``mlmm.data.batches.iter_batches``):

  one    = ``evaluate(model, data)``: one evaluation pass (read + forward + metrics);
  fast   = ``evaluate_subsets(model, data)``: the 15 subsets, each batch encoded once and fused per
           subset (methods declaring FactorisedFusion);
  slow   = ``evaluate_subsets(model, data, fast=False)`` (``--slow``): 15 full passes per batch.

Time: best of ``--repeats``, wall clock and process CPU clock (``time.process_time``, one torch
thread; less disturbed by other processes on the machine). Memory: ``PeakMemory`` around the first
run of each (the kernel's VmHWM reset on entry): the process's peak RSS and its growth over the RSS
on entry. ``--materialised`` adds the same all-subsets evaluation after reading the rows into an
in-memory dataset (``to_memory``), the memory a whole-split evaluation needs.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_stream_subsets.py --sizes 10000 100000 \
        --methods masked-mean,late-ensemble --slow --materialised --folder /tmp/mlmm-subsets-bench

Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

MIB = 2 ** 20


def data_folder(root: Path, n: int) -> Path:
    from mlmm.data import write_synthetic_memmap

    folder = root / f"n{n}"
    if not (folder / "spec.json").is_file():
        write_synthetic_memmap(folder, n=n, n_modalities=4, features=256, seed=0)
    return folder


def measured(fn, repeats: int) -> dict:
    """Best wall / CPU seconds of ``repeats`` runs of ``fn``; peak memory of the first."""
    from mlmm.metrics.efficiency import PeakMemory

    walls, cpus, memory = [], [], None
    for i in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        if i == 0:
            with PeakMemory() as peak:
                fn()
            memory = peak.figures
        else:
            fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"wall_s": min(walls), "cpu_s": min(cpus), "peak_rss_mib": memory["cpu_peak_rss_bytes"] / MIB,
            "growth_mib": (memory["cpu_peak_growth_bytes"] or 0) / MIB, "memory_method": memory["cpu_method"]}


def worker(folder: str, methods: list[str], repeats: int, slow: bool, materialised: bool) -> list[dict]:
    """In this (fresh) process: the figures of each method on every row of the dataset at ``folder``."""
    from mlmm.components.factorised import is_factorised
    from mlmm.data import open_memmap_dataset
    from mlmm.metrics.evaluate import evaluate, evaluate_subsets
    from mlmm.train import TrainConfig, Trainer, build_method

    torch.set_num_threads(1)
    data = open_memmap_dataset(folder)
    train = data.split("train").subset(np.arange(2000))
    rows = []
    for name in methods:
        model = Trainer(TrainConfig(max_epochs=1, batch_size=256)).fit(build_method(name, data.spec, seed=0),
                                                                       train, data.split("val"), seed=0).model
        row = {"n": len(data), "method": name, "path": "fast" if is_factorised(model.method) else "slow",
               "one": measured(lambda: evaluate(model, data), repeats),
               "subsets": measured(lambda: evaluate_subsets(model, data), repeats)}
        if slow and is_factorised(model.method):
            row["slow"] = measured(lambda: evaluate_subsets(model, data, fast=False), 1)
        if materialised:
            def in_memory():
                evaluate_subsets(model, data.to_memory())
            row["materialised"] = measured(in_memory, 1)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--methods", default="masked-mean")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow", action="store_true", help="also time the slow path (15 passes per batch)")
    parser.add_argument("--materialised", action="store_true", help="also evaluate an in-memory copy")
    parser.add_argument("--folder", default="/tmp/mlmm-subsets-bench")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods = args.methods.split(",")
    if args.worker:
        print(json.dumps(worker(args.worker, methods, args.repeats, args.slow, args.materialised)))
        return
    root = Path(args.folder)
    print(f"{'N':>7s} {'method':13s} {'path':4s} {'one s':>7s} {'subsets s':>9s} {'ratio':>6s} {'cpu ratio':>9s} "
          f"{'one RSS':>8s} {'subs RSS':>8s} {'subs +MiB':>9s} {'slow/one':>8s} {'in-mem +MiB':>11s}", flush=True)
    for n in args.sizes:
        folder = data_folder(root, n)
        cmd = [sys.executable, __file__, "--worker", str(folder), "--methods", args.methods,
               "--repeats", str(args.repeats)] + ["--slow"] * args.slow + ["--materialised"] * args.materialised
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout  # stderr shown
        for row in json.loads(out.strip().splitlines()[-1]):
            one, sub = row["one"], row["subsets"]
            slow = f"{row['slow']['wall_s'] / one['wall_s']:8.2f}" if "slow" in row else f"{'-':>8s}"
            mat = f"{row['materialised']['growth_mib']:11.0f}" if "materialised" in row else f"{'-':>11s}"
            print(f"{n:7d} {row['method']:13s} {row['path']:4s} {one['wall_s']:7.2f} {sub['wall_s']:9.2f} "
                  f"{sub['wall_s'] / one['wall_s']:6.2f} {sub['cpu_s'] / one['cpu_s']:9.2f} "
                  f"{one['peak_rss_mib']:8.0f} {sub['peak_rss_mib']:8.0f} {sub['growth_mib']:9.0f} {slow} {mat}",
                  flush=True)
            print("  " + json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
