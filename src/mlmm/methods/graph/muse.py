"""MUSE: mutual-consistent graph contrastive learning on a sample–modality bipartite graph."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...data.batch import Batch
from ...data.spec import DatasetSpec
from ...validation import Interval
from ..base import MethodInfo, MissingModalityModel, Output
from ..registry import register_method


def drop_edges(mask: Tensor, p_row: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """MUSE's augmentation: each sample with K >= 2 present modalities is, with probability
    ``p_row``, cut down to a uniformly drawn number in 1..K-1 of its present modalities
    (which ones: uniformly at random). mask (B, M) bool -> (B, M) bool ⊆ mask, never empty
    where ``mask`` is not. Draws from ``generator`` (the method's)."""
    k = mask.sum(dim=1)
    chosen = (torch.rand(mask.shape[0], device=mask.device, generator=generator) < p_row) & (k >= 2)
    # keep ~ U{1, ..., K-1}
    keep = (torch.rand(mask.shape[0], device=mask.device,
                       generator=generator) * (k - 1).clamp_min(1)).floor().long() + 1
    scores = torch.rand(mask.shape, device=mask.device, generator=generator).masked_fill(~mask, -1.0)
    rank = scores.argsort(dim=1, descending=True).argsort(dim=1)  # 0 = highest score
    kept = mask & (rank < keep.unsqueeze(1))
    return torch.where(chosen.unsqueeze(1), kept, mask)


class BipartiteLayer(nn.Module):
    """One EdgeSAGE-style layer on the dense sample–modality graph (MUSE's ``EdgeSAGEConv``).

    A node's message from a neighbour u over edge e is relu(W_msg [x_u ; e]); its new state
    is relu(W_upd [mean of messages ; x_v]). Sample nodes aggregate over their present
    modalities; modality nodes over the samples holding them — in the batch while training,
    from ``running`` (a running mean of those aggregates, like BatchNorm's statistics) in
    eval mode, so a prediction never depends on its batch-mates.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.message = nn.Linear(2 * dim, dim)
        self.update = nn.Linear(2 * dim, dim)

    def forward(self, xs: Tensor, xm: Tensor, edges: Tensor, mask: Tensor,
                running: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """xs (B, D) samples, xm (M, D) modalities, edges (B, M, D), mask (B, M), running (M, D) or
        None (training) -> (new xs, new xm, the modality aggregate used (M, D))."""
        b, m, d = edges.shape
        w = mask.unsqueeze(-1).to(edges.dtype)
        to_sample = F.relu(self.message(torch.cat([xm.unsqueeze(0).expand(b, m, d), edges], dim=-1)))
        agg_s = (to_sample * w).sum(dim=1) / w.sum(dim=1).clamp_min(1)
        new_xs = F.relu(self.update(torch.cat([agg_s, xs], dim=-1)))
        if running is None:  # training: aggregate the batch's samples into each modality node
            to_mod = F.relu(self.message(torch.cat([xs.unsqueeze(1).expand(b, m, d), edges], dim=-1)))
            agg_m = (to_mod * w).sum(dim=0) / w.sum(dim=0).clamp_min(1)  # (M, D); 0 for an unseen modality
        else:
            agg_m = running
        new_xm = F.relu(self.update(torch.cat([agg_m, xm], dim=-1)))
        return new_xs, new_xm, agg_m


@register_method("muse")
class MUSE(MissingModalityModel):
    """MUSE (Wu et al., "Multimodal Patient Representation Learning with Missing Modalities and
    Labels", ICLR 2024), adapted; also in the peer library iMML (``imml.classify.MUSE``).

    Shapes: B batch, M modalities, D = ``embed_dim``, C outputs, L = ``n_layers``.

        z_m = E_m(x_m)                                    (B, M, D) per-modality embeddings
        graph: sample nodes (init all-ones, (B, D)) — modality nodes (learned, (M, D)),
               an edge (b, m) with attribute z_bm wherever a[b, m] = 1
        L x BipartiteLayer, edge attributes updated between layers:
               e_bm <- relu(W_e [x_b ; x_m ; e_bm])
        h = final sample-node states                      (B, D)
        logits = head(h)                                  (B, C)

    Training (two views): the graph of the mask a, and an augmented graph of
    ``drop_edges(a)`` (per sample, w.p. 0.5 keep 1..K-1 of its K present edges). With
    u, u' = normalise(tanh(W h)), normalise(tanh(W h')), s = 1/τ = 1/0.07:

        L = CE(head(h), y)
            + 0.5 · [CE(s u u'^T, I) + CE(s u' u^T, I)] / 2                       (unsupervised, mutual-consistent)
            + 0.5 · [2 BCE(s u u^T, Y) + BCE(s u u'^T, Y) + BCE(s u' u^T, Y)] / 4  (supervised; Y_ij = [y_i = y_j])

    (the official weights; the supervised term is dropped for regression.)

    Deviations, disclosed: (1) MUSE and iMML build the graph over the mini-batch at test
    time too, so a patient's prediction depends on who else is in the batch; here
    modality nodes in eval mode aggregate a running mean (momentum 0.1) of their training
    aggregates, making eval batch-independent. (2) One edge attribute per (sample,
    modality) pair instead of one per direction. (3) mlmm's default (or injected)
    encoders instead of MUSE's per-dataset ones; no partially-labelled samples (every
    training sample has a label in mlmm). Works with incomplete training data.
    """

    info = MethodInfo(
        category="graph",
        fusion="intermediate",
        recovers_missing=False,
        needs_complete_train=False,
        paper="MUSE: Multimodal Patient Representation Learning with Missing Modalities and Labels "
              "(Wu, Dadu, Nalls, Faghri & Sun, ICLR 2024); peer implementation in iMML",
        summary="sample-modality bipartite graph (edges = present modalities, edge attribute = embedding), "
                "EdgeSAGE message passing; mutual-consistent contrastive loss between the graph and an "
                "edge-dropped view, supervised contrastive + CE. Differs: modality nodes use a running mean of "
                "their training aggregates at eval (the original graph is the test batch); one edge attribute "
                "per pair; every sample labelled",
    )

    param_constraints: ClassVar[dict] = {"momentum": [Interval("real", 0, 1, closed="right")]}

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.25,
                 n_layers: int = 2, temperature: float = 0.07, momentum: float = 0.1, **components) -> None:
        super().__init__(spec, **components)
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.scale = 1.0 / float(temperature)
        self.momentum = float(momentum)
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.modality_nodes = nn.Parameter(torch.randn(spec.n_modalities, embed_dim))
        self.layers = nn.ModuleList(BipartiteLayer(embed_dim) for _ in range(n_layers))
        self.edge_updates = nn.ModuleList(nn.Linear(3 * embed_dim, embed_dim) for _ in range(n_layers - 1))
        self.dropout = nn.Dropout(dropout)
        self.projection = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.Tanh())
        self.head = self.components.make_head(embed_dim, spec.task.output_dim, hidden=embed_dim, dropout=dropout)
        self.register_buffer("running_agg", torch.zeros(n_layers, spec.n_modalities, embed_dim))

    def propagate(self, z: Tensor, mask: Tensor, *, track: bool = False) -> Tensor:
        """z (B, M, D) edge attributes, mask (B, M) -> (B, D) sample-node states. ``track``
        (training, the un-augmented view): fold the batch's modality aggregates into
        ``running_agg``."""
        b, m, d = z.shape
        xs = torch.ones(b, d, dtype=z.dtype, device=z.device)
        xm = self.modality_nodes.to(z.dtype)
        edges = z
        for i, layer in enumerate(self.layers):
            running = None if self.training else self.running_agg[i].to(z.dtype)
            xs, xm, agg = layer(xs, xm, edges, mask, running)
            if track:
                seen = mask.any(dim=0).unsqueeze(1)  # modalities the batch holds
                with torch.no_grad():
                    blended = (1 - self.momentum) * self.running_agg[i] + self.momentum * agg.detach()
                    self.running_agg[i] = torch.where(seen, blended, self.running_agg[i])
            if i < len(self.layers) - 1:
                xs = self.dropout(xs)
                pair = torch.cat([xs.unsqueeze(1).expand(b, m, d), xm.unsqueeze(0).expand(b, m, d), edges], dim=-1)
                edges = F.relu(self.edge_updates[i](pair))
        return xs

    def forward(self, batch: Batch) -> Output:
        z = self.encoders(batch)
        h = self.propagate(z, batch.mask, track=self.training)
        aux = {"representation": h}
        if self.training:
            aux["augmented_representation"] = self.propagate(z, drop_edges(batch.mask, generator=self.generator))
        return Output(self.head(h), aux=aux)

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        terms = {"task": self.task_loss(output.logits, batch.target)}
        if "augmented_representation" not in output.aux:
            return terms
        u = F.normalize(self.projection(output.aux["representation"]), dim=-1)
        au = F.normalize(self.projection(output.aux["augmented_representation"]), dim=-1)
        cross = self.scale * u @ au.t()  # (B, B)
        eye = torch.arange(u.shape[0], device=u.device)
        terms["mutual_consistency"] = 0.5 * (F.cross_entropy(cross, eye) + F.cross_entropy(cross.t(), eye)) / 2
        if self.spec.task.kind == "classification":
            same = (batch.target.view(-1, 1) == batch.target.view(1, -1)).to(u.dtype)
            within = self.scale * u @ u.t()
            sup = (2 * F.binary_cross_entropy_with_logits(within, same)
                   + F.binary_cross_entropy_with_logits(cross, same)
                   + F.binary_cross_entropy_with_logits(cross.t(), same)) / 4
            terms["supervised_contrastive"] = 0.5 * sup
        return terms
