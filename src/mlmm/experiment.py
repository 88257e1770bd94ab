"""One experiment: a method on a dataset under a missingness scenario, over seeds.

This is what ``mlmm run`` calls. Per seed it splits the data, draws the
train / validation / test masks from the scenario, trains with the one
training loop, evaluates on the masked test split and on every modality
subset of the (naturally available) test split, and records the realised
missingness next to the asked one.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .components.factorised import is_factorised
from .data.base import MultimodalDataset
from .data.registry import load_dataset
from .data.splits import check_split, fold_splits, make_splits
from .errors import EmptySplitError, InvalidParameterError
from .methods.params import check_method_params
from .methods.registry import METHODS
from .metrics.efficiency import PeakMemory
from .metrics.evaluate import evaluate_subsets
from .metrics.figures import cell_figures
from .metrics.task import summarise_seeds
from .missing import Scenario, make_protocol
from .train.devices import check_device
from .train.loop import FitResult, TrainConfig, Trainer, build_method
from .validation import Interval, check_value

METRIC_NAMES = ("accuracy", "macro_f1")
#: Protocols whose missingness is set by their own parameters, not by a single rate.
RATELESS_PROTOCOLS = ("none", "fixed-subset", "per-modality", "asynchronous")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run. ``protocol_params`` holds the protocol's own
    parameters besides the rate (e.g. ``{"subset": ["fou"]}``); ``train_rate`` /
    ``test_rate`` override ``rate`` for training+validation / test.

    The one run configuration: ``mlmm run``, ``mlmm demo``, the diagnostics (``mlmm explain``,
    ``recover``, ``uncertainty``: ``mlmm.diagnostics.fit_cell``) and every cell of a bench grid
    (``mlmm.bench.Cell.config()``) build one of these."""

    dataset: str
    method: str
    protocol: str = "entry"
    rate: float = 0.0
    split: str = "fixed"
    seeds: tuple[int, ...] = (0,)
    train_rate: float | None = None
    test_rate: float | None = None
    protocol_params: dict[str, Any] = field(default_factory=dict)
    method_params: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "cpu"
    subsets: bool = True

    def scenario(self) -> Scenario:
        rates = [r for r in (self.rate, self.train_rate, self.test_rate) if r]
        if self.protocol in RATELESS_PROTOCOLS and rates:
            raise ValueError(f"protocol {self.protocol!r} takes no rate (got {rates[0]:g}); "
                             "see `mlmm protocols` for its parameters")

        def protocol(rate: float):
            if self.protocol in RATELESS_PROTOCOLS:
                return make_protocol(self.protocol, **self.protocol_params)
            return make_protocol(self.protocol, rate=rate, **self.protocol_params)

        train_rate = self.rate if self.train_rate is None else self.train_rate
        test_rate = self.rate if self.test_rate is None else self.test_rate
        train_protocol = protocol(train_rate)
        return Scenario(train=train_protocol, val=train_protocol, test=protocol(test_rate))


def check_seeds(seeds: object) -> tuple[int, ...]:
    """``seeds`` as a non-empty tuple of distinct ints; ``InvalidParameterError`` otherwise
    (repeated seeds would make the spread and interval over duplicates)."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (list, tuple, range)):
        raise InvalidParameterError(f"seeds must be a non-empty list of distinct ints, got {seeds!r}")
    seeds = tuple(seeds)
    if not seeds:
        raise InvalidParameterError("seeds is empty: give at least one seed, e.g. seeds=(0,)")
    for seed in seeds:
        check_value("experiment", "seed", seed, [Interval("int", 0, 2**32 - 1)])
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise InvalidParameterError(f"seeds repeat {', '.join(map(str, repeated))}: each seed must appear once")
    return seeds


def validate_config(config: ExperimentConfig, spec) -> None:
    """Fail before any training if anything of ``config`` is invalid: the seeds, the split kind,
    the method and its parameters (``InvalidParameterError``), or a scenario that
    cannot be drawn for this dataset (a rate above 1 - 1/M, an unknown modality in a subset,
    a wrong number of rates)."""
    check_seeds(config.seeds)
    check_split(config.split)
    if not isinstance(config.train, TrainConfig):
        raise InvalidParameterError(f"train must be a TrainConfig, got {type(config.train).__name__}")
    check_method_params(config.method, METHODS.get(config.method), config.method_params)
    scenario = config.scenario()
    rng = np.random.default_rng(0)
    for role in ("train", "val", "test"):
        scenario.protocol(role).sample(spec.n_modalities, np.zeros(4, dtype=np.int64), rng, spec.modality_names)


def check_splits(data: MultimodalDataset, split: str, seed: int):
    """``make_splits(data, split, seed)``, refusing an empty training, validation or test split
    with a message that says which and why (before any mask is drawn or model trained)."""
    parts = make_splits(data, split, seed)
    for role, part in zip(("training", "validation", "test"), parts):
        if len(part) == 0:
            where = ("the validation carve-out" if role == "validation" else f"the {role} split")
            raise EmptySplitError(
                f"{where} is empty: {len(data)} rows with --split {split} (seed {seed}) give "
                f"{len(parts[0])} training / {len(parts[1])} validation / {len(parts[2])} test rows; "
                "use more data or a file with its own split")
    return parts


@dataclass
class SeedFit:
    """One trained seed: the fit, the test split with its natural masks (``test``) and masked
    by the scenario (``test_masked``), the realised missingness per role, the fit's peak memory."""

    fit: FitResult
    test: MultimodalDataset
    test_masked: MultimodalDataset
    realised: dict[str, dict]
    memory: dict


