"""Coordinated representation by deep CCA: maximise the canonical correlation of modality pairs."""

from __future__ import annotations

import torch
from torch import Tensor

from ...components.aligned_fusion import AlignedFusion
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo
from ..registry import register_method

#: Absolute floor added to the ridge, so all-constant embeddings still give a positive-definite matrix.
_EPS = 1e-6


def masked_cca_correlation(u_a: Tensor, u_b: Tensor, both: Tensor, ridge: float,
                           top_k: int | None = None) -> tuple[Tensor, Tensor]:
    """Mean of the top-k canonical correlations between two modalities, over the samples holding both.

    u_a, u_b: (B, P) embeddings (rows where ``both`` is False are never read, even NaN);
    both: (B,) bool. With S = {i : both[i]}, n = |S|, centred rows H_a, H_b (n, P)::

        Σ_aa = H_aᵀH_a / (n - 1) + r_a I,  r_a = ridge · tr(H_aᵀH_a / (n - 1)) / P + ε   (same for b)
        Σ_ab = H_aᵀH_b / (n - 1)
        T    = L_a⁻¹ Σ_ab L_b⁻ᵀ,  Σ_aa = L_a L_aᵀ (Cholesky)                              (P, P)
        corr = (1/k) Σ_{i ≤ k} σ_i(T)

    The singular values of T are those of Σ_aa^{-1/2} Σ_ab Σ_bb^{-1/2} (Andrew et al.'s
    DCCA objective; k = P by default is its trace norm): a Cholesky factor whitens as well as
    the symmetric root but has stable gradients, and ``svdvals`` has stable gradients even
    for repeated singular values. The ridge, relative to the mean variance so it does not
    depend on the embedding's scale, keeps Σ_aa invertible when n <= P (small batches).

    Returns (corr, n): corr in [0, 1), a scalar tensor; 0 when n < 2 (no covariance); never NaN.
    """
    dtype, device = u_a.dtype, u_a.device
    zero = torch.zeros((), dtype=dtype, device=device)
    keep = both.unsqueeze(1)
    n = both.sum()
    count = n.clamp_min(1).to(dtype)
    a = torch.where(keep, u_a, zero)
    b = torch.where(keep, u_b, zero)
    a = torch.where(keep, a - a.sum(dim=0) / count, zero)
    b = torch.where(keep, b - b.sum(dim=0) / count, zero)
    denom = (n - 1).clamp_min(1).to(dtype)
    dim = a.shape[1]
    eye = torch.eye(dim, dtype=dtype, device=device)

    def regularised(h: Tensor) -> Tensor:
        cov = h.t() @ h / denom
        return cov + (ridge * cov.diagonal().mean() + _EPS) * eye

    l_a = torch.linalg.cholesky(regularised(a))
    l_b = torch.linalg.cholesky(regularised(b))
    cross = a.t() @ b / denom
    t = torch.linalg.solve_triangular(l_a, cross, upper=False)  # L_a⁻¹ Σ_ab
    t = torch.linalg.solve_triangular(l_b, t.t(), upper=False).t()  # ... L_b⁻ᵀ
    k = dim if top_k is None else max(1, min(int(top_k), dim))
    corr = torch.linalg.svdvals(t)[:k].mean()
    return torch.where(n >= 2, corr, zero), n


def pairwise_masked_dcca(u: Tensor, mask: Tensor, ridge: float, top_k: int | None = None) -> Tensor:
    """Mean over modality pairs (i < j) of ``1 - masked_cca_correlation`` on the samples holding both.

    u: (B, M, P) embeddings (missing slots never read); mask: (B, M) bool. Pairs held by fewer
    than 2 samples are left out of the mean; with no usable pair the result is 0 (never NaN).
    """
    total = torch.zeros((), dtype=u.dtype, device=u.device)
    n_pairs = torch.zeros((), dtype=u.dtype, device=u.device)
    for i in range(u.shape[1]):
        for j in range(i + 1, u.shape[1]):
            corr, n = masked_cca_correlation(u[:, i], u[:, j], mask[:, i] & mask[:, j], ridge, top_k)
            used = (n >= 2).to(u.dtype)
            total = total + used * (1.0 - corr)
            n_pairs = n_pairs + used
    return total / n_pairs.clamp_min(1)


@register_method("dcca-align")
class DCCAAlign(AlignedFusion):
    """Masked-mean fusion of modality embeddings coordinated by pairwise deep CCA.

    Paper: Deep Canonical Correlation Analysis (Andrew, Arora, Bilmes and
    Livescu, ICML 2013), applied to every pair of available modalities as a
    coordinated-representation loss (survey Sec. 3.2.1) and masked to the
    samples holding both.

    Shapes: B batch, M modalities, P = ``proj_dim`` (small by default: the
    correlation is estimated from the samples of one batch holding a pair)::

        u_m = W_m E_m(x_m)                                          (B, M, P)
        h = Σ_m a_m u_m / Σ_m a_m ;  logits = head(h)               (B, P) -> (B, C)
        ρ_ij = mean of the top-k canonical correlations of (u_i, u_j)
               over B_ij = {b : a_b^i = a_b^j = 1}, ridge-regularised   (``masked_cca_correlation``)
        L = L_task + λ · mean_{i<j, |B_ij| >= 2} (1 - ρ_ij)

    The ridge (``ridge`` × mean variance added to each covariance) keeps the
    whitening stable on small batches, where a pair may be held by fewer
    samples than P. Batch statistics (covariances) are used only in the
    training loss, never at inference: eval-mode logits of a sample depend on
    that sample alone. CCA is invariant to a linear map of each modality, so
    it coordinates *what* the embeddings encode (their shared, correlated
    content) while the shared head and the masked mean keep them in one
    coordinate frame. λ = ``weight`` (default 0.1), k = ``top_k`` (default P).

    Works with incomplete training data: each pair is trained on whatever
    samples hold it.
    """

    info = MethodInfo(
        category="coordinated-representation",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.FACTORISED}),
        paper="Deep CCA (Andrew et al., ICML 2013) between every pair of co-present modalities "
              "(survey Sec. 3.2.1, coordinated representation)",
        summary="per-modality encoders + projections coordinated by masked pairwise deep CCA (ridge-regularised, "
                "λ=0.1); masked mean of the projections; MLP head",
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, proj_dim: int = 32, hidden: int | None = None,
                 dropout: float = 0.5, weight: float = 0.1, ridge: float = 0.1, top_k: int | None = None,
                 **components) -> None:
        super().__init__(spec, **components, embed_dim=embed_dim, proj_dim=proj_dim, hidden=hidden, dropout=dropout,
                         weight=weight)
        if ridge <= 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        self.ridge, self.top_k = float(ridge), top_k

    def alignment_loss(self, embeddings: Tensor, mask: Tensor) -> Tensor:
        """Mean masked pairwise ``1 - ρ`` (unweighted) of (B, M, P) embeddings under a (B, M) mask."""
        return pairwise_masked_dcca(embeddings, mask, self.ridge, self.top_k)
