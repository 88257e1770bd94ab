"""Structured missingness protocols for sequences: burst, catastrophic, asynchronous, systematic.

``burst``, ``catastrophic`` and ``asynchronous`` act on *time steps* of
sequence modalities: they are ``TimeMaskProtocol``s, whose ``apply`` returns
the dataset with a (n, T) time mask per affected modality (see
``mlmm.data.timemask``); ``Scenario.apply`` calls it. Their ``sample`` (the
(n, M) modality mask of the generic interface) keeps every modality: each
of them keeps at least one observed step per (sample, modality), so no
modality goes missing as a whole. ``systematic`` acts on whole modalities
for whole groups of samples and is an ordinary (n, M) protocol.

All are registered in ``PROTOCOLS`` beside the others, so
``mlmm run --protocol burst --rate 0.3`` and ``Scenario`` take them as they are.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import numpy as np

from ..data.base import MultimodalDataset
from ..data.spec import DatasetSpec, ModalitySpec
from . import functional as F
from .protocols import MissingnessProtocol, _check_names, _n_samples, register_protocol
from .time_masks import (
    async_steps,
    burst_steps,
    catastrophic_steps,
    group_partition,
    onset_range,
    shift_sequences,
    systematic_mask,
)

__all__ = ["Asynchronous", "Burst", "Catastrophic", "Systematic", "TimeMaskProtocol"]


def _check_modalities(modalities: Sequence[str] | None) -> list[str] | None:
    if modalities is None:
        return None
    if isinstance(modalities, (str, bytes)) or not all(isinstance(m, str) for m in modalities):
        raise ValueError(f"modalities must be a list of modality names, got {modalities!r}")
    names = list(modalities)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"modalities must name distinct modalities, got {names!r}")
    return names


class TimeMaskProtocol(MissingnessProtocol):
    """Abstract: draws observed time steps of sequence modalities (``sample_steps``).

    ``modalities`` (names) restricts which sequence modalities are affected;
    ``None`` picks ``default_targets``.
    """

    modalities: list[str] | None = None

    def default_targets(self, sequences: list[ModalitySpec]) -> list[ModalitySpec]:
        """Affected modalities when ``modalities`` is None: every sequence modality."""
        return sequences

    def targets(self, spec: DatasetSpec) -> list[ModalitySpec]:
        """The affected sequence modalities of ``spec`` (ValueError naming a wrong one)."""
        sequences = [m for m in spec.modalities if m.kind == "sequence"]
        if self.modalities is None:
            if not sequences:
                raise ValueError(f"protocol {self.name!r} acts on time steps, "
                                 f"but dataset {spec.name!r} has no sequence modality")
            return self.default_targets(sequences)
        by_name = {m.name: m for m in spec.modalities}
        for name in self.modalities:
            if name not in by_name:
                raise ValueError(f"protocol {self.name!r}: unknown modality {name!r}; known: {', '.join(by_name)}")
            if by_name[name].kind != "sequence":
                raise ValueError(f"protocol {self.name!r}: modality {name!r} is a {by_name[name].kind}, not a sequence")
        return [by_name[name] for name in self.modalities]

    def sample(self, n_modalities, labels, rng, modality_names=None) -> np.ndarray:
        """Every modality kept (time protocols never remove a whole modality); checks the names."""
        names = _check_names(modality_names, n_modalities)
        if self.modalities is not None and names is not None:
            unknown = [m for m in self.modalities if m not in names]
            if unknown:
                raise ValueError(f"protocol {self.name!r}: unknown modality {unknown[0]!r}; known: {', '.join(names)}")
        return np.ones((_n_samples(labels), int(n_modalities)), dtype=bool)

    @abstractmethod
    def sample_steps(self, spec: DatasetSpec, labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """modality name -> new (n, T) bool array of observed steps, for the affected modalities."""

    def apply(self, dataset: MultimodalDataset, rng: np.random.Generator) -> MultimodalDataset:
        """``dataset`` with the drawn time masks ANDed into its own (nothing is mutated)."""
        return dataset.with_time_mask(self.sample_steps(dataset.spec, dataset.labels, rng))


@register_protocol("burst")
class Burst(TimeMaskProtocol):
    """The rate is the fraction of time steps lost in every affected (sample, sequence modality), realised exactly per
    row (round(rate*T) steps), in intermittent blocks of `block` steps placed uniformly at random; at least one step is
    kept.

    See ``time_masks.burst_steps``. Affects every sequence modality unless
    ``modalities`` names some. Bursts lie inside the sequence, so the first
    and last ``block - 1`` steps are lost less often than interior ones.
    """

    parameter_docs = {
        "rate": "fraction of steps lost per (sample, sequence modality), 0 <= rate, round(rate*T) <= T-1",
        "block": "length of one burst of lost steps (default 10)",
        "modalities": "sequence modality names affected (default: all)",
    }

    def __init__(self, rate: float, block: int = 10, modalities: Sequence[str] | None = None) -> None:
        self.rate = F.check_rate(rate, "rate", upper=1.0, upper_inclusive=False)
        self.block = F._check_int(block, "block", 1)
        self.modalities = _check_modalities(modalities)

    def sample_steps(self, spec, labels, rng) -> dict[str, np.ndarray]:
        n = _n_samples(labels)
        return {m.name: burst_steps(n, m.shape[0], self.rate, self.block, rng) for m in self.targets(spec)}

    def params(self) -> dict:
        return {"rate": self.rate, "block": self.block, "modalities": self.modalities}


@register_protocol("catastrophic")
class Catastrophic(TimeMaskProtocol):
    """The rate is the fraction of samples in which a sensor fails, realised exactly (round(rate*n) samples); in each,
    one uniformly chosen sequence modality dies at a uniform step t in [onset_min*T, onset_max*T] (within [1, T-1]) and
    stays dead to the end.

    See ``time_masks.catastrophic_steps``.
    """

    parameter_docs = {
        "rate": "fraction of samples with a failed sensor, 0 <= rate <= 1",
        "onset_min": "earliest failure, as a fraction of the sequence length (default 0)",
        "onset_max": "latest failure, as a fraction of the sequence length (default 1)",
        "modalities": "sequence modality names that can fail (default: all)",
    }

    def __init__(self, rate: float, onset_min: float = 0.0, onset_max: float = 1.0,
                 modalities: Sequence[str] | None = None) -> None:
        self.rate = F.check_rate(rate, "rate")
        self.onset_min = F.check_rate(onset_min, "onset_min")
        self.onset_max = F.check_rate(onset_max, "onset_max")
        if self.onset_min > self.onset_max:
            raise ValueError(f"onset_min {self.onset_min:g} must be <= onset_max {self.onset_max:g}")
        self.modalities = _check_modalities(modalities)

    def sample_steps(self, spec, labels, rng) -> dict[str, np.ndarray]:
        n = _n_samples(labels)
        targets = self.targets(spec)
        for m in targets:
            onset_range(m.shape[0], self.onset_min, self.onset_max)  # fail before drawing anything
        failing = rng.permutation(n)[: F._round_count(self.rate * n)]
        which = np.full(n, -1)
        which[failing] = rng.integers(0, len(targets), size=failing.size)
        return {
            m.name: catastrophic_steps(n, m.shape[0], which == k, self.onset_min, self.onset_max, rng)
            for k, m in enumerate(targets)
        }

    def params(self) -> dict:
        return {"rate": self.rate, "onset_min": self.onset_min, "onset_max": self.onset_max,
                "modalities": self.modalities}


@register_protocol("asynchronous")
class Asynchronous(TimeMaskProtocol):
    """Rateless: an affected sequence modality is sampled at a lower rate (one step in `every` observed, with a random
    phase per sample) and/or lags by `shift` steps (its values move `shift` steps later and the first `shift` steps are
    unobserved).

    Affects every sequence modality but the first (the reference clock) unless
    ``modalities`` names some. The realised fraction of unobserved steps is
    reported by ``Scenario.apply`` (``missing_step_fraction``).
    """

    parameter_docs = {
        "every": "keep one step in `every` (default 2)",
        "shift": "lag in steps: values move later, the first `shift` steps are unobserved (default 0)",
        "random_phase": "draw the kept phase per sample (default true) or keep steps 0, every, 2*every, ...",
        "modalities": "sequence modality names affected (default: all but the first sequence modality)",
    }

    def __init__(self, every: int = 2, shift: int = 0, random_phase: bool = True,
                 modalities: Sequence[str] | None = None) -> None:
        self.every = F._check_int(every, "every", 1)
        self.shift = F._check_int(shift, "shift", 0)
        if not isinstance(random_phase, bool):
            raise ValueError(f"random_phase must be true or false, got {random_phase!r}")
        self.random_phase = random_phase
        self.modalities = _check_modalities(modalities)

    def default_targets(self, sequences: list[ModalitySpec]) -> list[ModalitySpec]:
        if len(sequences) < 2:
            raise ValueError("asynchronous needs a second sequence modality to lag behind the first; "
                             "name the affected one with modalities=[...]")
        return sequences[1:]

    def sample_steps(self, spec, labels, rng) -> dict[str, np.ndarray]:
        n = _n_samples(labels)
        return {m.name: async_steps(n, m.shape[0], self.every, self.shift, self.random_phase, rng)
                for m in self.targets(spec)}

    def apply(self, dataset: MultimodalDataset, rng: np.random.Generator) -> MultimodalDataset:
        steps = self.sample_steps(dataset.spec, dataset.labels, rng)
        if self.shift:
            # The lag moves values (and any earlier time mask) later; the steps it
            # empties are unobserved in ``steps`` already.
            inputs = dict(dataset.inputs)
            time_mask = dict(dataset.time_mask or {})
            for name in steps:
                inputs[name] = shift_sequences(dataset.inputs[name].numpy(), self.shift)
                if name in time_mask:
                    time_mask[name] = shift_sequences(time_mask[name].numpy()[..., None], self.shift)[..., 0]
            dataset = MultimodalDataset(dataset.spec, inputs, dataset.target, dataset.mask, groups=dataset.groups,
                                        splits=dataset.splits, time_mask=time_mask or None)
        return dataset.with_time_mask(steps)

    def params(self) -> dict:
        return {"every": self.every, "shift": self.shift, "random_phase": self.random_phase,
                "modalities": self.modalities}


@register_protocol("systematic")
class Systematic(MissingnessProtocol):
    """The rate is the fraction of groups (subjects, devices) that lack a modality, realised exactly (round(rate*G) of
    the G groups); in each such group one uniformly chosen modality is absent for every sample of the group.

    Groups are ``groups`` (one id per sample of the data the protocol is
    applied to), else the data's own ids (``MultimodalDataset.groups``, the ones the grouped
    splits use; ``Scenario.apply`` passes them), else a seeded partition of the samples into
    ``n_groups`` groups of equal size (±1). ``modalities`` (names) limits which
    modalities can be absent (default: all). See ``time_masks.systematic_mask``.
    """

    parameter_docs = {
        "rate": "fraction of groups that lack one modality, 0 <= rate <= 1",
        "n_groups": "number of groups in the seeded partition when no ids are given (default 4)",
        "groups": "one group id per sample (subject, device); overrides n_groups",
        "modalities": "modality names that can be absent (default: all)",
    }

    def __init__(self, rate: float, n_groups: int = 4, groups: Sequence | None = None,
                 modalities: Sequence[str] | None = None) -> None:
        self.rate = F.check_rate(rate, "rate")
        self.n_groups = F._check_int(n_groups, "n_groups", 1)
        if groups is not None and (isinstance(groups, (str, bytes)) or not hasattr(groups, "__iter__")):
            raise ValueError(f"groups must be a list with one group id per sample, got {groups!r}")
        self.groups = None if groups is None else np.asarray(groups).tolist()
        self.modalities = _check_modalities(modalities)
        self._data_groups: np.ndarray | None = None  # the dataset's own ids (for_groups), when no ids are given

    def for_groups(self, groups) -> Systematic:
        """Without ``groups`` of its own, draw per group of the data's ids (the same subjects the grouped
        splits keep apart) instead of a seeded partition. ``params()`` stays as given."""
        if self.groups is not None or groups is None:
            return self
        copy = Systematic(self.rate, self.n_groups, None, self.modalities)
        copy._data_groups = np.asarray(groups)
        return copy

    def sample(self, n_modalities, labels, rng, modality_names=None) -> np.ndarray:
        n = _n_samples(labels)
        names = _check_names(modality_names, n_modalities)
        if self.modalities is None:
            candidates = list(range(int(n_modalities)))
        elif names is None:
            raise ValueError("systematic modalities given by name need modality_names to be resolved")
        else:
            unknown = [m for m in self.modalities if m not in names]
            if unknown:
                raise ValueError(f"protocol 'systematic': unknown modality {unknown[0]!r}; known: {', '.join(names)}")
            candidates = [names.index(m) for m in self.modalities]
        if self.groups is None and self._data_groups is not None and len(self._data_groups) == n:
            groups = self._data_groups
        elif self.groups is None:
            groups = group_partition(n, self.n_groups, rng)
        elif len(self.groups) != n:
            raise ValueError(f"protocol 'systematic': groups gives {len(self.groups)} ids but the data has {n} "
                             "samples (give one id per sample of the data it is applied to)")
        else:
            groups = np.asarray(self.groups)
        return systematic_mask(groups, int(n_modalities), candidates, self.rate, rng)

    def params(self) -> dict:
        return {"rate": self.rate, "n_groups": self.n_groups, "groups": self.groups, "modalities": self.modalities}
