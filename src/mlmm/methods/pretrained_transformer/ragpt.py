"""RAGPT: retrieval-augmented dynamic prompts for a transformer fusion."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.memory_bank import TrainingBankMixin
from ...data.batch import Batch
from ...data.passes import SplitPasses
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output
from ..registry import register_method


class SpectralGenerator(nn.Module):
    """RAGPT's missing-modality generator (MMG) for one modality, on one embedding per neighbour.

    r (B, D) = mean of the retrieved neighbours' embeddings of the modality;
    g = W_o LN(r + dropout(irfft(W ⊙ rfft(r))))   (B, D), W a learned complex filter over
    the feature axis (the official filter runs over the token axis of ViLT's sequence; here a
    modality is one token, so it filters the embedding's own frequencies).
    """

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.filter = nn.Parameter(torch.randn(dim // 2 + 1, 2) * 0.02 + torch.tensor([1.0, 0.0]))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, dim)

    def forward(self, r: Tensor) -> Tensor:
        spectrum = torch.fft.rfft(r, dim=-1) * torch.view_as_complex(self.filter.contiguous())
        filtered = torch.fft.irfft(spectrum, n=r.shape[-1], dim=-1)
        return self.out(self.norm(r + self.dropout(filtered)))


class ContextPrompter(nn.Module):
    """RAGPT's context-aware prompter (CAP) for one modality: the sample's token attends over
    its retrieved neighbours' embeddings of that modality; q (B, D), keys (B, K, D),
    valid (B, K) -> prompt (B, D), zero when no neighbour is valid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.scale = dim ** -0.5

    def forward(self, query: Tensor, keys: Tensor, valid: Tensor) -> Tensor:
        scores = torch.einsum("bd,bkd->bk", self.q(query), self.k(keys)) * self.scale
        scores = scores.masked_fill(~valid, float("-inf"))
        weights = torch.nan_to_num(torch.softmax(scores, dim=1), nan=0.0)  # all-invalid rows -> 0
        weights = torch.where(valid, weights, torch.zeros((), dtype=weights.dtype, device=weights.device))
        return torch.einsum("bk,bkd->bd", weights, self.v(keys))


@register_method("ragpt")
class RAGPT(TrainingBankMixin, MissingModalityModel):
    """RAGPT (Lang, Cheng, Zhong & Zhou, "Retrieval-Augmented Dynamic Prompt Tuning for Incomplete
    Multimodal Learning", AAAI 2025), adapted to one token per modality; also in the peer
    library iMML (``imml.classify.RAGPT``).

    Shapes: B batch, M modalities, D = ``embed_dim``, K = ``k`` neighbours, C classes.

        z_m = E_m(x_m)                                          (B, M, D)
        retriever: per modality m, the top-K training-bank rows holding m, ranked by mean cosine
                   similarity on the modalities both hold (the multi-channel retriever; bank
                   embeddings under the current encoders, eval mode, stop-gradient, cached; in
                   training a sample never retrieves its own bank copy)     N_m (B, K)
        MMG:       t_m = z_m if a_m else SpectralGenerator_m(mean_{n in N_m} z_n^m)   (B, M, D)
                   (a learned [MISS_m] token when no neighbour holds m)
        CAP:       p_m = attention(t_m ; {z_n^m : n in N_m})                         (B, M, D)
        label:     l = mean_{n in N} E_y[y_n] over all retrieved neighbours           (B, D)
        tokens  = [l, p_1..p_M, t_1 + type_1, .., t_M + type_M]   -> transformer (``layers``)
        out     = MLP([o_0 ; l])  (o_0: output at the label-prompt position, ViLT's pooled token)
        logits  = out · E_y^T                                   (B, C) (scored against the label
                                                                embeddings, as RAGPT does)

    Adaptation (disclosed): RAGPT inserts its prompts into a *frozen pretrained* ViLT and
    generates the missing modality's token sequence; mlmm has no ViLT offline, so the
    fusion is a small transformer trained from scratch (``layers`` pre-norm encoder layers)
    over one token per modality, and retrieval uses the method's own encoders instead of
    frozen CLIP features. Regression: no label prompt, a linear output. The generator and
    [MISS] tokens only train on samples that miss a modality (the loop's modality dropout
    supplies them), hence the declared deviation. Works with incomplete training data.
    """

    info = MethodInfo(
        category="pretrained-transformer",
        fusion="intermediate",
        recovers_missing=True,
        recovery_space="embedding",
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.PREPARES_BY_BATCH}),
        paper="RAGPT: Retrieval-AuGmented dynamic Prompt Tuning for Incomplete Multimodal Learning "
              "(Lang, Cheng, Zhong & Zhou, AAAI 2025); peer implementation in iMML",
        summary="top-K training neighbours per modality from a memory bank; missing token generated from the "
                "neighbours' features (spectral MMG); context prompts by attention over neighbours + label "
                "prompt; label-embedding classifier. Differs: one token per modality and a small transformer "
                "trained from scratch (no frozen ViLT offline); retrieval on the method's own encoders",
        deviations={
            "gradients_reach_parameters": "the missing-modality generator and [MISS] tokens are used only for "
                                          "samples that miss a modality, never on a complete batch",
        },
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.2,
                 k: int = 5, bank_size: int = 512, bank_seed: int = 0, layers: int = 2, heads: int = 4,
                 **components) -> None:
        super().__init__(spec, **components)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.init_bank(bank_size, bank_seed)
        m = spec.n_modalities
        self.generators = nn.ModuleList(SpectralGenerator(embed_dim, dropout) for _ in range(m))
        self.prompters = nn.ModuleList(ContextPrompter(embed_dim) for _ in range(m))
        self.miss_tokens = nn.Parameter(0.02 * torch.randn(m, embed_dim))
        self.type_embed = nn.Parameter(0.02 * torch.randn(m, embed_dim))
        layer = nn.TransformerEncoderLayer(embed_dim, heads, dim_feedforward=2 * embed_dim, dropout=dropout,
                                           batch_first=True, norm_first=True)
        self.fusion = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.classification = spec.task.kind == "classification"
        if self.classification:
            self.label_embed = nn.Parameter(0.02 * torch.randn(spec.task.output_dim, embed_dim))
            self.head = nn.Sequential(nn.Linear(2 * embed_dim, 2 * embed_dim), nn.LayerNorm(2 * embed_dim),
                                      nn.GELU(), nn.Linear(2 * embed_dim, embed_dim))
        else:
            self.head = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.GELU(),
                                      nn.Linear(embed_dim, spec.task.output_dim))

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer) -> None:
        """Store a seeded subsample (<= ``bank_size`` rows) of the standardised training set as the bank."""
        self.fill_bank(split)

    def bank_embeddings(self) -> Tensor:
        """(N, M, D) embeddings of the bank under the current encoders (eval mode, no grad, cached)."""
        return self.cached_bank_embeddings(self.encoders)

    def _context(self, batch: Batch) -> dict[str, Tensor]:
        """Encodings, retrieved neighbours, generated tokens (see the class docstring)."""
        z = self.encoders(batch)  # (B, M, D)
        b, m, d = z.shape
        mask = batch.mask
        if self.bank_mask.shape[0] == 0:  # not prepared: no neighbour anywhere
            index = torch.zeros(b, m, 1, dtype=torch.long, device=z.device)
            valid = torch.zeros(b, m, 1, dtype=torch.bool, device=z.device)
            neighbours = torch.zeros(b, m, 1, d, dtype=z.dtype, device=z.device)
        else:
            bank = self.bank_embeddings()  # (N, M, D), no grad
            index, valid = self.retrieve_neighbours(batch, z, bank, self.k)  # (B, M, K)
            modality = torch.arange(m, device=z.device).view(1, -1, 1)
            neighbours = bank[index, modality]  # (B, M, K, D)
        w = valid.unsqueeze(-1).to(z.dtype)
        count = valid.sum(dim=2)  # (B, M)
        mean = (neighbours * w).sum(dim=2) / count.clamp_min(1).unsqueeze(-1).to(z.dtype)
        generated = torch.stack([g(mean[:, j]) for j, g in enumerate(self.generators)], dim=1)
        if self.plain_fill:
            generated = torch.zeros_like(generated)
        fill = torch.where((count > 0).unsqueeze(-1), generated, self.miss_tokens.to(z.dtype).expand(b, m, d))
        tokens = torch.where(mask.unsqueeze(-1), z, fill)
        return {"tokens": tokens, "index": index, "valid": valid, "neighbours": neighbours, "count": count}

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality -> (B, D): z_m where present, the generated token where missing."""
        tokens = self._context(batch)["tokens"]
        return {name: tokens[:, j] for j, name in enumerate(self.spec.modality_names)}

    def forward(self, batch: Batch) -> Output:
        ctx = self._context(batch)
        tokens, valid, neighbours = ctx["tokens"], ctx["valid"], ctx["neighbours"]
        b, _, d = tokens.shape
        prompts = torch.stack([p(tokens[:, j], neighbours[:, j], valid[:, j]) for j, p in enumerate(self.prompters)],
                              dim=1)  # (B, M, D)
        if self.classification:
            labels = self.bank_class[ctx["index"]] if self.bank_class.numel() else torch.zeros_like(ctx["index"])
            w = valid.unsqueeze(-1).to(tokens.dtype)
            label_prompt = (self.label_embed[labels] * w).sum(dim=(1, 2)) / w.sum(dim=(1, 2)).clamp_min(1)
        else:
            label_prompt = torch.zeros(b, d, dtype=tokens.dtype, device=tokens.device)
        sequence = torch.cat([label_prompt.unsqueeze(1), prompts, tokens + self.type_embed.to(tokens.dtype)], dim=1)
        pooled = self.fusion(sequence)[:, 0]
        if self.classification:
            logits = self.head(torch.cat([pooled, label_prompt], dim=1)) @ self.label_embed.t()
        else:
            logits = self.head(pooled)
        return Output(logits, aux={"filled": ~batch.mask & (ctx["count"] > 0)})
