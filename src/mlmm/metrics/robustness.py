"""Robustness summaries over benchmark cells, each with one written definition.

A *cell* is one (dataset, method, scenario, seed) result: the key fields the
results store keeps (``spec``, ``dataset``, ``method``, ``method_label``,
``protocol``, ``protocol_params``, ``train_rate``, ``test_rate``, ``split``,
``seed``) merged with the ``mlmm.experiment.run_seed`` record (``metrics``,
``subsets``, ``calibration``, ``efficiency``, ...). ``normalise_cell`` fills the
key fields a plain ``run_seed`` / demo record lacks.

A *rate curve* is the metric as a function of the test rate r for one method
label on one (spec, dataset, split, protocol, protocol parameters) and one
training regime: either "train = test" (cells whose train rate equals their
test rate) or "train r0" (cells trained at rate r0 and tested at several
rates). Cells of rateless protocols belong to no curve.

Definitions (the report prints the same words):

- AUC (area under the metric-vs-rate curve): for rates r_0 < ... < r_k run and
  per-rate scores s_i, AUC = Σ_i (r_{i+1} - r_i)(s_i + s_{i+1}) / 2 / (r_k - r_0)
  — the trapezoid over the rates run, normalised by the rate span, so it is a
  mean score in the metric's own units (1 = perfect at every rate). It is computed
  per seed (over the seeds that ran every rate of the curve), then summarised.
- Relative drop at rate r: (s(0) - s(r)) / s(0), the fraction of the rate-0
  score lost at rate r, per seed, then summarised; defined only when rate 0 ran.
- Gap to the reference at rate r: s_method(r) - s_reference(r), paired by seed,
  where the reference is the method named by the spec (``reference:``) and run
  in the same grid (same spec, dataset, split, protocol, training regime, rate,
  seed) — never a hard-coded table. Positive = better than the reference.

Summaries over seeds are ``summarise_seeds``: mean, sample std, 95% t-interval
half-width and the per-seed values.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .task import summarise_seeds

DEFINITIONS = {
    "auc": "Area under the metric-vs-test-rate curve: trapezoid over the rates run, divided by the rate span "
           "(a mean score, 1 = perfect at every rate); per seed over the seeds that ran every rate, then mean ± std.",
    "relative_drop": "Relative drop at rate r: (s(0) - s(r)) / s(0), the fraction of the rate-0 score lost, "
                     "per seed; only where rate 0 was run.",
    "gap": "Gap to the reference at rate r: s_method(r) - s_reference(r), paired by seed, the reference being "
           "the method the spec names, run in the same grid (same dataset, split, protocol, training regime, "
           "rate, seed); positive = better.",
    "worst_subset": "Worst subset: the modality subset with the lowest mean accuracy over seeds when every test "
                    "sample is restricted to it.",
}


def area_under_rate_curve(rates: Sequence[float], scores: Sequence[float]) -> float:
    """Trapezoid area of ``scores`` over ``rates`` divided by the rate span (see module docstring).

    rates: (k,) distinct rates in any order; scores: (k,) scores at those rates.
    Needs at least two distinct rates (a span of 0 has no area).
    """
    r = np.asarray(rates, dtype=float)
    s = np.asarray(scores, dtype=float)
    if r.shape != s.shape or r.ndim != 1:
        raise ValueError(f"rates and scores must be 1-D of one length, got {r.shape} and {s.shape}")
    if len(np.unique(r)) != len(r) or len(r) < 2:
        raise ValueError(f"need at least two distinct rates, got {r.tolist()}")
    order = np.argsort(r)
    r, s = r[order], s[order]
    return float(np.sum(np.diff(r) * (s[1:] + s[:-1]) / 2) / (r[-1] - r[0]))


def relative_drop(score_at_zero: float, score: float) -> float:
    """(s(0) - s(r)) / s(0); a rate-0 score of 0 has no relative drop."""
    if score_at_zero == 0:
        raise ValueError("relative drop is undefined when the rate-0 score is 0")
    return float((score_at_zero - score) / score_at_zero)


def _label(method: str, params: Mapping | None) -> str:
    return method if not params else f"{method} {json.dumps(dict(params), sort_keys=True)}"


def normalise_cell(cell: Mapping) -> dict:
    """A copy of ``cell`` with every key field present: ``spec`` ("" if none), ``method_label``
    (method + parameters), ``protocol`` ("entry" if absent), ``protocol_params`` ({}),
    ``train_rate`` / ``test_rate`` (from ``rate`` if absent), ``split`` ("?").
    Raises ``ValueError`` naming the key when ``dataset``, ``method``, ``seed`` or ``metrics`` is missing."""
    for key in ("dataset", "method", "seed", "metrics"):
        if key not in cell:
            raise ValueError(f"cell has no {key!r} field (keys: {', '.join(sorted(cell))})")
    out = dict(cell)
    out.setdefault("spec", "")
    out.setdefault("method_params", {})
    out.setdefault("method_label", _label(out["method"], out["method_params"]))
    out.setdefault("protocol", "entry")
    out.setdefault("protocol_params", {})
    out.setdefault("split", "?")
    for key in ("train_rate", "test_rate"):
        out.setdefault(key, out.get("rate"))
    return out


def _group_key(cell: Mapping) -> tuple:
    return (cell["spec"], cell["dataset"], cell["split"], cell["protocol"],
            json.dumps(cell["protocol_params"], sort_keys=True))


def rate_curves(cells: Iterable[Mapping], metric: str = "accuracy") -> dict[tuple, dict[float, dict[int, float]]]:
    """(spec, dataset, split, protocol, params-json, regime, method_label) -> {test rate: {seed: score}}.

    regime is "train = test" or "train r0" (see module docstring); a tied cell
    (train rate = test rate = r0) also sits on the "train r0" curve when that
    curve has other rates.
    """
    curves: dict[tuple, dict[float, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for c in map(normalise_cell, cells):
        if c["test_rate"] is None or c["train_rate"] is None:
            continue
        score = float(c["metrics"][metric])
        base = _group_key(c)
        if c["train_rate"] == c["test_rate"]:
            curves[base + ("train = test", c["method_label"])][float(c["test_rate"])][int(c["seed"])] = score
        curves[base + (f"train {c['train_rate']:g}", c["method_label"])][float(c["test_rate"])][int(c["seed"])] = score
    # A "train r0" curve with one rate only repeats a tied cell: drop it.
    return {k: dict(v) for k, v in curves.items() if k[5] == "train = test" or len(v) > 1}


def _paired(curve: Mapping[float, Mapping[int, float]]) -> list[int]:
    """Seeds present at every rate of the curve, sorted."""
    seeds = set.intersection(*(set(v) for v in curve.values())) if curve else set()
    return sorted(seeds)


def robustness_summaries(cells: Sequence[Mapping], metric: str = "accuracy",
                         reference: str | Mapping[str, str | None] | None = None) -> list[dict]:
    """One entry per rate curve with ``len(rates) >= 1``:

    {spec, dataset, split, protocol, protocol_params, regime, method_label, rates,
     per_rate: {rate: summary}, auc: summary | None, relative_drop: {rate: summary} | None,
     reference: label | None, gap: {rate: summary} | None, gap_auc: summary | None}

    ``reference``: one method (name or label) for every spec, or spec name -> method.
    A reference named but absent from the grid gives ``gap`` None, never an invented baseline.
    """
    curves = rate_curves(cells, metric)
    out = []
    for key, curve in sorted(curves.items(), key=lambda kv: tuple(map(str, kv[0]))):
        spec, dataset, split, protocol, params, regime, label = key
        rates = sorted(curve)
        entry = {"spec": spec, "dataset": dataset, "split": split, "protocol": protocol,
                 "protocol_params": json.loads(params), "regime": regime, "method_label": label, "metric": metric,
                 "rates": rates,
                 "per_rate": {r: summarise_seeds([curve[r][s] for s in sorted(curve[r])]) for r in rates},
                 "auc": None, "relative_drop": None, "reference": None, "gap": None, "gap_auc": None}
        seeds = _paired(curve)
        if len(rates) >= 2 and seeds:
            entry["auc"] = summarise_seeds([area_under_rate_curve(rates, [curve[r][s] for r in rates]) for s in seeds])
        if 0.0 in curve and len(rates) >= 2:
            drops = {}
            for r in rates[1:]:
                both = sorted(set(curve[0.0]) & set(curve[r]))
                if both and all(curve[0.0][s] != 0 for s in both):
                    drops[r] = summarise_seeds([relative_drop(curve[0.0][s], curve[r][s]) for s in both])
            entry["relative_drop"] = drops or None
        ref = reference.get(spec) if isinstance(reference, Mapping) else reference
        if ref:
            ref_key = _reference_key(curves, key[:6], ref)
            entry["reference"] = ref_key[6] if ref_key else ref
            if ref_key is not None and ref_key != key:
                entry["gap"], entry["gap_auc"] = _gaps(curve, curves[ref_key], rates)
        out.append(entry)
    return out


def _reference_key(curves: Mapping[tuple, dict], base: tuple, reference: str) -> tuple | None:
    """The curve of ``reference`` (a method label, or a method name matching a label's first word)."""
    labels = [k for k in curves if k[:6] == base]
    for k in labels:
        if k[6] == reference:
            return k
    for k in labels:
        if k[6].split(" ", 1)[0] == reference:
            return k
    return None


def _gaps(curve: Mapping, ref: Mapping, rates: Sequence[float]) -> tuple[dict | None, dict | None]:
    gaps = {}
    for r in rates:
        if r in ref:
            seeds = sorted(set(curve[r]) & set(ref[r]))
            if seeds:
                gaps[r] = summarise_seeds([curve[r][s] - ref[r][s] for s in seeds])
    shared = [r for r in rates if r in ref]
    seeds = sorted(set.intersection(*(set(curve[r]) & set(ref[r]) for r in shared))) if shared else []
    gap_auc = None
    if len(shared) >= 2 and seeds:
        gap_auc = summarise_seeds([area_under_rate_curve(shared, [curve[r][s] for r in shared])
                                   - area_under_rate_curve(shared, [ref[r][s] for r in shared]) for s in seeds])
    return gaps or None, gap_auc


def subset_summaries(cells: Sequence[Mapping], metric: str = "accuracy") -> list[dict]:
    """Per (spec, dataset, scenario, method_label): subset name -> summary of ``metric`` over seeds,
    and the worst subset (lowest mean). Cells without ``subsets`` are skipped.

    Returns [{spec, dataset, scenario, method_label, subsets: {name: summary + "n"}, worst_subset: name}]."""
    groups: dict[tuple, list[Mapping]] = defaultdict(list)
    for c in map(normalise_cell, cells):
        if c.get("subsets"):
            groups[(c["spec"], c["dataset"], scenario_of(c), c["method_label"])].append(c)
    out = []
    for (spec, dataset, scenario, label), group in groups.items():
        names = list(group[0]["subsets"])
        subsets = {}
        for name in names:
            values = [g["subsets"][name][metric] for g in group if name in g["subsets"]]
            subsets[name] = {**summarise_seeds(values), "n": group[0]["subsets"][name]["n"]}
        worst = min(subsets, key=lambda n: subsets[n]["mean"])
        out.append({"spec": spec, "dataset": dataset, "scenario": scenario, "method_label": label,
                    "metric": metric, "subsets": subsets, "worst_subset": worst})
    return out


def scenario_of(cell: Mapping) -> str:
    """The cell's scenario label: the store's ``scenario`` field, else built as the store builds
    it (``mlmm.bench.grid.scenario_label``): "entry 0.5", "entry 0→0.5", "fixed-subset a+b", "none"."""
    if cell.get("scenario"):
        return str(cell["scenario"])
    protocol, tr, te = cell.get("protocol", "entry"), cell.get("train_rate"), cell.get("test_rate")
    if tr is None and te is None:
        params = cell.get("protocol_params") or {}
        if "subset" in params:
            return f"{protocol} {'+'.join(params['subset'])}"
        if "rates" in params:
            return f"{protocol} {','.join(f'{r:g}' for r in params['rates'])}"
        return protocol
    return f"{protocol} {tr:g}" if tr == te else f"{protocol} {tr:g}→{te:g}"
