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
import platform
from pathlib import Path

import torch

from mlmm import ExperimentConfig
from mlmm.cli import parse_params
from mlmm.experiment import run_seed, summarise
from mlmm.methods import METHODS

CELLS = {
    "hw0": dict(dataset="handwritten", protocol="entry", rate=0.0, split="random", subsets=False),
    "hw50": dict(dataset="handwritten", protocol="entry", rate=0.5, split="random", subsets=False),
    "bm": dict(dataset="basicmotions", protocol="none", rate=0.0, split="fixed", subsets=True),
}


#: The seeds every cell of the table summarises.
SEEDS = (0, 1, 2, 3, 4)


def complete_train_fields(method: str, fields: dict) -> dict:
    """A method that needs complete training samples (the loop refuses it otherwise) runs a
    missing-data cell with complete training and validation data and the cell's rate at test
    only; the table marks such entries with †."""
    if not METHODS.get(method).info.needs_complete_train or not fields["rate"]:
        return fields
    return {**fields, "train_rate": 0.0, "test_rate": fields["rate"]}


def machine(device: str) -> str:
    """Where a cell ran, for the table's s/epoch column (figures from different machines
    do not compare)."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.machine()} cpu, {torch.get_num_threads()} thread(s) of {os.cpu_count()} cores"


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)  # atomic: a killed run leaves no half file


def run(methods: list[str], seeds: tuple[int, ...], params: dict, out: Path,
        cells: tuple[str, ...] = tuple(CELLS), device: str = "cpu") -> None:
    """Run the missing seeds of each (method, cell); write the cell's summary once the
    table's seeds (SEEDS) all have a record. Each seed's record is its own file under
    out/seeds/, so a killed run loses at most the seed in flight, and separate processes
    (or machines) can each run some seeds of the same cell."""
    unknown = [m for m in methods if m not in METHODS.names()]
    if unknown:
        raise SystemExit(f"unknown method(s) {', '.join(unknown)}; see `mlmm methods`")
    (out / "seeds").mkdir(parents=True, exist_ok=True)
    for method in methods:
        for cell in cells:
            path = out / f"{method}__{cell}.json"
            if path.exists():
                continue
            fields = complete_train_fields(method, CELLS[cell])
            config = ExperimentConfig(method=method, seeds=SEEDS, method_params=params, device=device, **fields)
            for seed in seeds:
                seed_path = out / "seeds" / f"{method}__{cell}__s{seed}.json"
                if not seed_path.exists():
                    _write_json(seed_path, {**run_seed(config, seed), "machine": machine(device)})
            seed_paths = [out / "seeds" / f"{method}__{cell}__s{seed}.json" for seed in SEEDS]
            if not all(p.exists() for p in seed_paths):
                continue
            records = [json.loads(p.read_text()) for p in seed_paths]
            result = summarise(config, records)
            result["machine"] = sorted({r.get("machine", "?") for r in records})
            _write_json(path, result)
            acc = result["metrics"]["accuracy"]
            print(f"{method:22s} {cell:5s} acc {100 * acc['mean']:.1f} ± {100 * acc['std']:.1f}", flush=True)


def _where(result: dict) -> str:
    """Short name of where a cell ran (cells written before machines were recorded ran here, on 2 cores)."""
    names = result.get("machine") or ["x86_64 cpu, 1 thread(s) of 2 cores"]
    names = [names] if isinstance(names, str) else names
    return " + ".join(n.split(", ")[-1].replace(" of ", "/") if " cpu, " in n else n for n in names)


def _pct(summary: dict) -> str:
    return f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f}"


def table(out: Path) -> str:
    rows = []
    header = ["method", "category", "params", "s/epoch", "ran on", "hw R=0", "hw R=0.5", "bm acc", "bm gyro", "bm both"]
    for method in METHODS.names():
        cells = {c: out / f"{method}__{c}.json" for c in CELLS}
        if not all(p.exists() for p in cells.values()):
            continue
        r = {c: json.loads(p.read_text()) for c, p in cells.items()}
        hw = r["hw50"]
        per_epoch = hw["train_seconds"]["mean"] / hw["epochs_run"]["mean"]
        subsets = r["bm"]["subsets"]
        rows.append([
            method, METHODS.get(method).info.category, f"{hw['n_parameters']:,}", f"{per_epoch:.2f}", _where(hw),
            _pct(r["hw0"]["metrics"]["accuracy"]),
            _pct(hw["metrics"]["accuracy"])
            + (" †" if complete_train_fields(method, CELLS["hw50"]) != CELLS["hw50"] else ""),
            *(_pct(subsets[s]["accuracy"]) for s in ("accelerometer", "gyroscope", "accelerometer+gyroscope")),
        ])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if any(row[6].endswith("†") for row in rows):
        lines.append("\n† needs complete training samples: complete train and validation data, "
                     "entry rate 0.5 at test only.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "table"))
    parser.add_argument("methods", nargs="*")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="the seeds to run now (a cell is summarised "
                        "once all of 0-4 have a record)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("bench-results/zoo"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cells", default=",".join(CELLS), help=f"comma-separated subset of {', '.join(CELLS)}")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "run":
        params = parse_params(args.param)
        cells = tuple(args.cells.split(","))
        unknown = sorted(set(cells) - set(CELLS))
        if unknown:
            parser.error(f"unknown cell(s) {', '.join(unknown)}; known: {', '.join(CELLS)}")
        run(args.methods, tuple(int(s) for s in args.seeds.split(",")), params, args.out, cells, args.device)
    else:
        print(table(args.out))


if __name__ == "__main__":
    main()
