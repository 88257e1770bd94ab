"""The conformance suite: named checks every registered method must pass.

Shipped with the library (like scikit-learn's ``utils/estimator_checks.py``)
so that a third-party method, once registered with ``@register_method``,
can be checked the same way as the built-in ones::

    from mlmm.testing import run_conformance
    run_conformance("my-method")                 # {check: "passed" | "skipped: reason"}
    run_conformance("my-method", slow=True)      # also trains to beat chance

Every check has the signature ``check_x(method_name, data, params=None)``:

- ``method_name``: a name registered in ``METHODS``;
- ``data``: a small ``MultimodalDataset`` with ``train``/``test`` splits, M = 3
  (``conformance_data(kind)`` makes the default one, ``kind`` = ``"vector"``
  or ``"sequence"``), given in *raw* units — the checks standardise it as
  the training loop would and call ``method.prepare`` before any forward;
- ``params``: keyword hyper-parameters for ``build_method`` (default: none).

A check returns ``None`` or raises ``AssertionError`` whose message names the
method, the data kind, the check and what differed. ``CHECKS`` maps a check's
name (the function name without ``check_``) to the function; a method's
``info.deviations`` (check name -> reason) exempts it from exactly those
checks, and ``run_conformance`` reports them as ``"skipped: reason"``.

The checks never print, never touch the caller's global RNG (randomness runs
under ``seeded``; data and masks come from explicit generators) and run on CPU.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

from ..data.base import MultimodalDataset
from ..data.batch import Batch
from ..data.datasets.synthetic import make_synthetic
from ..data.preprocess import Standardizer
from ..data.spec import DatasetSpec, ModalitySpec, TaskSpec
from ..data.splits import make_splits
from ..methods import METHODS
from ..methods.base import MethodInfo, MissingModalityModel, Output
from ..missing import EntryRate, Scenario
from ..missing.functional import all_subsets, entry_rate_mask
from ..train.loop import FittedModel, TrainConfig, Trainer, build_method, seeded

__all__ = [
    "CHECKS",
    "SLOW_CHECKS",
    "check_all_subsets_finite",
    "check_batch_composition_invariance",
    "check_beats_chance_under_missingness",
    "check_builds_from_spec",
    "check_deviations",
    "check_empty_sample_finite",
    "check_gradients_reach_parameters",
    "check_inputs_not_mutated",
    "check_loss_finite_all_subsets",
    "check_modality_missing_for_whole_batch",
    "check_poisoned_masked_slots_ignored",
    "check_seed_determinism",
    "check_state_dict_round_trip",
    "conformance_data",
    "easy_task",
    "run_conformance",
]

Check = Callable[[str, MultimodalDataset, "Mapping[str, object] | None"], None]

#: check name (function name without ``check_``) -> check, in the order they run.
CHECKS: dict[str, Check] = {}
_SLOW: list[str] = []

#: Tolerance where float results may legitimately differ in the last bits
#: (a different batch size can pick a different matmul kernel).
_RTOL, _ATOL = 1e-4, 1e-5
#: Short optimisation used where a check needs a *trained* model.
_SHORT_FIT = TrainConfig(max_epochs=2, batch_size=16, patience=2)
#: Entry rate of the training mask the checks' ``prepare`` sees.
_PREPARE_RATE = 0.3
#: Values written into masked-out slots by the poison check.
_POISONS = (float("nan"), 1e6, -1e6, float("inf"))


def _check(*, slow: bool = False) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        name = fn.__name__.removeprefix("check_")
        CHECKS[name] = fn
        if slow:
            _SLOW.append(name)
        return fn

    return register


# ------------------------------------------------------------------ data


def conformance_data(kind: str = "vector", n_samples: int = 42, seed: int = 0) -> MultimodalDataset:
    """The small default data set of the fast checks: M = 3 modalities of ``kind``
    (``vector`` of dims 3/4/5, or ``sequence`` of shape (16, 3/4/5)), 3 classes,
    ``train``/``test`` splits, every modality naturally present."""
    return make_synthetic(n_samples=n_samples, n_classes=3, n_modalities=3, dims=(3, 4, 5), kind=kind, seed=seed)


def easy_task(kind: str = "vector", seed: int = 0) -> MultimodalDataset:
    """The easy task of the slow check: M = 3 equally informative, low-noise modalities,
    3 balanced classes, 360 samples; one modality alone predicts the class well."""
    return make_synthetic(n_samples=360, n_classes=3, n_modalities=3, dims=8, informativeness=1.0,
                          noise=0.5, kind=kind, seed=seed)


def _kind_of(data: MultimodalDataset) -> str:
    return "/".join(sorted({m.kind for m in data.spec.modalities}))


def _where(name: str, data: MultimodalDataset, check: str) -> str:
    return f"method {name!r} on {_kind_of(data)} data, check {check}"


def _fail(where: str, message: str) -> None:
    raise AssertionError(f"{where}: {message}")


def _split(data: MultimodalDataset, name: str) -> MultimodalDataset:
    return data.split(name) if name in data.splits else data


def _needs_complete(name: str) -> bool:
    return bool(METHODS.get(name).info.needs_complete_train)


def _train_data(name: str, data: MultimodalDataset) -> MultimodalDataset:
    """The training split, with an entry-rate mask unless the method needs complete training data."""
    train = _split(data, "train")
    if _needs_complete(name):
        return train
    mask = entry_rate_mask(len(train), data.spec.n_modalities, _PREPARE_RATE, np.random.default_rng(0))
    return train.with_mask(torch.as_tensor(mask) & train.mask)


def _cyclic_mask(n: int, n_modalities: int, subsets: list[tuple[int, ...]]) -> Tensor:
    """(n, M) mask whose row i holds exactly ``subsets[i % len(subsets)]``."""
    mask = torch.zeros(n, n_modalities, dtype=torch.bool)
    for i in range(n):
        mask[i, list(subsets[i % len(subsets)])] = True
    return mask


def _only(batch: Batch, subset: Iterable[int]) -> Batch:
    """``batch`` with every sample restricted to the modalities in ``subset``."""
    mask = torch.zeros_like(batch.mask)
    mask[:, list(subset)] = True
    return batch.with_mask(mask)


def _concat(*batches: Batch) -> Batch:
    first = batches[0]
    return Batch(
        {k: torch.cat([b.inputs[k] for b in batches]) for k in first.inputs},
        torch.cat([b.mask for b in batches]),
        None if first.target is None else torch.cat([b.target for b in batches]),
    )


def _subset_cases(setup: _Setup, names: tuple[str, ...]) -> list[tuple[str, Batch]]:
    """(label, batch) for every one of the 2^M - 1 subsets of the full batch, plus the mixed batch."""
    cases = [("+".join(names[j] for j in sub), _only(setup.full, sub)) for sub in all_subsets(len(names))]
    cases.append(("a batch mixing all subsets", setup.mixed))
    return cases


class _Setup:
    """A method built with ``seed`` and prepared on a masked, standardised training split.

    ``full``: every row of ``data``, all modalities present, standardised.
    ``mixed``: the same rows, row i restricted to the i-th of the 2^M - 1 subsets (cyclically).
    ``raw_mixed``: ``mixed`` before standardisation (what a ``FittedModel`` takes).
    """

    def __init__(self, name: str, data: MultimodalDataset, params: Mapping[str, object] | None, seed: int = 0):
        spec = data.spec
        self.method = build_method(name, spec, seed, **dict(params or {}))
        self.train_data = _train_data(name, data)
        # Statistics from the complete training rows, prepare on the masked ones: the
        # method's fill values then differ from the standardiser's zero mean, so a
        # data-dependent buffer that is not saved shows up in the round-trip check.
        self.standardizer = Standardizer(spec).fit(_split(data, "train").as_batch())
        with torch.no_grad():
            # As the training loop hands it over: standardised, each row carrying its index.
            self.train = self.standardizer(self.train_data.as_batch())
            self.train = self.train.with_index(torch.arange(self.train.size))
            self.full = self.standardizer(data.as_batch())
            # The same training rows with every modality present (what a training step sees
            # of a complete row), for the checks that need training rows in training mode.
            self.full_train = self.standardizer(_split(data, "train").as_batch()).with_index(self.train.index)
        with seeded(seed):
            self.method.prepare(self.train, self.standardizer)
        self.method.eval()
        self.raw_mixed = data.as_batch().with_mask(_cyclic_mask(len(data), spec.n_modalities,
                                                                all_subsets(spec.n_modalities)))
        with torch.no_grad():
            self.mixed = self.standardizer(self.raw_mixed)


# ------------------------------------------------------------- helpers


def _forward(method: MissingModalityModel, batch: Batch, *, train: bool = False, seed: int = 0) -> Output:
    """One forward pass in train or eval mode, under a fixed seed (dropout) that the caller's RNG never sees."""
    method.train(train)
    with seeded(seed):
        return method(batch)


