"""The conformance suite: named checks every method must pass, pointed at anything.

Shipped with the library (like scikit-learn's ``utils/estimator_checks.py``): it
takes a registered name, a class, or an instance (one configuration of a method),
and never reads or writes the global registry, so an unregistered user class works::

    from mlmm.testing import run_conformance
    run_conformance("masked-mean")                      # {check: "passed" | "skipped: reason"}
    run_conformance(MyMethod)                           # an unregistered class, default parameters
    run_conformance(MyMethod(spec, encoders={...}))     # one configuration, on data of its own spec
    run_conformance("masked-mean", slow=True)           # also trains to beat chance

What is checked on what data. A class (or name) is checked on every *setup* its
``info`` does not declare unsupported (``MethodInfo.unsupported_kinds``: kind -> reason):

- ``vector``:     M = 3 vector modalities, classification;
- ``sequence``:   M = 3 sequence modalities, regression (classification if the method
                  declares regression unsupported);
- ``image+text``: a vector, an image and a text modality, classification (a declared
                  unsupported kind is left out of it, and reported).

An instance is checked on random data of its own spec (its parameters — user encoders
included — belong to that spec). Each (method, setup) is a ``Case``, built once: the
method is built, prepared and its two short fits are run at most once, and every check
reads them (checks work on copies where they change state).

Checks (``CHECKS``, in order; ``info.deviations`` exempts a method from a named check,
reported as ``"skipped: reason"``): builds from a spec alone; finite outputs on every
subset; a sample with no modality; a modality missing in a whole batch; poisoned
masked-out slots never read; eval output independent of batch-mates; seed determinism;
gradients reach every trainable parameter; ``state_dict`` round trip; inputs not
mutated; finite loss on every subset; declared capabilities match behaviour (both
directions, ``Capability``); user encoders accepted by instance and class on every
modality kind (unless ``info.fixed_encoders`` says why not); (slow) beats chance under
50 % missingness.

A check takes a ``Case`` and returns None or raises ``AssertionError`` whose message
names the method, the setup, the check and what differed. The checks never print,
never touch the caller's global RNG (randomness runs under ``seeded``; data and masks
come from explicit generators) and run on CPU.
"""

from __future__ import annotations

import copy
import functools
import io
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from ..components.factorised import FactorisedFusion
from ..data.base import MultimodalDataset
from ..data.batch import Batch
from ..data.passes import SplitPasses
from ..data.preprocess import Standardizer
from ..data.spec import DatasetSpec, ModalitySpec, TaskSpec
from ..methods.base import Capability, MethodInfo, MissingModalityModel, Output
from ..missing.functional import all_subsets, entry_rate_mask
from ..train.loop import FitNeverImproved, FittedModel, TrainConfig, Trainer, seeded

__all__ = [
    "CHECKS",
    "SETUPS",
    "SLOW_CHECKS",
    "Case",
    "cases",
    "check_deviations",
    "conformance_data",
    "data_for_spec",
    "easy_task",
    "run_conformance",
]

Check = Callable[["Case"], None]

#: check name (function name without ``check_``) -> check, in the order they run.
CHECKS: dict[str, Check] = {}
_SLOW: list[str] = []
#: The data setups a class is checked on (see the module docstring).
SETUPS = ("vector", "sequence", "image+text")

#: Tolerance where float results may legitimately differ in the last bits
#: (a different batch size can pick a different matmul kernel).
_RTOL, _ATOL = 1e-4, 1e-5
#: Short optimisation used where a check needs a *trained* model.
_SHORT_FIT = TrainConfig(max_epochs=1, batch_size=16, patience=1)
#: Entry rate of the training mask the checks' ``prepare`` sees.
_PREPARE_RATE = 0.3
#: Values written into masked-out slots by the poison check (token ids get the largest id):
#: NaN survives a multiplication by a zero mask, +-1e6 a max / min over slots.
_POISONS = (float("nan"), 1e6, -1e6)
#: Rows of the conformance data sets (3/4 train, 1/4 test).
_N_SAMPLES = 24
_TEXT_VOCAB, _TEXT_LENGTH = 20, 6


def _check(*, slow: bool = False) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        name = fn.__name__.removeprefix("check_")
        CHECKS[name] = fn
        if slow:
            _SLOW.append(name)
        return fn

    return register


# ------------------------------------------------------------------ subjects


