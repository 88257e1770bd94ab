"""Peak memory and epoch time of masked-mean on memory-mapped data (issue 12).

1. Peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which counts file pages mapped into the
   process too) of training ONE epoch of masked-mean through ``mlmm.train.Trainer`` (default
   ``TrainConfig``: no loader workers) on a memory-mapped dataset, each N in a fresh subprocess:
   ``--sizes``: N rows x 4 vector modalities x 256 features; ``--image-sizes``: N rows of a 3 x S x S
   uint8 image (``--image-side``, default 64) + one vector of 256.
2. Epoch time: mlmm's streamed training epoch (``FitSteps`` + ``mlmm.train.streamed.training_loader``,
   the loader ``Trainer`` uses) vs a bare PyTorch loop (a DataLoader over the same memmap files with
   one fancy index per batch, same masked-mean module, AdamW, no standardisation / modality dropout /
   gradient clipping / validation), interleaved in one process, median of the rounds; for each
   ``--workers`` count, BOTH loops get that many DataLoader workers (like with like). Wall time and
   this process's CPU time (without workers' CPU) are reported.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_memmap_rss.py --sizes 10000 100000 1000000 \
        --image-sizes 5000 50000 --timing-n 100000 --workers 0 2 --rounds 3 --folder /tmp/mlmm-memmap-bench

Data folders are written once per N under --folder (``write_synthetic_memmap``: 3.9 GiB at 10^6 vector
rows, 0.6 GiB at 5 x 10^4 images of 3 x 64 x 64).
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


def data_folder(root: Path, n: int, image_side: int = 0) -> Path:
    from mlmm.data import write_synthetic_memmap

    folder = root / (f"img{image_side}-n{n}" if image_side else f"n{n}")
    if not (folder / "spec.json").is_file():
        if image_side:
            write_synthetic_memmap(folder, n=n, n_modalities=1, features=256, seed=0,
                                   image_shape=(3, image_side, image_side))
        else:
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
    return {"n": len(data), "modalities": {m.name: list(m.shape) for m in data.spec.modalities},
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "fit_seconds": time.perf_counter() - start}


class _BareMemmap(torch.utils.data.Dataset):
    """What a user writes by hand: rows of the .npy files, mask and labels, one fancy index per batch."""

    def __init__(self, folder: Path, rows: np.ndarray, names) -> None:
        self.arrays = [np.load(folder / f"{name}.npy", mmap_mode="r") for name in names]
        self.mask = torch.from_numpy(np.load(folder / "mask.npy"))
        self.target = torch.from_numpy(np.load(folder / "target.npy"))
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitems__(self, pos):
        rows = self.rows[np.asarray(pos)]
        return rows, [torch.from_numpy(np.ascontiguousarray(a[rows])) for a in self.arrays]


def _as_is(items):
    return items


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clocks()
    return wall - start[0], cpu - start[1]


def bare_epoch(method, loader, names) -> tuple[float, float]:
    """(wall, CPU) seconds of one epoch of the hand-written loop."""
    from mlmm.data import Batch

    optimiser = torch.optim.AdamW(method.parameters(), lr=1e-3)
    method.train()
    start = _clocks()
    for rows, xs in loader:
        rows_t = torch.from_numpy(rows)
        batch = Batch(dict(zip(names, xs)), loader.dataset.mask[rows_t], loader.dataset.target[rows_t])
        loss = method.task_loss(method(batch).logits, batch.target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return _since(start)


def mlmm_epoch(method, train, workers: int, same_steps: bool = False) -> tuple[float, float]:
    """(wall, CPU) seconds of one training epoch as ``Trainer`` runs it on streamed data (workers, if any,
    start inside the timed epoch, as the bare loop's do). ``same_steps``: without gradient clipping and
    modality dropout (``grad_clip=None, modality_dropout=0``), the optimiser steps the bare loop takes;
    mlmm's train-only standardisation and its batch checks stay."""
    from mlmm.train import FitSteps, TrainConfig
    from mlmm.train.streamed import training_loader

    extra = {"grad_clip": None, "modality_dropout": 0.0} if same_steps else {}
    config = TrainConfig(max_epochs=1, batch_size=BATCH, num_workers=workers, **extra)
    steps = FitSteps(method, train, None, config=config, seed=0)
    for _ in steps.stages():
        loader = training_loader(steps)
        for _ in steps.epochs():
            start = _clocks()
            for batch in loader:
                steps.step(batch, standardised=True)
            elapsed = _since(start)
    return elapsed


def timing(folder: Path, rounds: int, workers: int, same_steps: bool = False) -> dict:
    from mlmm.data import open_memmap_dataset
    from mlmm.train import build_method

    data = open_memmap_dataset(folder)
    train = data.split("train")
    names = data.spec.modality_names
    extra = {"num_workers": workers, "prefetch_factor": 2} if workers else {}
    bare = torch.utils.data.DataLoader(_BareMemmap(folder, train.rows, names), batch_size=BATCH, shuffle=True,
                                       collate_fn=_as_is, generator=torch.Generator().manual_seed(0), **extra)
    times = {"mlmm": [], "bare": []}
    for r in range(rounds):  # interleaved: the machine's load hits both alike
        times["mlmm"].append(mlmm_epoch(build_method("masked-mean", data.spec, seed=r), train, workers, same_steps))
        times["bare"].append(bare_epoch(build_method("masked-mean", data.spec, seed=r), bare, names))
    out = {"workers": workers, "same_steps": same_steps, "n_train": len(train), "rounds_wall_cpu": times}
    for i, clock in enumerate(("wall", "cpu")):
        med = {k: statistics.median(t[i] for t in v) for k, v in times.items()}
        out[f"median_{clock}_seconds"] = med
        out[f"ratio_{clock}"] = med["mlmm"] / med["bare"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--image-sizes", type=int, nargs="*", default=[], help="N of the image RSS runs")
    parser.add_argument("--image-side", type=int, default=64)
    parser.add_argument("--timing-n", type=int, default=100_000, help="N for the epoch-time comparison (0: skip)")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2],
                        help="DataLoader workers of both loops in the epoch-time comparison, one comparison each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--same-steps", action="store_true",
                        help="mlmm without gradient clipping and modality dropout, as the bare loop trains")
    parser.add_argument("--folder", default="/tmp/mlmm-memmap-bench")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        print(json.dumps(one_epoch_rss(args.child)))
        return
    root = Path(args.folder)
    results = {"rss": [], "image_rss": [], "timing": []}
    for key, sizes, side in (("rss", args.sizes, 0), ("image_rss", args.image_sizes, args.image_side)):
        for n in sizes:
            folder = data_folder(root, n, side)
            out = subprocess.run([sys.executable, __file__, "--child", str(folder)], capture_output=True, text=True,
                                 check=True)
            results[key].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[key][-1]), flush=True)
        if len(results[key]) > 1:
            results[f"{key}_growth"] = results[key][-1]["peak_rss_mib"] / results[key][0]["peak_rss_mib"]
    if args.timing_n:
        for workers in args.workers:
            results["timing"].append(timing(data_folder(root, args.timing_n), args.rounds, workers, args.same_steps))
            print(json.dumps(results["timing"][-1]), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
