"""Per-method training control (StageControl) and training-row indices in the one loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mlmm.data.base import MultimodalDataset
from mlmm.data.batch import Batch
from mlmm.data.spec import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.methods.base import Capability, MethodInfo, MissingModalityModel, Output, StageControl
from mlmm.train.loop import TrainConfig, Trainer

SPEC = DatasetSpec("toy", (ModalitySpec("a", "vector", (3,)), ModalitySpec("b", "vector", (2,))),
                   TaskSpec("classification", n_classes=2))


def _data(n: int, seed: int, duplicate: bool = False) -> MultimodalDataset:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, 3)).astype(np.float32)
    b = rng.normal(size=(n, 2)).astype(np.float32)
    y = (a[:, 0] > 0).astype(np.int64)
    if duplicate:  # every row appears twice, with a different label the second time
        a, b = np.concatenate([a, a]), np.concatenate([b, b])
        y = np.concatenate([y, 1 - y])
    return MultimodalDataset(SPEC, {"a": a, "b": b}, y)


class Recorder(MissingModalityModel):
    """A linear model that records what the loop hands it in training mode."""

    info = MethodInfo(category="representation-composition", fusion="late", recovers_missing=False,
                      needs_complete_train=False, paper="-", summary="test double",
                      capabilities=frozenset({Capability.AFTER_STEP}))

    def __init__(self, spec: DatasetSpec, control: StageControl | None = None) -> None:
        super().__init__(spec)
        self.first = nn.Linear(3, 2)
        self.second = nn.Linear(2, 2)
        self.control = control or StageControl()
        self.seen: list[Batch] = []
        self.snapshots: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_control(self, stage: str) -> StageControl:
        return self.control

    def forward(self, batch: Batch) -> Output:
        if self.training:
            self.seen.append(batch)
        return Output(self.first(batch.inputs["a"]) + self.second(batch.inputs["b"]))

    def after_step(self) -> None:
        self.snapshots.append((self.first.weight.detach().clone(), self.second.weight.detach().clone()))


def _fit(control: StageControl, n: int = 40, duplicate: bool = False, **config):
    train, val = _data(n, 0, duplicate), _data(20, 1)
    method = Recorder(SPEC, control)
    cfg = TrainConfig(**{"max_epochs": 4, "patience": 2, "modality_dropout": 0.5, **config})
    return method, Trainer(cfg).fit(method, train, val, seed=0), train


def test_fixed_epochs_run_every_epoch_and_keep_the_last():
    method, result, _ = _fit(StageControl(epochs=7), patience=1)
    assert [r["epoch"] for r in result.history] == list(range(1, 8))
    assert result.best_epoch["main"] == 7
    assert [r["epoch"] for r in result.history if r["val_loss"] == r["val_loss"]] == [7], "only the last is validated"
    # The model is the last epoch's: its weights are the last step's.
    assert torch.equal(method.first.weight, method.snapshots[-1][0])


def test_min_epochs_keeps_early_epochs_from_being_selected():
    _, result, _ = _fit(StageControl(min_epochs=5), max_epochs=6, patience=1)
    assert result.best_epoch["main"] >= 5
    assert len(result.history) >= 5  # patience never stopped it before min_epochs


def test_full_batch_takes_one_step_per_epoch_on_every_row():
    method, result, train = _fit(StageControl(full_batch=True, epochs=3))
    assert [b.size for b in method.seen] == [len(train)] * 3
    assert len(method.snapshots) == 3


def test_alternating_groups_step_only_their_own_parameters_in_order():
    method, _, _ = _fit(StageControl(full_batch=True, epochs=2, groups=(("first.", 2), ("second.", 3))),
                        weight_decay=0.0)
    moved = []
    for (a0, b0), (a1, b1) in zip(method.snapshots, method.snapshots[1:]):
        moved.append(("a" if not torch.equal(a0, a1) else "") + ("b" if not torch.equal(b0, b1) else ""))
    # 2 steps on `first`, then 3 on `second`, per epoch (the first snapshot is after step 1).
    assert moved == ["a", "b", "b", "b", "a", "a", "b", "b", "b"]


def test_a_parameter_outside_every_group_is_an_error_naming_it():
    with pytest.raises(ValueError, match="second.weight"):
        _fit(StageControl(groups=(("first.", 1),)))


def test_stage_control_rejects_bad_declarations():
    with pytest.raises(ValueError, match="modality_dropout"):
        StageControl(modality_dropout="sometimes")
    with pytest.raises(ValueError, match="epochs"):
        StageControl(epochs=0)
    with pytest.raises(ValueError, match="steps"):
        StageControl(groups=(("x", 0),))


@pytest.mark.parametrize("mode", ["inputs", "off", "offered"])
def test_modality_dropout_modes(mode):
    method, _, train = _fit(StageControl(modality_dropout=mode, epochs=2))
    full = train.as_batch().mask
    dropped = 0
    for b in method.seen:
        own = full[b.index]
        if mode == "inputs":
            assert b.kept is None
            assert not torch.any(b.mask & ~own)
            dropped += int((own & ~b.mask).sum())
        else:
            assert torch.equal(b.mask, own), "the method must see the full mask"
            if mode == "off":
                assert b.kept is None
            else:
                assert b.kept is not None and not torch.any(b.kept & ~b.mask) and bool(b.kept.any(dim=1).all())
                dropped += int((b.mask & ~b.kept).sum())
    assert (dropped > 0) == (mode != "off")


def test_training_batches_carry_their_own_row_index_even_for_duplicate_rows():
    # Every row appears twice with opposite labels: identification by value cannot tell twins apart.
    method, _, train = _fit(StageControl(modality_dropout="off"), n=30, duplicate=True, max_epochs=1)
    whole = train.as_batch()
    for b in method.seen:
        assert b.index is not None and b.index.dtype == torch.long
        assert torch.equal(b.target, whole.target[b.index]), "a duplicated row was mapped to its twin"
    epoch = torch.cat([b.index for b in method.seen])
    assert sorted(epoch.tolist()) == list(range(len(train))), "one epoch visits every row once"


class TwoParts(Recorder):
    """Two independent parts ("first.", "second."); ``part_losses`` replays a script per epoch."""

    def __init__(self, spec: DatasetSpec, script: list[tuple[float, float]]) -> None:
        super().__init__(spec, StageControl(modality_dropout="off", parts=("first.", "second.")))
        self.script = script  # [(loss of first, loss of second)] for epoch 0 (the start), 1, 2, ...
        self.calls = 0
        self.epoch_end: list[tuple[torch.Tensor, torch.Tensor]] = []  # weights as each epoch ended

    def part_losses(self, val: Batch) -> torch.Tensor:
        if self.calls > 0:
            self.epoch_end.append((self.first.weight.detach().clone(), self.second.weight.detach().clone()))
        self.calls += 1
        return torch.tensor(self.script[self.calls - 1])


def test_each_part_has_its_own_best_epoch_patience_and_stop():
    # first: best at epoch 2, then worse (patience 2: stops at epoch 4); second: improves until epoch 6.
    script = [(9, 9), (5, 8), (1, 7), (3, 6), (4, 5), (5, 4), (6, 3), (7, 3.5), (8, 4)]
    train, val = _data(40, 0), _data(20, 1)
    method = TwoParts(SPEC, script)
    result = Trainer(TrainConfig(max_epochs=20, patience=2)).fit(method, train, val, seed=0)
    assert len(result.history) == 8, "the stage ends when the last part (second) has used up its patience"
    first_at, second_at = method.epoch_end[1][0], method.epoch_end[5][1]  # epochs 2 and 6
    assert torch.equal(method.first.weight, first_at) and torch.equal(method.second.weight, second_at)
    # After its stop (epoch 4) the first part took no more steps; the second kept training.
    assert torch.equal(method.epoch_end[3][0], method.epoch_end[7][0])
    assert not torch.equal(method.epoch_end[3][1], method.epoch_end[7][1])
    assert result.best_epoch["main"] == 6 and result.improved["main"]


def test_parts_must_cover_every_parameter_and_report_one_loss_each():
    train, val = _data(40, 0), _data(20, 1)
    uncovered = Recorder(SPEC, StageControl(parts=("first.",)))
    with pytest.raises(ValueError, match="'second.weight' falls in 0 of the stage's parts"):
        Trainer(TrainConfig(max_epochs=2)).fit(uncovered, train, val, seed=0)
    with pytest.raises(TypeError, match="does not implement part_losses"):
        Trainer(TrainConfig(max_epochs=2)).fit(Recorder(SPEC, StageControl(parts=("first.", "second."))),
                                               train, val, seed=0)
    wrong = TwoParts(SPEC, [(1.0, 1.0, 1.0)] * 3)
    with pytest.raises(ValueError, match=r"part_losses returned shape \(3,\)"):
        Trainer(TrainConfig(max_epochs=2)).fit(wrong, train, val, seed=0)
    with pytest.raises(ValueError, match="parts need non-empty prefixes"):
        StageControl(parts=("first.",), epochs=3)