def _holds_module(value: object) -> bool:
    if isinstance(value, nn.Module):
        return True
    if isinstance(value, Mapping):
        return any(_holds_module(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_module(v) for v in value)
    return False


@dataclass(frozen=True)
class Subject:
    """What is checked: a method class, its constructor parameters and a label for messages.
    ``spec`` is the spec of an instance (its parameters belong to it), else None."""

    cls: type[MissingModalityModel]
    params: Mapping[str, object] = field(default_factory=dict)
    label: str = ""
    spec: DatasetSpec | None = None

    @property
    def info(self) -> MethodInfo:
        return self.cls.info

    def build(self, spec: DatasetSpec, seed: int = 0) -> MissingModalityModel:
        """A fresh instance for ``spec`` with weights from ``seed``; module parameters (user
        encoders by instance) are deep-copied, so two builds never share weights."""
        params = {k: copy.deepcopy(v) if _holds_module(v) else v for k, v in self.params.items()}
        with seeded(seed):
            return self.cls(spec, **params)


def subject(target: str | type | MissingModalityModel, params: Mapping[str, object] | None = None) -> Subject:
    """The ``Subject`` of a registered name, a ``MissingModalityModel`` subclass or an instance."""
    if isinstance(target, str):
        from ..methods.registry import METHODS  # names only: classes and instances never touch it

        return Subject(METHODS.get(target), dict(params or {}), target)
    if isinstance(target, MissingModalityModel):
        if params:
            raise TypeError("an instance carries its own parameters; pass params only with a name or a class")
        label = type(target).__dict__.get("method_name") or type(target).__qualname__
        return Subject(type(target), dict(target.get_params()), f"{label} (instance)", target.spec)
    if isinstance(target, type) and issubclass(target, MissingModalityModel):
        return Subject(target, dict(params or {}), target.__dict__.get("method_name") or target.__qualname__)
    raise TypeError(f"run_conformance takes a registered method name, a MissingModalityModel subclass or an "
                    f"instance, got {type(target).__name__}")


# ------------------------------------------------------------------ data


def _modality(name: str, kind: str, size: int) -> ModalitySpec:
    shape = {"vector": (size,), "sequence": (8, size), "image": (1, 6, 6), "text": (_TEXT_LENGTH,)}[kind]
    return ModalitySpec(name, kind, shape, vocab_size=_TEXT_VOCAB) if kind == "text" else ModalitySpec(name, kind,
                                                                                                       shape)


def conformance_spec(setup: str = "vector", task: str = "classification",
                     leave_out: Iterable[str] = ()) -> DatasetSpec:
    """The spec of a setup (see the module docstring); ``leave_out``: modality kinds dropped
    from ``image+text`` (those a method declares unsupported)."""
    if setup not in SETUPS:
        raise ValueError(f"unknown conformance setup {setup!r}; known: {', '.join(SETUPS)}")
    kinds = {"vector": ("vector",) * 3, "sequence": ("sequence",) * 3,
             "image+text": ("vector", "image", "text")}[setup]
    kinds = tuple(k for k in kinds if k not in set(leave_out)) or ("vector",)
    modalities = tuple(_modality(f"m{j}", kind, 3 + j) for j, kind in enumerate(kinds))
    task_spec = TaskSpec("classification", n_classes=3) if task == "classification" else TaskSpec("regression")
    return DatasetSpec(name=f"conformance-{setup}", modalities=modalities, task=task_spec)


def data_for_spec(spec: DatasetSpec, n_samples: int = _N_SAMPLES, seed: int = 0) -> MultimodalDataset:
    """Random data of any spec, every modality present, ``train``/``test`` splits (3/4, 1/4).

    Classification labels are balanced and every float modality carries a class signal
    (its mean shifts with the label), so a model can learn something; regression targets
    are a fixed linear function of the first float modality plus noise. Token ids lie in
    [1, vocab) with the last positions padded (``pad_id``) in some rows. Only a generator
    built from ``seed`` is used."""
    rng = np.random.default_rng(seed)
    n = n_samples
    if spec.task.kind == "classification":
        y = (np.arange(n) % spec.task.output_dim)[rng.permutation(n)]
    else:
        y = None
    inputs: dict[str, np.ndarray] = {}
    for m in spec.modalities:
        if m.kind == "text":
            vocab = m.vocab_size or _TEXT_VOCAB
            tokens = rng.integers(0, vocab - 1, size=(n, *m.shape))
            if y is not None:  # the first token carries the class
                tokens[:, 0] = y % (vocab - 1)
            tokens = tokens + (tokens >= m.pad_id)  # every drawn id skips pad_id
            lengths = rng.integers(1, m.shape[0] + 1, size=n)  # >= 1 real token per row
            tokens[np.arange(m.shape[0])[None, :] >= lengths[:, None]] = m.pad_id
            inputs[m.name] = tokens.astype(np.int64)
            continue
        x = rng.standard_normal((n, *m.shape)).astype(np.float32)
        if y is not None:
            x = x + (y.reshape(-1, *([1] * len(m.shape))) - 1.0).astype(np.float32)
        inputs[m.name] = x
    if y is None:
        first = next((inputs[m.name] for m in spec.modalities if m.kind != "text"), None)
        base = np.zeros(n) if first is None else first.reshape(n, -1).mean(axis=1)
        target = base[:, None] + 0.1 * rng.standard_normal((n, spec.task.output_dim))
        y = (target[:, 0] if spec.task.output_dim == 1 else target).astype(np.float32)
    order = rng.permutation(n)
    cut = (3 * n) // 4
    return MultimodalDataset(spec, inputs, y, splits={"train": np.sort(order[:cut]), "test": np.sort(order[cut:])})


def conformance_data(setup: str = "vector", task: str = "classification", n_samples: int = _N_SAMPLES,
                     seed: int = 0, leave_out: Iterable[str] = ()) -> MultimodalDataset:
    """The small data set of a setup (``conformance_spec`` + ``data_for_spec``)."""
    return data_for_spec(conformance_spec(setup, task, leave_out), n_samples, seed)


def easy_task(kind: str = "vector", seed: int = 0) -> MultimodalDataset:
    """The easy task of the slow check: M = 3 equally informative, low-noise modalities,
    3 balanced classes, 360 samples; one modality alone predicts the class well."""
    from ..data.datasets.synthetic import make_synthetic

    return make_synthetic(n_samples=360, n_classes=3, n_modalities=3, dims=8, informativeness=1.0,
                          noise=0.5, kind=kind, seed=seed)


def _setups(subj: Subject) -> tuple[list[tuple[str, MultimodalDataset]], dict[str, str]]:
    """(setup label, data) pairs for a subject, and the declared unsupported kinds it skips."""
    if subj.spec is not None:
        return [("own spec", data_for_spec(subj.spec))], {}
    unsupported = dict(subj.info.unsupported_kinds)
    skipped = {f"kind {k}": f"skipped: {reason}" for k, reason in sorted(unsupported.items())}
    regression_ok = "regression" not in unsupported
    out = []
    if "vector" not in unsupported and "classification" not in unsupported:
        out.append(("vector", conformance_data("vector")))
    if "sequence" not in unsupported:
        task = "regression" if regression_ok else "classification"
        out.append((f"sequence/{task}", conformance_data("sequence", task)))
    elif regression_ok:
        out.append(("vector/regression", conformance_data("vector", "regression")))
    leave_out = [k for k in ("image", "text") if k in unsupported]
    if len(leave_out) < 2 and "vector" not in unsupported:
        out.append(("+".join(["vector", *[k for k in ("image", "text") if k not in leave_out]]),
                    conformance_data("image+text", leave_out=leave_out)))
    return out, skipped


# ------------------------------------------------------------------ cases


def _split(data: MultimodalDataset, name: str) -> MultimodalDataset:
    return data.split(name) if name in data.splits else data


def _cyclic_mask(n: int, n_modalities: int, subsets: list[tuple[int, ...]]) -> Tensor:
    """(n, M) mask whose row i holds exactly ``subsets[i % len(subsets)]``."""
    mask = torch.zeros(n, n_modalities, dtype=torch.bool)
    for i in range(n):
        mask[i, list(subsets[i % len(subsets)])] = True
    return mask


class Case:
    """One subject on one data set, built once and shared by every check.

    ``fresh``: a built, unprepared method (seed 0; never changed — checks copy it).
    ``method``: a built method prepared (if it declares PREPARES) on the masked,
    standardised training split; checks may run forward/backward on it (gradients are
    cleared) but copy it before anything that changes its state.
    ``full``: every row, all modalities present, standardised; ``mixed``: the same rows,
    row i restricted to the i-th of the 2^M - 1 subsets (cyclically); ``raw_mixed``:
    ``mixed`` before standardisation (what a ``FittedModel`` takes); ``train`` / ``val``:
    the standardised (masked) training and test splits.
    ``fits``: two short fits with the same seed under different caller RNG states.
    """

    def __init__(self, subj: Subject, data: MultimodalDataset, setup: str) -> None:
        self.subject, self.data, self.setup = subj, data, setup
        self.spec = data.spec

    def where(self, check: str) -> str:
        return f"method {self.subject.label!r} on {self.setup} data, check {check}"

    def has(self, capability: Capability) -> bool:
        return self.fresh.has(capability)

    @functools.cached_property
    def fresh(self) -> MissingModalityModel:
        return self.subject.build(self.spec, 0)

    @functools.cached_property
    def train_data(self) -> MultimodalDataset:
        """The training split, with an entry-rate mask unless the method needs complete training data."""
        train = _split(self.data, "train")
        if self.fresh.has(Capability.NEEDS_COMPLETE_TRAIN):
            return train
        mask = entry_rate_mask(len(train), self.spec.n_modalities, _PREPARE_RATE, np.random.default_rng(0))
        return train.with_mask(torch.as_tensor(mask) & train.mask)

    @functools.cached_property
    def standardizer(self) -> Standardizer:
        # Statistics from the complete training rows, prepare on the masked ones: the
        # method's fill values then differ from the standardiser's zero mean, so a
        # fill that reads masked slots shows up.
        return Standardizer(self.spec, self.fresh.preprocessing).fit(_split(self.data, "train").as_batch())

    def standardise(self, batch: Batch) -> Batch:
        with torch.no_grad():
            return self.standardizer(batch)

    @functools.cached_property
    def train(self) -> Batch:
        """As the training loop hands it over: standardised, each row carrying its index."""
        batch = self.standardise(self.train_data.as_batch())
        return batch.with_index(torch.arange(batch.size))

    @functools.cached_property
    def full_train(self) -> Batch:
        """The training rows with every modality present (what a training step sees of a complete
        row), carrying their index: for the checks that run training rows in training mode."""
        return self.standardise(_split(self.data, "train").as_batch()).with_index(self.train.index)

    @functools.cached_property
    def val(self) -> Batch:
        return self.standardise(_split(self.data, "test").as_batch())

    @functools.cached_property
    def full(self) -> Batch:
        return self.standardise(self.data.as_batch())

    @functools.cached_property
    def raw_mixed(self) -> Batch:
        m = self.spec.n_modalities
        return self.data.as_batch().with_mask(_cyclic_mask(len(self.data), m, all_subsets(m)))

    @functools.cached_property
    def mixed(self) -> Batch:
        return self.standardise(self.raw_mixed)

    def prepared(self, seed: int = 0) -> MissingModalityModel:
        """A new copy of ``fresh`` (or a build with ``seed``), prepared as the training loop would."""
        method = copy.deepcopy(self.fresh) if seed == 0 else self.subject.build(self.spec, seed)
        if method.has(Capability.PREPARES):
            with seeded(0):
                method.prepare(self.train, self.standardizer)
        return method

    @functools.cached_property
    def method(self) -> MissingModalityModel:
        return self.prepared()

    @functools.cached_property
    def subset_runs(self) -> list[tuple[str, Batch, bool, Output, dict[str, Tensor]]]:
        """(label, batch, train mode, output, loss terms) for every subset case (``_subset_cases``)
        in train and eval mode, from one forward + loss + backward each on ``method`` (finite
        gradients checked): shared by the finite-output and finite-loss checks."""
        runs = []
        for label, batch in _subset_cases(self):
            for train in (False, True):
                what = f"subset {label} ({'train' if train else 'eval'} mode)"
                output, terms, _ = _gradients(self.method, batch, self.where("all_subsets_finite"), what,
                                              train=train, spec=self.spec,
                                              loss_where=self.where("loss_finite_all_subsets"))
                runs.append((label, batch, train, output, terms))
        return runs

    @functools.cached_property
    def fits(self) -> tuple:
        """Two (FitResult, eval logits on ``raw_mixed``) pairs: same seed, different caller RNG states."""
        runs = []
        for caller_seed in (1, 2):
            with seeded(caller_seed), warnings.catch_warnings():
                # One epoch on 24 rows: not improving on the start is expected, not news.
                warnings.simplefilter("ignore", FitNeverImproved)
                method = self.subject.build(self.spec, 3)
                fit = Trainer(_SHORT_FIT).fit(method, self.train_data, _split(self.data, "test"), seed=3)
                runs.append((fit, fit.model.predict_logits(self.raw_mixed)))
        return tuple(runs)


def cases(target: str | type | MissingModalityModel, params: Mapping[str, object] | None = None
          ) -> tuple[list[Case], dict[str, str]]:
    """The ``Case`` of every setup ``target`` is checked on, and the declared unsupported kinds."""
    subj = subject(target, params)
    setups, skipped = _setups(subj)
    return [Case(subj, data, label) for label, data in setups], skipped


# ------------------------------------------------------------- helpers


def _fail(where: str, message: str) -> None:
    raise AssertionError(f"{where}: {message}")


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


def _subset_cases(case: Case) -> list[tuple[str, Batch]]:
    """(label, batch) for every one of the 2^M - 1 subsets of the full batch, plus the mixed batch."""
    names = case.spec.modality_names
    out = [("+".join(names[j] for j in sub), _only(case.full, sub)) for sub in all_subsets(len(names))]
    out.append(("a batch mixing all subsets", case.mixed))
    return out


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
               train: bool = True, seed: int = 0, spec: DatasetSpec | None = None,
               loss_where: str | None = None, backward: bool | None = None
               ) -> tuple[Output, dict[str, Tensor], dict[str, Tensor | None]]:
    """(output, loss terms, name -> grad of every parameter that requires grad), grads checked finite.
    With ``spec``, the output is checked first (``_check_output``, failing as ``where``); the
    loss terms and gradients then fail as ``loss_where`` (default ``where``). ``backward``
    (default: in train mode only — training is where gradients are taken; an eval-mode
    backward repeats it without dropout at the cost of a second backward pass): False gives
    no gradients (every grad None)."""
    backward = train if backward is None else backward
    method.zero_grad(set_to_none=True)
    output = _forward(method, batch, train=train, seed=seed)
    if spec is not None:
        _check_output(output, batch, spec, where, what)
    where = loss_where or where
    terms = _loss_terms(method, batch, output, where, what)
    total = sum(terms.values())
    if backward and total.requires_grad:
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


