"""Experiment specs: a YAML file that names a whole benchmark grid.

A spec names datasets, methods (with parameters), the scenario grid
(protocol x train rate x test rate, or every modality subset), seeds, the
trainer settings (``TrainConfig`` fields), an optional ``reference`` method
for robustness gaps and the figures a paper ``published`` under the same
protocol. Validation is pydantic v2 with ``extra="forbid"``: an unknown key
or a wrong type is a ``SpecError`` naming the file and the key
(``handwritten_cpm.yaml: train.max_epoch: unknown key``).

``--set key=value`` overrides are applied to the raw YAML before validation
(dotted keys, integer list indices, values read as YAML), so they are checked
exactly like the file.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ..data.registry import DATASETS, DIR_PREFIX
from ..data.splits import check_split
from ..errors import UnsafeFileError
from ..experiment import RATELESS_PROTOCOLS
from ..methods import METHODS
from ..missing import PROTOCOLS
from ..safe_yaml import load_yaml, read_text_file
from ..train.loop import TrainConfig

__all__ = ["BenchSpec", "SpecError", "apply_overrides", "load_spec", "parse_spec", "spec_hash"]


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _train_settings_model() -> type[BaseModel]:
    """A pydantic mirror of ``TrainConfig`` built from its fields, so a new trainer
    setting is accepted in specs without editing this file."""
    hints = typing.get_type_hints(TrainConfig)
    fields = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(TrainConfig)}

    def check(self):  # TrainConfig's own range checks, reported under `train`
        TrainConfig(**self.model_dump())
        return self

    return create_model("TrainSettings", __config__=ConfigDict(extra="forbid", frozen=True),
                        __validators__={"_check": model_validator(mode="after")(check)}, **fields)


TrainSettings = _train_settings_model()


class MethodEntry(_Strict):
    """One method of the grid: registry ``name``, hyper-parameters, and an optional display ``label``
    (needed when one method appears twice with different parameters)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in METHODS.names():
            raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS.names())}")
        return name

    @property
    def key(self) -> str:
        return self.label or self.name


class ScenarioGrid(_Strict):
    """One block of the scenario grid.

    ``rates``: tied scenarios (train = validation = test rate). ``train_rates`` x
    ``test_rates``: every pair (``train_rates: [0]`` is complete train / missing test).
    Rateless protocols (``none``, ``fixed-subset``, ``per-modality``) take no rate.
    ``subsets`` (``fixed-subset`` only): ``all`` = one scenario per non-empty modality
    subset, or an explicit list of subsets; ``params`` go to the protocol as they are.
    """

    protocol: str = "entry"
    rates: list[float] | None = None
    train_rates: list[float] | None = None
    test_rates: list[float] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    subsets: Literal["all"] | list[list[str]] | None = None

    @field_validator("protocol")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in PROTOCOLS.names():
            raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS.names())}")
        return name

    @model_validator(mode="after")
    def _rates(self) -> ScenarioGrid:
        paired = self.train_rates is not None or self.test_rates is not None
        if self.protocol in RATELESS_PROTOCOLS:
            if self.rates is not None or paired:
                raise ValueError(f"protocol {self.protocol!r} takes no rate; give its `params` instead")
        else:
            if self.rates is not None and paired:
                raise ValueError("give either `rates` (tied) or `train_rates` + `test_rates`, not both")
            if paired and (self.train_rates is None or self.test_rates is None):
                raise ValueError("`train_rates` and `test_rates` go together")
            if self.rates is None and not paired:
                raise ValueError(f"protocol {self.protocol!r} needs `rates` or `train_rates` + `test_rates`")
            for name in ("rates", "train_rates", "test_rates"):
                if getattr(self, name) is not None and not getattr(self, name):
                    raise ValueError(f"`{name}` is empty")
        if self.subsets is not None and self.protocol != "fixed-subset":
            raise ValueError("`subsets` is for the fixed-subset protocol only")
        if self.protocol == "fixed-subset" and self.subsets is None and "subset" not in self.params:
            raise ValueError("fixed-subset needs `subsets` (all, or a list) or `params.subset`")
        return self

    def rate_pairs(self) -> list[tuple[float | None, float | None]]:
        """(train rate, test rate) of every scenario of this block; (None, None) for rateless protocols."""
        if self.protocol in RATELESS_PROTOCOLS:
            return [(None, None)]
        if self.rates is not None:
            return [(r, r) for r in self.rates]
        return [(tr, te) for tr in self.train_rates for te in self.test_rates]


