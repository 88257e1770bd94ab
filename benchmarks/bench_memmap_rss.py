"""Peak memory and epoch time of masked-mean on memory-mapped vector data (issue 12).

1. Peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which counts file pages mapped into the
   process too) of training ONE epoch of masked-mean through ``mlmm.train.Trainer`` on a memory-mapped
   dataset of N rows x 4 vector modalities x 256 features, each N in a fresh subprocess.
2. Epoch time: mlmm's streamed training epoch (``FitSteps`` + the DataLoader of ``mlmm.train.streamed``)
   vs a bare PyTorch loop (DataLoader over the same memmap files, same masked-mean module, AdamW, no
   standardisation / modality dropout / validation), interleaved in one process, median of the rounds.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_memmap_rss.py --sizes 10000 100000 1000000 \
        --timing-n 100000 --rounds 3 --folder /tmp/mlmm-memmap-bench

Data folders are written once per N under --folder (``write_synthetic_memmap``, 3.9 GiB at 10^6).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

BATCH = 256


def data_folder(root: Path, n: int) -> Path:
    from mlmm.data import write_synthetic_memmap

    folder = root / f"n{n}"
    if not (folder / "spec.json").is_file():
        write_synthetic_memmap(folder, n=n, n_modalities=4, features=256, seed=0)
    return folder


def one_epoch_rss(folder: str) -> dict:
    """In this (fresh) process: one epoch of masked-mean through Trainer; peak RSS in MiB."""
    from mlmm.data import open_memmap_dataset
    from mlmm.train import TrainConfig, Trainer, build_method

    data = open_memmap_dataset(folder)
    start = time.perf_counter()
    trainer = Trainer(TrainConfig(max_epochs=1, batch_size=BATCH))
    trainer.fit(build_method("masked-mean", data.spec, seed=0), data.split("train"), data.split("val"), seed=0)
    return {"n": len(data), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "fit_seconds": time.perf_counter() - start}


class _BareMemmap(torch.utils.data.Dataset):
    """What a user writes by hand: rows of the .npy files, mask and labels, one fancy index per batch."""

    def __init__(self, folder: Path, rows: np.ndarray) -> None:
        self.arrays = [np.load(folder / f"m{j}.npy", mmap_mode="r") for j in range(4)]
        self.mask = torch.from_numpy(np.load(folder / "mask.npy"))
        self.target = torch.from_numpy(np.load(folder / "target.npy"))
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, pos):
        rows = self.rows[np.asarray(pos)]
        return rows, [torch.from_numpy(np.ascontiguousarray(a[rows])) for a in self.arrays]


def bare_epoch(method, loader, names) -> float:
    from mlmm.data import Batch

    optimiser = torch.optim.AdamW(method.parameters(), lr=1e-3)
    method.train()
    start = time.perf_counter()
    for rows, xs in loader:
        rows_t = torch.from_numpy(rows)
        batch = Batch(dict(zip(names, xs)), loader.dataset.mask[rows_t], loader.dataset.target[rows_t])
        loss = method.task_loss(method(batch).logits, batch.target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return time.perf_counter() - start


def mlmm_epoch(method, train) -> float:
    from mlmm.train import FitSteps, TrainConfig
    from mlmm.train.streamed import data_loader

    steps = FitSteps(method, train, None, config=TrainConfig(max_epochs=1, batch_size=BATCH), seed=0)
    for _ in steps.stages():
        for _ in steps.epochs():
            start = time.perf_counter()
            for batch in data_loader(train, steps.batch_size, sampler=steps.sampler()):
                steps.step(batch)
            elapsed = time.perf_counter() - start
    return elapsed


def timing(folder: Path, rounds: int) -> dict:
    from mlmm.data import open_memmap_dataset
    from mlmm.train import build_method

    data = open_memmap_dataset(folder)
    train = data.split("train")
    bare = torch.utils.data.DataLoader(_BareMemmap(folder, train.rows), batch_size=BATCH, shuffle=True,
                                       collate_fn=lambda x: x, generator=torch.Generator().manual_seed(0))
    times = {"mlmm": [], "bare": []}
    for r in range(rounds):  # interleaved: the machine's load hits both alike
        times["mlmm"].append(mlmm_epoch(build_method("masked-mean", data.spec, seed=r), train))
        times["bare"].append(bare_epoch(build_method("masked-mean", data.spec, seed=r), bare, data.spec.modality_names))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"n_train": len(train), "rounds": times, "median_seconds": med, "ratio": med["mlmm"] / med["bare"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--timing-n", type=int, default=100_000, help="N for the epoch-time comparison (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--folder", default="/tmp/mlmm-memmap-bench")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        print(json.dumps(one_epoch_rss(args.child)))
        return
    root = Path(args.folder)
    results = {"rss": [], "timing": None}
    for n in args.sizes:
        folder = data_folder(root, n)
        out = subprocess.run([sys.executable, __file__, "--child", str(folder)], capture_output=True, text=True,
                             check=True)
        results["rss"].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results["rss"][-1]), flush=True)
    if len(results["rss"]) > 1:
        results["rss_growth"] = results["rss"][-1]["peak_rss_mib"] / results["rss"][0]["peak_rss_mib"]
    if args.timing_n:
        results["timing"] = timing(data_folder(root, args.timing_n), args.rounds)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
