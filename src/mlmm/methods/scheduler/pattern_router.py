"""Pattern router: per availability pattern, the feasible expert that scored best on validation."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...components.encoders import PerModalityEncoders
from ...components.llm_router import Router
from ...components.pooling import masked_mean
from ...components.row_lookup import resize_to_saved
from ...data.batch import Batch
from ...data.passes import SplitPasses
from ...data.spec import DatasetSpec
from ..base import Capability, MethodInfo, MissingModalityModel, Output
from ..registry import register_method

#: Patterns are enumerated exhaustively for calibration up to this many modalities
#: (2^10 - 1 patterns); beyond, only the patterns seen in the validation split.
_ENUMERATE_UP_TO = 10


def pattern_codes(mask: Tensor) -> Tensor:
    """(B,) int64 code Σ_m a_m 2^m of each row of a (B, M) bool mask."""
    weights = 2 ** torch.arange(mask.shape[1], device=mask.device, dtype=torch.long)
    return (mask.to(torch.long) * weights).sum(dim=1)


@register_method("pattern-router")
class PatternRouter(MissingModalityModel):
    """Discrete scheduler (survey Sec. 4.2.3, where an LLM such as Visual ChatGPT or HuggingGPT
    picks the module to run): per availability pattern, route to the feasible expert with
    the best validation score on that pattern; the language model is an optional plug-in.

    Shapes: B batch, M modalities, D = ``embed_dim``, C classes, E = M + 2 experts,
    trained jointly on shared per-modality encoders; with z_m = E_m(x_m) (B, M, D) and
    p_m = softmax(head_m(z_m)) (B, M, C):

        fusion         log_softmax(head_F(Σ_m a_m z_m / Σ_m a_m))   needs any modality (the fallback)
        late-ensemble  log(Σ_m a_m p_m / Σ_m a_m)                    needs any modality
        only:<m>       log p_m                                       needs modality m

    Training loss: CE(fusion) + mean over present (sample, m) of CE(head_m(z_m)); the
    late ensemble has no parameters of its own.

    Routing: ``calibrate(val)`` (called once by ``Trainer.fit`` after training) scores
    each expert on each pattern P (all 2^M - 1 for M <= 10, else the patterns in the
    validation split) on every validation sample that holds P, restricted to P — the
    encoders are per modality, so this is exactly the expert's output on a sample
    that has P. Score = accuracy - 1e-3 · min(NLL, 10) (NLL breaks accuracy ties).

        π(P) = argmax_{e : req(e) ⊆ P, n(P) >= min_count} score(e | P), else "fusion"

    The table (pattern code -> expert) is saved in buffers. At predict time a sample
    with pattern P gets expert π(P) (fusion for a pattern never calibrated), and its
    logits are that expert's log-probabilities (B, C); ``aux["expert"]`` (B,) is the
    chosen index into ``expert_names``. An expert needing a missing modality is never
    used: the choice is checked against feasibility again at every forward.

    Language-model routing: set ``router`` to a callable ``(pattern, experts) -> name``
    (pattern: names of the present modalities; experts: one dict per expert with
    ``name``, ``requires``, ``feasible``, ``val_accuracy``, ``val_nll``, ``val_count``,
    ``cost``, ``description`` and ``rule_choice``) — e.g. ``llm.make_llm_router(generate)``.
    It is asked once per pattern during ``calibrate``; an unknown or infeasible answer is
    discarded and the rule's choice used. ``calibration`` lists every decision and its
    source (it travels in ``state_dict`` through ``get_extra_state``, so a saved and reloaded
    router keeps it). Classification only; works with incomplete training data.
    """

    info = MethodInfo(
        category="scheduler",
        fusion="hybrid",
        recovers_missing=False,
        needs_complete_train=False,
        capabilities=frozenset({Capability.CALIBRATES, Capability.CALIBRATES_BY_BATCH}),
        paper="Discrete scheduler (survey Sec. 4.2.3: Visual ChatGPT, Wu et al. 2023; HuggingGPT, Shen et al. "
              "2024) scaled down to a validation-scored router over trained experts, LLM router pluggable",
        summary="experts = masked-mean fusion, late ensemble, one per modality; per-pattern routing to the "
                "feasible expert with the best validation accuracy, fusion as fallback; pluggable LLM router",
        unsupported_kinds={"regression": "pattern-router scores its experts by validation accuracy"},
    )

    def __init__(self, spec: DatasetSpec, embed_dim: int = 128, hidden: int | None = None, dropout: float = 0.5,
                 min_count: int = 5, **components) -> None:
        super().__init__(spec, **components)
        if spec.task.kind != "classification":
            raise ValueError("pattern-router scores experts by validation accuracy; it needs a classification task")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        self.min_count = int(min_count)
        out = spec.task.output_dim
        self.encoders = PerModalityEncoders(spec, embed_dim, hidden=hidden, dropout=dropout, choices=self.components)
        self.fusion_head = self.components.make_head(embed_dim, out, hidden=embed_dim, dropout=dropout)
        self.unimodal_heads = nn.ModuleList(self.components.make_head(embed_dim, out, hidden=embed_dim, dropout=dropout)
                                            for _ in spec.modalities)
        names = spec.modality_names
        self.expert_names = ("fusion", "late-ensemble") + tuple(f"only:{m}" for m in names)
        self.expert_requires: tuple[tuple[str, ...], ...] = ((), ()) + tuple((m,) for m in names)
        self.fallback = 0
        #: Optional language-model (or any) router; see the class docstring. Not saved in state_dict.
        self.router: Router | None = None
        #: One dict per calibrated pattern: pattern, choice, source, per-expert scores.
        self.calibration: list[dict] = []
        self.register_buffer("route_codes", torch.zeros(0, dtype=torch.long))
        self.register_buffer("route_experts", torch.zeros(0, dtype=torch.long))

    # ------------------------------------------------------------ experts

    def feasible(self, mask: Tensor) -> Tensor:
        """(B, E) bool: expert e needs only modalities sample b holds."""
        general = mask.any(dim=1, keepdim=True)
        return torch.cat([general, general, mask], dim=1)

    def expert_log_probs(self, z: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(expert log-probs (B, E, C), fusion logits (B, C), unimodal logits (B, M, C)) from
        embeddings z (B, M, D) (missing slots never read) under ``mask`` (B, M)."""
        fusion = self.fusion_head(masked_mean(z, mask))
        unimodal = torch.stack([head(z[:, j]) for j, head in enumerate(self.unimodal_heads)], dim=1)
        log_p = F.log_softmax(unimodal, dim=-1)
        present = log_p.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        n_present = mask.sum(dim=1, keepdim=True)
        late = torch.logsumexp(present, dim=1) - n_present.clamp_min(1).to(log_p.dtype).log()
        late = torch.where(n_present > 0, late, torch.full_like(late, -math.log(late.shape[1])))
        experts = torch.cat([F.log_softmax(fusion, dim=-1).unsqueeze(1), late.unsqueeze(1), log_p], dim=1)
        return experts, fusion, unimodal

    def route(self, mask: Tensor) -> Tensor:
        """(B,) expert index per sample: the table's choice for its pattern, else the fallback;
        never an infeasible expert."""
        choice = torch.full((mask.shape[0],), self.fallback, dtype=torch.long, device=mask.device)
        if self.route_codes.numel():
            codes = pattern_codes(mask)
            at = torch.searchsorted(self.route_codes, codes).clamp(max=self.route_codes.numel() - 1)
            found = self.route_codes[at] == codes
            choice = torch.where(found, self.route_experts[at], choice)
        ok = self.feasible(mask).gather(1, choice.unsqueeze(1)).squeeze(1)
        return torch.where(ok, choice, torch.full_like(choice, self.fallback))

    def forward(self, batch: Batch) -> Output:
        z = self.encoders(batch)  # (B, M, D)
        experts, fusion, unimodal = self.expert_log_probs(z, batch.mask)
        choice = self.route(batch.mask)
        logits = experts.gather(1, choice.view(-1, 1, 1).expand(-1, 1, experts.shape[2])).squeeze(1)
        # Policy for a sample with no modality (rejected by the data layer): uniform logits.
        logits = torch.where(batch.mask.any(dim=1, keepdim=True), logits, torch.zeros((), dtype=logits.dtype,
                                                                                       device=logits.device))
        return Output(logits, aux={"expert": choice, "expert_log_probs": experts, "fusion_logits": fusion,
                                   "unimodal_logits": unimodal})

    def loss(self, batch: Batch, output: Output) -> dict[str, Tensor]:
        unimodal = output.aux["unimodal_logits"]
        b, m, c = unimodal.shape
        per_entry = F.cross_entropy(unimodal.reshape(b * m, c), batch.target.repeat_interleave(m),
                                    reduction="none").reshape(b, m)
        zero = torch.zeros((), dtype=per_entry.dtype, device=per_entry.device)
        members = torch.where(batch.mask, per_entry, zero).sum() / batch.mask.sum().clamp_min(1).to(per_entry.dtype)
        return {"fusion": self.task_loss(output.aux["fusion_logits"], batch.target), "members": members}

    # ------------------------------------------------------------ routing table

    def _patterns(self, val_mask: Tensor) -> list[tuple[bool, ...]]:
        n = self.spec.n_modalities
        if n <= _ENUMERATE_UP_TO:
            return [p for p in itertools.product((False, True), repeat=n) if any(p)]
        return sorted({tuple(bool(v) for v in row) for row in val_mask.cpu().tolist() if any(row)})

    def _expert_dicts(self, pattern: Tensor, scores: list[dict | None]) -> list[dict]:
        """The experts as a router sees them for one pattern (1-D bool over modalities)."""
        cost_of = {name: 1.0 / self.spec.n_modalities for name in self.spec.modality_names}
        present = [m for m, keep in zip(self.spec.modality_names, pattern.tolist()) if keep]
        descriptions = ("mean of the present modalities' embeddings, then a classifier",
                        "average of the per-modality classifiers' probabilities over present modalities")
        out = []
        for e, (name, requires) in enumerate(zip(self.expert_names, self.expert_requires)):
            score = scores[e]
            out.append({
                "name": name,
                "requires": requires,
                "feasible": all(r in present for r in requires),
                "val_accuracy": None if score is None else score["accuracy"],
                "val_nll": None if score is None else score["nll"],
                "val_count": 0 if score is None else score["count"],
                "cost": sum(cost_of[m] for m in (requires or present)),
                "description": descriptions[e] if e < 2 else f"classifier on {requires[0]} alone",
            })
        return out

    def _tallies(self, split: SplitPasses, patterns: list[Tensor]) -> dict[int, tuple[Tensor, Tensor]]:
        """Pattern position -> (correct (E,), summed NLL (E,)) of every expert over the validation
        samples holding the pattern, each seeing only the pattern, in one pass over ``split``."""
        n_experts = len(self.expert_names)
        out: dict[int, tuple[Tensor, Tensor]] = {}
        for batch in split.batches():
            z = self.encoders(batch)  # (B, M, D); per-modality encoders, so z_m does not depend on the pattern
            for p, pattern in enumerate(patterns):
                holders = (batch.mask | ~pattern).all(dim=1)  # samples holding every modality of the pattern
                n = int(holders.sum())
                if n == 0:
                    continue
                experts, _, _ = self.expert_log_probs(z[holders], pattern.expand(n, -1))  # (n, E, C)
                target = batch.target[holders]
                correct = (experts.argmax(dim=2) == target.unsqueeze(1)).sum(dim=0).double()  # (E,)
                nll = -experts.gather(2, target.view(-1, 1, 1).expand(-1, n_experts, 1)).squeeze(2).double().sum(0)
                done = out.get(p)
                out[p] = (correct, nll) if done is None else (done[0] + correct, done[1] + nll)
        return out

    def calibrate_split(self, split: SplitPasses) -> None:
        """Fill the routing table from the (standardised) validation split, one pass of per-pattern
        tallies (counts from the mask; accuracy and NLL summed per expert); see the class docstring."""
        self.calibration = []
        device = split.mask.device
        if split.target is None or split.size == 0:
            self.route_codes = torch.zeros(0, dtype=torch.long, device=device)
            self.route_experts = torch.zeros(0, dtype=torch.long, device=device)
            return
        pattern_tuples = self._patterns(split.mask)
        patterns = [torch.tensor(t, dtype=torch.bool, device=device) for t in pattern_tuples]
        counts = [int((split.mask | ~pattern).all(dim=1).sum()) for pattern in patterns]
        scored = [p for p, count in enumerate(counts) if count >= self.min_count]
        tallies = self._tallies(split, [patterns[p] for p in scored])
        tallies = {scored[k]: value for k, value in tallies.items()}
        codes, chosen = [], []
        for p, (pattern_tuple, pattern, count) in enumerate(zip(pattern_tuples, patterns, counts)):
            feasible = self.feasible(pattern.unsqueeze(0))[0]
            scores: list[dict | None] = [None] * len(self.expert_names)
            if p in tallies:
                correct, nll_sum = tallies[p]
                for e in range(len(self.expert_names)):
                    if feasible[e]:
                        accuracy, nll = float(correct[e]) / count, float(nll_sum[e]) / count
                        scores[e] = {"accuracy": accuracy, "nll": nll, "count": count,
                                     "score": accuracy - 1e-3 * min(nll, 10.0)}
            ranked = [e for e in range(len(scores)) if scores[e] is not None]
            rule = max(ranked, key=lambda e: (scores[e]["score"], -e)) if ranked else self.fallback
            choice, source = rule, "rule"
            experts_view = self._expert_dicts(pattern, scores)
            if self.router is not None:
                for d in experts_view:
                    d["rule_choice"] = self.expert_names[rule]
                names = tuple(m for m, keep in zip(self.spec.modality_names, pattern_tuple) if keep)
                answer = self.router(names, experts_view)
                index = self.expert_names.index(answer) if answer in self.expert_names else None
                if index is not None and bool(feasible[index]):
                    choice, source = index, "router"
                else:
                    source = f"rule (router answer {answer!r} is not a feasible expert)"
            codes.append(int(pattern_codes(pattern.unsqueeze(0))[0]))
            chosen.append(choice)
            self.calibration.append({"pattern": tuple(m for m, k in zip(self.spec.modality_names, pattern_tuple)
                                                      if k),
                                     "choice": self.expert_names[choice], "source": source,
                                     "count": count, "experts": experts_view})
        order = sorted(range(len(codes)), key=codes.__getitem__)
        self.route_codes = torch.tensor([codes[i] for i in order], dtype=torch.long, device=device)
        self.route_experts = torch.tensor([chosen[i] for i in order], dtype=torch.long, device=device)

    def get_extra_state(self) -> dict:
        """The calibration log travels in ``state_dict`` (and in a saved model's manifest)."""
        return {"calibration": self.calibration}

    def set_extra_state(self, state: dict) -> None:
        self.calibration = list(state.get("calibration", [])) if isinstance(state, dict) else []

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # The table's size depends on the calibration data: resize the buffers to the saved ones first.
        resize_to_saved(self, state_dict, prefix, ("route_codes", "route_experts"))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
