"""Individual modality generation: one generator per target modality."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.generated_fill import INPUT_GENERATION_UNSUPPORTED, FlatDecoder, GeneratedFillModel, hide_bernoulli
from ...components.pooling import masked_mean
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo
from ..registry import register_method


@register_method("individual-generators")
class IndividualGenerators(GeneratedFillModel):
    """One generator per target modality, fed the masked mean of the other present modalities'
    encodings; the downstream reads present inputs, generated ones and the mask.

    Paper: individual modality generation (survey Sec. 2.1.2): a dedicated
    generator per missing modality, conditioned on the available ones — e.g.
    the cross-modal auto-encoders of Tran et al. (CVPR 2017, CRA) and Cai et
    al. (KDD 2018, deep adversarial imputation of missing modalities). Here the
    generators are deterministic regressors (no adversarial term).

    Shapes: B batch, M modalities, G = ``gen_dim``, v (B, M) the visible mask::

        c_j   = C_j(x_j)                                            (B, M, G) context encoders
        o^m_j = v_j · [j ≠ m]                                       (B, M) the *other* visible modalities
        x̂_m  = G_m([ Σ_j o^m_j c_j / Σ_j o^m_j ;  o^m ])            (B, *shape_m), G_m an MLP, reshaped

    (the second input, the indicator row o^m, tells G_m which modalities its
    mean was taken over). A sequence modality (T, C) is generated as T·C flat
    outputs, an image as C·H·W; text cannot be generated (a ``ValueError`` at
    build time names the modality). Downstream and loss: ``GeneratedFillModel``
    — x̃_m = v_m x_m + (1 - v_m) sg(x̂_m), per-modality encoders plus a learned
    "generated" marker, mean over modalities, MLP head; task loss plus
    ``recon_weight`` × MSE on present-but-hidden entries only.

    Training: in each training forward every present modality is hidden with
    probability ``hide_rate`` (one is always kept), so G_m learns on samples
    that hold m without ever seeing it; the context encoders, generators and
    downstream train jointly in one stage. Works with incomplete training
    data: G_m needs only samples holding m together with some other modality.
    """

    info = MethodInfo(
        category="modality-generation",
        fusion="intermediate",
        recovers_missing=True,
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.PREPARES_BY_BATCH}),
        unsupported_kinds=INPUT_GENERATION_UNSUPPORTED,
        paper="Individual modality generation (survey Sec. 2.1.2; e.g. Tran et al., CVPR 2017; "
              "Cai et al., KDD 2018): one generator per target modality",
        summary="per-target MLP generator from the masked mean of the other modalities' encodings, trained on "
                "randomly hidden present modalities; downstream reads present + generated (sg) inputs and the mask",
        recovery_space="input",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, gen_dim: int = 128, hidden: int | None = None,
                 dropout: float = 0.5, hide_rate: float = 0.3, recon_weight: float = 1.0, **components) -> None:
        super().__init__(spec, **components, embed_dim=embed_dim, hidden=hidden, dropout=dropout,
                         recon_weight=recon_weight)
        if not 0.0 < hide_rate < 1.0:
            raise ValueError(f"hide_rate must be in (0, 1), got {hide_rate}")
        self.hide_rate = float(hide_rate)
        # Light dropout: the generators regress inputs, heavy dropout would blur them.
        self.context = PerModalityEncoders(spec, gen_dim, hidden=hidden, dropout=0.1, choices=self.components)
        width = gen_dim + spec.n_modalities
        self.generators = nn.ModuleDict({m.name: FlatDecoder(m, width) for m in spec.modalities})

    def hide(self, mask: Tensor) -> Tensor:
        return hide_bernoulli(mask, self.hide_rate, self.generator)

    def generate(self, batch: Batch, visible: Tensor) -> list[Tensor]:
        # The context encoders see only visible rows (PerModalityEncoders zeroes the others first).
        c = self.context(Batch(batch.inputs, visible))  # (B, M, G)
        out = []
        for j, m in enumerate(self.spec.modalities):
            others = visible.clone()
            others[:, j] = False
            condition = torch.cat([masked_mean(c, others), others.to(c.dtype)], dim=1)
            out.append(self.generators[m.name](condition))
        return out