def fit_seed(config: ExperimentConfig, seed: int) -> SeedFit:
    """Split, draw the train / validation / test masks from the scenario, train: the cell that
    ``run_seed`` scores and the diagnostics (``mlmm explain`` / ``recover`` / ``uncertainty``) reuse."""
    data = load_dataset(config.dataset)
    train, val, test = check_splits(data, config.split, seed)
    scenario = config.scenario()
    masked, realised = {}, {}
    for role, part in (("train", train), ("val", val), ("test", test)):
        masked[role], realised[role] = scenario.apply(part, role, seed)
    method = build_method(config.method, data.spec, seed=seed, **config.method_params)
    with PeakMemory(config.device) as memory:
        fit = Trainer(config.train, device=config.device).fit(method, masked["train"], masked["val"], seed=seed)
    return SeedFit(fit, test, masked["test"], realised, memory.figures)


def run_seed(config: ExperimentConfig, seed: int, on_fit: Callable[[int, FitResult], None] | None = None) -> dict:
    """Train and evaluate one seed; a JSON-ready record. ``on_fit(seed, fit)`` sees the fit
    (e.g. to save the model) before it is evaluated."""
    cell = fit_seed(config, seed)
    if on_fit is not None:
        on_fit(seed, cell.fit)
    fit, test, test_m = cell.fit, cell.test, cell.test_masked
    # metrics, calibration (ECE + reliability bins) and efficiency of one timed test pass
    figures = cell_figures(fit.model, test_m, test, fit.train_seconds, cell.memory,
                           train_precision=config.train.precision)
    record = {
        "seed": seed,
        **figures,
        "realised": cell.realised,
        "best_epoch": fit.best_epoch,
        "train_seconds": fit.train_seconds,
        "epochs_run": len(fit.history),
        "n_parameters": sum(p.numel() for p in fit.model.parameters()),
        # stages whose best validation score never beat their starting state (flagged, not refused)
        "never_improved": fit.never_improved,
    }
    if config.subsets:
        start = time.perf_counter()
        record["subsets"] = evaluate_subsets(fit.model, test)  # fast path where the method declares it
        record["efficiency"]["subsets_seconds"] = time.perf_counter() - start
        record["efficiency"]["subsets_path"] = "fast" if is_factorised(fit.model.method) else "slow"
    return record


def _mean_realised(records: list[dict], role: str) -> dict:
    keys = ("missing_entry_fraction", "incomplete_sample_fraction", "complete_sample_fraction")
    out = {k: float(np.mean([r["realised"][role][k] for r in records])) for k in keys}
    out["mask_sha256"] = [r["realised"][role]["mask_sha256"] for r in records]
    out["subset_counts_seed0"] = records[0]["realised"][role]["subset_counts"]
    if "missing_step_fraction" in records[0]["realised"][role]:  # time-level protocols (burst, ...)
        steps = [r["realised"][role]["missing_step_fraction"] for r in records]
        out["missing_step_fraction"] = {k: float(np.mean([s[k] for s in steps])) for k in steps[0]}
    return out


