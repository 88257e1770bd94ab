"""The README's main job: every method on a bundled dataset at several entry rates.

Each finished (method, rate, seed) fit is appended to ``results.jsonl`` at
once, so a run that fails or is killed loses nothing already computed, and
rerunning with the same folder skips the fits that are there.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .experiment import ExperimentConfig, run_seed, summarise
from .missing import make_protocol
from .report import pivot_table, results_table
from .train.loop import TrainConfig


#: The demo's default methods: the foundation baselines, one or two per family, chosen so the
#: whole grid (x 3 rates x 3 seeds) takes a few minutes on 2 cores. ``mlmm demo --all-methods``
#: runs every registered method instead; as the zoo grows that becomes far slower.
DEMO_METHODS = ("zero-fill", "mean-fill", "masked-mean", "late-ensemble")


@dataclass
class DemoOutput:
    results: list[dict]
    table: str
    report_path: Path
    csv_path: Path
    json_path: Path
    seconds: float


def _load_done(path: Path) -> dict[tuple, dict]:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: refit that cell
                continue
            done[(rec["method"], rec["rate"], rec["seed"], rec["config_key"])] = rec
    return done


def run_demo(out_dir: str | Path, dataset: str, rates: Sequence[float], seeds: Sequence[int], split: str,
             methods: Sequence[str], train: TrainConfig, device: str = "cpu", method_params: dict | None = None,
             progress: Callable | None = None) -> DemoOutput:
    """Run the grid methods x rates x seeds (entry-rate protocol on train, validation and test)."""
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "results.jsonl"
    done = _load_done(log_path)
    configs = [ExperimentConfig(dataset=dataset, method=m, protocol="entry", rate=r, split=split, seeds=tuple(seeds),
                                method_params=dict(method_params or {}), train=train, device=device, subsets=False)
               for m in methods for r in rates]
    for c in configs:
        c.scenario()
    total = len(configs) * len(seeds)
    bar = progress(total) if progress else None
    results = []
    try:
        with open(log_path, "a") as log:
            for config in configs:
                key = json.dumps({"split": split, "train": train.__dict__, "params": config.method_params}, sort_keys=True)
                records = []
                for seed in seeds:
                    if bar is not None:
                        bar.set_description(f"{config.method} rate {config.rate:g} seed {seed}")
                    record = done.get((config.method, config.rate, seed, key))
                    if record is None:
                        record = {"method": config.method, "rate": config.rate, "config_key": key,
                                  **run_seed(config, seed)}
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    records.append(record)
                    if bar is not None:
                        bar.update(1)
                results.append(summarise(config, records))
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    json_path, csv_path, report_path = out / "results.json", out / "results.csv", out / "report.md"
    json_path.write_text(json.dumps(results, indent=2))
    _write_csv(csv_path, results)
    report_path.write_text(_report(dataset, split, rates, seeds, train, results, seconds))
    return DemoOutput(results, pivot_table(results), report_path, csv_path, json_path, seconds)


def _write_csv(path: Path, results: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "protocol", "rate", "seed", "accuracy", "macro_f1",
                    "test_missing_entry_fraction", "test_complete_sample_fraction"])
        for r in results:
            for i, seed in enumerate(r["seeds"]):
                w.writerow([r["dataset"], r["method"], r["protocol"], r["rate"], seed,
                            r["metrics"]["accuracy"]["per_seed"][i], r["metrics"]["macro_f1"]["per_seed"][i],
                            r["realised"]["test"]["missing_entry_fraction"],
                            r["realised"]["test"]["complete_sample_fraction"]])


def _report(dataset: str, split: str, rates: Sequence[float], seeds: Sequence[int], train: TrainConfig,
            results: list[dict], seconds: float) -> str:
    definition = make_protocol("entry", rate=0.0).definition
    versions = results[0]["versions"] if results else {}
    return "\n".join([
        f"# mlmm demo: {dataset}",
        "",
        f"Protocol: **entry rate** on train, validation and test — {definition}",
        f"Rates: {', '.join(f'{r:g}' for r in rates)}; seeds: {', '.join(map(str, seeds))}; split: `{split}` "
        "(validation carved from the training rows; the test split is never used for selection).",
        f"Training: AdamW lr {train.lr}, weight decay {train.weight_decay}, batch {train.batch_size}, "
        f"up to {train.max_epochs} epochs, early stopping (patience {train.patience}) on validation {train.select_on}, "
        f"modality dropout {train.modality_dropout}.",
        "",
        "## Accuracy (%, mean ± std over seeds)",
        "",
        pivot_table(results, "accuracy", markdown=True),
        "",
        "## Macro-F1 (%, mean ± std over seeds)",
        "",
        pivot_table(results, "macro_f1", markdown=True),
        "",
        "## Every cell, with the realised missingness of the test split",
        "",
        results_table(results, markdown=True),
        "",
        f"Wall time {seconds:.0f} s. Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}.",
        "",
    ])