def _state(method: nn.Module) -> dict[str, Tensor]:
    """Tensors of ``state_dict`` (a module's extra state, e.g. a log, is compared by value)."""
    return {k: v.detach().clone() if isinstance(v, Tensor) else copy.deepcopy(v)
            for k, v in method.state_dict().items()}


def _changed(before: Mapping[str, Tensor], after: Mapping[str, Tensor]) -> list[str]:
    """Names of state entries that differ (shape, value or presence); NaN equals NaN."""
    out = sorted(set(before) ^ set(after))
    for key in set(before) & set(after):
        a, b = before[key], after[key]
        if not isinstance(a, Tensor) or not isinstance(b, Tensor):
            if a != b:
                out.append(key)
            continue
        if a.shape != b.shape or not torch.equal(torch.nan_to_num(a.float(), nan=1.2345e-7),
                                                 torch.nan_to_num(b.float(), nan=1.2345e-7)):
            out.append(key)
    return out


def _poison(batch: Batch, value: float, spec: DatasetSpec) -> Batch:
    """``batch`` with ``value`` written into every masked-out slot (token ids: the largest id)."""
    inputs = {}
    for j, m in enumerate(spec.modalities):
        x = batch.inputs[m.name]
        keep = batch.mask[:, j].reshape(-1, *([1] * (x.dim() - 1)))
        if x.dtype.is_floating_point:
            x = torch.where(keep, x, torch.tensor(value, dtype=x.dtype))
        else:
            x = torch.where(keep, x, torch.tensor((m.vocab_size or _TEXT_VOCAB) - 1, dtype=x.dtype))
        inputs[m.name] = x
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


