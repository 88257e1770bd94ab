"""Capability: a forward pass that factorises into per-modality encoding and a fusion.

Methods whose ``forward`` is "encode every modality on its own, then fuse the
(B, M, D) embeddings under the mask" can be evaluated on all 2^M - 1 modality
subsets at the cost of one encoding pass plus 2^M - 1 (cheap) fusions,
instead of 2^M - 1 full passes (``mlmm.metrics.evaluate.evaluate_subsets``).

A method declares the capability ``Capability.FACTORISED`` in its ``MethodInfo``,
inherits from ``FactorisedFusion`` (before ``MissingModalityModel``) and implements
``encode_modalities`` and ``fuse_embeddings``; its ``forward`` is then the mixin's, by
construction ``fuse_embeddings(encode_modalities(batch), batch.mask)``. The conformance
suite checks the declaration both ways (a declared method's forward equals the
fusion of its encoding; a method using the mixin's forward declares it), so the
fast path never runs a computation the method does not.

Why ``fuse_embeddings`` returns an ``Output`` rather than bare logits: some
methods' losses need per-modality terms from the fusion (late-ensemble's member
logits), and the fast path then simply reads ``.logits``. The names are not
``encode`` / ``fuse`` because early-fusion methods already use ``fuse(batch)``
for something else.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from ..data.batch import Batch
from ..methods.base import Output

#: Bytes of stacked embeddings one ``fuse_embeddings`` call may take in ``fuse_subsets`` (about
#: a CPU's L2/L3 share): small per-modality outputs (late-ensemble's (N, M, C) member logits)
#: fuse many masks per call, large ones one mask per call on row slices.
_STACK_BYTES = 2 ** 20


class FactorisedFusion(abc.ABC):
    """Mixin: ``forward(batch) = fuse_embeddings(encode_modalities(batch), batch.mask)``.

    Contract for the two parts:
    - ``encode_modalities(batch) -> (B, M, D)``: row b, slot m depends only on
      ``batch.inputs[m][b]`` when ``batch.mask[b, m]`` is True (and is ignored
      otherwise), never on other modalities or batch-mates in eval mode;
    - ``fuse_embeddings(z, mask) -> Output``: z (B, M, D), mask (B, M) bool;
      reads ``z[b, m]`` only where ``mask[b, m]``, so it may be called with any
      mask narrower than the one ``z`` was encoded under.
    """

    # Abstract: a class that mixes in FactorisedFusion and leaves out either part cannot be built.
    @abc.abstractmethod
    def encode_modalities(self, batch: Batch) -> Tensor:
        """(B, M, D) per-modality embeddings."""

    @abc.abstractmethod
    def fuse_embeddings(self, z: Tensor, mask: Tensor) -> Output:
        """z (B, M, D), mask (B, M) -> the method's ``Output``."""

    def forward(self, batch: Batch) -> Output:
        return self.fuse_embeddings(self.encode_modalities(batch), batch.mask)

    def fuse_subsets(self, z: Tensor, masks: Tensor) -> Tensor:
        """z (N, M, D) embeddings, masks (S, N, M) bool (each no wider than the mask z was
        encoded under) -> logits (S, N, *out): the fusion under each of the S masks, in eval mode.

        A row whose mask is empty may get any finite value (callers drop it). This default
        runs ``fuse_embeddings``: where one mask's z is small (under ``_STACK_BYTES``), k masks
        in one call on z repeated k times, since per-call overhead then dominates; where it
        is large, one mask per call on contiguous row slices of z (views, no copy; gathering
        rows first copied them for nothing, measured ~2x slower). A method whose fusion can
        share work across masks overrides it (masked-mean: its head's first layer).
        """
        n, n_masks = len(z), len(masks)
        row_bytes = max(z[:1].numel() * z.element_size(), 1)
        k = max(1, min(n_masks, _STACK_BYTES // (row_bytes * max(n, 1))))  # masks per call
        step = max(1, _STACK_BYTES // row_bytes)  # rows per call
        out = []
        for first in range(0, n_masks, k):
            group = masks[first:first + k]
            mask = group.reshape(-1, group.shape[-1])  # (len(group) * N, M)
            zs = z if len(group) == 1 else z.repeat(len(group), *([1] * (z.dim() - 1)))
            logits = torch.cat([self.fuse_embeddings(zs[i:i + step], mask[i:i + step]).logits
                                for i in range(0, len(zs), step)])
            out.append(logits.reshape(len(group), n, *logits.shape[1:]))
        return torch.cat(out)


def is_factorised(method: object) -> bool:
    """True when ``method`` (an instance or a class) declares ``Capability.FACTORISED`` (the
    conformance suite checks that a method declaring it computes ``forward`` as
    ``fuse_embeddings(encode_modalities(batch), mask)``)."""
    from ..methods.base import Capability

    if isinstance(method, type):
        return Capability.FACTORISED in method.info.capabilities
    return method.has(Capability.FACTORISED)