def _check_output(output: object, batch: Batch, spec: DatasetSpec, where: str, what: str) -> Tensor:
    if not isinstance(output, Output):
        _fail(where, f"{what}: forward returned {type(output).__name__}, expected mlmm Output")
    logits = output.logits
    expected = (batch.size, spec.task.output_dim)
    if not isinstance(logits, Tensor) or tuple(logits.shape) != expected:
        _fail(where, f"{what}: logits of shape {tuple(getattr(logits, 'shape', ()))}, expected {expected}")
    if not logits.dtype.is_floating_point:
        _fail(where, f"{what}: logits have dtype {logits.dtype}, expected a floating dtype")
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        _fail(where, f"{what}: {bad} of {batch.size} samples have NaN or inf logits")
    return logits


def _loss_terms(method: MissingModalityModel, batch: Batch, output: Output, where: str, what: str) -> dict[str, Tensor]:
    terms = method.loss(batch, output)
    if not isinstance(terms, Mapping) or not terms:
        _fail(where, f"{what}: loss() returned {terms!r}, expected a non-empty dict of named scalar terms")
    for key, value in terms.items():
        if not isinstance(value, Tensor) or value.dim() != 0:
            _fail(where, f"{what}: loss term {key!r} is not a scalar tensor ({getattr(value, 'shape', value)!r})")
        if not torch.isfinite(value):
            _fail(where, f"{what}: loss term {key!r} is {float(value.detach())}")
    return dict(terms)


