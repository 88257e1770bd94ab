"""Registered missingness protocols: thin classes over ``functional``.

A protocol stores (and validates) its parameters in ``__init__`` only, so a
bad rate fails when the experiment is configured, not mid-run. ``sample``
draws a fresh (n, M) bool mask (True = present) from an explicit generator;
``n`` is ``len(labels)``. Modality names, when a protocol refers to
modalities by name, are resolved at ``sample`` time through the
``modality_names`` argument (``Scenario.apply`` passes the dataset's), so one
protocol object can be reused across datasets.

The first paragraph of each protocol's docstring is its ``definition``: one
sentence saying precisely what its rate means (shown by the CLI and reports).
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np

from ..errors import InvalidParameterError
from ..registry import Registry
from . import functional as F

__all__ = [
    "PROTOCOLS",
    "Complete",
    "EntryRate",
    "FixedSubset",
    "LabelMNAR",
    "MissingnessProtocol",
    "PerModality",
    "SampleRate",
    "make_protocol",
    "protocol_infos",
    "register_protocol",
]


class MissingnessProtocol(ABC):
    """Abstract base: ``sample(n_modalities, labels, rng) -> (n, M) bool mask``."""

    name: ClassVar[str] = ""
    definition: ClassVar[str] = ""
    #: parameter name -> one-line description, for ``protocol_infos``.
    parameter_docs: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        doc = inspect.getdoc(cls) or ""
        # First paragraph, on one line: the definition used in README and reports.
        cls.definition = " ".join(doc.split("\n\n")[0].split())

    @abstractmethod
    def sample(
        self,
        n_modalities: int,
        labels: np.ndarray,
        rng: np.random.Generator,
        modality_names: Sequence[str] | None = None,
    ) -> np.ndarray:
        """A new (n, M) bool mask, n = len(labels); ``labels`` is never mutated."""

    def for_groups(self, groups) -> MissingnessProtocol:
        """This protocol for data whose rows carry ``groups`` (``MultimodalDataset.groups``): a protocol
        that draws per group (``systematic``) returns a copy using those ids; the others ignore them."""
        return self

    @abstractmethod
    def params(self) -> dict:
        """The constructor arguments, JSON-ready: ``type(self)(**self.params())`` rebuilds it."""

    def describe(self) -> dict:
        """JSON-ready {name, definition, params}."""
        return {"name": self.name, "definition": self.definition, "params": self.params()}

    # Value semantics, so Scenarios compare and hash by what they mean.
    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.params() == self.params()

    def __hash__(self) -> int:
        return hash((self.name, json.dumps(self.params(), sort_keys=True)))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


PROTOCOLS: Registry[type[MissingnessProtocol]] = Registry("protocol")


def register_protocol(name: str):
    """Class decorator: set ``cls.name`` and add the class to ``PROTOCOLS``."""

    def decorate(cls: type[MissingnessProtocol]) -> type[MissingnessProtocol]:
        cls.name = name
        return PROTOCOLS.register(name)(cls)

    return decorate


def _n_samples(labels: np.ndarray) -> int:
    return int(np.shape(labels)[0])


def _check_names(modality_names: Sequence[str] | None, n_modalities: int) -> list[str] | None:
    if modality_names is None:
        return None
    names = list(modality_names)
    if len(names) != n_modalities:
        raise ValueError(f"{len(names)} modality names given for {n_modalities} modalities")
    return names


@register_protocol("none")
class Complete(MissingnessProtocol):
    """Every modality of every sample is present (no simulated missingness)."""

    def sample(self, n_modalities, labels, rng, modality_names=None) -> np.ndarray:
        return np.ones((_n_samples(labels), int(n_modalities)), dtype=bool)

    def params(self) -> dict:
        return {}


@register_protocol("entry")
class EntryRate(MissingnessProtocol):
    """The rate is the fraction of missing (sample, modality) entries, realised exactly, with every sample keeping at
    least one modality (CPM-Nets / UIMC definition; at most 1 - 1/M).

    See ``functional.entry_rate_mask`` for the construction.
    """

    parameter_docs = {"rate": "fraction of missing (sample, modality) entries, 0 <= rate <= 1 - 1/M"}

    def __init__(self, rate: float) -> None:
        # The 1 - 1/M bound needs M, so it is checked again in sample().
        self.rate = F.check_rate(rate, "rate", upper=1.0, upper_inclusive=False)

    def sample(self, n_modalities, labels, rng, modality_names=None) -> np.ndarray:
        return F.entry_rate_mask(_n_samples(labels), n_modalities, self.rate, rng)

    def params(self) -> dict:
        return {"rate": self.rate}


@register_protocol("sample")
class SampleRate(MissingnessProtocol):
    """The rate is the fraction of incomplete samples, realised exactly; each incomplete sample drops a uniform number
    1..M-1 of uniformly chosen modalities (COMPLETER / DCP definition).

    See ``functional.sample_rate_mask``.
    """

    parameter_docs = {"rate": "fraction of samples with at least one missing modality, 0 <= rate <= 1"}

    def __init__(self, rate: float) -> None:
        self.rate = F.check_rate(rate, "rate")

    def sample(self, n_modalities, labels, rng, modality_names=None) -> np.ndarray:
        return F.sample_rate_mask(_n_samples(labels), n_modalities, self.rate, rng)

    def params(self) -> dict:
        return {"rate": self.rate}


@register_protocol("per-modality")
class PerModality(MissingnessProtocol):
    """Modality m is missing independently with probability rates[m]; with keep_at_least_one, a sample left empty gets
    one uniformly chosen modality back (so realised rates are slightly below the asked ones when all rates are high).

    ``rates`` is a list with one rate per modality, or a mapping modality name
    -> rate resolved against ``modality_names`` at sample time (modalities the
    mapping leaves out are never dropped).
    """

    parameter_docs = {
        "rates": "list of M missing probabilities in [0, 1] (or name -> probability)",
        "keep_at_least_one": "restore one uniformly chosen modality in samples left empty (default true)",
    }

    def __init__(self, rates: Sequence[float] | Mapping[str, float], keep_at_least_one: bool = True) -> None:
        if isinstance(rates, Mapping):
            self.rates: list[float] | dict[str, float] = {
                str(k): F.check_rate(v, f"rates[{k!r}]") for k, v in rates.items()
            }
        elif isinstance(rates, (str, bytes)) or not hasattr(rates, "__iter__"):
            raise ValueError(f"rates must be a list of M numbers in [0, 1] or a name -> rate mapping, got {rates!r}")
        else:
            self.rates = [F.check_rate(v, f"rates[{j}]") for j, v in enumerate(rates)]
        if not self.rates:
            raise ValueError("rates must give at least one modality's rate, got an empty collection")
        if not isinstance(keep_at_least_one, bool):
            raise ValueError(f"keep_at_least_one must be true or false, got {keep_at_least_one!r}")
        self.keep_at_least_one = keep_at_least_one

    def resolved_rates(self, n_modalities: int, modality_names: Sequence[str] | None = None) -> list[float]:
        """One rate per modality column."""
        names = _check_names(modality_names, n_modalities)
        if isinstance(self.rates, dict):
            if names is None:
                raise ValueError("per-modality rates given by name need modality_names to be resolved")
            unknown = sorted(set(self.rates) - set(names))
            if unknown:
                raise ValueError(f"unknown modality {unknown[0]!r} in rates; known: {', '.join(names)}")
            return [self.rates.get(name, 0.0) for name in names]
        if len(self.rates) != n_modalities:
            raise ValueError(f"rates has {len(self.rates)} entries but there are {n_modalities} modalities")
        return list(self.rates)

    def sample(self, n_modalities, labels, rng, modality_names=None) -> np.ndarray:
        rates = self.resolved_rates(n_modalities, modality_names)
        mask = F.per_modality_mask(_n_samples(labels), rates, rng, self.keep_at_least_one)
        return mask

    def params(self) -> dict:
        rates = dict(self.rates) if isinstance(self.rates, dict) else list(self.rates)
        return {"rates": rates, "keep_at_least_one": self.keep_at_least_one}


@register_protocol("fixed-subset")
class FixedSubset(MissingnessProtocol):
    """Every sample sees exactly the given subset of modalities and nothing else.

    ``subset`` holds modality indices (columns of the mask) or modality names;
    names are resolved against ``modality_names`` at sample time.
    """

    parameter_docs = {"subset": "non-empty list of modality indices or names to keep"}

    def __init__(self, subset: Sequence[int] | Sequence[str]) -> None:
        if isinstance(subset, (str, bytes)) or not hasattr(subset, "__iter__"):
            raise ValueError(f"subset must be a list of modality indices or names, got {subset!r}")
        items = list(subset)
        if not items:
            raise ValueError("subset must name at least one modality, got an empty subset")
        if all(isinstance(s, str) for s in items):
            kind = "names"
        elif all(_is_index(s) for s in items):
            kind = "indices"
            items = sorted(int(s) for s in items)  # order carries no meaning; sorted compares equal
        else:
            raise ValueError(
                f"subset must hold only modality indices (integers >= 0) or only modality names, got {items!r}"
            )
        if len(set(items)) != len(items):
            raise ValueError(f"subset has duplicate modality {kind}: {items!r}")
        # Index upper bounds and name lookup need the dataset, so they are checked in sample().
        self.subset: list[int] | list[str] = items

    def indices(self, n_modalities: int, modality_names: Sequence[str] | None = None) -> tuple[int, ...]:
        """The subset as sorted, validated column indices."""
        names = _check_names(modality_names, n_modalities)
        if isinstance(self.subset[0], str):
            if names is None:
                raise ValueError("a subset given by modality names needs modality_names to be resolved")
            unknown = [s for s in self.subset if s not in names]
            if unknown:
                raise ValueError(f"unknown modality {unknown[0]!r} in subset; known: {', '.join(names)}")
            return tuple(sorted(names.index(s) for s in self.subset))
        return F.check_subset(self.subset, n_modalities)

    def sample(self, n_modalities, labels, rng, modality_names=None) -> np.ndarray:
        return F.fixed_subset_mask(_n_samples(labels), n_modalities, self.indices(n_modalities, modality_names))

    def params(self) -> dict:
        return {"subset": list(self.subset)}


def _is_index(s: object) -> bool:
    return isinstance(s, (int, np.integer)) and not isinstance(s, bool) and int(s) >= 0


@register_protocol("mnar")
class LabelMNAR(MissingnessProtocol):
    """Label-dependent MNAR: the fraction of missing (sample, modality) entries is realised per class, spread linearly
    in class rank around the rate (higher classes lose more) so that the overall entry rate is the rate; every sample
    keeps at least one modality.

    Class c gets entry rate ``rate + strength * min(rate, 1 - 1/M - rate) * t_c``
    with t_c in [-1, 1] (see ``functional.label_mnar_class_rates``); strength 0
    is MCAR, strength 1 the widest feasible spread.
    """

    parameter_docs = {
        "rate": "overall fraction of missing (sample, modality) entries, 0 <= rate <= 1 - 1/M",
        "strength": "how far per-class rates spread around the rate, 0 (none) to 1 (widest feasible)",
    }

    def __init__(self, rate: float, strength: float = 0.5) -> None:
        self.rate = F.check_rate(rate, "rate", upper=1.0, upper_inclusive=False)
        self.strength = F.check_rate(strength, "strength")

    def sample(self, n_modalities, labels, rng, modality_names=None) -> np.ndarray:
        return F.label_mnar_mask(labels, n_modalities, self.rate, rng, strength=self.strength)

    def params(self) -> dict:
        return {"rate": self.rate, "strength": self.strength}


def _init_parameters(cls: type) -> list[inspect.Parameter]:
    """The named parameters of ``cls.__init__`` (none for a protocol without its own ``__init__``)."""
    return [p for p in inspect.signature(cls.__init__).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def make_protocol(name: str, **params) -> MissingnessProtocol:
    """Build the protocol registered as ``name``; unknown names or parameters raise with the known ones."""
    cls = PROTOCOLS.get(name)
    accepted = [p.name for p in _init_parameters(cls)]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"protocol {name!r} has no parameter {unknown[0]!r}; it takes: {', '.join(accepted) or 'nothing'}"
        )
    missing = [p.name for p in _init_parameters(cls) if p.default is inspect.Parameter.empty and p.name not in params]
    if missing:
        raise InvalidParameterError(f"protocol {name!r} needs parameter {missing[0]!r} "
                                    f"({cls.parameter_docs.get(missing[0], 'see `mlmm protocols`')})")
    try:
        return cls(**params)
    except (TypeError, ValueError) as err:  # the protocol's own check, named with the protocol
        raise InvalidParameterError(f"protocol {name!r}: {err}") from None


def protocol_infos() -> list[dict]:
    """JSON-ready list, one entry per protocol: name, definition, parameters (name, required, default, description)."""
    infos = []
    for name in PROTOCOLS.names():
        cls = PROTOCOLS.get(name)
        parameters = []
        for p in _init_parameters(cls):
            required = p.default is inspect.Parameter.empty
            parameters.append(
                {
                    "name": p.name,
                    "required": required,
                    "default": None if required else p.default,
                    "description": cls.parameter_docs.get(p.name, ""),
                }
            )
        infos.append({"name": name, "definition": cls.definition, "parameters": parameters})
    return infos
