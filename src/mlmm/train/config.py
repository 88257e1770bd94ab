"""Optimisation settings of the one training loop (and of ``FitSteps`` in a user's own loop)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..validation import BOOLEAN, COUNT, NONNEG, NONNEG_COUNT, POSITIVE, PROBABILITY, Interval, Options, validate_params


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. ``modality_dropout`` is the per-(sample, present modality)
    drop probability during training; a sample never loses its last modality."""

    max_epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 15
    # On by default: training on random sub-patterns of what is present is the
    # cheapest robustness to missing modalities (0.3 chosen on handwritten's
    # validation split; set 0 to train on the given masks only).
    modality_dropout: float = 0.3
    # Small training splits get smaller batches, down to 8 samples, so that an epoch
    # has up to this many optimisation steps: with 32 training samples and batch 128,
    # one epoch would be one step, and 100 epochs 100 steps in all.
    min_steps_per_epoch: int = 10
    # Model selection on the validation split: "loss" (the task loss; on handwritten
    # at entry rates 0 and 0.5 it beat accuracy by ~0.3-0.5 points over 5 seeds, as
    # accuracy saturates early and picks an early epoch) or "accuracy" (ties broken by loss).
    select_on: str = "loss"
    grad_clip: float | None = 5.0
    # The optimiser of every stage that does not declare its own (StageControl.optimizer):
    # "adamw" (default), "adam", "sgd", "rmsprop", "adagrad", built with lr and weight_decay.
    optimizer: str = "adamw"
    # Streamed data (e.g. memory-mapped, mlmm.data.memmap) is read by a torch DataLoader. num_workers:
    # worker processes that read (and standardise) batches while the model trains (0: read in the
    # training process; batches, their order and the fitted weights are the same either way).
    num_workers: int = 0
    # Batches read ahead by each worker (DataLoader's prefetch_factor; used only with workers).
    prefetch: int = 2
    # Streamed batches in pinned (page-locked) host memory, copied to the GPU without blocking;
    # applies only when training on CUDA (ignored on the CPU).
    pin_memory: bool = True
    # Arithmetic of the training steps: "fp32"; "bf16" (autocast to bfloat16: on CUDA, and on the CPU
    # through CPU autocast); "fp16" (autocast to float16 with gradient scaling; CUDA only, refused on
    # the CPU). Weights, optimiser state, validation and prediction stay float32.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        validate_params("TrainConfig", {f.name: getattr(self, f.name) for f in fields(self)}, TRAIN_CONSTRAINTS)


#: What each ``TrainConfig`` field allows (checked in ``__post_init__``, so a config that exists is valid).
TRAIN_CONSTRAINTS: dict[str, list] = {
    "max_epochs": [COUNT],
    "batch_size": [COUNT],
    # (0, 1e6]: far above any useful rate, and below what overflows AdamW's float32 update (1e300 did)
    "lr": [Interval("real", 0, 1e6, closed="right")],
    "weight_decay": [NONNEG],
    "patience": [COUNT],
    "modality_dropout": [PROBABILITY],
    "min_steps_per_epoch": [COUNT],
    "select_on": [Options(("loss", "accuracy"))],
    "grad_clip": [None, POSITIVE],
    "optimizer": [Options(("adamw", "adam", "sgd", "rmsprop", "adagrad"))],
    "num_workers": [NONNEG_COUNT],
    "prefetch": [COUNT],
    "pin_memory": [BOOLEAN],
    "precision": [Options(("fp32", "bf16", "fp16"))],
}

#: ``TrainConfig`` fields that change how data is read, never what is learned (a grid cell's identity,
#: ``mlmm.bench.grid``, leaves them out).
LOADER_FIELDS = ("num_workers", "prefetch", "pin_memory")

#: ``TrainConfig.optimizer`` / ``StageControl.optimizer`` name -> torch.optim class.
OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD,
              "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}
