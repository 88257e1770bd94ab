"""Streaming prediction: feed time steps as they arrive, with sensors dropping in and out.

``Streamer`` wraps a trained streaming method (one declaring ``Capability.STREAMING``:
``stream_init`` / ``stream_step``, e.g. ``streaming-gru``) together with the preprocessing it
was trained under, takes *raw* frames one step at a time and returns a
prediction and an uncertainty at every step, with constant work per step.

``stream_demo`` is what ``mlmm stream`` runs: train on a dataset's training
split, then stream its test split with sensors failing at given steps, and
report accuracy and uncertainty against time plus the per-step latency.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .data.batch import Batch
from .data.batches import DEFAULT_BATCH_ROWS, iter_batches
from .data.spec import DatasetSpec
from .data.timemask import observed_steps
from .methods.base import Capability
from .methods.representation_composition.streaming_gru import normalised_entropy
from .train.loop import FittedModel

__all__ = ["StepResult", "Streamer", "failure_time_mask", "parse_failures", "stream_demo", "stream_curves"]


@dataclass(frozen=True)
class StepResult:
    """One step of B streams: logits (B, C); probs (B, C); prediction (B,);
    uncertainty (B,) = predictive entropy / log C in [0, 1]; t = index of this step."""

    logits: Tensor
    probs: Tensor
    prediction: Tensor
    uncertainty: Tensor
    t: int


class Streamer:
    """Stateful streaming front-end of a ``FittedModel`` whose method can stream.

    ``reset(B)`` starts B streams; ``step(frames, observed)`` consumes one raw
    time step — frames: sequence modality -> (B, C) raw values (ignored where
    not observed, NaN allowed there), observed: (B, M) bool — and returns a
    ``StepResult``. The method's state is carried between calls, so the past is
    never recomputed; the result equals the full forward's prediction for the
    prefix fed so far.
    """

    def __init__(self, model: FittedModel) -> None:
        method = model.method
        if not method.has(Capability.STREAMING):
            name = method.method_name or type(method).__name__
            raise ValueError(f"method {name!r} cannot stream (it does not declare Capability.STREAMING); "
                             "use e.g. streaming-gru")
        self.model = model
        self.spec: DatasetSpec = model.spec
        self._state = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def reset(self, batch_size: int = 1, static: Batch | None = None) -> None:
        """Start ``batch_size`` fresh streams; ``static`` (raw) gives any non-sequence modalities."""
        self.model.eval()
        if static is not None:
            static = self.model.standardizer(static.to(self.device))
        self._state = self.model.method.stream_init(batch_size, static)

    @torch.no_grad()
    def step(self, frames: Mapping[str, Tensor], observed: Tensor) -> StepResult:
        if self._state is None:
            raise ValueError("call reset() before step()")
        observed = observed.to(self.device)
        std = {}
        for j, m in enumerate(self.spec.modalities):
            if m.kind != "sequence":
                continue
            if m.name not in frames:
                raise ValueError(f"no frame for sequence modality {m.name!r} (give zeros and observed=False)")
            x = torch.as_tensor(frames[m.name], dtype=torch.float32, device=self.device)
            keep = observed[:, j].unsqueeze(1)
            std[m.name] = torch.where(keep, self.model.standardizer.transform_values(m.name, x),
                                      torch.zeros((), device=self.device))
        t = self._state.t
        self._state, logits = self.model.method.stream_step(self._state, std, observed)
        probs = logits.softmax(dim=-1)
        return StepResult(logits, probs, probs.argmax(dim=-1), normalised_entropy(logits), t)


def parse_failures(items: Sequence[str], spec: DatasetSpec) -> dict[str, int]:
    """["gyroscope@50"] -> {"gyroscope": 50}: the sensor delivers steps t < 50 only.
    ValueError naming the item if the modality is not a sequence of ``spec`` or the step is outside [0, T]."""
    failures = {}
    kinds = {m.name: m for m in spec.modalities}
    for item in items:
        name, sep, step = item.partition("@")
        if not sep:
            raise ValueError(f"--fail: expected MODALITY@STEP, got {item!r}")
        if name not in kinds:
            raise ValueError(f"--fail {item!r}: unknown modality {name!r}; known: {', '.join(kinds)}")
        if kinds[name].kind != "sequence":
            raise ValueError(f"--fail {item!r}: modality {name!r} is a {kinds[name].kind}, not a sequence")
        try:
            t = int(step)
        except ValueError:
            raise ValueError(f"--fail {item!r}: step {step!r} is not an integer") from None
        if not 0 <= t <= kinds[name].shape[0]:
            raise ValueError(f"--fail {item!r}: step must be in [0, {kinds[name].shape[0]}]")
        failures[name] = t
    return failures


def failure_time_mask(spec: DatasetSpec, n: int, failures: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Sensor m observed at steps t < failures[m] in every one of ``n`` samples: name -> (n, T) bool."""
    out = {}
    for m in spec.modalities:
        if m.name in failures:
            steps = np.arange(m.shape[0]) < failures[m.name]
            out[m.name] = np.broadcast_to(steps, (n, m.shape[0])).copy()
    return out


