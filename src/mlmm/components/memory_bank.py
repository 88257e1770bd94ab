"""A memory bank of standardised training rows, shared by the retrieval methods.

Mixed into a ``MissingModalityModel``: buffers ``bank_x{j}`` (N, *shape_j; int64 token ids for
text, float32 otherwise),
``bank_mask`` (N, M), ``bank_class`` (N,) and ``bank_rows`` (N,, indices into
the training split), all saved in ``state_dict``. The bank's size depends on
the data, so loading resizes the buffers first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.passes import SplitPasses
from ..methods.base import mask_column
from .row_lookup import resize_to_saved

_BANK_BUFFERS = ("bank_mask", "bank_class", "bank_rows")


class TrainingBankMixin:
    """Call ``init_bank(bank_size, bank_seed)`` in ``__init__`` and ``fill_bank(split)`` in ``prepare_split``
    (the bank's rows are chosen from the mask and read by index: a streamed split of any size works)."""

    def init_bank(self, bank_size: int, bank_seed: int) -> None:
        if bank_size < 1:
            raise ValueError(f"bank_size must be >= 1, got {bank_size}")
        self.bank_size, self.bank_seed = int(bank_size), int(bank_seed)
        for j, m in enumerate(self.spec.modalities):
            # Each modality in its own dtype: token ids stay int64 (float32 would corrupt large ids).
            self.register_buffer(f"bank_x{j}", torch.zeros(0, *m.shape, dtype=torch.int64 if m.kind == "text"
                                                            else torch.float32))
        self.register_buffer("bank_mask", torch.zeros(0, self.spec.n_modalities, dtype=torch.bool))
        self.register_buffer("bank_class", torch.zeros(0, dtype=torch.long))
        self.register_buffer("bank_rows", torch.zeros(0, dtype=torch.long))

    def bank_inputs(self) -> list[Tensor]:
        """[bank_x0, bank_x1, ...]: (N, *shape_j) standardised inputs, zeros where a row lacks j."""
        return [getattr(self, f"bank_x{j}") for j in range(self.spec.n_modalities)]

    def fill_bank(self, split: SplitPasses | Batch) -> None:
        """Store a seeded subsample (<= ``bank_size`` rows, sorted) of the standardised training set.

        The rows are drawn from the availability mask alone (rows holding any modality, then
        ``bank_size`` of them by ``bank_seed``), and only those rows are read (``split.rows``)."""
        if isinstance(split, Batch):
            split = SplitPasses.of_batch(split)
        rows = torch.nonzero(split.mask.any(dim=1)).flatten().cpu()
        if rows.numel() > self.bank_size:
            g = torch.Generator().manual_seed(self.bank_seed)
            rows = rows[torch.randperm(rows.numel(), generator=g)[: self.bank_size]].sort().values
        train = split.rows(rows)
        device = train.mask.device
        rows = rows.to(device)
        mask = train.mask
        for j, m in enumerate(self.spec.modalities):
            x = train.inputs[m.name].detach()
            x = torch.where(mask_column(mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype, device=x.device))
            setattr(self, f"bank_x{j}", x.to(getattr(self, f"bank_x{j}").dtype).clone())
        if self.spec.task.kind == "classification" and train.target is not None:
            self.bank_class = train.target.to(torch.long).clone()
        else:
            self.bank_class = torch.zeros(rows.numel(), dtype=torch.long, device=device)
        self.bank_mask = mask.clone()
        self.bank_rows = rows.clone()
        self.__dict__.pop("_bank_cache", None)  # new bank: embeddings of the old one are stale

    def same_rows(self, xs: list[Tensor], mask: Tensor, rows: Tensor | None = None) -> Tensor:
        """(B, N') True where bank row n (of ``rows``, all N when None) equals sample b on every
        modality b holds.

        xs: per-modality (B, *shape_j) inputs with masked-out rows zeroed; mask: (B, M).
        Used in training to keep a sample from retrieving its own bank copy.
        """
        bank_mask = self.bank_mask if rows is None else self.bank_mask[rows]
        same = torch.ones(mask.shape[0], bank_mask.shape[0], dtype=torch.bool, device=mask.device)
        for j, (x, bx) in enumerate(zip(xs, self.bank_inputs())):
            bx = bx if rows is None else bx[rows]
            both = mask[:, j].unsqueeze(1) & bank_mask[:, j].unsqueeze(0)  # (B, N'): rows to compare
            same &= ~mask[:, j].unsqueeze(1) | _equal_rows(x.flatten(1), bx.flatten(1), both)
        return same

    def encode_bank(self, encoders: nn.Module, rows: Tensor | None = None) -> Tensor:
        """(N', M, D) embeddings of bank ``rows`` (all if None) by ``encoders`` (a module taking a
        ``Batch``, e.g. ``PerModalityEncoders``), in eval mode and without gradient."""
        xs, mask = self.bank_inputs(), self.bank_mask
        if rows is not None:
            xs, mask = [x[rows] for x in xs], mask[rows]
        was_training = encoders.training
        encoders.eval()
        try:
            with torch.no_grad():
                return encoders(Batch(dict(zip(self.spec.modality_names, xs)), mask))
        finally:
            encoders.train(was_training)

    def cached_bank_embeddings(self, encoders: nn.Module) -> Tensor:
        """``encode_bank(encoders)`` of the whole bank, recomputed only when an encoder parameter
        or buffer, or the bank, has changed since (tracked by storage and version counter)."""
        tensors = [*encoders.parameters(), *encoders.buffers(), *self.bank_inputs(), self.bank_mask]
        key = tuple((t.device, t.data_ptr(), t._version) for t in tensors)
        cache = self.__dict__.get("_bank_cache")
        if cache is None or cache[0] != key:
            cache = (key, self.encode_bank(encoders))
            self.__dict__["_bank_cache"] = cache  # plain attribute: not state, not a buffer
        return cache[1]

    def retrieve_neighbours(self, batch: Batch, z: Tensor, bank: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-``k`` bank neighbours per (sample, modality).

        z: (B, M, D) the batch's embeddings (read only where ``batch.mask``); bank: (N, M, D)
        the bank's embeddings under the same encoders. Returns ``index`` (B, M, K') long
        bank-row indices (K' = min(k, N)) and ``valid`` (B, M, K') bool: neighbour k of sample b
        for modality m exists (a bank row that holds m and shares at least one present modality
        with b; in train mode, not b itself). Rows are ranked by the mean cosine similarity over
        the modalities both sides hold. No gradient flows through the ranking.
        """
        k = min(int(k), bank.shape[0])
        mask = batch.mask
        with torch.no_grad():
            q = F.normalize(z.detach(), dim=-1)
            b = F.normalize(bank, dim=-1)
            cos = torch.einsum("bmd,nmd->bmn", q, b)  # (B, M, N)
            shared = mask.unsqueeze(2) & self.bank_mask.t().unsqueeze(0)  # (B, M, N)
            n_shared = shared.sum(dim=1)  # (B, N)
            zero = torch.zeros((), dtype=cos.dtype, device=cos.device)
            sim = torch.where(shared, cos, zero).sum(dim=1) / n_shared.clamp_min(1).to(cos.dtype)  # (B, N)
            eligible = (n_shared > 0).unsqueeze(1) & self.bank_mask.t().unsqueeze(0)  # (B, M, N)
            if self.training:
                xs = [torch.where(mask_column(mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype, device=x.device))
                      for j, x in enumerate(batch.inputs[name] for name in self.spec.modality_names)]
                eligible = eligible & ~self.same_rows(xs, mask).unsqueeze(1)
            scores = torch.where(eligible, sim.unsqueeze(1), torch.full((), float("-inf"), dtype=cos.dtype,
                                                                        device=cos.device))
            values, index = scores.topk(k, dim=2)  # (B, M, K')
        return index, torch.isfinite(values)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # The bank's size is data-dependent: resize the buffers to the saved ones before loading.
        self.__dict__.pop("_bank_cache", None)
        resize_to_saved(self, state_dict, prefix,
                        [f"bank_x{j}" for j in range(self.spec.n_modalities)] + list(_BANK_BUFFERS))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def _equal_rows(x: Tensor, bank: Tensor, pairs: Tensor | None = None) -> Tensor:
    """(B, N) True where x[b] == bank[n] on every feature (and ``pairs[b, n]``, when given);
    x (B, F), bank (N, F), pairs (B, N) bool: the pairs worth comparing.

    Rows that differ on their first feature cannot be equal, so only the pairs that agree
    there are compared in full: (B, N) + (candidates, F) comparisons instead of (B, N, F).
    ``pairs`` leaves out the zeroed rows of absent modalities, which all agree with each other.
    """
    equal = x[:, :1] == bank[:, 0].unsqueeze(0)  # (B, N) candidates
    if pairs is not None:
        equal &= pairs
    if x.shape[1] <= 1:
        return equal
    b, n = equal.nonzero(as_tuple=True)
    full = (x[b] == bank[n]).all(dim=1)
    equal[b[~full], n[~full]] = False
    return equal