def _serialised(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` through ``torch.save`` / ``torch.load(weights_only=True)`` in memory."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ---------------------------------------------------------------- checks


@_check()
def check_builds_from_spec(case: Case) -> None:
    """The method builds from a ``DatasetSpec`` alone, on CPU, with metadata and stages, and
    takes its output width and input shapes from the spec (a differently shaped spec with
    more classes builds too and gives logits of its own width; not for an instance, whose
    parameters belong to its own spec)."""
    where = case.where("builds_from_spec")
    cls = case.subject.cls
    if not isinstance(getattr(cls, "info", None), MethodInfo):
        _fail(where, "class attribute `info` is not a MethodInfo")
    try:
        check_deviations(cls)
    except ValueError as err:
        _fail(where, str(err))
    method = case.fresh
    if type(method) is not cls:
        _fail(where, f"building returned {type(method).__name__}, expected {cls.__name__}")
    if method.__dict__.get("spec") != case.spec:
        _fail(where, "the built method does not keep its spec in `.spec` (was MissingModalityModel.__init__ called?)")
    stages = method.stages()
    if not isinstance(stages, tuple) or not stages or not all(isinstance(s, str) for s in stages):
        _fail(where, f"stages() must be a non-empty tuple of str, got {stages!r}")
    off_cpu = [n for n, t in [*method.named_parameters(), *method.named_buffers()] if t.device.type != "cpu"]
    if off_cpu:
        _fail(where, f"tensors built off the CPU (devices belong to the caller): {off_cpu[:5]}")
    if case.subject.spec is not None:
        return

    # A differently shaped spec of the same kinds: shapes and width must follow it.
    def grown(m: ModalitySpec) -> ModalitySpec:
        if m.kind == "text":
            return ModalitySpec(f"r{m.name}", "text", (m.shape[0] + 1,), vocab_size=m.vocab_size, pad_id=m.pad_id)
        shape = (m.shape[0], *(s + 1 for s in m.shape[1:])) if m.kind == "image" else tuple(s + 1 for s in m.shape)
        return ModalitySpec(f"r{m.name}", m.kind, shape)

    task = case.spec.task
    other = DatasetSpec(
        name="conformance-reshaped", modalities=tuple(grown(m) for m in case.spec.modalities),
        task=TaskSpec("classification", n_classes=task.output_dim + 2) if task.kind == "classification"
        else TaskSpec("regression", n_outputs=task.output_dim + 1),
    )
    reshaped = case.subject.build(other, 0)
    data = data_for_spec(other, 8)
    batch = data.as_batch()
    if reshaped.has(Capability.PREPARES):
        standardizer = Standardizer(other, reshaped.preprocessing).fit(batch)
        with seeded(0), torch.no_grad():
            reshaped.prepare(standardizer(batch), standardizer)
    _check_output(_forward(reshaped, batch), batch, other, where, "built from a reshaped spec")


@_check()
def check_all_subsets_finite(case: Case) -> None:
    """Finite logits of shape (B, output_dim) for every one of the 2^M - 1 modality
    subsets, in eval and train mode, and for a batch mixing all subsets."""
    where = case.where("all_subsets_finite")
    for label, batch, train, output, _ in case.subset_runs:
        _check_output(output, batch, case.spec, where, f"subset {label} ({'train' if train else 'eval'} mode)")


@_check()
def check_empty_sample_finite(case: Case) -> None:
    """Policy for a sample with no modality at all: the data layer rejects such samples
    with a ``ValueError``, but a method that meets one anyway (a hand-built batch) must
    still give finite logits for it — never NaN or -inf — and leave its batch-mates'
    outputs unchanged."""
    where = case.where("empty_sample_finite")
    mask = case.mixed.mask.clone()
    mask[0] = False
    batch = case.full.with_mask(mask)
    with torch.no_grad():
        out = _forward(case.method, batch)
        reference = _forward(case.method, case.mixed)
    _check_output(out, batch, case.spec, where, "a batch whose first sample has no modality")
    _assert_close(out.logits[1:], reference.logits[1:], where, "batch-mates of an empty sample", exact=False)


@_check()
def check_modality_missing_for_whole_batch(case: Case) -> None:
    """A batch in which modality m is missing for every sample (the others mixed) gives
    finite logits and loss terms (and, in train mode, finite gradients), for every m (an empty mean over
    the batch or a batch statistic are the usual NaN sources)."""
    where = case.where("modality_missing_for_whole_batch")
    if case.spec.n_modalities == 1:
        return  # with one modality, a batch missing it has nothing left to predict from
    for j, mod in enumerate(case.spec.modality_names):
        mask = case.mixed.mask.clone()
        mask[:, j] = False
        empty = ~mask.any(dim=1)  # rows that held only modality j get every other one
        mask[empty] = True
        mask[empty, j] = False
        batch = case.full.with_mask(mask)
        for train in (False, True):
            what = f"{mod!r} missing in the whole batch ({'train' if train else 'eval'} mode)"
            out, _, _ = _gradients(case.method, batch, where, what, train=train)
            _check_output(out, batch, case.spec, where, what)


@_check()
def check_poisoned_masked_slots_ignored(case: Case) -> None:
    """Masked-out slots are never read: writing NaN or +-1e6 there (token ids: the largest
    id; the batch given to the method directly, bypassing validation) leaves logits and
    loss terms bit-identical to the clean batch in eval and train mode, and parameter
    gradients in train mode."""
    where = case.where("poisoned_masked_slots_ignored")
    method, clean = case.method, case.mixed
    for train in (False, True):
        mode = "train" if train else "eval"
        clean_out, clean_terms, clean_grads = _gradients(method, clean, where, f"clean batch ({mode})", train=train)
        for value in _POISONS:
            what = f"masked-out slots poisoned with {value} ({mode} mode)"
            poisoned = _poison(clean, value, case.spec)
            method.zero_grad(set_to_none=True)
            out = _forward(method, poisoned, train=train)
            _assert_close(out.logits.detach(), clean_out.logits.detach(), where, f"{what}: logits changed", exact=True)
            terms = method.loss(poisoned, out)
            if list(terms) != list(clean_terms):
                _fail(where, f"{what}: loss terms {list(terms)} != {list(clean_terms)}")
            for key, term in terms.items():
                _assert_close(term.detach(), clean_terms[key], where, f"{what}: loss term {key!r} changed", exact=True)
            total = sum(terms.values())
            if not train:  # gradients are compared in train mode (see _gradients)
                continue
            if total.requires_grad:
                total.backward()
            for pname, p in method.named_parameters():
                if not p.requires_grad:
                    continue
                expected = clean_grads[pname]
                if (p.grad is None) != (expected is None):
                    _fail(where, f"{what}: gradient of {pname!r} is None in one batch only")
                if expected is not None:
                    _assert_close(p.grad, expected, where, f"{what}: gradient of {pname!r} changed", exact=True)
            method.zero_grad(set_to_none=True)


@_check()
def check_batch_composition_invariance(case: Case) -> None:
    """In eval mode a sample's logits do not depend on its batch-mates or its position:
    the same as in the reference batch when predicted alone, in a shuffled batch, in half
    of the batch, and next to the (different) training samples."""
    where = case.where("batch_composition_invariance")
    method, batch = case.method, case.mixed
    n = batch.size
    with torch.no_grad():
        ref = _forward(method, batch).logits
        for i in range(min(n, 2 ** case.spec.n_modalities - 1)):  # one sample per subset
            alone = _forward(method, batch.select(torch.tensor([i]))).logits
            _assert_close(alone, ref[i:i + 1], where, f"sample {i} predicted alone differs from in the batch",
                          exact=False)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
        _assert_close(_forward(method, batch.select(perm)).logits, ref[perm], where,
                      "a shuffled batch gives different per-sample logits", exact=False)
        half = n // 2
        for part in (torch.arange(half), torch.arange(half, n)):
            _assert_close(_forward(method, batch.select(part)).logits, ref[part], where,
                          f"samples {int(part[0])}..{int(part[-1])} in a half batch differ from the full batch",
                          exact=False)
        mixed_with_train = _concat(batch.select(torch.arange(half)), case.train)
        _assert_close(_forward(method, mixed_with_train).logits[:half], ref[:half], where,
                      "samples next to different batch-mates (training rows) give different logits", exact=False)


@_check()
def check_seed_determinism(case: Case) -> None:
    """The same seed gives identical parameters at build time, and identical parameters and
    eval predictions after a short fit — whatever state the caller's global RNG is in."""
    where = case.where("seed_determinism")
    with seeded(11):  # another caller RNG state than the first build's
        again = case.subject.build(case.spec, 0)
    _assert_same_state(case.fresh.state_dict(), again.state_dict(), where, "two builds with the same seed")
    (fit_a, logits_a), (fit_b, logits_b) = case.fits
    _assert_same_state(fit_a.model.state_dict(), fit_b.model.state_dict(), where, "two fits with the same seed")
    _assert_close(logits_b, logits_a, where, "two fits with the same seed predict differently", exact=True)


@_check()
def check_gradients_reach_parameters(case: Case) -> None:
    """On a full-modality batch of the training rows (after ``prepare``, carrying their row
    index as the loop's batches do), the summed loss of each training stage
    gives every parameter with ``requires_grad`` a non-None, finite gradient, non-zero in at
    least one stage. Frozen parameters (``requires_grad=False``) are exempt."""
    where = case.where("gradients_reach_parameters")
    method = copy.deepcopy(case.method)  # set_stage changes state the other checks share
    reached: set[str] = set()
    trainable: set[str] = set()
    for stage in method.stages():
        method.set_stage(stage)
        _, _, grads = _gradients(method, case.full_train, where, f"stage {stage!r}", train=True)
        trainable.update(grads)
        reached.update(n for n, g in grads.items() if g is not None and bool(g.abs().sum() > 0))
    missed = sorted(trainable - reached)
    if missed:
        _fail(where, f"no (or an all-zero) gradient on a full-modality batch for {len(missed)} trainable "
                     f"parameter(s): {', '.join(missed[:6])}{' ...' if len(missed) > 6 else ''} "
                     "(freeze them with requires_grad=False or declare a deviation)")


@_check()
def check_state_dict_round_trip(case: Case) -> None:
    """A fresh instance (other seed, not prepared) loaded with ``state_dict`` — passed through
    ``torch.save``/``torch.load(weights_only=True)`` — predicts identically; so does a fresh
    ``FittedModel`` (standardiser + method) loaded from a trained one, on raw data."""
    where = case.where("state_dict_round_trip")
    with torch.no_grad():
        ref = _forward(case.method, case.mixed).logits
    fresh = case.subject.build(case.spec, 1)
    try:
        fresh.load_state_dict(_serialised(case.method.state_dict()))
    except RuntimeError as err:
        _fail(where, f"load_state_dict into a fresh instance failed: {err}")
    with torch.no_grad():
        _assert_close(_forward(fresh, case.mixed).logits, ref, where,
                      "a fresh instance loaded from state_dict predicts differently "
                      "(is data-dependent state kept outside buffers?)", exact=True)

    fit, expected = case.fits[0]
    rebuilt = case.subject.build(case.spec, 1)
    restored = FittedModel(Standardizer(case.spec, rebuilt.preprocessing), rebuilt)
    try:
        restored.load_state_dict(_serialised(fit.model.state_dict()))
    except RuntimeError as err:
        _fail(where, f"load_state_dict into a fresh FittedModel failed: {err}")
    _assert_close(restored.predict_logits(case.raw_mixed), expected, where,
                  "a FittedModel restored from state_dict predicts differently on raw data", exact=True)


@_check()
def check_inputs_not_mutated(case: Case) -> None:
    """``prepare`` leaves its training batch unchanged, and forward + loss (+ backward), in
    train and eval mode, leave the inputs, mask and target tensors (and the inputs dict)
    unchanged."""
    where = case.where("inputs_not_mutated")
    method = copy.deepcopy(case.fresh)
    snap = _snapshot(case.train)
    if method.has(Capability.PREPARES):
        with seeded(0):
            method.prepare(case.train, case.standardizer)
    _assert_unchanged(case.train, snap, where, "prepare()")
    for batch, label in ((case.mixed, "mixed-subset batch"), (case.full, "full batch")):
        for train in (True, False):
            snap = _snapshot(batch)
            _gradients(method, batch, where, label, train=train)
            _assert_unchanged(batch, snap, where, f"forward + loss on a {label} ({'train' if train else 'eval'} mode)")


@_check()
def check_loss_finite_all_subsets(case: Case) -> None:
    """``loss`` returns a non-empty dict of finite scalar terms for every modality subset and
    a mixed batch, in train and eval mode, with finite gradients in train mode."""
    case.subset_runs  # noqa: B018 - the runs check the loss terms and their gradients as they are made


def _is_factorised_structure(method: MissingModalityModel) -> bool:
    return isinstance(method, FactorisedFusion) and type(method).forward is FactorisedFusion.forward


@_check()
def check_declared_capabilities(case: Case) -> None:
    """Every ``Capability`` the method declares (``method.capabilities``) is implemented, and
    every one it implements is declared:

    - PREPARES / AFTER_STEP / CALIBRATES: declared => ``prepare`` / ``after_step`` /
      ``calibrate`` is implemented; not declared => calling it (on the training split; after
      the parameters moved; on the held-out split) leaves the method's state unchanged;
    - PREPARES_BY_BATCH / CALIBRATES_BY_BATCH: declared => ``prepare_split`` / ``calibrate_split``
      over passes of 3 rows leave the state the hook leaves on the whole split (float tolerance);
    - MULTI_STAGE: ``stages()`` has more than one stage <=> declared;
    - RECOVERS: declared => ``recovery_space`` is "input" or "embedding", and ``recover`` /
      ``recovery_target`` give every modality a finite (B, *shape) or (B, D) tensor, and
      ``plain_fill = True`` still gives finite logits; not declared => ``recover`` raises TypeError;
    - FACTORISED: declared => forward equals ``fuse_embeddings(encode_modalities(b), mask)``
      and ``fuse_subsets`` equals the fusion under each mask; an undeclared
      ``FactorisedFusion`` whose forward is the mixin's fails;
    - STREAMING: declared => ``stream_init`` / ``stream_step`` give finite (B, C) logits on
      a sequence batch; not declared => the method has neither, or ``stream_init`` raises
      TypeError (a wrapper whose member cannot stream);
    - NEEDS_COMPLETE_TRAIN: not declared => the short fits ran on incomplete training data.
    """
    where = case.where("declared_capabilities")
    method = case.fresh
    caps = method.capabilities
    if not isinstance(caps, frozenset) or not all(isinstance(c, Capability) for c in caps):
        _fail(where, f"capabilities must be a frozenset of Capability, got {caps!r}")

    def agree(cap: Capability, behaves: bool, how: str) -> None:
        if behaves and cap not in caps:
            _fail(where, f"{how}, but the method does not declare Capability.{cap.name}")
        if cap in caps and not behaves:
            _fail(where, f"declares Capability.{cap.name}, but {how.replace('does', 'does not', 1)}")

    def hook_declared(cap: Capability, hook: str, changes: bool) -> None:
        """Declared => the hook is implemented (overridden); not declared => calling it changes nothing
        (a hook's effect may depend on the data, so a declared one need not change state here)."""
        overridden = any(getattr(type(method), name) is not getattr(MissingModalityModel, name)
                         for name in (hook, f"{hook}_split") if hasattr(MissingModalityModel, name))
        if cap in caps and not overridden:
            _fail(where, f"declares Capability.{cap.name}, but does not implement {hook}()")
        if changes and cap not in caps:
            _fail(where, f"{hook}() changes the method's state, but the method does not declare Capability.{cap.name}")

    # PREPARES: on a copy of the unprepared build.
    copy_ = copy.deepcopy(method)
    before = _state(copy_)
    with seeded(0):
        copy_.prepare(case.train, case.standardizer)
    hook_declared(Capability.PREPARES, "prepare", bool(_changed(before, _state(copy_))))

    agree(Capability.MULTI_STAGE, len(method.stages()) > 1, "stages() does list more than one stage")

    # AFTER_STEP: move the trainable parameters as an optimiser step would, then call it.
    copy_ = copy.deepcopy(case.method)
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in copy_.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    before = _state(copy_)
    copy_.after_step()
    hook_declared(Capability.AFTER_STEP, "after_step", bool(_changed(before, _state(copy_))))

    # CALIBRATES: on the held-out split, in eval mode without gradients (as the loop does).
    copy_ = copy.deepcopy(case.method)
    before = _state(copy_)
    copy_.eval()
    with torch.no_grad(), seeded(0):
        copy_.calibrate(case.val)
    hook_declared(Capability.CALIBRATES, "calibrate", bool(_changed(before, _state(copy_))))

    _check_by_batch(case, where, caps)
    _check_recovery(case, where, caps)
    _check_factorised(case, where, caps)
    _check_streaming(case, where, caps)


def _check_by_batch(case: Case, where: str, caps: frozenset) -> None:
    """PREPARES_BY_BATCH / CALIBRATES_BY_BATCH: ``prepare_split`` / ``calibrate_split`` over passes of
    3 rows leave the state ``prepare`` / ``calibrate`` leave on the whole split (within float tolerance)."""
    for cap, hook in ((Capability.PREPARES_BY_BATCH, "prepare"), (Capability.CALIBRATES_BY_BATCH, "calibrate")):
        if cap not in caps:
            continue
        whole, batched = (copy.deepcopy(case.fresh if hook == "prepare" else case.method) for _ in range(2))
        if hook == "prepare":
            with seeded(0):
                whole.prepare(case.train, case.standardizer)
            with seeded(0), torch.no_grad():
                batched.prepare_split(SplitPasses.of_batch(case.train, batch_rows=3), case.standardizer)
        else:
            whole.eval()
            batched.eval()
            with torch.no_grad(), seeded(0):
                whole.calibrate(case.val)
                batched.calibrate_split(SplitPasses.of_batch(case.val, batch_rows=3))
        differ = _differing(_state(whole), _state(batched))
        if differ:
            _fail(where, f"declares Capability.{cap.name}, but {hook}_split() over batches of 3 rows leaves other "
                         f"state than {hook}() on the whole split: {', '.join(differ[:3])}")


def _differing(a, b, where: str = "", rtol: float = 1e-4, atol: float = 1e-5) -> list[str]:
    """Where nested state ``a`` and ``b`` differ: tensors and floats beyond tolerance, anything else unequal."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            return [where or "keys"]
        return [d for k in a for d in _differing(a[k], b[k], f"{where}.{k}" if where else str(k), rtol, atol)]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [where]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differing(x, y, f"{where}[{i}]", rtol, atol)]
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return [where]
        close = torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol, equal_nan=True) \
            if a.is_floating_point() else torch.equal(a, b)
        return [] if close else [where]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=rtol, abs_tol=atol) or (a != a and b != b) else [where]
    return [] if a == b else [where]


def _check_recovery(case: Case, where: str, caps: frozenset) -> None:
    method = case.method
    method.eval()
    if Capability.RECOVERS not in caps:
        try:
            with torch.no_grad():
                method.recover(case.mixed)
        except TypeError:
            return
        _fail(where, "recover() returns a recovery, but the method does not declare Capability.RECOVERS")
    space = method.recovery_space
    if space not in ("input", "embedding"):
        _fail(where, f"declares Capability.RECOVERS but its recovery_space is {space!r}, not 'input' or 'embedding'")
    with torch.no_grad():
        for label, batch, fn in (("recover", case.mixed, method.recover),
                                 ("recovery_target", case.full, method.recovery_target)):
            try:
                out = fn(batch)
            except TypeError as err:
                _fail(where, f"declares Capability.RECOVERS, but {label}() raises TypeError: {err}")
            if not isinstance(out, Mapping) or set(out) != set(case.spec.modality_names):
                _fail(where, f"{label}() must return a dict over every modality "
                             f"{case.spec.modality_names}, got {list(out) if isinstance(out, Mapping) else out!r}")
            for m in case.spec.modalities:
                value = out[m.name]
                expected_ok = (tuple(value.shape) == (batch.size, *m.shape) if space == "input"
                               else value.dim() == 2 and value.shape[0] == batch.size)
                if not expected_ok:
                    _fail(where, f"{label}()[{m.name!r}] has shape {tuple(value.shape)}, expected "
                                 f"{(batch.size, *m.shape) if space == 'input' else (batch.size, 'D')} "
                                 f"({space} space)")
                if value.dtype.is_floating_point and not torch.isfinite(value).all():
                    _fail(where, f"{label}()[{m.name!r}] has NaN or inf values")
        previous = method.plain_fill
        try:
            method.plain_fill = True
            _check_output(_forward(method, case.mixed), case.mixed, case.spec, where, "forward with plain_fill = True")
        finally:
            method.plain_fill = previous


def _check_factorised(case: Case, where: str, caps: frozenset) -> None:
    method = case.method
    if Capability.FACTORISED not in caps:
        if _is_factorised_structure(method):
            _fail(where, "forward is FactorisedFusion's encode-then-fuse, but the method does not declare "
                         "Capability.FACTORISED")
        return
    if not isinstance(method, FactorisedFusion):
        _fail(where, "declares Capability.FACTORISED but does not implement FactorisedFusion "
                     "(encode_modalities / fuse_embeddings / fuse_subsets)")
    batch = case.mixed
    with torch.no_grad():
        ref = _forward(method, batch).logits
        z = method.encode_modalities(batch)
        _assert_close(method.fuse_embeddings(z, batch.mask).logits, ref, where,
                      "declares Capability.FACTORISED, but fuse_embeddings(encode_modalities(b), mask) differs from "
                      "forward(b)", exact=False)
        full_z = method.encode_modalities(case.full)
        masks = torch.stack([_only(case.full, sub).mask for sub in all_subsets(case.spec.n_modalities)])
        fused = method.fuse_subsets(full_z, masks)
        for s in range(len(masks)):
            _assert_close(fused[s], method.fuse_embeddings(full_z, masks[s]).logits, where,
                          f"fuse_subsets differs from fuse_embeddings under subset mask {s}", exact=False)


def _check_streaming(case: Case, where: str, caps: frozenset) -> None:
    method = case.method
    has_api = hasattr(method, "stream_init") and hasattr(method, "stream_step")  # probing is this check's job
    if Capability.STREAMING not in caps:
        if has_api:  # a wrapper may carry the API for members that stream: then it must refuse
            try:
                with torch.no_grad():
                    method.stream_init(case.full.size, case.full)
            except TypeError:
                return
            _fail(where, "stream_init() starts a stream, but the method does not declare Capability.STREAMING")
        return
    if not has_api:
        _fail(where, "declares Capability.STREAMING but has no stream_init / stream_step")
    sequences = [m for m in case.spec.modalities if m.kind == "sequence"]
    if not sequences:
        return
    batch = case.full
    static = batch if len(sequences) < case.spec.n_modalities else None
    method.eval()
    with torch.no_grad():
        state = method.stream_init(batch.size, static)
        frames = {m.name: batch.inputs[m.name][:, 0] for m in sequences}
        state, logits = method.stream_step(state, frames, torch.ones_like(batch.mask))
    if tuple(logits.shape) != (batch.size, case.spec.task.output_dim) or not torch.isfinite(logits).all():
        expected = (batch.size, case.spec.task.output_dim)
        _fail(where, f"stream_step gave logits of shape {tuple(logits.shape)} (finite: "
                     f"{bool(torch.isfinite(logits).all())}), expected finite {expected}")


class _UserEncoder(nn.Module):
    """A user-defined encoder of any kind: flatten (token ids embedded), one linear layer, width 7
    (deliberately unlike the method's width, so the method must project)."""

    def __init__(self, spec: ModalitySpec) -> None:
        super().__init__()
        self.kind = spec.kind
        if spec.kind == "text":
            self.embed = nn.Embedding(spec.vocab_size or 1000, 5)
            self.linear = nn.Linear(5, 7)
        else:
            self.linear = nn.Linear(spec.size, 7)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "text":
            return self.linear(self.embed(x).mean(dim=1))
        return self.linear(x.flatten(1))


@_check()
def check_accepts_user_encoders(case: Case) -> None:
    """Every modality takes a user encoder — an instance for the first modality of each kind,
    the class for the others — unless ``info.fixed_encoders`` declares why its kind cannot:
    the method builds, the user modules are its submodules (their parameters train: a finite,
    non-zero gradient on a full batch), and outputs on the mixed batch are finite. Not for an
    instance (its own encoders are what the other checks ran on)."""
    where = case.where("accepts_user_encoders")
    if case.subject.spec is not None:
        return
    fixed = case.subject.info.fixed_encoders
    encoders: dict[str, object] = {}
    instances: list[nn.Module] = []
    seen_kinds: set[str] = set()
    for m in case.spec.modalities:
        if fixed.get(m.kind) or fixed.get("*"):
            continue
        if m.kind in seen_kinds:
            encoders[m.name] = _UserEncoder
        else:
            with seeded(5):
                encoders[m.name] = _UserEncoder(m)
            instances.append(encoders[m.name])
            seen_kinds.add(m.kind)
    if not encoders:
        return
    subj = Subject(case.subject.cls, {**case.subject.params, "encoders": encoders}, case.subject.label)
    try:
        method = subj.build(case.spec, 0)
    except Exception as err:  # noqa: BLE001 - the message must say which modality was refused
        _fail(where, f"building with user encoders for {sorted(encoders)} failed: {type(err).__name__}: {err}")
    # Instances are deep-copied by Subject.build: find the copies by type.
    found = [mod for mod in method.modules() if isinstance(mod, _UserEncoder)]
    if len(found) < len(encoders):
        _fail(where, f"{len(encoders)} user encoders given, {len(found)} found among the method's modules")
    if method.has(Capability.PREPARES):
        with seeded(0):
            method.prepare(case.train, case.standardizer)
    _check_output(_forward(method, case.mixed), case.mixed, case.spec, where, "forward with user encoders")
    _, _, grads = _gradients(method, case.full_train, where, "a full batch with user encoders", train=True)
    names = {id(p): n for n, p in method.named_parameters()}
    for mod in found:
        for p in mod.parameters():
            if not p.requires_grad:  # a frozen copy (e.g. an EMA teacher's)
                continue
            g = grads.get(names[id(p)])
            if g is None or not bool(g.abs().sum() > 0):
                # multi-stage methods may train an encoder in a later stage only
                if len(method.stages()) == 1:
                    _fail(where, f"user encoder parameter {names[id(p)]!r} gets no gradient on a full batch")


@_check(slow=True)
def check_beats_chance_under_missingness(case: Case) -> None:
    """(slow) Trained with ``Trainer`` on ``easy_task`` (vector or sequence, M = 3) under an
    entry-rate 0.5 mask at train, validation and test — complete training data for methods
    that need it — test accuracy beats chance by at least 0.25. Classification setups of a
    class only."""
    from ..data.splits import make_splits
    from ..missing import EntryRate, Scenario

    where = case.where("beats_chance_under_missingness")
    kinds = {m.kind for m in case.spec.modalities}
    if case.subject.spec is not None or case.spec.task.kind != "classification" or not kinds <= {"vector", "sequence"}:
        return
    task = easy_task(kinds.pop() if len(kinds) == 1 else "vector")
    train, val, test = make_splits(task, "fixed", seed=0)
    missing = EntryRate(0.5)
    complete = case.has(Capability.NEEDS_COMPLETE_TRAIN)
    scenario = Scenario.complete_train(missing) if complete else Scenario.same(missing)
    train_m, _ = scenario.apply(train, "train", 0)
    val_m, _ = scenario.apply(val, "val", 0)
    test_m, _ = scenario.apply(test, "test", 0)
    method = case.subject.build(task.spec, 0)
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


def check_deviations(target: str | type | MissingModalityModel) -> dict[str, str]:
    """The method's declared deviations (check name -> reason), validated: every name must
    be a known check and every reason a non-empty string, else ``ValueError``."""
    cls = target if isinstance(target, type) else subject(target).cls
    label = cls.__dict__.get("method_name") or cls.__qualname__
    deviations = dict(cls.info.deviations)
    unknown = sorted(set(deviations) - set(CHECKS))
    if unknown:
        raise ValueError(
            f"method {label!r} declares a deviation from unknown conformance check(s) "
            f"{', '.join(map(repr, unknown))}; known checks: {', '.join(CHECKS)}"
        )
    blank = sorted(k for k, v in deviations.items() if not isinstance(v, str) or not v.strip())
    if blank:
        raise ValueError(f"method {label!r}: deviation(s) {', '.join(map(repr, blank))} give no reason")
    unsupported = dict(cls.info.unsupported_kinds)
    blank = sorted(k for k, v in unsupported.items() if not isinstance(v, str) or not v.strip())
    if blank:
        raise ValueError(f"method {label!r}: unsupported kind(s) {', '.join(map(repr, blank))} give no reason")
    return deviations


def _check_name(check: str | Check) -> str:
    name = check if isinstance(check, str) else getattr(check, "__name__", "")
    name = name.removeprefix("check_")
    if name not in CHECKS:
        raise ValueError(f"unknown conformance check {check!r}; known: {', '.join(CHECKS)}")
    return name


def run_conformance(target: str | type | MissingModalityModel, checks: Iterable[str | Check] | None = None, *,
                    setups: Iterable[str] | None = None, params: Mapping[str, object] | None = None,
                    slow: bool = False) -> dict[str, str]:
    """Run conformance checks on a registered name, a ``MissingModalityModel`` subclass or an
    instance (checked on data of its own spec), without touching the registry.

    checks: names (``"poisoned_masked_slots_ignored"`` or ``"check_..."``) or check
            functions; ``None`` runs every fast check, plus the slow ones if ``slow``.
    setups: labels of the setups to run (as ``cases`` names them, e.g. ``"vector"``); None: all.
    params: keyword parameters for a name or a class.

    Returns check name -> ``"passed"`` or ``"skipped: <reason>"`` (a deviation declared in
    ``info.deviations``), plus ``"kind <k>"`` -> ``"skipped: <reason>"`` for every kind the
    method declares unsupported. The first failing check raises ``AssertionError``; a
    deviation naming an unknown check raises ``ValueError`` before anything runs.
    """
    all_cases, skipped = cases(target, params)
    deviations = check_deviations(all_cases[0].subject.cls if all_cases else target)
    if checks is None:
        names = [c for c in CHECKS if slow or c not in SLOW_CHECKS]
    else:
        names = [_check_name(c) for c in checks]
    if setups is not None:
        wanted = set(setups)
        known = {c.setup for c in all_cases}
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(f"unknown setup(s) {unknown}; this method's setups: {sorted(known)}")
        all_cases = [c for c in all_cases if c.setup in wanted]
    results: dict[str, str] = {}
    for case in all_cases:
        for check in names:
            if check in deviations:
                results[check] = f"skipped: {deviations[check]}"
                continue
            CHECKS[check](case)
            results[check] = "passed"
    results.update(skipped)
    return results