@torch.no_grad()
def stream_curves(model: FittedModel, data, failures: Mapping[str, int] | None = None,
                  latency_samples: int = 5, batch_size: int = DEFAULT_BATCH_ROWS) -> dict:
    """Stream every sample of ``data`` (its own masks, plus ``failures``: modality -> step at
    which it dies) through a ``Streamer``, ``batch_size`` samples at a time as one batch of
    streams (``data``: in memory or streamed, e.g. a ``MemmapDataset``; only per-step counts are
    kept across batches).

    Returns accuracy[t], mean uncertainty[t] (normalised entropy), and the per-step latency
    of a single stream (B = 1, the first ``latency_samples`` samples x T steps; wall-clock median and
    p95 in ms, and the median CPU time of this process per step, which other processes
    competing for the CPU do not inflate).
    Accuracy counts every sample at every step, also before any sensor has spoken.
    """
    spec = model.spec
    streamer = Streamer(model)
    seq = [(j, m) for j, m in enumerate(spec.modalities) if m.kind == "sequence"]
    if not seq:
        raise ValueError(f"dataset {spec.name!r} has no sequence modality to stream")
    n_steps = seq[0][1].shape[0]
    correct, uncertainty_sum, n = np.zeros(n_steps, dtype=np.int64), np.zeros(n_steps), 0
    latencies, cpu = [], []
    for batch in iter_batches(data, batch_size):
        if batch.target is None:
            raise ValueError("stream_curves needs labelled data (the batch's target is None)")
        if failures:
            dead = failure_time_mask(spec, batch.size, failures)
            batch = batch.with_time_mask({k: torch.from_numpy(v) for k, v in dead.items()}, spec)
        observed = {j: observed_steps(batch.mask, batch.time_mask, j, m.name, n_steps) for j, m in seq}  # (B, T)

        def observed_at(t: int, rows=slice(None), batch: Batch = batch, observed=observed) -> Tensor:
            cols = [observed[j][rows, t] if j in observed else batch.mask[rows, j] for j in range(spec.n_modalities)]
            return torch.stack(cols, dim=1)

        static = batch if len(seq) < spec.n_modalities else None
        streamer.reset(batch.size, static)
        for t in range(n_steps):
            result = streamer.step({m.name: batch.inputs[m.name][:, t] for _, m in seq}, observed_at(t))
            correct[t] += int((result.prediction.cpu() == batch.target).sum())
            uncertainty_sum[t] += float(result.uncertainty.double().sum())
        n += batch.size
        for i in range(min(latency_samples - n + batch.size, batch.size)):  # the first samples of data
            row = slice(i, i + 1)
            streamer.reset(1, batch.select(torch.arange(i, i + 1)) if static is not None else None)
            for t in range(n_steps):
                frames = {m.name: batch.inputs[m.name][row, t] for _, m in seq}
                obs = observed_at(t, row)
                start, start_cpu = time.perf_counter(), time.process_time()
                streamer.step(frames, obs)
                latencies.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
    lat = np.asarray(latencies) * 1e3
    return {
        "failures": dict(failures or {}),
        "accuracy": (correct / max(n, 1)).tolist(),
        "uncertainty": (uncertainty_sum / max(n, 1)).tolist(),
        "latency_ms": {"median": float(np.median(lat)), "p95": float(np.percentile(lat, 95)),
                       "cpu_median": float(np.median(cpu)) * 1e3, "steps_timed": int(lat.size)} if lat.size else {},
    }