def _gradients(method: MissingModalityModel, batch: Batch, where: str, what: str, *,
               train: bool = True, seed: int = 0) -> tuple[Output, dict[str, Tensor], dict[str, Tensor | None]]:
    """(output, loss terms, name -> grad of every parameter that requires grad), grads checked finite."""
    method.zero_grad(set_to_none=True)
    output = _forward(method, batch, train=train, seed=seed)
    terms = _loss_terms(method, batch, output, where, what)
    total = sum(terms.values())
    if total.requires_grad:
        total.backward()
    grads = {n: (None if p.grad is None else p.grad.detach().clone())
             for n, p in method.named_parameters() if p.requires_grad}
    method.zero_grad(set_to_none=True)
    bad = [n for n, g in grads.items() if g is not None and not torch.isfinite(g).all()]
    if bad:
        _fail(where, f"{what}: NaN or inf gradient in {', '.join(bad[:5])}" + (" ..." if len(bad) > 5 else ""))
    return output, {k: v.detach() for k, v in terms.items()}, grads


def _assert_close(actual: Tensor, expected: Tensor, where: str, what: str, *, exact: bool) -> None:
    try:
        if exact:
            torch.testing.assert_close(actual, expected, rtol=0.0, atol=0.0)
        else:
            torch.testing.assert_close(actual, expected, rtol=_RTOL, atol=_ATOL)
    except AssertionError as err:
        raise AssertionError(f"{where}: {what}\n{err}") from None


def _assert_same_state(a: Mapping[str, Tensor], b: Mapping[str, Tensor], where: str, what: str) -> None:
    if list(a) != list(b):
        _fail(where, f"{what}: state_dict keys differ: {sorted(set(a) ^ set(b))[:5]}")
    for key in a:
        if isinstance(a[key], Tensor):
            _assert_close(b[key], a[key], where, f"{what}: {key!r} differs", exact=True)
        elif a[key] != b[key]:  # a module's extra state (e.g. the router's calibration log)
            _fail(where, f"{what}: {key!r} differs")


