"""Scenario: which missingness protocol applies to train, validation and test.

PROTOCOLS.md asks that train and test missingness be set apart, never tied:
a scenario names one protocol per role, and ``apply`` draws that role's mask
on top of the dataset's natural availability.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ..data.base import MultimodalDataset
from ..data.timemask import missing_step_fractions
from .functional import mask_checksum, realised_missingness
from .protocols import Complete, MissingnessProtocol, make_protocol
from .temporal import TimeMaskProtocol

__all__ = ["ROLES", "ROLE_ID", "Scenario"]

ROLES = ("train", "val", "test")
#: Role -> integer mixed into the seed, so the three roles draw different masks.
ROLE_ID = {"train": 0, "val": 1, "test": 2}
# A fixed prime in the seed sequence keeps mask streams apart from any other
# stream a runner derives from the same run seed (e.g. default_rng([seed, 0])).
_MASK_STREAM = 7919


@dataclass(frozen=True)
class Scenario:
    """One missingness protocol per role: ``train``, ``val`` (checkpoint selection) and ``test``."""

    train: MissingnessProtocol
    val: MissingnessProtocol
    test: MissingnessProtocol

    def __post_init__(self) -> None:
        for role in ROLES:
            p = getattr(self, role)
            if not isinstance(p, MissingnessProtocol):
                raise TypeError(f"scenario {role} must be a MissingnessProtocol, got {type(p).__name__}")

    # ------------------------------------------------------------ constructors

    @classmethod
    def same(cls, protocol: MissingnessProtocol) -> Scenario:
        """Incomplete train / incomplete test: the same protocol for all three roles."""
        return cls(protocol, protocol, protocol)

    @classmethod
    def complete_train(cls, test_protocol: MissingnessProtocol) -> Scenario:
        """Complete train and validation, ``test_protocol`` at test (most of the literature)."""
        return cls(Complete(), Complete(), test_protocol)

    @classmethod
    def incomplete_train(cls, train_protocol: MissingnessProtocol) -> Scenario:
        """``train_protocol`` for train and validation, complete test.

        Validation follows training (as in ``complete_train``): the held-out
        rows used for checkpoint selection come from the training conditions,
        so model selection never sees the test conditions.
        """
        return cls(train_protocol, train_protocol, Complete())

    @classmethod
    def from_dict(cls, description: Mapping[str, Mapping]) -> Scenario:
        """Inverse of ``describe``: {role: {"name": ..., "params": {...}}} -> Scenario."""
        missing = [r for r in ROLES if r not in description]
        if missing:
            raise ValueError(f"scenario description lacks role {missing[0]!r}; it needs {', '.join(ROLES)}")
        return cls(*(make_protocol(description[r]["name"], **dict(description[r].get("params", {}))) for r in ROLES))

    # ------------------------------------------------------------------- use

    def protocol(self, role: str) -> MissingnessProtocol:
        if role not in ROLE_ID:
            raise ValueError(f"unknown role {role!r}; known: {', '.join(ROLES)}")
        return getattr(self, role)

    def apply(self, dataset: MultimodalDataset, role: str, seed: int) -> tuple[MultimodalDataset, dict]:
        """Draw ``role``'s mask for ``dataset`` and return (masked dataset, info).

        Seeding: the mask comes from ``np.random.default_rng([seed, ROLE_ID[role], 7919])``,
        so it is a deterministic function of (protocol, dataset, seed, role),
        and train, val and test draw from different streams for the same seed.

        The drawn mask is ANDed with the dataset's natural mask (a modality that
        was never recorded cannot be made present). A sample the AND leaves
        empty (possible only where the natural mask was already partial) gets
        one of its naturally present modalities back, chosen uniformly by the
        same generator; ``info["restored_samples"]`` counts them, since this
        moves realised rates (and, for ``fixed-subset``, lets such samples see
        a modality outside the subset). A sample with no natural modality at
        all is a ValueError.

        A time-level protocol (``TimeMaskProtocol``: burst, catastrophic,
        asynchronous) draws time masks instead (``protocol.apply``) from the same
        generator; the (n, M) mask then follows the rule that a modality with no
        observed step is missing.

        info: ``realised_missingness`` of the final mask plus ``mask_sha256``,
        ``protocol``, ``params``, ``role``, ``seed`` and ``restored_samples``;
        with time masks also ``missing_step_fraction`` (modality -> fraction of
        unobserved (sample, step) pairs, a missing modality's steps included).
        """
        protocol = self.protocol(role)
        if dataset.groups is not None:  # e.g. systematic draws per subject of the data
            protocol = protocol.for_groups(dataset.groups)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        names = dataset.spec.modality_names
        natural = dataset.mask.numpy().astype(bool, copy=True)
        empty_natural = np.flatnonzero(~natural.any(axis=1))
        if empty_natural.size:
            raise ValueError(
                f"{empty_natural.size} sample(s) have no modality in the dataset's natural mask "
                f"(first: sample {int(empty_natural[0])}); drop them before applying a scenario"
            )
        rng = np.random.default_rng([int(seed), ROLE_ID[role], _MASK_STREAM])
        if isinstance(protocol, TimeMaskProtocol):
            if not isinstance(dataset, MultimodalDataset):
                raise ValueError(f"protocol {protocol.name!r} draws time masks (availability per step), which a "
                                 f"streamed dataset ({type(dataset).__name__}) does not hold yet; apply it to an "
                                 "in-memory dataset (dataset.to_memory()) or use a sample-level protocol")
            dataset = protocol.apply(dataset, rng)
            drawn = dataset.mask.numpy()
        else:
            drawn = protocol.sample(len(names), dataset.labels, rng, modality_names=names)
        final = drawn & natural
        restored = _restore_empty(final, natural, rng)
        info = realised_missingness(final, names)
        info.update(
            mask_sha256=mask_checksum(final),
            protocol=protocol.name,
            params=protocol.params(),
            role=role,
            seed=int(seed),
            restored_samples=restored,
        )
        if dataset.time_mask is not None:
            info["missing_step_fraction"] = missing_step_fractions(dataset.time_mask, torch.as_tensor(final), names)
        return dataset.with_mask(final), info

    def describe(self) -> dict:
        """JSON-ready {role: {name, definition, params}}."""
        return {role: getattr(self, role).describe() for role in ROLES}


def _restore_empty(final: np.ndarray, natural: np.ndarray, rng: np.random.Generator) -> int:
    """In place on ``final`` (our own array): give each empty row one uniformly chosen
    naturally present modality. Returns how many rows were restored."""
    rows = np.flatnonzero(~final.any(axis=1))
    if rows.size == 0:
        return 0
    avail = natural[rows]
    pick = rng.integers(0, avail.sum(axis=1))  # the pick-th present modality of each row
    cols = np.argmax(np.cumsum(avail, axis=1) > pick[:, None], axis=1)
    final[rows, cols] = True
    return int(rows.size)