@dataclass
class StreamDemo:
    """What ``stream_demo`` returns: per-condition curves (see ``stream_curves``), the
    training summary and the trained model (to stream more conditions)."""

    curves: dict[str, dict]
    final_accuracy: float
    train_seconds: float
    epochs_run: int
    info: dict = field(default_factory=dict)
    model: FittedModel | None = None


def stream_demo(dataset: str, failures: Mapping[str, int], *, method: str = "streaming-gru", seed: int = 0,
                split: str = "fixed", train=None, device: str = "cpu", method_params: Mapping | None = None,
                train_protocol: str = "none", train_rate: float = 0.0) -> StreamDemo:
    """Train ``method`` on ``dataset``'s training split (under ``train_protocol`` at ``train_rate``
    for train and validation), then stream its test split twice: with every sensor and with
    ``failures`` (modality -> step at which it dies)."""
    from .data.registry import load_dataset
    from .data.splits import make_splits
    from .experiment import RATELESS_PROTOCOLS
    from .methods import METHODS
    from .missing import Scenario, make_protocol
    from .train.loop import TrainConfig, Trainer, build_method

    data = load_dataset(dataset)
    parse_check = {m.name for m in data.spec.modalities if m.kind == "sequence"}
    # Checked before any training (found: a vector dataset failed only after the fit).
    if not parse_check:
        kinds = ", ".join(sorted({m.kind for m in data.spec.modalities}))
        raise ValueError(f"dataset {dataset!r} has no sequence modality ({kinds} only): nothing to stream step by step")
    cls = METHODS.get(method)
    if not (hasattr(cls, "stream_init") and hasattr(cls, "stream_step")):
        raise ValueError(f"method {method!r} cannot stream (no stream_init / stream_step); use e.g. streaming-gru")
    unknown = sorted(set(failures) - parse_check)
    if unknown:
        raise ValueError(f"failing modality {unknown[0]!r} is not a sequence modality of {dataset!r}")
    train_split, val_split, test_split = make_splits(data, split, seed)
    params = {} if train_protocol in RATELESS_PROTOCOLS else {"rate": train_rate}
    scenario = Scenario.same(make_protocol(train_protocol, **params))
    train_m, _ = scenario.apply(train_split, "train", seed)
    val_m, _ = scenario.apply(val_split, "val", seed)
    model = build_method(method, data.spec, seed=seed, **dict(method_params or {}))
    fit = Trainer(train or TrainConfig(), device=device).fit(model, train_m, val_m, seed=seed)
    curves = {"all sensors": stream_curves(fit.model, test_split)}
    if failures:
        label = ", ".join(f"{k} fails at {v}" for k, v in failures.items())
        curves[label] = stream_curves(fit.model, test_split, failures)
    return StreamDemo(curves, curves["all sensors"]["accuracy"][-1], fit.train_seconds, len(fit.history),
                      {"dataset": dataset, "method": method, "seed": seed, "train_protocol": train_protocol,
                       "train_rate": train_rate, "n_test": len(test_split)}, fit.model)