def _poison(batch: Batch, value: float) -> Batch:
    """``batch`` with ``value`` written into every masked-out slot of every float modality."""
    inputs = {}
    for j, (name, x) in enumerate(batch.inputs.items()):
        if x.dtype.is_floating_point:
            keep = batch.mask[:, j].reshape(-1, *([1] * (x.dim() - 1)))
            x = torch.where(keep, x, torch.tensor(value, dtype=x.dtype))
        inputs[name] = x
    return Batch(inputs, batch.mask, batch.target)


def _snapshot(batch: Batch) -> tuple[dict[str, tuple[int, Tensor]], Tensor, Tensor | None]:
    return ({k: (id(v), v.detach().clone()) for k, v in batch.inputs.items()}, batch.mask.clone(),
            None if batch.target is None else batch.target.clone())


def _assert_unchanged(batch: Batch, snapshot, where: str, what: str) -> None:
    inputs, mask, target = snapshot
    if list(batch.inputs) != list(inputs):
        _fail(where, f"{what}: the inputs dict changed keys: {list(inputs)} -> {list(batch.inputs)}")
    for k, (ident, value) in inputs.items():
        if id(batch.inputs[k]) != ident:
            _fail(where, f"{what}: inputs[{k!r}] was replaced by another tensor")
        if not torch.equal(batch.inputs[k], value) and not (
            value.dtype.is_floating_point and torch.equal(batch.inputs[k].isnan(), value.isnan())
            and torch.equal(batch.inputs[k].nan_to_num(), value.nan_to_num())
        ):
            _fail(where, f"{what}: inputs[{k!r}] was modified in place")
    if not torch.equal(batch.mask, mask):
        _fail(where, f"{what}: the mask was modified in place")
    if target is not None and not torch.equal(batch.target, target):
        _fail(where, f"{what}: the target was modified in place")


def _short_fit(name: str, data: MultimodalDataset, params: Mapping[str, object] | None, seed: int):
    method = build_method(name, data.spec, seed, **dict(params or {}))
    return Trainer(_SHORT_FIT).fit(method, _train_data(name, data), _split(data, "test"), seed=seed)


