"""Whole-split steps on memory-mapped data, by batch (issue 12 item 2): peak memory and CPU time.

For each N and method, in a fresh subprocess: open a memory-mapped dataset of N rows x 4 vector
modalities x 256 features (``write_synthetic_memmap``), build ``FitSteps`` (the streamed standardiser
pass, then the method's ``prepare_split``) and run ``finish`` (its ``calibrate_split`` on the
validation split), without any training epoch. Reported: peak RSS during the set-up and its growth
over the RSS on entry (``mlmm.metrics.efficiency.PeakMemory``: the kernel's VmHWM, reset on entry),
CPU seconds of the set-up, and rows read from the training split. masked-mean
(no whole-split step) is the baseline; above ``mlmm.data.memmap.MATERIALISE_LIMIT_BYTES`` (1 GiB of
values) these methods were refused before they prepared by batch.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_streamed_prepare.py --sizes 10000 300000 \
        --folder /tmp/mlmm-prepare-bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("masked-mean", "mean-fill", "summary-linear", "pattern-adapters", "retrieval-fill",
           "embedding-retrieval", "pattern-router")


def data_folder(root: Path, n: int) -> Path:
    from mlmm.data import write_synthetic_memmap

    folder = root / f"n{n}"
    if not (folder / "spec.json").is_file():
        write_synthetic_memmap(folder, n=n, n_modalities=4, features=256, seed=0)
    return folder


def one_setup(folder: str, method_name: str) -> dict:
    """In this (fresh) process: FitSteps (standardiser pass + prepare) and finish (calibrate)."""
    import torch

    from mlmm.data import open_memmap_dataset
    from mlmm.metrics.efficiency import PeakMemory
    from mlmm.train import FitSteps, TrainConfig, build_method

    torch.set_num_threads(1)
    data = open_memmap_dataset(folder)
    train, val = data.split("train"), data.split("val")
    method = build_method(method_name, data.spec, seed=0)
    cpu, wall = time.process_time(), time.perf_counter()
    with PeakMemory() as peak:
        steps = FitSteps(method, train, val, config=TrainConfig(max_epochs=1, batch_size=256))
        steps.finish()
    return {"method": method_name, "n": len(data), "train_rows": len(train),
            "peak_rss_mib": round(peak.figures["cpu_peak_rss_bytes"] / 2**20, 1),
            "peak_growth_mib": round(peak.figures["cpu_peak_growth_bytes"] / 2**20, 1),
            "memory_method": peak.figures["cpu_method"],
            "setup_cpu_s": round(time.process_time() - cpu, 2), "setup_wall_s": round(time.perf_counter() - wall, 2),
            "train_rows_read": train.reads, "val_rows_read": val.reads,
            "values_gib": round(data.nbytes() / 2**30, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 300_000])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--folder", default="/tmp/mlmm-prepare-bench")
    parser.add_argument("--one", nargs=2, metavar=("FOLDER", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_setup(*args.one)))
        return
    root = Path(args.folder)
    rows = []
    for n in args.sizes:
        folder = data_folder(root, n)
        for name in args.methods:
            out = subprocess.run([sys.executable, __file__, "--one", str(folder), name], capture_output=True,
                                 text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| N | GiB of values | method | set-up peak RSS (MiB) | growth (MiB) | set-up CPU s | training rows read |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['values_gib']} | {r['method']} | {r['peak_rss_mib']} | {r['peak_growth_mib']} | "
              f"{r['setup_cpu_s']} | {r['train_rows_read']:,} of {r['train_rows']:,} |")


if __name__ == "__main__":
    main()
