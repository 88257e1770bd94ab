"""Grid expansion: a ``BenchSpec`` -> cells, one per (dataset, method, scenario, seed).

A cell is exactly one ``mlmm.experiment.run_seed`` call. Its identity is
``config_hash`` (everything that defines the experiment except the seed and
the device) plus the seed; the store keys finished cells on
(spec name, config_hash, seed), so rerunning a spec skips them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..data.registry import load_dataset
from ..data.splits import fold_splits
from ..experiment import ExperimentConfig, validate_config
from ..train.config import LOADER_FIELDS
from ..train.loop import TrainConfig, build_method
from .spec import BenchSpec, ScenarioGrid, SpecError

__all__ = ["Cell", "expand", "scenario_label"]


@dataclass(frozen=True)
class Cell:
    """One run_seed call of a grid. ``train_rate`` / ``test_rate`` are None for rateless protocols."""

    spec: str
    dataset: str
    method: str
    method_label: str
    method_params: dict[str, Any] = field(hash=False)
    protocol: str
    protocol_params: dict[str, Any] = field(hash=False)
    train_rate: float | None
    test_rate: float | None
    split: str
    seed: int
    train: TrainConfig
    subsets: bool = True
    device: str = "cpu"

    def config(self) -> ExperimentConfig:
        """The one-seed ``ExperimentConfig`` this cell runs."""
        return ExperimentConfig(
            dataset=self.dataset, method=self.method, protocol=self.protocol, rate=0.0, split=self.split,
            seeds=(self.seed,), train_rate=self.train_rate, test_rate=self.test_rate,
            protocol_params=dict(self.protocol_params), method_params=dict(self.method_params),
            train=self.train, device=self.device, subsets=self.subsets,
        )

    def identity(self) -> dict[str, Any]:
        """What defines the experiment's outcome, seed aside (the device does not: same cell, other hardware)."""
        return {
            "dataset": self.dataset, "method": self.method, "method_params": self.method_params,
            "protocol": self.protocol, "protocol_params": self.protocol_params,
            "train_rate": self.train_rate, "test_rate": self.test_rate, "split": self.split,
            "train": _train_identity(self.train), "subsets": self.subsets,
        }

    @property
    def config_hash(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]

    @property
    def scenario(self) -> str:
        return scenario_label(self.protocol, self.train_rate, self.test_rate, self.protocol_params)

    def label(self) -> str:
        """Short human text for progress lines: ``handwritten masked-mean entry 0.5 seed 3``."""
        return f"{self.dataset} {self.method_label} {self.scenario} seed {self.seed}"

    def to_payload(self) -> dict[str, Any]:
        """Plain, picklable, JSON-ready form for worker processes and Ray tasks."""
        out = asdict(self)
        out["train"] = asdict(self.train)
        return out

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Cell:
        return cls(**{**payload, "train": TrainConfig(**payload["train"])})


def scenario_label(protocol: str, train_rate: float | None, test_rate: float | None,
                   protocol_params: dict[str, Any] | None = None) -> str:
    """``entry 0.5`` (tied), ``entry 0→0.5`` (train→test), ``none``, ``fixed-subset acc+gyr``."""
    params = protocol_params or {}
    if train_rate is None and test_rate is None:
        if "subset" in params:
            return f"{protocol} {'+'.join(params['subset'])}"
        if "rates" in params:
            return f"{protocol} {','.join(f'{r:g}' for r in params['rates'])}"
        return protocol
    if train_rate == test_rate:
        return f"{protocol} {train_rate:g}"
    return f"{protocol} {train_rate:g}→{test_rate:g}"


def _scenarios(block: ScenarioGrid, modality_names: tuple[str, ...]) -> list[tuple[dict, float | None, float | None]]:
    """(protocol params, train rate, test rate) of every scenario of ``block`` on a dataset."""
    if block.protocol == "fixed-subset" and block.subsets is not None:
        if block.subsets == "all":
            subsets = [list(c) for k in range(1, len(modality_names) + 1)
                       for c in itertools.combinations(modality_names, k)]
        else:
            subsets = block.subsets
        return [({**block.params, "subset": list(s)}, None, None) for s in subsets]
    return [(dict(block.params), tr, te) for tr, te in block.rate_pairs()]


def expand(spec: BenchSpec, source: str = "spec") -> list[Cell]:
    """Every cell of ``spec``, in a stable order (dataset, scenario, method, fold, seed), each scenario
    checked against its dataset (rates possible, subset modalities known) before anything runs."""
    train = spec.train_config()
    cells: list[Cell] = []
    for dataset in spec.datasets:
        data = load_dataset(dataset)
        data_spec = data.spec
        names = data_spec.modality_names
        try:
            splits = fold_splits(data, spec.split)  # logo / group-kfold: one cell per fold
        except ValueError as err:
            raise SpecError(f"{source}: split on {dataset}: {err}") from None
        for j, method in enumerate(spec.methods):  # bad hyper-parameters fail now, not mid-grid
            try:
                build_method(method.name, data_spec, seed=0, **method.params)
            except (ValueError, TypeError) as err:
                raise SpecError(f"{source}: methods.{j} ({method.key}) on {dataset}: {err}") from None
        for i, block in enumerate(spec.scenarios):
            for params, train_rate, test_rate in _scenarios(block, tuple(names)):
                for method in spec.methods:
                    for split in splits:
                        for seed in spec.seeds:
                            cells.append(Cell(
                                spec=spec.name, dataset=dataset, method=method.name, method_label=method.key,
                                method_params=dict(method.params), protocol=block.protocol, protocol_params=params,
                                train_rate=train_rate, test_rate=test_rate, split=split, seed=seed, train=train,
                                subsets=spec.subsets, device=spec.device,
                            ))
                try:
                    validate_config(cells[-1].config(), data_spec)
                except (ValueError, TypeError) as err:
                    raise SpecError(f"{source}: scenarios.{i} on {dataset}: {err}") from None
    return cells


def _train_identity(train: TrainConfig) -> dict[str, Any]:
    """The training settings that define a cell's outcome: not how data is read (``LOADER_FIELDS``), and
    the precision only when it is not fp32 (fp32 cells keep the hash they had before it existed)."""
    out = {k: v for k, v in asdict(train).items() if k not in LOADER_FIELDS}
    if out.get("precision") == "fp32":
        del out["precision"]
    return out