def _serialised(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` through ``torch.save`` / ``torch.load(weights_only=True)`` in memory."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ---------------------------------------------------------------- checks


@_check()
def check_builds_from_spec(name: str, data: MultimodalDataset, params: Mapping[str, object] | None = None) -> None:
    """The method builds from a ``DatasetSpec`` alone, on CPU, with metadata and stages,
    and takes its output width and input shapes from the spec (a differently shaped
    spec builds too and gives logits of its own width)."""
    where = _where(name, data, "builds_from_spec")
    cls = METHODS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, MissingModalityModel)):
        _fail(where, f"registered object {cls!r} is not a MissingModalityModel subclass")
    if not isinstance(getattr(cls, "info", None), MethodInfo):
        _fail(where, "class attribute `info` is not a MethodInfo")
    try:
        check_deviations(name)
    except ValueError as err:
        _fail(where, str(err))
    method = build_method(name, data.spec, 0, **dict(params or {}))
    if type(method) is not cls:
        _fail(where, f"build_method returned {type(method).__name__}, expected {cls.__name__}")
    if getattr(method, "spec", None) != data.spec:
        _fail(where, "the built method does not keep its spec in `.spec` (was MissingModalityModel.__init__ called?)")
    stages = method.stages()
    if not isinstance(stages, tuple) or not stages or not all(isinstance(s, str) for s in stages):
        _fail(where, f"stages() must be a non-empty tuple of str, got {stages!r}")
    off_cpu = [n for n, t in [*method.named_parameters(), *method.named_buffers()] if t.device.type != "cpu"]
    if off_cpu:
        _fail(where, f"tensors built off the CPU (devices belong to the caller): {off_cpu[:5]}")

    # A differently shaped spec of the same kinds: shapes and width must follow it.
    other = DatasetSpec(
        name="conformance-reshaped",
        modalities=tuple(ModalitySpec(f"r{j}", m.kind, tuple(s + 1 for s in m.shape))
                         for j, m in enumerate(data.spec.modalities)),
        task=TaskSpec("classification", n_classes=data.spec.task.output_dim + 2),
    )
    reshaped = build_method(name, other, 0, **dict(params or {}))
    zeros = Batch({m.name: torch.zeros(4, *m.shape) for m in other.modalities},
                  torch.ones(4, other.n_modalities, dtype=torch.bool), torch.arange(4) % other.task.output_dim)
    with seeded(0):
        reshaped.prepare(zeros, Standardizer(other))
    _check_output(_forward(reshaped, zeros), zeros, other, where, "built from a reshaped spec")


@_check()
def check_all_subsets_finite(name: str, data: MultimodalDataset, params: Mapping[str, object] | None = None) -> None:
    """Finite logits of shape (B, output_dim) for every one of the 2^M - 1 modality
    subsets, in eval and train mode, and for a batch mixing all subsets."""
    where = _where(name, data, "all_subsets_finite")
    s = _Setup(name, data, params)
    for label, batch in _subset_cases(s, data.spec.modality_names):
        for train in (False, True):
            with torch.no_grad():
                out = _forward(s.method, batch, train=train)
            _check_output(out, batch, data.spec, where, f"subset {label} ({'train' if train else 'eval'} mode)")


@_check()
def check_empty_sample_finite(name: str, data: MultimodalDataset, params: Mapping[str, object] | None = None) -> None:
    """Policy for a sample with no modality at all: the data layer rejects such samples
    with a ``ValueError``, but a method that meets one anyway (a hand-built batch) must
    still give finite logits for it — never NaN or -inf — and leave its batch-mates'
    outputs unchanged."""
    where = _where(name, data, "empty_sample_finite")
    s = _Setup(name, data, params)
    mask = s.mixed.mask.clone()
    mask[0] = False
    batch = s.full.with_mask(mask)
    with torch.no_grad():
        out = _forward(s.method, batch)
        reference = _forward(s.method, s.mixed)
    _check_output(out, batch, data.spec, where, "a batch whose first sample has no modality")
    _assert_close(out.logits[1:], reference.logits[1:], where, "batch-mates of an empty sample", exact=False)


@_check()
def check_modality_missing_for_whole_batch(name: str, data: MultimodalDataset,
                                           params: Mapping[str, object] | None = None) -> None:
    """A batch in which modality m is missing for every sample (the others mixed) gives
    finite logits, finite loss terms and finite gradients, for every m (an empty mean over
    the batch or a batch statistic are the usual NaN sources)."""
    where = _where(name, data, "modality_missing_for_whole_batch")
    s = _Setup(name, data, params)
    if data.spec.n_modalities == 1:
        return  # with one modality, a batch missing it has nothing left to predict from
    for j, mod in enumerate(data.spec.modality_names):
        mask = s.mixed.mask.clone()
        mask[:, j] = False
        empty = ~mask.any(dim=1)  # rows that held only modality j get every other one
        mask[empty] = True
        mask[empty, j] = False
        batch = s.full.with_mask(mask)
        for train in (False, True):
            what = f"{mod!r} missing in the whole batch ({'train' if train else 'eval'} mode)"
            out, _, _ = _gradients(s.method, batch, where, what, train=train)
            _check_output(out, batch, data.spec, where, what)


@_check()
def check_poisoned_masked_slots_ignored(name: str, data: MultimodalDataset,
                                        params: Mapping[str, object] | None = None) -> None:
    """Masked-out slots are never read: writing NaN, +-1e6 or inf there (the batch given to
    the method directly, bypassing validation) leaves logits, loss terms and parameter
    gradients bit-identical to the zero-filled batch, in eval and in train mode."""
    where = _where(name, data, "poisoned_masked_slots_ignored")
    s = _Setup(name, data, params)
    for train in (False, True):
        mode = "train" if train else "eval"
        clean_out, clean_terms, clean_grads = _gradients(s.method, s.mixed, where, f"zero-filled batch ({mode})",
                                                         train=train)
        for value in _POISONS:
            what = f"masked-out slots poisoned with {value} ({mode} mode)"
            s.method.zero_grad(set_to_none=True)
            out = _forward(s.method, _poison(s.mixed, value), train=train)
            _assert_close(out.logits.detach(), clean_out.logits.detach(), where, f"{what}: logits changed", exact=True)
            terms = s.method.loss(_poison(s.mixed, value), out)
            if list(terms) != list(clean_terms):
                _fail(where, f"{what}: loss terms {list(terms)} != {list(clean_terms)}")
            for key, term in terms.items():
                _assert_close(term.detach(), clean_terms[key], where, f"{what}: loss term {key!r} changed", exact=True)
            total = sum(terms.values())
            if total.requires_grad:
                total.backward()
            for pname, p in s.method.named_parameters():
                if not p.requires_grad:
                    continue
                expected = clean_grads[pname]
                if (p.grad is None) != (expected is None):
                    _fail(where, f"{what}: gradient of {pname!r} is None in one batch only")
                if expected is not None:
                    _assert_close(p.grad, expected, where, f"{what}: gradient of {pname!r} changed", exact=True)
            s.method.zero_grad(set_to_none=True)


@_check()
def check_batch_composition_invariance(name: str, data: MultimodalDataset,
                                       params: Mapping[str, object] | None = None) -> None:
    """In eval mode a sample's logits do not depend on its batch-mates or its position:
    the same as in the reference batch when predicted alone, in a shuffled batch, in half
    of the batch, and next to the (different) training samples."""
    where = _where(name, data, "batch_composition_invariance")
    s = _Setup(name, data, params)
    batch, n = s.mixed, s.mixed.size
    with torch.no_grad():
        ref = _forward(s.method, batch).logits
        for i in range(min(n, 2 ** data.spec.n_modalities - 1)):  # one sample per subset
            alone = _forward(s.method, batch.select(torch.tensor([i]))).logits
            _assert_close(alone, ref[i:i + 1], where, f"sample {i} predicted alone differs from in the batch",
                          exact=False)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        _assert_close(_forward(s.method, batch.select(perm)).logits, ref[perm], where,
                      "a shuffled batch gives different per-sample logits", exact=False)
        half = n // 2
        for part in (torch.arange(half), torch.arange(half, n)):
            _assert_close(_forward(s.method, batch.select(part)).logits, ref[part], where,
                          f"samples {int(part[0])}..{int(part[-1])} in a half batch differ from the full batch",
                          exact=False)
        mixed_with_train = _concat(batch.select(torch.arange(half)), s.train)
        _assert_close(_forward(s.method, mixed_with_train).logits[:half], ref[:half], where,
                      "samples next to different batch-mates (training rows) give different logits", exact=False)


@_check()
def check_seed_determinism(name: str, data: MultimodalDataset, params: Mapping[str, object] | None = None) -> None:
    """The same seed gives identical parameters at build time, and identical parameters and
    eval predictions after a short fit — whatever state the caller's global RNG is in."""
    where = _where(name, data, "seed_determinism")
    kwargs = dict(params or {})
    a = build_method(name, data.spec, 7, **kwargs)
    b = build_method(name, data.spec, 7, **kwargs)
    _assert_same_state(a.state_dict(), b.state_dict(), where, "build_method with the same seed")

    raw = data.as_batch().with_mask(_cyclic_mask(len(data), data.spec.n_modalities,
                                                 all_subsets(data.spec.n_modalities)))
    runs = []
    for caller_seed in (1, 2):  # two different global RNG states of the caller
        with seeded(caller_seed):
            fit = _short_fit(name, data, params, seed=3)
            runs.append((fit.model.state_dict(), fit.model.predict_logits(raw)))
    _assert_same_state(runs[0][0], runs[1][0], where, "two fits with the same seed")
    _assert_close(runs[1][1], runs[0][1], where, "two fits with the same seed predict differently", exact=True)


@_check()
def check_gradients_reach_parameters(name: str, data: MultimodalDataset,
                                     params: Mapping[str, object] | None = None) -> None:
    """On a full-modality batch of the training rows (after ``prepare``, carrying their row
    index as the loop's batches do), the summed loss of each training stage
    gives every parameter with ``requires_grad`` a non-None, finite gradient, non-zero in at
    least one stage. Frozen parameters (``requires_grad=False``) are exempt."""
    where = _where(name, data, "gradients_reach_parameters")
    s = _Setup(name, data, params)
    reached: set[str] = set()
    trainable: set[str] = set()
    for stage in s.method.stages():
        s.method.set_stage(stage)
        _, _, grads = _gradients(s.method, s.full_train, where, f"stage {stage!r}", train=True)
        trainable.update(grads)
        reached.update(n for n, g in grads.items() if g is not None and bool(g.abs().sum() > 0))
    missed = sorted(trainable - reached)
    if missed:
        _fail(where, f"no (or an all-zero) gradient on a full-modality batch for {len(missed)} trainable "
                     f"parameter(s): {', '.join(missed[:6])}{' ...' if len(missed) > 6 else ''} "
                     "(freeze them with requires_grad=False or declare a deviation)")


@_check()
def check_state_dict_round_trip(name: str, data: MultimodalDataset,
                                params: Mapping[str, object] | None = None) -> None:
    """A fresh instance (other seed, not prepared) loaded with ``state_dict`` — passed through
    ``torch.save``/``torch.load(weights_only=True)`` — predicts identically; so does a fresh
    ``FittedModel`` (standardiser + method) loaded from a trained one, on raw data."""
    where = _where(name, data, "state_dict_round_trip")
    kwargs = dict(params or {})
    s = _Setup(name, data, params)
    with torch.no_grad():
        ref = _forward(s.method, s.mixed).logits
    fresh = build_method(name, data.spec, 1, **kwargs)
    try:
        fresh.load_state_dict(_serialised(s.method.state_dict()))
    except RuntimeError as err:
        _fail(where, f"load_state_dict into a fresh instance failed: {err}")
    with torch.no_grad():
        _assert_close(_forward(fresh, s.mixed).logits, ref, where,
                      "a fresh instance loaded from state_dict predicts differently "
                      "(is data-dependent state kept outside buffers?)", exact=True)

    fit = _short_fit(name, data, params, seed=0)
    expected = fit.model.predict_logits(s.raw_mixed)
    restored = FittedModel(Standardizer(data.spec), build_method(name, data.spec, 1, **kwargs))
    try:
        restored.load_state_dict(_serialised(fit.model.state_dict()))
    except RuntimeError as err:
        _fail(where, f"load_state_dict into a fresh FittedModel failed: {err}")
    _assert_close(restored.predict_logits(s.raw_mixed), expected, where,
                  "a FittedModel restored from state_dict predicts differently on raw data", exact=True)


@_check()
def check_inputs_not_mutated(name: str, data: MultimodalDataset, params: Mapping[str, object] | None = None) -> None:
    """``prepare`` leaves its training batch unchanged, and forward + loss (+ backward), in
    train and eval mode, leave the inputs, mask and target tensors (and the inputs dict)
    unchanged."""
    where = _where(name, data, "inputs_not_mutated")
    method = build_method(name, data.spec, 0, **dict(params or {}))
    s = _Setup(name, data, params)  # for the standardised batches
    snap = _snapshot(s.train)
    with seeded(0):
        method.prepare(s.train, s.standardizer)
    _assert_unchanged(s.train, snap, where, "prepare()")
    for batch, label in ((s.mixed, "mixed-subset batch"), (s.full, "full batch")):
        for train in (True, False):
            snap = _snapshot(batch)
            _gradients(method, batch, where, label, train=train)
            _assert_unchanged(batch, snap, where, f"forward + loss on a {label} ({'train' if train else 'eval'} mode)")


@_check()
def check_loss_finite_all_subsets(name: str, data: MultimodalDataset,
                                  params: Mapping[str, object] | None = None) -> None:
    """``loss`` returns a non-empty dict of finite scalar terms, with finite gradients, for
    every modality subset and a mixed batch, in train and eval mode."""
    where = _where(name, data, "loss_finite_all_subsets")
    s = _Setup(name, data, params)
    for label, batch in _subset_cases(s, data.spec.modality_names):
        for train in (True, False):
            _gradients(s.method, batch, where, f"subset {label} ({'train' if train else 'eval'} mode)", train=train)


@_check(slow=True)
def check_beats_chance_under_missingness(name: str, data: MultimodalDataset,
                                         params: Mapping[str, object] | None = None) -> None:
    """(slow) Trained with ``Trainer`` on ``easy_task`` (of ``data``'s modality kind; M = 3)
    under an entry-rate 0.5 mask at train, validation and test — complete training data for
    methods that need it — test accuracy beats chance by at least 0.25."""
    where = _where(name, data, "beats_chance_under_missingness")
    kinds = {m.kind for m in data.spec.modalities}
    task = easy_task(kinds.pop() if len(kinds) == 1 else "vector")
    train, val, test = make_splits(task, "fixed", seed=0)
    missing = EntryRate(0.5)
    scenario = Scenario.complete_train(missing) if _needs_complete(name) else Scenario.same(missing)
    train_m, _ = scenario.apply(train, "train", 0)
    val_m, _ = scenario.apply(val, "val", 0)
    test_m, _ = scenario.apply(test, "test", 0)
    method = build_method(name, task.spec, 0, **dict(params or {}))
    config = TrainConfig(max_epochs=20, batch_size=32, patience=6)
    fit = Trainer(config).fit(method, train_m, val_m, seed=0)
    logits = fit.model.predict_logits(test_m)
    accuracy = float((logits.argmax(dim=1) == test_m.target).float().mean())
    chance = float(np.bincount(test_m.labels).max() / len(test_m))
    if not math.isfinite(accuracy) or accuracy < chance + 0.25:
        _fail(where, f"test accuracy {accuracy:.3f} under entry-rate 0.5 missingness does not beat "
                     f"chance {chance:.3f} by 0.25 on the easy synthetic task")


SLOW_CHECKS: frozenset[str] = frozenset(_SLOW)


# ------------------------------------------------------------------ runner


def check_deviations(method_name: str) -> dict[str, str]:
    """The method's declared deviations (check name -> reason), validated: every name must
    be a known check and every reason a non-empty string, else ``ValueError``."""
    cls = METHODS.get(method_name)
    deviations = dict(cls.info.deviations)
    unknown = sorted(set(deviations) - set(CHECKS))
    if unknown:
        raise ValueError(
            f"method {method_name!r} declares a deviation from unknown conformance check(s) "
            f"{', '.join(map(repr, unknown))}; known checks: {', '.join(CHECKS)}"
        )
    blank = sorted(k for k, v in deviations.items() if not isinstance(v, str) or not v.strip())
    if blank:
        raise ValueError(f"method {method_name!r}: deviation(s) {', '.join(map(repr, blank))} give no reason")
    return deviations


def _check_name(check: str | Check) -> str:
    name = check if isinstance(check, str) else getattr(check, "__name__", "")
    name = name.removeprefix("check_")
    if name not in CHECKS:
        raise ValueError(f"unknown conformance check {check!r}; known: {', '.join(CHECKS)}")
    return name


def run_conformance(method_name: str, checks: Iterable[str | Check] | None = None, *,
                    kinds: Iterable[str] = ("vector", "sequence"), params: Mapping[str, object] | None = None,
                    slow: bool = False) -> dict[str, str]:
    """Run conformance checks on registered method ``method_name``.

    checks: names (``"poisoned_masked_slots_ignored"`` or ``"check_..."``) or check
            functions; ``None`` runs every fast check, plus the slow ones if ``slow``.
    kinds:  synthetic data kinds each check runs on (``conformance_data(kind)``).
    params: keyword hyper-parameters for ``build_method``.

    Returns check name -> ``"passed"`` or ``"skipped: <reason>"`` (a deviation declared in
    ``info.deviations``). The first failing check raises ``AssertionError``; a deviation
    naming an unknown check raises ``ValueError`` before anything runs.
    """
    deviations = check_deviations(method_name)
    if checks is None:
        names = [c for c in CHECKS if slow or c not in SLOW_CHECKS]
    else:
        names = [_check_name(c) for c in checks]
    kinds = tuple(kinds)
    results: dict[str, str] = {}
    for check in names:
        if check in deviations:
            results[check] = f"skipped: {deviations[check]}"
            continue
        for kind in kinds:
            CHECKS[check](method_name, conformance_data(kind), params)
        results[check] = "passed"
    return results
