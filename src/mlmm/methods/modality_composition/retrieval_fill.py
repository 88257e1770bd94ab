"""Modality composition by retrieval: fill a missing modality's *input* from training rows.

Input-level counterpart of ``embedding-retrieval`` (which fills embeddings):
the composed input x̃_m is built from the raw (standardised) inputs of
training samples, then fused early with mask indicators exactly as in
``FillEarlyFusion``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...components.early_fill import EARLY_FILL_UNSUPPORTED, FillEarlyFusion
from ...components.memory_bank import TrainingBankMixin
from ...data.batch import Batch
from ...data.passes import SplitPasses, present_means
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, Output, mask_column
from ..registry import register_method

# Largest number of (query, bank row, feature) elements materialised at once by the distances.
_CHUNK_ELEMENTS = 1 << 24


@register_method("retrieval-fill")
class RetrievalFill(TrainingBankMixin, FillEarlyFusion):
    """Retrieval-based modality composition: a missing modality is filled with the inputs of
    training samples, same-class ones at training time and nearest neighbours at test time;
    then mask indicators and early fusion as in ``mean-fill``.

    Paper: retrieval-based modality composition (survey Sec. 2.1.1): a missing
    modality is replaced by the corresponding modality of retrieved training
    samples — same-class samples when labels are known (Modal-mixup, Yang et
    al., 2024), and nearest neighbours on the available modalities otherwise
    (k-NN composition, Campos et al., 2015; Yang et al., 2024).

    Shapes: B batch, M modalities, x_m (B, *shape_m) standardised, mask a (B, M),
    N bank rows (<= ``bank_size``), K = ``k``.

    Eval mode (no labels are read):

        d_m(i, n) = mean over the features of (x_i^m - b_n^m)^2                 (B, N) per m
        d(i, n)   = mean_{m in S(i,n)} d_m(i, n),   S(i,n) = {m : a_i^m = 1 and a_n^m = 1}
        N_K(i, m) = the K rows n with a_n^m = 1 and S(i,n) ≠ ∅ of smallest d(i, n)
        f_i^m     = (1/|N_K(i,m)|) Σ_{n in N_K(i,m)} b_n^m                       (B, *shape_m)

    Training mode (labels y are read; the draw uses torch's RNG, which the
    training loop seeds):

        f_i^m = b_n^m,  n ~ Uniform{n : a_n^m = 1, y_n = y_i, n is not sample i itself}

    Both modes, with f_i^m = μ_m (training mean over the rows holding m, the
    ``mean-fill`` value) when no eligible row exists (e.g. an empty sample at
    test time, or a class with no row holding m):

        x̃_i^m  = a_i^m x_i^m + (1 - a_i^m) f_i^m
        logits = head(encoder([x̃^1, ..., x̃^M, a]))                              (B, C)

    Why the train/test asymmetry: at test time labels are unknown, so the fill
    can only come from the sample's own available modalities (nearest
    neighbours). At training time the label is known, and a random same-class
    row gives a fill that is *plausible and label-consistent but not the
    sample's own*: it exposes the network to the spread of the missing
    modality within the class (a data augmentation), instead of an averaged
    neighbour whose quality depends on the remaining modalities. The network
    thus learns to accept "a realistic sample of m" in the missing slot, which
    is what the test-time neighbour mean approximates. For regression targets
    (no class) any row holding m is eligible at training time; so is it when
    a training-mode batch carries no target.

    The memory bank: ``prepare`` stores the standardised training inputs, mask
    and class of a seeded subsample of at most ``bank_size`` rows as buffers
    (``bank_x{j}`` — zero where the row lacks modality j —, ``bank_mask``,
    ``bank_class``, and ``bank_rows``, their indices in the training split;
    all saved in ``state_dict``, resized on load). In training mode a bank row
    that *is* the sample (inputs equal on every modality the sample holds) is
    excluded, so a modality removed by modality dropout is never recovered from
    the sample's own bank copy; test samples are not in the bank. Eval
    predictions never depend on batch-mates: the bank holds training data only.

    ``Output.aux["fill_rows"]`` (B, M, K') long holds the bank rows used to fill
    each (sample, modality), -1 where unused (K' = 1 in training mode, min(K, N)
    in eval mode); a present modality or a mean-filled one has all -1.

    Recovery hooks: ``recover`` returns x̃ (input space); with ``plain_fill`` every missing
    slot gets the training mean μ_m instead of retrieved rows.
    """

    info = MethodInfo(
        category="modality-composition",
        fusion="early",
        recovers_missing=True,
        recovery_space="input",
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.PREPARES_BY_BATCH}),
        unsupported_kinds=EARLY_FILL_UNSUPPORTED,
        paper="Retrieval-based modality composition (survey Sec. 2.1.1): same-class training samples / "
              "k-nearest neighbours on the available modalities fill the missing modality",
        summary="missing x_m filled with a random same-class training row's x_m (train) or the mean of the "
                "K nearest bank rows' x_m (test, MSE on shared modalities); mask indicators; early fusion",
        fixed_encoders={"*": "early fusion: one encoder reads every modality, filled from retrieved rows "
                             "and concatenated, so there is no per-modality encoder to replace"},
    )

    #: The bank is read at prediction (neighbours are retrieved among the stored training rows).
    training_state = {"bank_*": "prediction retrieves neighbours among these stored training rows"}

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 k: int = 5, bank_size: int = 1024, bank_seed: int = 0, **components) -> None:
        super().__init__(spec, **components, embed_dim=embed_dim, hidden=hidden, dropout=dropout)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.init_bank(bank_size, bank_seed)

    # ------------------------------------------------------------ bank

    def fill_values(self, split: SplitPasses, standardizer: Standardizer) -> dict[str, Tensor]:
        """The no-neighbour fallback: training mean over the rows holding m (as ``mean-fill``)."""
        means = present_means(split, list(self.spec.modality_names))
        return {m.name: torch.zeros(m.shape) if means[m.name] is None else means[m.name]
                for m in self.spec.modalities}

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer) -> None:
        """Mean fill values, and a seeded subsample (<= ``bank_size`` rows) of the training set as the bank."""
        super().prepare_split(split, standardizer)
        self.fill_bank(split)

    # ------------------------------------------------------------ retrieval

    def _present_inputs(self, batch: Batch) -> list[Tensor]:
        """Each modality with masked-out rows set to 0 (so poisoned slots are never read)."""
        out = []
        for j, m in enumerate(self.spec.modalities):
            x = batch.inputs[m.name]
            out.append(torch.where(mask_column(batch.mask, j, x.dim()), x,
                                   torch.zeros((), dtype=x.dtype, device=x.device)))
        return out

    def distances(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(d, n_shared)``: (B, N) mean over shared modalities of the per-modality mean squared
        distance to every bank row (0 where nothing is shared), and (B, N) the shared counts."""
        xs = self._present_inputs(batch)
        mask = batch.mask
        n_bank = self.bank_mask.shape[0]
        dtype = xs[0].dtype
        total = torch.zeros(mask.shape[0], n_bank, dtype=dtype, device=mask.device)
        shared = mask.unsqueeze(2) & self.bank_mask.t().unsqueeze(0)  # (B, M, N)
        for j, (x, bx) in enumerate(zip(xs, self.bank_inputs())):
            q, b = x.flatten(1), bx.flatten(1).to(dtype)
            step = max(1, _CHUNK_ELEMENTS // max(1, n_bank * q.shape[1]))
            # Elementwise differences (not the |x|^2 - 2xy + |y|^2 expansion) keep each row's
            # distances independent of the batch it is computed in.
            d = torch.cat([((q[s:s + step].unsqueeze(1) - b.unsqueeze(0)) ** 2).mean(dim=2)
                           for s in range(0, max(1, q.shape[0]), step)], dim=0)[: q.shape[0]]
            total = total + torch.where(shared[:, j], d, torch.zeros((), dtype=dtype, device=d.device))
        n_shared = shared.sum(dim=1)
        return total / n_shared.clamp_min(1).to(dtype), n_shared

    def fill_rows(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Bank rows used to fill each (sample, modality): ``index`` (B, M, K') long and ``valid``
        (B, M, K') bool. Training mode: K' = 1, a uniformly drawn eligible row of the sample's
        class (torch RNG). Eval mode: K' = min(k, N), the nearest rows. Rows are drawn for every
        (sample, modality); only those of missing modalities are used."""
        mask = batch.mask
        n_bank = self.bank_mask.shape[0]
        n_mod = mask.shape[1]
        with torch.no_grad():
            if self.training:
                eligible = self.bank_mask.t().unsqueeze(0).expand(mask.shape[0], -1, -1)  # (B, M, N)
                if batch.target is not None and self.spec.task.kind == "classification":
                    same_class = batch.target.reshape(-1, 1).to(torch.long) == self.bank_class.unsqueeze(0)
                    eligible = eligible & same_class.unsqueeze(1)
                eligible = eligible & ~self.same_rows(self._present_inputs(batch), mask).unsqueeze(1)
                # Uniform choice among eligible rows: argmax of i.i.d. uniform scores (fixed-shape draw).
                scores = torch.rand(mask.shape[0], n_mod, max(1, n_bank), device=mask.device,
                                    generator=self.generator)[..., :n_bank]
                scores = torch.where(eligible, scores, torch.full((), -1.0, device=mask.device))
                if n_bank == 0:
                    return (torch.zeros(mask.shape[0], n_mod, 0, dtype=torch.long, device=mask.device),
                            torch.zeros(mask.shape[0], n_mod, 0, dtype=torch.bool, device=mask.device))
                values, index = scores.max(dim=2, keepdim=True)
                return index, values >= 0
            k = min(self.k, n_bank)
            d, n_shared = self.distances(batch)
            eligible = (n_shared > 0).unsqueeze(1) & self.bank_mask.t().unsqueeze(0)  # (B, M, N)
            score = torch.where(eligible, -d.unsqueeze(1), torch.full((), float("-inf"), dtype=d.dtype,
                                                                      device=d.device))
            values, index = score.topk(k, dim=2)
            return index, torch.isfinite(values)

    def composed_inputs(self, batch: Batch) -> tuple[list[Tensor], Tensor]:
        """(every modality with missing rows filled (B, *shape_m), ``fill_rows`` (B, M, K'))."""
        mask = batch.mask
        index, valid = self.fill_rows(batch)
        filled, used = [], []
        for j, (m, bx) in enumerate(zip(self.spec.modalities, self.bank_inputs())):
            x = batch.inputs[m.name]
            idx, ok = index[:, j], valid[:, j]  # (B, K')
            count = ok.sum(dim=1)
            if idx.shape[1]:
                w = ok.to(x.dtype).reshape(*ok.shape, *([1] * (x.dim() - 1)))
                neighbours = bx.to(x.dtype)[idx]  # (B, K', *shape)
                mean = (neighbours * w).sum(dim=1) / count.clamp_min(1).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
            else:
                mean = torch.zeros_like(x)
            fallback = getattr(self, f"fill_{m.name}").to(x.dtype).expand_as(x)
            if self.plain_fill:  # recover-or-not diagnostics: the training mean instead of neighbours
                fill = fallback
            else:
                fill = torch.where(mask_column((count > 0).unsqueeze(1), 0, x.dim()), mean, fallback)
            filled.append(torch.where(mask_column(mask, j, x.dim()), x, fill))
            use = ok & ~mask[:, j].unsqueeze(1)
            used.append(torch.where(use, idx, torch.full((), -1, dtype=idx.dtype, device=idx.device)))
        return filled, torch.stack(used, dim=1)

    def plain_fill_value(self, name: str) -> Tensor:
        """The training mean (the no-neighbour fallback), what ``plain_fill`` puts in place."""
        return getattr(self, f"fill_{name}")

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> x̃_m (B, *shape_m) in standardised input space: the neighbour mean (or the
        training-mean fallback) at missing slots, x_m at present ones; the training mean at
        missing slots under ``plain_fill``."""
        filled, _ = self.composed_inputs(batch)
        return dict(zip(self.spec.modality_names, filled))

    def fuse(self, batch: Batch) -> Tensor:
        return self._fuse_with_rows(batch)[0]

    def _fuse_with_rows(self, batch: Batch) -> tuple[Tensor, Tensor]:
        filled, rows = self.composed_inputs(batch)
        return self.concatenate(filled, batch.mask), rows

    def forward(self, batch: Batch) -> Output:
        fused, rows = self._fuse_with_rows(batch)
        return Output(self.head(self.encoder(fused)), aux={"fill_rows": rows})
