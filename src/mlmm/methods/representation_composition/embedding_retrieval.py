"""Representation composition with retrieval: fill a missing embedding from training neighbours."""

from __future__ import annotations

import torch
from torch import Tensor

from ...components.encoders import PerModalityEncoders
from ...components.memory_bank import TrainingBankMixin
from ...components.pooling import masked_mean
from ...data.batch import Batch
from ...data.passes import SplitPasses
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output
from ..registry import register_method


@register_method("embedding-retrieval")
class EmbeddingRetrieval(TrainingBankMixin, MissingModalityModel):
    """Masked-mean fusion whose missing embeddings are filled by top-K retrieval from a training memory bank.

    Paper: retrieval-based representation composition with a feature pool
    (Zhi et al., 2024; Sun et al., 2024b; survey Sec. 3.2.2): features of the
    available samples are stored in a pool, cosine similarity retrieves the
    matches of the input sample, and the mean of the missing modality's
    features over the top-K fills its representation.

    Shapes: B batch, M modalities, D = ``embed_dim``, N bank rows (<= ``bank_size``).

        z_m   = E_m(x_m)                                               (B, M, D)
        s(i, n) = mean_{m in S(i,n)} cos(z_i^m, b_n^m),  S(i,n) = {m : a_i^m = 1, a_n^m = 1}   (B, N)
        N_K(i, m) = top-K of s(i, .) over bank rows n with a_n^m = 1 and S(i,n) non-empty
        ẑ_i^m = (1/|N_K|) Σ_{n in N_K(i,m)} sg(b_n^m)  for every m with a_i^m = 0   (B, M, D)
        h = masked mean of {z_i^m : a_i^m = 1} ∪ {ẑ_i^m : a_i^m = 0, N_K(i,m) ≠ ∅}    (B, D)
        logits = head(h)                                               (B, C)

    The memory bank: ``prepare`` stores the standardised training inputs and
    mask of a seeded subsample of at most ``bank_size`` rows as buffers
    (``bank_x{j}``, ``bank_mask``, and ``bank_rows``, their indices in the
    training split; all saved in ``state_dict``). The bank embeddings b_n^m
    are encoded on the fly with the *current* encoders, in eval mode (no
    dropout) and under ``torch.no_grad`` (neighbours are stop-gradient), so
    they never go stale; the result is cached and reused until an encoder
    parameter or bank buffer changes (tracked by tensor version counters),
    i.e. it is recomputed at most once per optimisation step in training and
    once in total for a whole evaluation. Cost: one no-grad encoder pass over
    N <= 512 rows per training step.

    In training mode a bank row that *is* the query sample (its inputs equal
    the sample's on every modality the sample holds) is excluded, so a
    modality removed by modality dropout is never "recovered" from the
    sample's own bank copy (test samples are not in the bank, so this is
    train-only). Predictions never depend on batch-mates: the bank holds
    training data only. A missing modality with no eligible neighbour (e.g. a
    sample with no modality, or no bank row holding m) stays missing.

    Works with incomplete training data: the bank keeps each row's mask,
    similarities use only modalities both sides hold, and only rows holding m
    can fill m.

    Recovery hooks: ``recover`` returns z_m where present and ẑ_m where missing (zeros where
    no neighbour exists), so on a complete batch it gives the encoder's own embeddings, the
    truth the diagnostics compare ẑ with. ``plain_fill`` puts zeros in place of ẑ_m (still
    counted in the mean, as the filled slot would be).
    """

    info = MethodInfo(
        category="representation-composition",
        fusion="intermediate",
        recovers_missing=True,
        recovery_space="embedding",
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.PREPARES_BY_BATCH}),
        paper="Feature-pool top-K cosine retrieval of missing representations (Zhi et al., 2024; "
              "Sun et al., 2024b; survey Sec. 3.2.2)",
        summary="per-modality encoders; missing z_m = mean of top-K neighbours' z_m from a training bank "
                "(cosine on shared modalities); masked mean; MLP head",
    )

    #: The bank is read at prediction (neighbours are retrieved among the stored training rows).
    training_state = {"bank_*": "prediction retrieves neighbours among these stored training rows"}

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 k: int = 5, bank_size: int = 512, bank_seed: int = 0, **components) -> None:
        super().__init__(spec, **components)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.head = self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)
        self.init_bank(bank_size, bank_seed)

    # ------------------------------------------------------------ bank

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer) -> None:
        """Store a seeded subsample (<= ``bank_size`` rows) of the standardised training set as the bank."""
        self.fill_bank(split)

    def bank_embeddings(self) -> Tensor:
        """(N, M, D) embeddings of the bank under the current encoders (eval mode, no grad, cached)."""
        return self.cached_bank_embeddings(self.encoders)

    def retrieve(self, batch: Batch, z: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Top-K bank neighbours per (sample, modality): ``index`` (B, M, K') bank rows and
        ``valid`` (B, M, K') (see ``TrainingBankMixin.retrieve_neighbours``)."""
        if z is None:
            z = self.encoders(batch)
        return self.retrieve_neighbours(batch, z, self.bank_embeddings(), self.k)

    # ------------------------------------------------------------ forward

    def _compose(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(composed (B, M, D): z_m where present, ẑ_m (or 0 under ``plain_fill``) where filled,
        0 elsewhere; filled (B, M) bool: missing slots that had a neighbour)."""
        z = self.encoders(batch)  # (B, M, D)
        mask = batch.mask
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        if self.bank_mask.shape[0] == 0 or bool(mask.all()):
            return torch.where(mask.unsqueeze(-1), z, zero), torch.zeros_like(mask)
        index, valid = self.retrieve(batch, z)  # (B, M, K)
        bank = self.bank_embeddings()  # (N, M, D), no grad
        modality = torch.arange(mask.shape[1], device=mask.device).view(1, -1, 1)
        neighbours = bank[index, modality]  # (B, M, K, D)
        w = valid.unsqueeze(-1).to(z.dtype)
        count = valid.sum(dim=2)  # (B, M)
        fill = (neighbours * w).sum(dim=2) / count.clamp_min(1).unsqueeze(-1).to(z.dtype)  # (B, M, D)
        filled = ~mask & (count > 0)
        if self.plain_fill:
            fill = torch.zeros_like(fill)
        composed = torch.where(mask.unsqueeze(-1), z, torch.where(filled.unsqueeze(-1), fill, zero))
        return composed, filled

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> (B, D): z_m where present, ẑ_m where missing (0 with no neighbour)."""
        composed, _ = self._compose(batch)
        return {name: composed[:, j] for j, name in enumerate(self.spec.modality_names)}

    def forward(self, batch: Batch) -> Output:
        composed, filled = self._compose(batch)
        return Output(self.head(masked_mean(composed, batch.mask | filled)), aux={"filled": filled})
