"""Streaming prediction: step-by-step state updates equal the full forward at every prefix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mlmm.data.base import MultimodalDataset
from mlmm.data.preprocess import Standardizer
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.methods.representation_composition.streaming_gru import StreamingGRU
from mlmm.missing.time_masks import burst_steps
from mlmm.streaming import Streamer, failure_time_mask, parse_failures, stream_curves
from mlmm.train.loop import FittedModel, build_method

T = 9
SEQ_SPEC = DatasetSpec("two-sensors",
                       (ModalitySpec("acc", "sequence", (T, 3)), ModalitySpec("gyr", "sequence", (T, 2))),
                       TaskSpec("classification", n_classes=3))
MIXED_SPEC = DatasetSpec("sensors-and-profile", SEQ_SPEC.modalities + (ModalitySpec("profile", "vector", (4,)),),
                         TaskSpec("classification", n_classes=3))


def _data(spec: DatasetSpec, n: int = 7, seed: int = 0) -> MultimodalDataset:
    rng = np.random.default_rng(seed)
    inputs = {m.name: rng.normal(size=(n, *m.shape)) * 2 + 1 for m in spec.modalities}
    data = MultimodalDataset(spec, inputs, np.arange(n) % 3)
    # Sensors dropping in and out: bursts in both, one sensor silent at first in sample 0.
    acc = burst_steps(n, T, 0.4, 2, rng)
    gyr = burst_steps(n, T, 0.3, 3, rng)
    gyr[0, :4] = False
    return data.with_time_mask({"acc": acc, "gyr": gyr})


def _method(spec: DatasetSpec) -> StreamingGRU:
    return build_method("streaming-gru", spec, seed=0, embed_dim=8, hidden=6).eval()


@pytest.mark.parametrize("spec", [SEQ_SPEC, MIXED_SPEC], ids=["sequences", "sequences+vector"])
def test_stream_equals_full_forward_at_every_prefix(spec):
    batch = _data(spec).as_batch()
    mask = batch.mask.clone()
    mask[1, 1] = False  # a sensor missing for the whole recording
    batch = batch.with_mask(mask)
    method = _method(spec)
    full = method(batch).aux["step_logits"]  # (B, T, C)
    streamed = torch.stack(list(method.stream(batch)), dim=1)
    assert streamed.shape == full.shape
    assert torch.allclose(streamed, full, atol=1e-5)
    # the prediction at step t depends on steps <= t only: masking the future changes nothing before it
    t = 4
    prefix = batch.with_time_mask({k: (torch.arange(T) <= t).expand(batch.size, T) for k in batch.time_mask}, spec)
    assert torch.allclose(method(prefix).aux["step_logits"][:, : t + 1], full[:, : t + 1], atol=1e-6)


def test_final_logits_are_the_last_step_and_loss_has_prefix_term():
    batch = _data(SEQ_SPEC).as_batch()
    method = _method(SEQ_SPEC)
    out = method(batch)
    assert torch.equal(out.logits, out.aux["step_logits"][:, -1])
    terms = method.loss(batch, out)
    assert set(terms) == {"task", "prefix"} and all(torch.isfinite(v) for v in terms.values())
    no_prefix = build_method("streaming-gru", SEQ_SPEC, seed=0, prefix_weight=0.0)
    assert set(no_prefix.loss(batch, no_prefix(batch))) == {"task"}


def test_stream_step_checks_its_inputs():
    method = _method(SEQ_SPEC)
    state = method.stream_init(2)
    frames = {"acc": torch.zeros(2, 3), "gyr": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match=r"observed must be a \(B, M\) = \(2, 2\) bool tensor"):
        method.stream_step(state, frames, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no frame for sequence modality 'gyr'"):
        method.stream_step(state, {"acc": torch.zeros(2, 3)}, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"modality 'acc' frame must be \(B, C\) = \(2, 3\)"):
        method.stream_step(state, {**frames, "acc": torch.zeros(2, 4)}, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="sequence modalities of one length"):
        build_method("streaming-gru", DatasetSpec("x", (ModalitySpec("a", "sequence", (4, 1)),
                                                       ModalitySpec("b", "sequence", (5, 1))),
                                                  TaskSpec("classification", n_classes=2)))


def test_streamer_on_raw_frames_matches_the_fitted_model():
    data = _data(SEQ_SPEC)
    method = _method(SEQ_SPEC)
    model = FittedModel(Standardizer(SEQ_SPEC).fit(data.as_batch()), method).eval()
    expected = model(data.as_batch()).aux["step_logits"]
    streamer = Streamer(model)
    streamer.reset(len(data))
    batch = data.as_batch()
    observed = torch.stack([batch.time_mask["acc"], batch.time_mask["gyr"]], dim=2)  # (B, T, M)
    for t in range(T):
        frames = {k: batch.inputs[k][:, t].clone() for k in ("acc", "gyr")}
        frames["acc"][~observed[:, t, 0]] = float("nan")  # what is not delivered is never read
        step = streamer.step(frames, observed[:, t])
        assert step.t == t
        assert torch.allclose(step.logits, expected[:, t], atol=1e-5)
        assert ((step.uncertainty >= 0) & (step.uncertainty <= 1 + 1e-6)).all()
        assert torch.allclose(step.probs.sum(dim=1), torch.ones(len(data)))


def test_streamer_refuses_a_method_that_cannot_stream():
    method = build_method("masked-mean", SEQ_SPEC, seed=0)
    with pytest.raises(ValueError, match="cannot stream"):
        Streamer(FittedModel(Standardizer(SEQ_SPEC), method))


def test_parse_failures_and_failure_masks():
    assert parse_failures(["gyr@5"], SEQ_SPEC) == {"gyr": 5}
    for bad, match in [("gyr", "expected MODALITY@STEP"), ("zzz@3", "unknown modality 'zzz'"),
                       ("gyr@x", "is not an integer"), ("gyr@99", r"step must be in \[0, 9\]")]:
        with pytest.raises(ValueError, match=match):
            parse_failures([bad], SEQ_SPEC)
    steps = failure_time_mask(SEQ_SPEC, 3, {"gyr": 5})["gyr"]
    assert steps.shape == (3, T) and steps[:, :5].all() and not steps[:, 5:].any()


def test_stream_curves_report_accuracy_uncertainty_and_latency():
    data = _data(MIXED_SPEC)
    model = FittedModel(Standardizer(MIXED_SPEC).fit(data.as_batch()), _method(MIXED_SPEC)).eval()
    curves = stream_curves(model, data, {"gyr": 3}, latency_samples=2)
    assert len(curves["accuracy"]) == T and len(curves["uncertainty"]) == T
    assert curves["latency_ms"]["steps_timed"] == 2 * T and curves["latency_ms"]["median"] > 0
    json.dumps(curves)


def test_mlmm_stream_cli(capsys):
    from mlmm.cli import main

    code = main(["stream", "--dataset", "basicmotions", "--fail", "gyroscope@50", "--every", "25",
                 "--epochs", "1", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["curves"]) == {"all sensors", "gyroscope fails at 50"}
    assert len(out["curves"]["all sensors"]["accuracy"]) == 100
    assert main(["stream", "--dataset", "basicmotions", "--fail", "compass@50"]) == 2
    assert "unknown modality 'compass'" in capsys.readouterr().err
