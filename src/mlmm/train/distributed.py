"""Data-parallel training of one run across processes (launched by ``torchrun``).

The one training loop (``mlmm.train.loop.Trainer``) becomes data-parallel
when ``torch.distributed`` is initialised, with no other change for methods:

- each stage's method is wrapped in ``DistributedDataParallel`` (gradients are
  averaged across ranks after ``backward``; ``find_unused_parameters`` because
  a method may leave parameters unused for some availability patterns);
- each epoch's training rows are sharded with ``DistributedSampler`` (shuffled
  with the run's seed, padded so every rank runs the same number of steps —
  a DDP requirement), and the per-rank batch is ``ceil(batch_size / world)``
  so the global batch stays what the config says;
- modality dropout draws from a per-rank generator, so ranks drop different entries;
- every rank evaluates the whole validation split with identical weights, so
  early stopping and model selection agree without any communication.

Backends: gloo on CPU, NCCL when the caller trains on CUDA. ``init_from_env``
reads the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT). ``mlmm run --distributed`` uses it; only rank 0 prints or writes.
"""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_env(device: str = "cpu") -> str:
    """Join the process group torchrun set up; returns this rank's device string.

    Raises a clear error when the environment is not a torchrun launch.
    """
    missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise RuntimeError(f"--distributed needs a torchrun launch (missing environment variables: "
                           f"{', '.join(missing)}); e.g. torchrun --nproc-per-node 2 -m mlmm.cli run ... --distributed")
    on_cuda = device.startswith("cuda")
    if not is_distributed():
        dist.init_process_group(backend="nccl" if on_cuda else "gloo")
    if on_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def rank_seed(seed: int) -> int:
    """The seed of this rank's modality-dropout generator (``seed`` itself on rank 0 / single process)."""
    return seed + 1_000_003 * rank()


def per_rank_batch_size(batch_size: int) -> int:
    return max(1, math.ceil(batch_size / world_size()))


def wrap(method: nn.Module) -> nn.Module:
    """``method`` wrapped for gradient averaging across ranks; ``method`` itself in a single process.

    DDP refuses modules without trainable parameters; such a stage runs as is."""
    if not is_distributed() or not any(p.requires_grad for p in method.parameters()):
        return method
    device_ids = None
    param = next(method.parameters())
    if param.device.type == "cuda":
        device_ids = [param.device.index]
    return DistributedDataParallel(method, device_ids=device_ids, find_unused_parameters=True)


def shard_order(n: int, epoch: int, seed: int, device: torch.device) -> Tensor:
    """This rank's row order for ``epoch``: a seeded shuffle of ``range(n)``, split across ranks
    and padded to equal length (``DistributedSampler``'s rule). (ceil(n / world),) int64."""
    sampler = DistributedSampler(range(n), num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long, device=device)