def summarise(config: ExperimentConfig, records: list[dict]) -> dict:
    """Seed records -> the JSON object ``mlmm run --json`` prints."""
    result = {
        "dataset": config.dataset,
        "method": config.method,
        "protocol": config.protocol,
        "rate": config.rate,
        "train_rate": config.rate if config.train_rate is None else config.train_rate,
        "test_rate": config.rate if config.test_rate is None else config.test_rate,
        "split": config.split,
        "seeds": [r["seed"] for r in records],
        # accuracy, macro_f1; regression adds mae, corr, acc2_has0/non0, acc7 ... (metrics/sentiment.py)
        "metrics": {name: summarise_seeds([r["metrics"][name] for r in records]) for name in records[0]["metrics"]},
        "realised": {role: _mean_realised(records, role) for role in ("train", "val", "test")},
        "train_seconds": summarise_seeds([r["train_seconds"] for r in records]),
        "epochs_run": summarise_seeds([r["epochs_run"] for r in records]),
        # seed -> stages that never improved on their starting state (empty when every fit improved)
        "never_improved": {str(r["seed"]): r["never_improved"] for r in records if r.get("never_improved")},
        "n_parameters": records[0]["n_parameters"],
        "latency_per_sample_s": summarise_seeds([r["efficiency"]["latency_per_sample_s"] for r in records
                                                 if "efficiency" in r]) if "efficiency" in records[0] else None,
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
    }
    if "calibration" in records[0]:
        result["ece"] = summarise_seeds([r["calibration"]["ece"] for r in records])
    if config.subsets and "subsets" in records[0]:
        subsets = {}
        for name in records[0]["subsets"]:
            subsets[name] = {m: summarise_seeds([r["subsets"][name][m] for r in records]) for m in METRIC_NAMES}
            subsets[name]["n"] = records[0]["subsets"][name]["n"]
        worst = min(subsets, key=lambda s: subsets[s]["accuracy"]["mean"])
        result["subsets"] = subsets
        result["worst_subset"] = {"subset": worst, "accuracy": subsets[worst]["accuracy"]["mean"]}
    return result


def run_experiment(config: ExperimentConfig, on_seed: Callable[[dict], None] | None = None,
                   on_fit: Callable[[int, FitResult], None] | None = None) -> dict:
    """Run every seed of ``config`` and summarise. ``on_seed`` sees each seed's record
    as soon as it exists (the caller can persist it, so a crash loses nothing done);
    ``on_fit(seed, fit)`` each fitted model (``mlmm run --save-model`` saves the first)."""
    data = load_dataset(config.dataset)
    validate_config(config, data.spec)
    check_splits(data, config.split, config.seeds[0])  # an empty split is refused before any training
    check_device(config.device)  # here, not in validate_config: a grid may be expanded where it will not run
    folds = fold_splits(data, config.split)
    if folds != [config.split]:
        return _run_folds(config, data, folds, on_seed, on_fit)
    records = []
    for seed in config.seeds:
        record = run_seed(config, seed, on_fit)
        records.append(record)
        if on_seed is not None:
            on_seed(record)
    return summarise(config, records)


def _run_folds(config: ExperimentConfig, data: MultimodalDataset, folds: list[str],
               on_seed: Callable[[dict], None] | None,
               on_fit: Callable[[int, FitResult], None] | None = None) -> dict:
    """Every fold of a fold split (``logo``, ``group-kfold``) x every seed. The summary is ``summarise`` over
    all (fold, seed) records (mean ± std over folds and seeds), plus ``folds`` (each fold's split, held-out
    groups and test rows under the first seed, metrics over seeds) and ``pooled`` (each metric averaged over the
    folds weighted by their test rows: for accuracy exactly the accuracy over all held-out rows pooled), per seed
    and mean."""
    from dataclasses import replace

    for fold in folds:
        check_splits(data, fold, config.seeds[0])  # every fold's splits refused before any training
    records, per_fold = [], []
    for fold in folds:
        fold_config = replace(config, split=fold)
        test = make_splits(data, fold, config.seeds[0])[2]
        fold_records = []
        for seed in config.seeds:
            # group-kfold's folds move with the seed (logo's do not): each record weighs its own test rows
            n_test = len(test) if seed == config.seeds[0] else len(make_splits(data, fold, seed)[2])
            record = {**run_seed(fold_config, seed, on_fit), "fold": fold, "n_test": n_test}
            fold_records.append(record)
            if on_seed is not None:
                on_seed(record)
        records += fold_records
        held_out = sorted({str(g) for g in test.groups}) if test.groups is not None else []
        per_fold.append({"split": fold, "held_out_groups": held_out, "n_test": len(test),
                         "metrics": summarise(fold_config, fold_records)["metrics"]})
    result = summarise(config, records)
    result["folds"] = per_fold
    pooled = {}
    for name in records[0]["metrics"]:
        per_seed = []
        for seed in config.seeds:
            rows = [r for r in records if r["seed"] == seed]
            weight = sum(r["n_test"] for r in rows)
            per_seed.append(sum(r["metrics"][name] * r["n_test"] for r in rows) / weight)
        pooled[name] = summarise_seeds(per_seed)
    result["pooled"] = pooled
    return result
