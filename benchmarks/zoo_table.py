"""The method-zoo table of issues 3 and 4: every method on the same cells.

Cells per method (five seeds each):
- handwritten, entry protocol, rate 0 and 0.5, random stratified split;
- basicmotions, no extra missingness, fixed split, accuracy on every modality subset.
Also the trainable parameter count and seconds per training epoch (handwritten, rate 0.5).

Usage:
    python benchmarks/zoo_table.py run masked-mean late-ensemble [--seeds 0,1,2,3,4] [--param k=v]
    python benchmarks/zoo_table.py table            # markdown table of everything run so far

Each finished cell is one JSON file under --out (default bench-results/zoo), so a
killed run resumes where it stopped and several processes can share the work.
Not a test: figures depend on the machine (run with the CPU otherwise idle).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from mlmm import ExperimentConfig
from mlmm.cli import parse_params
from mlmm.experiment import run_experiment
from mlmm.methods import METHODS

CELLS = {
    "hw0": dict(dataset="handwritten", protocol="entry", rate=0.0, split="random", subsets=False),
    "hw50": dict(dataset="handwritten", protocol="entry", rate=0.5, split="random", subsets=False),
    "bm": dict(dataset="basicmotions", protocol="none", rate=0.0, split="fixed", subsets=True),
}


def complete_train_fields(method: str, fields: dict) -> dict:
    """A method that needs complete training samples (the loop refuses it otherwise) runs a
    missing-data cell with complete training and validation data and the cell's rate at test
    only; the table marks such entries with †."""
    if not METHODS.get(method).info.needs_complete_train or not fields["rate"]:
        return fields
    return {**fields, "train_rate": 0.0, "test_rate": fields["rate"]}


def run(methods: list[str], seeds: tuple[int, ...], params: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for method in methods:
        for cell, fields in CELLS.items():
            path = out / f"{method}__{cell}.json"
            if path.exists():
                continue
            fields = complete_train_fields(method, fields)
            config = ExperimentConfig(method=method, seeds=seeds, method_params=params, **fields)
            result = run_experiment(config)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=1))
            os.replace(tmp, path)  # atomic: a killed run leaves no half cell
            acc = result["metrics"]["accuracy"]
            print(f"{method:22s} {cell:5s} acc {100 * acc['mean']:.1f} ± {100 * acc['std']:.1f}", flush=True)


def _pct(summary: dict) -> str:
    return f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f}"


def table(out: Path) -> str:
    rows = []
    header = ["method", "category", "params", "s/epoch", "hw R=0", "hw R=0.5", "bm acc", "bm gyro", "bm both"]
    for method in METHODS.names():
        cells = {c: out / f"{method}__{c}.json" for c in CELLS}
        if not all(p.exists() for p in cells.values()):
            continue
        r = {c: json.loads(p.read_text()) for c, p in cells.items()}
        hw = r["hw50"]
        per_epoch = hw["train_seconds"]["mean"] / hw["epochs_run"]["mean"]
        subsets = r["bm"]["subsets"]
        rows.append([
            method, METHODS.get(method).info.category, f"{hw['n_parameters']:,}", f"{per_epoch:.2f}",
            _pct(r["hw0"]["metrics"]["accuracy"]),
            _pct(hw["metrics"]["accuracy"]) + (" †" if complete_train_fields(method, CELLS["hw50"]) != CELLS["hw50"] else ""),
            *(_pct(subsets[s]["accuracy"]) for s in ("accelerometer", "gyroscope", "accelerometer+gyroscope")),
        ])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if any(row[5].endswith("†") for row in rows):
        lines.append("\n† needs complete training samples: complete train and validation data, entry rate 0.5 at test only.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "table"))
    parser.add_argument("methods", nargs="*")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("bench-results/zoo"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "run":
        params = parse_params(args.param)
        run(args.methods, tuple(int(s) for s in args.seeds.split(",")), params, args.out)
    else:
        print(table(args.out))


if __name__ == "__main__":
    main()
