"""Strong time-series baselines against mlmm's default sequence pipeline, per modality subset.

Cells: a dataset with sequence modalities (default basicmotions, its fixed UEA split, no added
missingness), every method trained once per seed and scored on every modality subset of the
test split (accuracy %, mean ± std over seeds).

Leave-one-subject-out: ``--split logo`` runs every fold ``logo:i`` of a dataset with group ids
(``--seeds`` then names the folds; mean ± std over folds). ``--dataset synthetic-subjects-sequence``
is the bundled ``synthetic-subjects`` generator (12 subjects) drawn with sequence modalities.

Usage:
    python benchmarks/ts_baselines.py run [--methods summary-linear,rocket-linear,...] [--seeds 0-4]
    python benchmarks/ts_baselines.py run --dataset synthetic-subjects-sequence --split logo --seeds 0-11
    python benchmarks/ts_baselines.py table [--dataset ... --split ...]

Each seed is one JSON file under --out (default bench-results/ts), so a killed run resumes.
Not a test: figures depend on the machine; run with the CPU otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from mlmm.experiment import ExperimentConfig, fit_seed
from mlmm.metrics.evaluate import evaluate_subsets
from mlmm.metrics.figures import cell_figures

METHODS = ("masked-mean", "late-ensemble", "summary-linear", "rocket-linear", "strongest-default")


def _seeds(text: str) -> tuple[int, ...]:
    if "-" in text:
        lo, hi = text.split("-")
        return tuple(range(int(lo), int(hi) + 1))
    return tuple(int(s) for s in text.split(","))


def _cell_dir(out: Path, dataset: str, split: str) -> Path:
    return out / f"{dataset}__{split}"


def _fit_fold(method: str, dataset: str, fold: int) -> dict:
    """One leave-one-group-out fold (``logo:fold``, seed 0), trained with the default TrainConfig."""
    from mlmm.data.datasets import make_synthetic_subjects
    from mlmm.data.registry import load_dataset
    from mlmm.data.splits import make_splits
    from mlmm.train.loop import Trainer, build_method

    data = (make_synthetic_subjects(kind="sequence") if dataset == "synthetic-subjects-sequence"
            else load_dataset(dataset))
    train, val, test = make_splits(data, f"logo:{fold}", 0)
    fit = Trainer().fit(build_method(method, data.spec, 0), train, val, seed=0)
    logits = fit.model.predict_logits(test)
    record = {"seed": fold, "metrics": {"accuracy": float((logits.argmax(1) == test.target).float().mean())},
              "train_seconds": fit.train_seconds, "subsets": evaluate_subsets(fit.model, test)}
    if hasattr(fit.model.method, "candidate_names"):
        record["chosen"] = fit.model.method.candidate_names[int(fit.model.method.chosen)]
    return record


def run(methods: list[str], seeds: tuple[int, ...], dataset: str, split: str, out: Path) -> None:
    cell = _cell_dir(out, dataset, split)
    cell.mkdir(parents=True, exist_ok=True)
    for method in methods:
        if split == "logo":
            for fold in seeds:
                path = cell / f"{method}__s{fold}.json"
                if not path.exists():
                    start = time.perf_counter()
                    record = {**_fit_fold(method, dataset, fold), "wall_seconds": time.perf_counter() - start}
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(record))
                    os.replace(tmp, path)
                    print(f"{method:18s} fold {fold} acc {100 * record['metrics']['accuracy']:.1f}", flush=True)
            continue
        config = ExperimentConfig(dataset=dataset, method=method, protocol="none", split=split, seeds=seeds,
                                  subsets=True)
        for seed in seeds:
            path = cell / f"{method}__s{seed}.json"
            if path.exists():
                continue
            start = time.perf_counter()
            fitted = fit_seed(config, seed)
            model = fitted.fit.model
            figures = cell_figures(model, fitted.test_masked, fitted.test, fitted.fit.train_seconds, fitted.memory)
            record = {"seed": seed, "metrics": figures["metrics"], "train_seconds": fitted.fit.train_seconds,
                      "subsets": evaluate_subsets(model, fitted.test)}
            if hasattr(model.method, "candidate_names"):  # strongest-default: which candidate it kept
                record["chosen"] = model.method.candidate_names[int(model.method.chosen)]
            record["wall_seconds"] = time.perf_counter() - start
            record["threads"] = torch.get_num_threads()
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, path)
            print(f"{method:18s} seed {seed} acc {100 * record['metrics']['accuracy']:.1f} "
                  f"({record['wall_seconds']:.0f} s)", flush=True)



def table(out: Path, dataset: str, split: str) -> str:
    cell = _cell_dir(out, dataset, split)
    rows: dict[str, list[dict]] = {}
    for path in sorted(cell.glob("*__s*.json")):
        method = path.name.split("__s")[0]
        rows.setdefault(method, []).append(json.loads(path.read_text()))
    if not rows:
        return f"(no results under {cell})"
    subsets = list(next(iter(rows.values()))[0]["subsets"])
    lines = ["| method | seeds | " + " | ".join(subsets) + " | fit s |",
             "|---|---|" + "---|" * len(subsets) + "---|"]
    order = [m for m in METHODS if m in rows] + sorted(m for m in rows if m not in METHODS)
    for method in order:
        records = rows[method]
        cells = []
        for s in subsets:
            acc = 100 * np.array([r["subsets"][s]["accuracy"] for r in records])
            cells.append(f"{acc.mean():.1f} ± {acc.std(ddof=1) if len(acc) > 1 else 0.0:.1f}")
        fit = np.mean([r["train_seconds"] for r in records])
        chosen = sorted({r["chosen"] for r in records if r.get("chosen")})
        name = method + (f" (kept: {', '.join(chosen)})" if chosen else "")
        lines.append(f"| {name} | {len(records)} | " + " | ".join(cells) + f" | {fit:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "table"))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--dataset", default="basicmotions")
    parser.add_argument("--split", default="fixed")
    parser.add_argument("--out", default="bench-results/ts")
    args = parser.parse_args()
    out = Path(args.out)
    if args.command == "run":
        torch.set_num_threads(1)
        run([m for m in args.methods.split(",") if m], _seeds(args.seeds), args.dataset, args.split, out)
    print(table(out, args.dataset, args.split))


if __name__ == "__main__":
    main()
