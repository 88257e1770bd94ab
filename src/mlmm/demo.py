"""The README's main job: every method on a bundled dataset at several entry rates.

Each finished (method, rate, seed) fit is appended to ``results.jsonl`` at
once, so a run that fails or is killed loses nothing already computed, and
rerunning with the same folder skips the fits that are there.

The fits run in a pool of spawned processes, one per core, one torch thread
each (as ``mlmm bench`` runs its cells): small models on a CPU gain little
from more threads but scale with processes. ``workers=1`` runs them in this
process.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from .data.registry import load_dataset
from .experiment import ExperimentConfig, run_seed, summarise, validate_config
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


def _fit(config: ExperimentConfig, seed: int, threads: int | None = None) -> dict:
    """One demo cell (in a pool worker, or in this process when ``threads`` is None)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return run_seed(config, seed)


def _run_cells(tasks: list[tuple[ExperimentConfig, int]], workers: int):
    """Yield (task index, record) as the fits finish: in this process if ``workers`` is 1, else in a pool of
    ``workers`` spawned processes with one torch thread each. After a fit raises, nothing new starts; the
    fits in flight finish (and are yielded) and the error is raised."""
    if workers == 1:
        for i, (config, seed) in enumerate(tasks):
            yield i, _fit(config, seed)
        return
    from .bench.backends import _init_worker

    todo = iter(enumerate(tasks))
    running: dict = {}
    error: BaseException | None = None
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(1, os.getpid())) as pool:
        while True:
            while error is None and len(running) < workers:  # at most `workers` in flight: a kill loses no more
                nxt = next(todo, None)
                if nxt is None:
                    break
                running[pool.submit(_fit, nxt[1][0], nxt[1][1], 1)] = nxt[0]
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                i = running.pop(future)
                if future.exception() is not None:
                    error = error or future.exception()
                else:
                    yield i, future.result()
    if error is not None:
        raise error


def run_demo(out_dir: str | Path, dataset: str, rates: Sequence[float], seeds: Sequence[int], split: str,
             methods: Sequence[str], train: TrainConfig, device: str = "cpu", method_params: dict | None = None,
             progress: Callable | None = None, workers: int | None = None) -> DemoOutput:
    """Run the grid methods x rates x seeds (entry-rate protocol on train, validation and test).

    ``workers``: fits at once, each in its own process with one torch thread (default: one per core,
    at most one per pending fit; 1 runs them in this process; on a non-CPU ``device``, 1).
    """
    start = time.perf_counter()
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    configs = [ExperimentConfig(dataset=dataset, method=m, protocol="entry", rate=r, split=split, seeds=tuple(seeds),
                                method_params=dict(method_params or {}), train=train, device=device, subsets=False)
               for m in methods for r in rates]
    if not configs:
        raise ValueError("demo: no method or no rate given")
    spec = load_dataset(dataset).spec
    for c in configs:  # everything checked before the output folder is made or anything trains
        validate_config(c, spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "results.jsonl"
    done = _load_done(log_path)
    key = json.dumps({"split": split, "train": train.__dict__, "params": dict(method_params or {})}, sort_keys=True)
    records = {(ci, seed): done[(c.method, c.rate, seed, key)] for ci, c in enumerate(configs) for seed in seeds
               if (c.method, c.rate, seed, key) in done}
    pending = [(ci, seed) for ci in range(len(configs)) for seed in seeds if (ci, seed) not in records]
    if workers is None:
        from .bench.backends import available_cores

        workers = 1 if device != "cpu" else max(1, min(available_cores(), len(pending)))
    bar = progress(len(configs) * len(seeds)) if progress else None
    if bar is not None:
        bar.update(len(records))
    try:
        with open(log_path, "a") as log:
            tasks = [(configs[ci], seed) for ci, seed in pending]
            for i, record in _run_cells(tasks, workers):
                ci, seed = pending[i]
                record = {"method": configs[ci].method, "rate": configs[ci].rate, "config_key": key, **record}
                log.write(json.dumps(record) + "\n")
                log.flush()
                records[(ci, seed)] = record
                if bar is not None:
                    bar.set_description(f"{configs[ci].method} rate {configs[ci].rate:g} seed {seed}")
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    results = [summarise(config, [records[(ci, seed)] for seed in seeds]) for ci, config in enumerate(configs)]
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
