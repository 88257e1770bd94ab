"""Batched eval-mode forward passes that keep ``Output.aux`` (``predict_logits`` drops it)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.batch import Batch
from ..train.loop import FittedModel


@torch.no_grad()
def forward_all(model: FittedModel, batch: Batch, batch_size: int = 1024,
                aux_keys: tuple[str, ...] = ()) -> tuple[Tensor, dict[str, Tensor]]:
    """(logits (N, C), {key: (N, ...)} for each of ``aux_keys`` every chunk's output has), on CPU,
    in eval mode (restored after). Rows with no modality are allowed: every method is total."""
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    logits, aux = [], {k: [] for k in aux_keys}
    try:
        for i in range(0, batch.size, batch_size):
            out = model(batch.select(slice(i, i + batch_size)).to(device))
            logits.append(out.logits.float().cpu())
            for k in aux_keys:
                if k in out.aux:
                    aux[k].append(out.aux[k].float().cpu())
    finally:
        model.train(was_training)
    n_chunks = len(logits)
    kept = {k: torch.cat(v) for k, v in aux.items() if v and len(v) == n_chunks}
    return (torch.cat(logits) if logits else torch.empty(0, model.spec.task.output_dim)), kept


def subset_batch(batch: Batch, subset: int) -> Batch:
    """``batch`` restricted to the modalities of bitmask ``subset`` (bit j = modality j),
    intersected with each sample's own mask; rows may end up with no modality."""
    m = batch.mask.shape[1]
    wanted = torch.tensor([bool(subset >> j & 1) for j in range(m)], device=batch.mask.device)
    return batch.with_mask(batch.mask & wanted.unsqueeze(0))