class PublishedPoint(_Strict):
    """One published figure, in percent. ``rate`` = tied train/test rate; ``subset`` for fixed-subset."""

    rate: float | None = None
    train_rate: float | None = None
    test_rate: float | None = None
    subset: list[str] | None = None
    mean: float
    std: float | None = None
    approx: bool = False

    def rates(self) -> tuple[float | None, float | None]:
        if self.rate is not None:
            return self.rate, self.rate
        return self.train_rate, self.test_rate


class Published(_Strict):
    """Figures a paper reported under the spec's protocol, shown beside ours by ``mlmm reproduce``."""

    method: str
    source: str
    protocol: str
    dataset: str | None = None
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    note: str = ""
    values: list[PublishedPoint] = Field(min_length=1)
    #: The spec's method entry (its key: label or registry name) that implements this paper's
    #: own method, so ``mlmm reproduce`` prints that row beside this figure ("does our X reproduce X?").
    ours: str | None = None


class BenchSpec(_Strict):
    """A whole benchmark grid: datasets x methods x scenarios x seeds."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    provenance: str = ""
    datasets: list[str] = Field(min_length=1)
    split: str = "fixed"
    methods: list[MethodEntry] = Field(min_length=1)
    scenarios: list[ScenarioGrid] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    train: TrainSettings = Field(default_factory=TrainSettings)  # type: ignore[valid-type]
    device: str = "cpu"
    subsets: bool = True
    reference: str | None = None
    published: list[Published] = Field(default_factory=list)
    #: ``--set`` overrides that ``mlmm reproduce --fast`` applies (fewer seeds, say).
    fast: dict[str, Any] = Field(default_factory=dict)

    @field_validator("methods", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `- masked-mean` is shorthand for `- {name: masked-mean}`.
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_range(cls, value: Any) -> Any:
        # "0-9" or "0,1,2" (handy with --set seeds=0-2), or an int n = seeds 0..n-1 is NOT accepted: ambiguous.
        if isinstance(value, str):
            text = value.strip()
            m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
            if m:
                return list(range(int(m.group(1)), int(m.group(2)) + 1))
            return [s.strip() for s in text.split(",") if s.strip()]
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if any(s < 0 for s in seeds):
            raise ValueError("seeds must be non-negative")
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds repeat")
        return seeds

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, names: list[str]) -> list[str]:
        for name in names:
            if name.startswith(DIR_PREFIX):
                folder = Path(name[len(DIR_PREFIX):]).expanduser()
                if not folder.is_dir():
                    raise ValueError(f"dataset {name!r}: folder {str(folder)!r} does not exist")
                continue
            if name not in DATASETS.names():
                raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS.names())}")
        return names

    @field_validator("split")
    @classmethod
    def _split(cls, split: str) -> str:
        return check_split(split)

    @model_validator(mode="after")
    def _cross_checks(self) -> BenchSpec:
        keys = [m.key for m in self.methods]
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup is not None:
            raise ValueError(f"methods: {dup!r} appears twice; give the entries distinct `label`s")
        if self.reference is not None and self.reference not in keys:
            raise ValueError(f"reference: {self.reference!r} is not one of the spec's methods ({', '.join(keys)})")
        for i, pub in enumerate(self.published):
            if pub.dataset is not None and pub.dataset not in self.datasets:
                raise ValueError(f"published.{i}.dataset: {pub.dataset!r} is not one of the spec's datasets")
            if pub.protocol not in {s.protocol for s in self.scenarios}:
                raise ValueError(f"published.{i}.protocol: no scenario of the spec uses {pub.protocol!r}")
            if pub.ours is not None and pub.ours not in keys:
                raise ValueError(f"published.{i}.ours: {pub.ours!r} is not one of the spec's methods "
                                 f"({', '.join(keys)})")
        return self

    def train_config(self) -> TrainConfig:
        return TrainConfig(**self.train.model_dump())


def _format_errors(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        msg = msg.removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)  # cross-field checks name their keys themselves
    return f"{source}: " + "; ".join(parts)


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str], source: str = "--set") -> dict:
    """Apply ``["train.max_epochs=2", "seeds=[0,1]", "scenarios.0.rates=[0.5]"]`` to a copy of ``raw``.

    Values are read as YAML (``2`` is an int, ``[a, b]`` a list, ``0-2`` a string);
    a missing key is created (validation then says whether it is allowed).
    """
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"{source}: expected KEY=VALUE, got {item!r}")
        try:
            value = load_yaml(text, f"{source} {key.strip()}") if text.strip() else ""
        except yaml.YAMLError:
            value = text
        path = key.strip().split(".")
        node: Any = out
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise SpecError(f"{source}: {key}: {part!r} is not an index of a list of {len(node)}")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise SpecError(f"{source}: {key}: {'.'.join(path[:depth])} is not a mapping or list")
    return out


def _method_keys(raw: dict) -> set[str]:
    """The method keys (label or name) a raw spec mapping lists; malformed entries are left to validation."""
    methods = raw.get("methods")
    if not isinstance(methods, list):
        return set()
    return {m.get("label") or m.get("name") for m in methods if isinstance(m, dict)}


def parse_spec(text: str, source: str = "<spec>", overrides: Sequence[str] = ()) -> BenchSpec:
    """YAML text (+ ``--set`` overrides) -> validated ``BenchSpec``; errors name ``source`` and the key."""
    try:
        raw = load_yaml(text, source)
    except UnsafeFileError as err:
        raise SpecError(str(err)) from None
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a spec is a YAML mapping (name, datasets, methods, scenarios, seeds, ...)")
    if isinstance(raw.get("methods"), list):  # expand the shorthand first, so --set methods.0.params.x=1 works
        raw["methods"] = [{"name": m} if isinstance(m, str) else m for m in raw["methods"]]
    before = _method_keys(raw)
    raw = apply_overrides(raw, overrides, source=f"{source} --set")
    # `--set methods=[...]` that leaves out the paper's own method is a narrowed rerun, not a typo:
    # its published figures are still shown, just without an "ours" row to compare.
    removed = before - _method_keys(raw)
    for pub in raw.get("published") or []:
        if isinstance(pub, dict) and pub.get("ours") in removed:
            pub["ours"] = None
    try:
        spec = BenchSpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format_errors(err, source)) from None
    if spec.fast:  # check --fast now, not after a long run
        try:
            BenchSpec.model_validate(apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in spec.fast.items()]))
        except (ValidationError, SpecError) as err:
            detail = _format_errors(err, "fast") if isinstance(err, ValidationError) else str(err)
            raise SpecError(f"{source}: fast overrides do not give a valid spec: {detail}") from None
    return spec


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> tuple[BenchSpec, str]:
    """Read and validate a spec file; returns (spec, the file's text)."""
    path = Path(path)
    try:
        text = read_text_file(path, "spec")
    except OSError as err:
        raise SpecError(f"{path}: cannot read the spec ({err.strerror or err})") from None
    except ValueError as err:  # binary, too large
        raise SpecError(str(err)) from None
    return parse_spec(text, source=path.name, overrides=overrides), text


def fast_overrides(spec: BenchSpec) -> list[str]:
    """The spec's ``fast`` block as ``--set`` items."""
    return [f"{k}={json.dumps(v)}" for k, v in spec.fast.items()]


def spec_hash(spec: BenchSpec) -> str:
    """sha256 of the validated spec (defaults filled in), so two texts meaning the same grid hash alike."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
