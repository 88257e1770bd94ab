"""M3Care-style graph imputation: a missing embedding from similar training samples that hold it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.memory_bank import TrainingBankMixin
from ...components.pooling import masked_mean
from ...data.batch import Batch
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output, mask_column
from ..registry import register_method


@register_method("m3care-graph")
class M3CareGraph(TrainingBankMixin, MissingModalityModel):
    """M3Care (Zhang et al., "M3Care: Learning with Missing Modalities in Multimodal
    Healthcare Data", KDD 2022): a sample-similarity graph imputes missing modalities'
    embeddings from neighbours that hold them; present ones are gated mixes.

    Shapes: B batch, M modalities, D = ``embed_dim``, N bank rows (training samples),
    K = ``k`` neighbours.

        z_i^m = E_m(x_i^m)                                                        (B, M, D)
        S_in  = mean_{m : a_i^m a_n^m = 1} cos(z_i^m, b_n^m)   (modalities both hold)   (B, N)
        A_in^m = σ((S_in - σ(θ)) / T) over the top-K rows n with a_n^m = 1, else 0     (B, M, N)
        ẑ_i^m = Σ_n A_in^m a_n^m b_n^m / Σ_n A_in^m a_n^m                             (B, M, D)
        h_i^m = g ⊙ z_i^m + (1 - g) ⊙ ẑ_i^m,  g = sigmoid(G[z_i^m; ẑ_i^m])    if a_i^m = 1
        h_i^m = ẑ_i^m                                                          if a_i^m = 0
        logits = head(mean of h_i^m over modalities present or imputed)          (B, C)

    σ(θ) is a learned threshold, T = ``temperature`` makes it soft (so every row keeps
    a gradient and never becomes all-zero while a neighbour exists). The adjacency
    weights A_in a_n^m are row-normalised over neighbours that *hold* m — the official
    notebook masks by a_i a_n, which zeroes exactly the rows that need imputing. Where
    M3Care stacks GCN layers (with weights) and transformers on a mini-batch graph, this
    builds one weight-free propagation step — so ẑ stays in the space of z, the head
    sees one space, and ``recover`` is comparable with the true z (a learned W_m drifted
    ẑ farther from z than the mean embedding in a trial) — against a memory bank of
    training samples: b_n^m = E_m(x_n^m) of bank row n, stop-gradient, encoded in eval
    mode (cached at eval). So a prediction never depends on its batch-mates. Training
    draws ``bank_per_step`` bank rows per step (cost: one no-grad encoder pass over
    them) and excludes a sample's own bank copy, so modality dropout never "recovers"
    a modality from the sample itself. A modality with no eligible neighbour stays
    missing; a sample with no modality gets head(0).

    Works with incomplete training data (similarities and fills use only held
    modalities). ``recover(batch)`` returns ẑ for every modality; ``plain_fill``
    puts zeros in place of ẑ at missing slots.
    """

    info = MethodInfo(
        category="graph",
        fusion="intermediate",
        recovers_missing=True,
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES}),
        paper="Zhang et al., M3Care: Learning with Missing Modalities in Multimodal Healthcare Data, KDD 2022",
        summary="sample-similarity graph (mean cosine over shared modalities, learned soft threshold) against "
                "a training memory bank; missing z_m = row-normalised neighbours holding m; gated mix for "
                "present ones; masked mean; MLP head; adaptation: a kNN imputer in M3Care's spirit, not M3Care "
                "(no learned similarity kernels, no GCN layers, no transformer fusion, no norm-matching loss; "
                "neighbours from a stop-gradient memory bank so predictions never depend on batch-mates)",
        recovery_space="embedding",
    )

    #: The bank is read at prediction (neighbours are retrieved among the stored training rows).
    training_state = {"bank_*": "prediction builds its similarity graph over these stored training rows"}

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 k: int = 10, temperature: float = 0.1, threshold: float = 0.5, bank_size: int = 1024,
                 bank_per_step: int = 256, bank_seed: int = 0, **components) -> None:
        super().__init__(spec, **components)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if bank_per_step < 1:
            raise ValueError(f"bank_per_step must be >= 1, got {bank_per_step}")
        self.k, self.temperature, self.bank_per_step = int(k), float(temperature), int(bank_per_step)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.threshold_logit = nn.Parameter(torch.tensor(math.log(threshold / (1.0 - threshold))))
        self.gate = nn.Linear(2 * embed_dim, embed_dim)
        self.head = self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)
        self.init_bank(bank_size, bank_seed)

    # ------------------------------------------------------------ bank

    def prepare(self, train: Batch, standardizer: Standardizer) -> None:
        """Store a seeded subsample (<= ``bank_size`` rows) of the standardised training set as the bank."""
        self.fill_bank(train)

    def bank_embeddings(self) -> Tensor:
        """(N, M, D) embeddings of the whole bank, cached until an encoder parameter or the bank changes."""
        return self.cached_bank_embeddings(self.encoders)

    def _graph_bank(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None]:
        """(bank embeddings (N', M, D), bank mask (N', M), (B, N') rows to exclude or None).

        Eval: the whole bank. Training: ``bank_per_step`` random rows (in bank order), minus each
        sample's own copy.
        """
        n_bank = self.bank_mask.shape[0]
        if not self.training:
            return self.bank_embeddings(), self.bank_mask, None
        rows = torch.randperm(n_bank, device=self.bank_mask.device,
                              generator=self.generator)[: self.bank_per_step].sort().values
        xs = [torch.where(mask_column(batch.mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype, device=x.device))
              for j, x in enumerate(batch.inputs.values())]
        same = self.same_rows(xs, batch.mask, rows)
        return self.encode_bank(self.encoders, rows), self.bank_mask[rows], same

    # ------------------------------------------------------------ graph

    def impute(self, batch: Batch, z: Tensor) -> tuple[Tensor, Tensor]:
        """(ẑ (B, M, D), has (B, M) bool): graph-imputed embedding of every modality and whether
        any eligible neighbour exists for it (z: (B, M, D), missing slots never read)."""
        mask = batch.mask
        n_bank = self.bank_mask.shape[0]
        if n_bank == 0:
            return torch.zeros_like(z), torch.zeros_like(mask)
        bank, bank_mask, exclude = self._graph_bank(batch)  # (N, M, D), (N, M), (B, N)
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        q = F.normalize(torch.where(mask.unsqueeze(-1), z, zero), dim=-1)
        cos = torch.einsum("bmd,nmd->bmn", q, F.normalize(bank, dim=-1))  # (B, M, N)
        shared = mask.unsqueeze(2) & bank_mask.t().unsqueeze(0)  # (B, M, N)
        n_shared = shared.sum(dim=1)  # (B, N)
        sim = torch.where(shared, cos, zero).sum(dim=1) / n_shared.clamp_min(1).to(z.dtype)  # (B, N)
        eligible = (n_shared > 0).unsqueeze(1) & bank_mask.t().unsqueeze(0)  # (B, M, N): neighbour holds m
        if exclude is not None:
            eligible = eligible & ~exclude.unsqueeze(1)
        scores = torch.where(eligible, sim.unsqueeze(1), torch.full((), float("-inf"), dtype=z.dtype,
                                                                     device=z.device))
        values, index = scores.topk(min(self.k, bank.shape[0]), dim=2)  # (B, M, K)
        valid = torch.isfinite(values)
        threshold = torch.sigmoid(self.threshold_logit)
        adjacency = torch.sigmoid((torch.where(valid, values, zero) - threshold) / self.temperature)
        adjacency = torch.where(valid, adjacency, zero)
        weights = adjacency / adjacency.sum(dim=2, keepdim=True).clamp_min(1e-12)  # row-normalised
        modality = torch.arange(mask.shape[1], device=mask.device).view(1, -1, 1)
        neighbours = bank[index, modality]  # (B, M, K, D)
        imputed = (weights.unsqueeze(-1) * neighbours).sum(dim=2)  # (B, M, D)
        has = valid.any(dim=2)
        return torch.where(has.unsqueeze(-1), imputed, zero), has

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality name -> ẑ (B, D), the graph-imputed embedding (zeros where no neighbour holds it)."""
        imputed, _ = self.impute(batch, self.encoders(batch))
        return {m: imputed[:, j] for j, m in enumerate(self.spec.modality_names)}

    def forward(self, batch: Batch) -> Output:
        mask = batch.mask
        z = self.encoders(batch)  # (B, M, D)
        imputed, has = self.impute(batch, z)
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        z_present = torch.where(mask.unsqueeze(-1), z, zero)
        gate = torch.sigmoid(self.gate(torch.cat([z_present, imputed], dim=-1)))
        mixed = torch.where(has.unsqueeze(-1), gate * z_present + (1.0 - gate) * imputed, z_present)
        fill = torch.zeros_like(imputed) if self.plain_fill else imputed
        h = torch.where(mask.unsqueeze(-1), mixed, fill)
        filled = ~mask & has
        return Output(self.head(masked_mean(h, mask | filled)), aux={"filled": filled, "imputed": imputed})
