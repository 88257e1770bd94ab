"""What both pretrained-transformer methods share: per-modality soft tokens, a learned
summary token, the frozen backbone, pooling and a head."""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.spec import DatasetSpec
from ..methods.base import MissingModalityModel
from .encoders import PerModalityEncoders
from .pooling import masked_mean
from .pretrained_backbone import FrozenBackbone, FrozenTextReader

POOLS = ("cls", "mean")
#: How a text modality becomes a soft token: "backbone" — the frozen backbone reads the token ids
#: (they must be its tokenizer's: the modality's vocab_size must equal the backbone's); "embeddings"
#: — the default trainable text encoder (bag of embeddings); "auto" — "backbone" when the vocabulary
#: sizes match, else "embeddings".
TEXT_READERS = ("auto", "backbone", "embeddings")


class SoftTokenTransformer(MissingModalityModel):
    """Base of the methods that run soft tokens through a frozen pretrained transformer.

    Sequence (B, P + M + 1, H), H = the backbone's hidden size:
    ``[P prompt slots | one token per modality, in spec order | summary token]``.
    Modality token t_m = Proj_m(x_m) (B, H) when a_m = 1; a missing modality's slot
    holds zeros and is masked out of attention, so no token ever attends to it. The
    learned summary token is always present (an empty sample stays finite) and sits
    last, so a causal (decoder) backbone sees every token from it too.

    Trainable: projections, summary token, head (and the subclass's prompts); the
    backbone is frozen and always in eval mode.

    A text modality's token (``text_reader``, see ``TEXT_READERS``): with "backbone" (or "auto"
    when its ``vocab_size`` is the backbone's), the frozen backbone reads the caption's token ids
    (mean of its last hidden states over non-padding tokens) and a trainable linear map makes
    the soft token, so "MiniLM reads my captions" holds; otherwise the kind's default encoder.
    """

    def __init__(self, spec: DatasetSpec, backbone: str | os.PathLike | None = None, pool: str = "cls",
                 hidden: int | None = None, head_hidden: int = 128, dropout: float = 0.1,
                 text_reader: str = "auto", **components) -> None:
        super().__init__(spec, **components)
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if text_reader not in TEXT_READERS:
            raise ValueError(f"text_reader must be one of {TEXT_READERS}, got {text_reader!r}")
        self.pool = pool
        self.backbone = FrozenBackbone(backbone)
        width = self.backbone.hidden_size
        self.projections = PerModalityEncoders(spec, width, hidden=hidden, dropout=dropout, choices=self.components)
        vocab = int(self.backbone.model.config.vocab_size)
        for m in spec.modalities:
            if m.kind == "text" and (text_reader == "backbone" or text_reader == "auto" and m.vocab_size == vocab):
                # The caption's token ids read by the frozen backbone itself (mean of its last hidden
                # states), then one trainable linear map to the soft token.
                reader = FrozenTextReader(backbone, m.vocab_size, m.pad_id, m.name)
                self.projections.encoders[m.name] = nn.Sequential(reader, nn.Linear(reader.hidden_size, width))
        self.summary = nn.Parameter(0.02 * torch.randn(width))
        self.head = self.components.make_head(width, spec.task.output_dim, hidden=head_hidden, dropout=dropout)

    @property
    def width(self) -> int:
        return self.backbone.hidden_size

    def encode(self, batch: Batch, n_prompt_slots: int = 0, prompts: Tensor | None = None) -> Tensor:
        """Pooled backbone output (B, H) for ``batch``, with ``n_prompt_slots`` leading slots
        filled by ``prompts`` (B, L, P, H) at each of the first L layers."""
        b, mask = batch.size, batch.mask
        z = self.projections(batch)  # (B, M, H); rows of missing modalities are never attended to
        z = torch.where(mask.unsqueeze(-1), z, torch.zeros((), dtype=z.dtype, device=z.device))
        parts = [z, self.summary.expand(b, 1, -1)]
        present = [mask, torch.ones(b, 1, dtype=torch.bool, device=mask.device)]
        if n_prompt_slots:
            parts.insert(0, z.new_zeros(b, n_prompt_slots, self.width))  # replaced at layer 0's input
            present.insert(0, torch.ones(b, n_prompt_slots, dtype=torch.bool, device=mask.device))
        h = self.backbone(torch.cat(parts, dim=1), torch.cat(present, dim=1), prompts)
        if self.pool == "cls":
            return h[:, -1]
        # Mean over the present modality tokens and the summary token (never empty).
        tokens = h[:, n_prompt_slots:]
        return masked_mean(tokens, torch.cat(present[-2:], dim=1))
