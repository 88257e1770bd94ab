"""The contract forbids batch composition dependence in eval mode, not BatchNorm: an encoder with
running statistics (BatchNorm in eval mode) passes the batch-composition check, a method that
normalises over the current batch at eval fails it (issue 15)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlmm.methods.base import MethodInfo, MissingModalityModel, Output
from mlmm.testing.conformance import cases, check_batch_composition_invariance

INFO = MethodInfo(category="representation-composition", fusion="intermediate", recovers_missing=False,
                  needs_complete_train=False, paper="test", summary="test")


class _BatchNormMean(MissingModalityModel):
    """Per-modality Linear + BatchNorm1d encoders, masked mean, linear head."""

    info = INFO

    def __init__(self, spec, width: int = 8) -> None:
        super().__init__(spec)
        self.enc = nn.ModuleList(nn.Sequential(nn.Linear(m.shape[0], width), nn.BatchNorm1d(width))
                                 for m in spec.modalities)
        self.head = nn.Linear(width, spec.task.output_dim)

    def embed(self, batch):
        z = torch.stack([e(batch.inputs[m.name]) for e, m in zip(self.enc, self.spec.modalities)], 1)
        w = batch.mask.unsqueeze(-1).float()
        return (z * w).sum(1) / w.sum(1).clamp_min(1)

    def forward(self, batch):
        return Output(self.head(self.embed(batch)))


class _EvalBatchCentred(_BatchNormMean):
    """Subtracts the current batch's mean embedding at eval too: batch-composition dependent."""

    def forward(self, batch):
        h = self.embed(batch)
        return Output(self.head(h - h.mean(0, keepdim=True)))


def _vector_case(cls):
    """The suite's vector setup for an unregistered class (the suite never needs the registry)."""
    return next(case for case in cases(cls)[0] if case.setup == "vector")


def test_batchnorm_running_statistics_pass_the_batch_composition_check():
    check_batch_composition_invariance(_vector_case(_BatchNormMean))


def test_eval_batch_statistics_fail_the_batch_composition_check():
    with pytest.raises(AssertionError, match="batch_composition_invariance"):
        check_batch_composition_invariance(_vector_case(_EvalBatchCentred))
