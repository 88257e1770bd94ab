"""M3Care: a patient-similarity graph from learned kernels; GCN layers impute missing modalities."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.memory_bank import TrainingBankMixin
from ...data.batch import Batch
from ...data.passes import SplitPasses
from ...data.preprocess import Standardizer
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output, mask_column
from ..registry import register_method

#: M3Care's multi-bandwidth Gaussian kernel: bandwidths b·{1/2, 1, 2} around the mean squared distance b.
_BANDWIDTHS = (0.5, 1.0, 2.0)


def gaussian_kernel(x: Tensor, y: Tensor, bandwidth: Tensor) -> Tensor:
    """(..., P, Q) mean over ``_BANDWIDTHS`` of exp(-‖x_p - y_q‖² / (s·bandwidth)); x (..., P, D), y (..., Q, D),
    bandwidth broadcastable to (..., 1, 1)."""
    d2 = torch.cdist(x, y).pow(2)
    return sum(torch.exp(-d2 / (s * bandwidth)) for s in _BANDWIDTHS) / len(_BANDWIDTHS)


@register_method("m3care-graph")
class M3CareGraph(TrainingBankMixin, MissingModalityModel):
    """M3Care (Zhang et al., "M3Care: Learning with Missing Modalities in Multimodal
    Healthcare Data", KDD 2022): learned per-modality similarity kernels build a patient
    graph; per-modality GCN layers impute a missing modality's representation from similar
    patients that hold it; a transformer fuses the modality tokens.

    Shapes: B batch, M modalities, D = ``embed_dim``, P memory rows (graph nodes beside
    the batch: ``bank_per_step`` sampled training rows in training, the whole bank, at most
    ``bank_size`` rows, at eval), C outputs.

        z_v^m = E_m(x_v^m)                                   (B, M, D) (memory rows: (P, M, D))
        k_m(v,u) = (1-σ(ε_m))·K(n(φ_m(z_v^m)), n(φ_m(z_u^m))) + σ(ε_m)·K(n(z_v^m), n(z_u^m))
                 K = mean over s in {1/2,1,2} of exp(-‖·-·‖² / (s·b_m)), b_m the mean squared
                 distance among memory rows holding m (no gradient); φ_m a 3-layer SELU MLP;
                 n = LayerNorm without affine
        S_vu = mean of k_m(v,u) over modalities both v and u hold        (B, P) and (P, P)
        A = relu(S - σ(θ)) + [S > σ(θ)]·sg(σ(θ))               learned threshold θ (M3Care's)
        Â_vu^m = A_vu a_u^m / Σ_u' A_vu' a_u'^m                neighbours u (memory rows and v
                 itself) that hold m, row-normalised
        H1^m = selu(W1_m Σ_u Â_vu^m z_u^m + c1_m),  H2^m = selu(W2_m Σ_u Â_vu^m H1_u^m + c2_m)
                 (two GCN layers; a memory row's H1 comes from the memory-memory graph)
        h_v^m = α H2_v^m + (1-α) z_v^m,  α = σ(w1·H2)/(σ(w1·H2)+σ(w2·z))   if a_v^m = 1
        h_v^m = H2_v^m                                                    if a_v^m = 0
        t = Transformer_2(h^m + type_m)  (key padding: modalities neither present nor imputable)
        logits = head(concat_m t^m, zeros for those)                      (B, C)

    Loss: task + ``aux_weight`` · Σ_m mean over present rows of |‖φ_m(z^m)‖ - ‖z^m‖| (M3Care's
    norm-matching term; the notebooks weight it 1e-8 / 1e-7).

    Differences from the official notebooks, each for mlmm's contract: (1) the graph's other
    nodes are training rows from a memory (``bank_per_step`` rows sampled per step and encoded
    with gradient, in place of the mini-batch; at eval the whole bank, cached), never
    batch-mates, so a prediction does not depend on its batch; a training sample's own memory
    copy (found by ``Batch.index``) is left out, so modality dropout never "recovers" a
    modality from the sample itself; (2) Â is masked by the neighbour's availability and
    row-normalised (the notebook masks by a_v·a_u, which zeroes exactly the rows that need
    imputing, and sums unnormalised); (3) LayerNorm instead of one BatchNorm shared by all
    modalities, and the kernel bandwidth from memory rows instead of the batch; (4) the
    norm-matching term is averaged per sample instead of taken on the batch's matrix.
    A modality no neighbour holds stays missing (padding); a sample with no modality gets head(0).

    Works with incomplete training data. ``recover(batch)`` returns H2 (what fills a missing
    slot); ``recovery_target`` returns h at present slots (what the fill stands in for);
    ``plain_fill`` puts zeros in place of H2 at missing slots.
    """

    info = MethodInfo(
        category="graph",
        fusion="intermediate",
        recovers_missing=True,
        needs_complete_train=False,
        capabilities=frozenset({Capability.PREPARES, Capability.PREPARES_BY_BATCH}),
        paper="Zhang et al., M3Care: Learning with Missing Modalities in Multimodal Healthcare Data, KDD 2022",
        summary="learned per-modality similarity kernels (MLP kernel mixed with the embedding kernel, "
                "multi-bandwidth Gaussian) -> patient graph with a learned threshold -> two GCN layers per "
                "modality impute missing representations from neighbours holding them, gated mix for present "
                "ones -> modality-type embeddings + 2-layer transformer -> concatenation -> head; norm-matching "
                "auxiliary loss. Adaptation: the graph's other nodes are training rows from a bounded memory "
                "(sampled per step with gradient, the whole memory cached at eval), never batch-mates, so "
                "predictions never depend on the batch; adjacency row-normalised over neighbours holding the "
                "modality; LayerNorm instead of a shared BatchNorm",
        recovery_space="embedding",
    )

    #: The bank is read at prediction (its rows are the graph's other nodes).
    training_state = {"bank_*": "prediction builds its patient graph over these stored training rows"}

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 threshold: float = 0.5, heads: int = 4, layers: int = 2, aux_weight: float = 1e-7,
                 bank_size: int = 1024, bank_per_step: int = 128, bank_seed: int = 0, **components) -> None:
        super().__init__(spec, **components)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if bank_per_step < 2:
            raise ValueError(f"bank_per_step must be >= 2, got {bank_per_step}")
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        if embed_dim % heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by heads ({heads})")
        self.bank_per_step, self.aux_weight = int(bank_per_step), float(aux_weight)
        n_mod, d = spec.n_modalities, embed_dim
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        # Similarity kernels: φ_m (M3Care's simiProj: three linear layers with SELU) and the mixing logit ε_m.
        self.kernel_mlp = nn.ModuleList(nn.Sequential(nn.Linear(d, d), nn.SELU(), nn.Linear(d, d), nn.SELU(),
                                                      nn.Linear(d, d)) for _ in spec.modalities)
        self.kernel_mix = nn.Parameter(torch.full((n_mod,), -0.3))
        self.threshold_logit = nn.Parameter(torch.tensor(math.log(threshold / (1.0 - threshold))))
        # Two GCN layers per modality, batched over modalities: (M, D, D) weights, (M, D) biases.
        bound = 1.0 / math.sqrt(d)
        self.gcn_weight = nn.Parameter(torch.empty(2, n_mod, d, d).uniform_(-bound, bound))
        self.gcn_bias = nn.Parameter(torch.empty(2, n_mod, d).uniform_(-bound, bound))
        self.mix_gcn = nn.Parameter(torch.empty(n_mod, d).uniform_(-bound, bound))  # w1 (M3Care's weight1)
        self.mix_own = nn.Parameter(torch.empty(n_mod, d).uniform_(-bound, bound))  # w2 (weight2)
        self.mix_bias = nn.Parameter(torch.zeros(2, n_mod))
        self.type_embedding = nn.Parameter(torch.randn(n_mod, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=4 * d, dropout=dropout, batch_first=True)
        # No nested tensors: their fast path returns padded rows differently in eval than in training.
        self.fusion = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = self.components.make_head(n_mod * d, spec.task.output_dim, hidden=d, dropout=dropout)
        self.init_bank(bank_size, bank_seed)

    # ------------------------------------------------------------ memory rows

    def prepare_split(self, split: SplitPasses, standardizer: Standardizer) -> None:
        """Store a seeded subsample (<= ``bank_size`` rows) of the standardised training set as the memory."""
        self.fill_bank(split)

    def _bank_batch(self, rows: Tensor | None) -> Batch:
        xs, mask = self.bank_inputs(), self.bank_mask
        if rows is not None:
            xs, mask = [x[rows] for x in xs], mask[rows]
        return Batch(dict(zip(self.spec.modality_names, xs)), mask)

    def _training_rows(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """(rows (P,), own (B, P)): ``bank_per_step`` random memory rows, and which of them is each
        sample's own copy (by ``Batch.index``; by value where the batch carries no index)."""
        n_bank = self.bank_mask.shape[0]
        rows = torch.randperm(n_bank, device=self.bank_mask.device,
                              generator=self.generator)[: self.bank_per_step].sort().values
        if batch.index is not None:
            own = batch.index.to(rows.device).unsqueeze(1) == self.bank_rows[rows].unsqueeze(0)
        else:
            xs = [torch.where(mask_column(batch.mask, j, x.dim()), x, torch.zeros((), dtype=x.dtype, device=x.device))
                  for j, x in enumerate(batch.inputs[m] for m in self.spec.modality_names)]
            own = self.same_rows(xs, batch.mask, rows)
        return rows, own

    def _memory(self, batch: Batch) -> dict[str, Tensor] | None:
        """The memory nodes' state: z (P, M, D), mask (P, M), kernel features, bandwidth (2, M),
        H1 (P, M, D), and in training ``own`` (B, P) (a sample's own copy, never its neighbour).
        Training: sampled rows, with gradient; eval: the whole bank, without gradient, cached until
        a parameter, buffer or the bank changes. None when the memory is empty."""
        if self.bank_mask.shape[0] == 0:
            return None
        if not self.training:
            tensors = [*self.parameters(), *self.buffers()]
            key = tuple((t.device, t.data_ptr(), t._version) for t in tensors)
            cache = self.__dict__.get("_memory_cache")
            if cache is not None and cache[0] == key:
                return cache[1]
            with torch.no_grad():  # eval: the memory is fixed state, nothing to learn through it
                memory = self._build_memory(self._bank_batch(None))
            self.__dict__["_memory_cache"] = (key, memory)  # plain attribute: not state
            return memory
        rows, own = self._training_rows(batch)
        # A memory row that copies a batch sample feeds no other memory row's H1, so a sample's
        # dropped modality cannot come back through a neighbour's neighbour.
        memory = self._build_memory(self._bank_batch(rows), blocked=own.any(dim=0))
        memory["own"] = own
        return memory

    def _build_memory(self, bank: Batch, blocked: Tensor | None = None) -> dict[str, Tensor]:
        mask = bank.mask
        z = self.encoders(bank)
        z = torch.where(mask.unsqueeze(-1), z, torch.zeros((), dtype=z.dtype, device=z.device))
        feats = self._kernel_features(z)
        bandwidth = torch.stack([self._bandwidth(f, mask) for f in feats])  # (2, M)
        adjacency = self._adjacency(feats, mask, feats, mask, bandwidth)  # (P, P), self edges included
        if blocked is not None:
            keep = ~blocked.unsqueeze(0) | torch.eye(len(blocked), dtype=torch.bool, device=blocked.device)
            adjacency = torch.where(keep, adjacency, torch.zeros((), dtype=adjacency.dtype, device=adjacency.device))
        h1 = self._gcn(0, adjacency, mask, z)[0]
        return {"z": z, "mask": mask, "feats": feats, "bandwidth": bandwidth, "h1": h1}

    # ------------------------------------------------------------ graph

    def _kernel_features(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(n(φ_m(z)), n(z)), each (N, M, D): the two feature spaces the kernels compare."""
        phi = torch.stack([mlp(z[:, j]) for j, mlp in enumerate(self.kernel_mlp)], dim=1)
        return F.layer_norm(phi, phi.shape[-1:]), F.layer_norm(z, z.shape[-1:])

    @staticmethod
    def _bandwidth(feat: Tensor, mask: Tensor) -> Tensor:
        """(M,) mean squared distance between distinct memory rows that hold m (no gradient, as
        M3Care's kernel takes its bandwidth from ``.data``); 1 where fewer than two hold m."""
        with torch.no_grad():
            f = feat.transpose(0, 1)  # (M, P, D)
            d2 = torch.cdist(f, f).pow(2)
            pair = mask.t().unsqueeze(2) & mask.t().unsqueeze(1)  # (M, P, P)
            pair &= ~torch.eye(mask.shape[0], dtype=torch.bool, device=mask.device)
            n = pair.sum(dim=(1, 2))
            mean = torch.where(pair, d2, torch.zeros((), dtype=d2.dtype, device=d2.device)).sum(dim=(1, 2))
            return torch.where(n > 0, mean / n.clamp_min(1), torch.ones_like(mean)).clamp_min(1e-6)

    def _adjacency(self, feats_q: tuple[Tensor, Tensor], mask_q: Tensor, feats_k: tuple[Tensor, Tensor],
                   mask_k: Tensor, bandwidth: Tensor) -> Tensor:
        """(Q, K) sparsified similarity A between query rows and key rows (mean kernel over the
        modalities both hold, then M3Care's learned threshold)."""
        mix = torch.sigmoid(self.kernel_mix).view(-1, 1, 1)  # (M, 1, 1)
        learned = gaussian_kernel(feats_q[0].transpose(0, 1), feats_k[0].transpose(0, 1), bandwidth[0].view(-1, 1, 1))
        plain = gaussian_kernel(feats_q[1].transpose(0, 1), feats_k[1].transpose(0, 1), bandwidth[1].view(-1, 1, 1))
        kernel = (1.0 - mix) * learned + mix * plain  # (M, Q, K)
        shared = mask_q.t().unsqueeze(2) & mask_k.t().unsqueeze(1)  # (M, Q, K)
        zero = torch.zeros((), dtype=kernel.dtype, device=kernel.device)
        n_shared = shared.sum(dim=0)
        sim = torch.where(shared, kernel, zero).sum(dim=0) / n_shared.clamp_min(1).to(kernel.dtype)  # (Q, K)
        threshold = torch.sigmoid(self.threshold_logit)
        sparse = F.relu(sim - threshold)
        # Kept edges keep their similarity as weight; the threshold gets its gradient through relu.
        return sparse + (sparse > 0).to(sparse.dtype) * threshold.detach()

    def _gcn(self, layer: int, adjacency: Tensor, holds: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """One GCN layer per modality. adjacency (Q, K), holds (K, M) which key rows hold m,
        x (K, M, D) key features. Returns (selu(W Σ Â x + c) (Q, M, D), has (Q, M) any neighbour)."""
        weights = adjacency.unsqueeze(1) * holds.t().unsqueeze(0).to(adjacency.dtype)  # (Q, M, K)
        total = weights.sum(dim=2, keepdim=True)
        norm = weights / total.clamp_min(1e-12)
        aggregated = torch.einsum("qmk,kmd->qmd", norm, x)
        out = F.selu(torch.einsum("qmd,mde->qme", aggregated, self.gcn_weight[layer]) + self.gcn_bias[layer])
        return out, total.squeeze(2) > 0

    def graph(self, batch: Batch, z: Tensor) -> tuple[Tensor, Tensor]:
        """(H2 (B, M, D), has (B, M)): the GCN's representation of every modality of every sample
        and whether any neighbour (a memory row, or the sample itself) holds it."""
        mask = batch.mask
        feats = self._kernel_features(z)
        memory = self._memory(batch)
        if memory is None:  # no memory rows: each sample is its own only neighbour
            n_mod, d = mask.shape[1], z.shape[-1]
            memory = {"mask": mask.new_zeros(0, n_mod), "z": z.new_zeros(0, n_mod, d),
                      "h1": z.new_zeros(0, n_mod, d)}
            to_memory = z.new_zeros(mask.shape[0], 0)
        else:
            to_memory = self._adjacency(feats, mask, memory["feats"], memory["mask"], memory["bandwidth"])  # (B, P)
            if "own" in memory:  # training: a sample's own memory copy is never its neighbour
                to_memory = torch.where(memory["own"], torch.zeros((), dtype=z.dtype, device=z.device), to_memory)
        # Self edge: S_vv = 1 wherever v holds a modality (zero distance), sparsified like the rest.
        self_sim = mask.any(dim=1).to(z.dtype)
        threshold = torch.sigmoid(self.threshold_logit)
        sparse = F.relu(self_sim - threshold)
        self_edge = sparse + (sparse > 0).to(z.dtype) * threshold.detach()
        h1, has = self._gcn_rows(0, self_edge, to_memory, mask, memory["mask"], z, memory["z"])
        h2, _ = self._gcn_rows(1, self_edge, to_memory, mask, memory["mask"], h1, memory["h1"])
        return h2, has

    def _gcn_rows(self, layer: int, self_edge: Tensor, to_memory: Tensor, mask: Tensor, memory_mask: Tensor,
                  x_self: Tensor, x_memory: Tensor) -> tuple[Tensor, Tensor]:
        """A GCN layer for batch rows whose neighbours are themselves (weight ``self_edge`` (B,))
        and the memory rows (``to_memory`` (B, P)), with no edge between batch-mates. Returns
        (selu(W Σ Â x + c) (B, M, D), has (B, M): some neighbour holds m)."""
        zero = torch.zeros((), dtype=x_self.dtype, device=x_self.device)
        w_self = torch.where(mask, self_edge.unsqueeze(1), zero)  # (B, M)
        w_mem = to_memory.unsqueeze(1) * memory_mask.t().unsqueeze(0).to(x_self.dtype)  # (B, M, P)
        total = w_self + w_mem.sum(dim=2)
        aggregated = (w_self.unsqueeze(2) * x_self + torch.einsum("bmp,pmd->bmd", w_mem, x_memory)) \
            / total.unsqueeze(2).clamp_min(1e-12)
        out = F.selu(torch.einsum("bmd,mde->bme", aggregated, self.gcn_weight[layer]) + self.gcn_bias[layer])
        return out, total > 0

    # ------------------------------------------------------------ prediction

    def _represent(self, batch: Batch) -> dict[str, Tensor]:
        mask = batch.mask
        z = self.encoders(batch)  # (B, M, D)
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        z = torch.where(mask.unsqueeze(-1), z, zero)
        h2, has = self.graph(batch, z)
        w_gcn = torch.sigmoid((h2 * self.mix_gcn).sum(dim=-1) + self.mix_bias[0])  # (B, M)
        w_own = torch.sigmoid((z * self.mix_own).sum(dim=-1) + self.mix_bias[1])
        alpha = (w_gcn / (w_gcn + w_own)).unsqueeze(-1)
        mixed = alpha * h2 + (1.0 - alpha) * z
        return {"z": z, "h2": h2, "has": has, "mixed": mixed}

    def recover(self, batch: Batch) -> dict[str, Tensor]:
        """Modality name -> H2 (B, D), the GCN representation that fills the modality when missing."""
        h2 = self._represent(batch)["h2"]
        return {m: h2[:, j] for j, m in enumerate(self.spec.modality_names)}

    def recovery_target(self, batch: Batch) -> dict[str, Tensor]:
        """Modality name -> h (B, D) at present slots: the gated mix a present modality contributes."""
        mixed = self._represent(batch)["mixed"]
        return {m: mixed[:, j] for j, m in enumerate(self.spec.modality_names)}

    def forward(self, batch: Batch) -> Output:
        mask = batch.mask
        rep = self._represent(batch)
        h2, has = rep["h2"], rep["has"]
        zero = torch.zeros((), dtype=h2.dtype, device=h2.device)
        fill = torch.zeros_like(h2) if self.plain_fill else h2
        h = torch.where(mask.unsqueeze(-1), rep["mixed"], fill)
        available = mask | has  # present, or imputable from a neighbour holding it
        # A sample with nothing available attends over zeros (no NaN) and gets head(0) below.
        padding = ~available & available.any(dim=1, keepdim=True)
        tokens = self.fusion(h + self.type_embedding, src_key_padding_mask=padding)
        tokens = torch.where(available.unsqueeze(-1), tokens, zero)
        logits = self.head(tokens.flatten(1))
        phi = torch.stack([mlp(rep["z"][:, j]) for j, mlp in enumerate(self.kernel_mlp)], dim=1)
        norm_gap = (phi.norm(dim=-1) - rep["z"].norm(dim=-1)).abs()  # (B, M)
        filled = ~mask & has
        return Output(logits, aux={"filled": filled, "imputed": h2, "norm_gap": norm_gap})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        mask = batch.mask
        gap = torch.where(mask, output.aux["norm_gap"], torch.zeros((), dtype=output.logits.dtype,
                                                                    device=output.logits.device))
        per_modality = gap.sum(dim=0) / mask.sum(dim=0).clamp_min(1).to(gap.dtype)
        return {"task": self.task_loss(output.logits, batch.target), "norm": self.aux_weight * per_modality.sum()}
