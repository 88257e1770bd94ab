"""Seeds x rates drivers behind ``mlmm explain``, ``mlmm recover`` and ``mlmm uncertainty``:
each trains its cells with ``fit_cell`` and returns a JSON-ready dict (no printing)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from ..data.registry import load_dataset
from ..errors import InvalidParameterError
from ..experiment import ExperimentConfig, check_seeds, validate_config
from ..validation import Interval, check_value
from .fitting import fit_cell
from .recovery import recovery_fidelity, recovery_reliance, verdict
from .uncertainty import subset_uncertainty, uncertainty_report

Progress = Callable[[str], None] | None


def _mean_se(values: Sequence[float]) -> dict:
    a = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(a):
        return {"mean": float("nan"), "se": float("nan"), "n": 0}
    se = float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0
    return {"mean": float(a.mean()), "se": se, "n": int(len(a))}


def _validate_all(base: ExperimentConfig, seeds: Sequence[int], methods: Sequence[str] | None = None,
                  rates: Sequence[float] | None = None, **counts: tuple[int, int]) -> None:
    """Every option of a diagnostics run checked before the first fit: the seeds, each
    (method, rate) cell's config, and ``counts`` (name -> (value, minimum))."""
    check_seeds(seeds)
    for name, (value, minimum) in counts.items():
        check_value("diagnostics", name, value, [Interval("int", minimum, None)])
    if rates is not None and not len(rates):
        raise InvalidParameterError("rates is empty: give at least one rate")
    spec = load_dataset(base.dataset).spec
    for method in methods or [base.method]:
        for rate in rates if rates is not None else [base.rate]:
            validate_config(replace(base, method=method, rate=rate, seeds=(seeds[0],)), spec)


def explain_runs(config: ExperimentConfig, seeds: Sequence[int], target: str = "predicted", max_exact: int = 10,
                 n_permutations: int = 64, on_seed: Progress = None) -> dict:
    """Per seed: train the cell and explain its (protocol-masked) test split; mean φ and mean |φ|
    per modality averaged over seeds (SE over seeds), and the seeds' interaction tables."""
    from ..explain import modality_contributions

    _validate_all(config, seeds, max_exact=(max_exact, 1), n_permutations=(n_permutations, 2))
    if target not in ("predicted", "true"):
        raise InvalidParameterError(f"target must be 'predicted' or 'true', got {target!r}")
    per_seed = []
    for seed in seeds:
        cell = fit_cell(config, seed)
        contrib = modality_contributions(cell.model, cell.test_masked, target=target, max_exact=max_exact,
                                         n_permutations=n_permutations, seed=seed)
        per_seed.append({"seed": seed, **contrib.summary()})
        if on_seed:
            on_seed(f"seed {seed}")
    names = list(per_seed[0]["modalities"])
    modalities = {n: {k: _mean_se([s["modalities"][n][k] for s in per_seed]) for k in ("mean_phi", "mean_abs_phi")}
                  for n in names}
    out = {"dataset": config.dataset, "method": config.method, "rate": config.rate, "protocol": config.protocol,
           "target": target, "seeds": list(seeds), "modalities": modalities, "per_seed": per_seed}
    out["top_pairwise"] = _mean_ranked(per_seed, "top_pairwise", "pair", "interaction")
    out["top_dividends"] = _mean_ranked(per_seed, "top_dividends", "subset", "dividend")
    return out


def _mean_ranked(per_seed: list[dict], list_key: str, name_key: str, value_key: str) -> list[dict]:
    """Entries {name_key, value_key} of every seed's ``list_key``, averaged per name over the
    seeds that list it (``seeds``: how many), largest |mean| first."""
    values: dict[str, list] = {}
    for s in per_seed:
        for entry in s.get(list_key, []):
            values.setdefault(entry[name_key], []).append(entry[value_key])
    return sorted(({name_key: k, value_key: float(np.mean(v)), "seeds": len(v)} for k, v in values.items()),
                  key=lambda d: -abs(d[value_key]))


def recover_runs(base: ExperimentConfig, methods: Sequence[str], rates: Sequence[float], seeds: Sequence[int],
                 on_cell: Progress = None) -> list[dict]:
    """One row per (method, rate): fidelity and reliance averaged over seeds, and the verdict; a cell
    that cannot be trained (e.g. a method needing complete training samples at a rate > 0) gives a
    row with "skipped": the reason, and the other cells still run."""
    _validate_all(base, seeds, methods=methods, rates=rates)
    rows = []
    for method in methods:
        for rate in rates:
            config = replace(base, method=method, rate=rate)
            fids, rels, skipped = [], [], None
            for seed in seeds:
                try:
                    cell = fit_cell(config, seed)
                except ValueError as err:  # e.g. a method that needs complete training samples at rate > 0
                    skipped = str(err)
                    break
                fids.append(recovery_fidelity(cell.model, cell.test, cell.test_masked))
                rels.append(recovery_reliance(cell.model, cell.test_masked))
                if on_cell:
                    on_cell(f"{method} rate {rate:g} seed {seed}")
            if skipped is not None:
                rows.append({"method": method, "rate": rate, "seeds": list(seeds), "skipped": skipped})
                continue
            row = {"method": method, "rate": rate, "seeds": list(seeds), "space": fids[0]["space"],
                   "truth": fids[0]["truth"], "n_slots": fids[0]["n_slots"]}
            for key in ("mse", "mse_plain", "cosine"):
                row[key] = _mean_se([f[key] for f in fids])
            for key in ("changed_fraction", "accuracy_recovered", "accuracy_plain", "accuracy_gain"):
                row[key] = _mean_se([r[key] for r in rels])
            row.update(verdict([r["accuracy_gain"] for r in rels], [r["changed_fraction"] for r in rels]))
            rows.append(row)
    return rows


def uncertainty_runs(base: ExperimentConfig, rates: Sequence[float], seeds: Sequence[int], subsets: bool = True,
                     n_bins: int = 15, on_cell: Progress = None) -> dict:
    """Per rate (train and test at that rate): accuracy, ECE, reliability curve (seed 0's),
    error-detection AUROC per uncertainty score, mean uncertainty by number of present
    modalities; and per modality subset of the complete test split (the rate-0 model if
    0 is among the rates, else the first rate's)."""
    _validate_all(base, seeds, rates=rates, n_bins=(n_bins, 1))
    out = {"dataset": base.dataset, "method": base.method, "seeds": list(seeds), "rates": {}}
    subset_rate = 0.0 if 0.0 in rates else rates[0]
    subset_reports = []
    for rate in rates:
        config = replace(base, rate=rate)
        reports = []
        for seed in seeds:
            cell = fit_cell(config, seed)
            reports.append(uncertainty_report(cell.model, cell.test_masked, n_bins))
            if subsets and rate == subset_rate:
                subset_reports.append(subset_uncertainty(cell.model, cell.test, n_bins))
            if on_cell:
                on_cell(f"rate {rate:g} seed {seed}")
        keys = list(reports[0]["auroc"])
        ks = sorted({k for r in reports for k in r["by_n_present"]})
        out["rates"][str(rate)] = {
            "accuracy": _mean_se([r["accuracy"] for r in reports]),
            "ece": _mean_se([r["ece"] for r in reports]),
            "auroc": {k: _mean_se([r["auroc"][k] for r in reports]) for k in keys},
            "mean_uncertainty": {k: _mean_se([r["mean_uncertainty"][k] for r in reports]) for k in keys},
            "by_n_present": {str(k): {"n": int(sum(r["by_n_present"].get(k, {}).get("n", 0) for r in reports)),
                                      "accuracy": _mean_se([r["by_n_present"][k]["accuracy"] for r in reports
                                                            if k in r["by_n_present"]]),
                                      "mean_uncertainty": {u: _mean_se([r["by_n_present"][k]["mean_uncertainty"][u]
                                                                        for r in reports if k in r["by_n_present"]])
                                                           for u in keys}}
                             for k in ks},
            "reliability_seed0": reports[0]["reliability"],
        }
    if subset_reports:
        first = subset_reports[0]
        out["subset_rate"] = subset_rate
        out["subsets"] = {name: {"size": v["size"], "n": v["n"],
                                 "accuracy": _mean_se([s["subsets"][name]["accuracy"] for s in subset_reports]),
                                 "ece": _mean_se([s["subsets"][name]["ece"] for s in subset_reports]),
                                 "auroc": {k: _mean_se([s["subsets"][name]["auroc"][k] for s in subset_reports])
                                           for k in v["auroc"]},
                                 "mean_uncertainty": {k: _mean_se([s["subsets"][name]["mean_uncertainty"][k]
                                                                   for s in subset_reports])
                                                      for k in v["mean_uncertainty"]}}
                          for name, v in first["subsets"].items()}
        out["by_subset_size"] = {str(size): {
            "accuracy": _mean_se([s["by_size"][size]["accuracy"] for s in subset_reports]),
            "ece": _mean_se([s["by_size"][size]["ece"] for s in subset_reports]),
            "mean_uncertainty": {k: _mean_se([s["by_size"][size]["mean_uncertainty"][k] for s in subset_reports])
                                 for k in first["by_size"][size]["mean_uncertainty"]}}
            for size in first["by_size"]}
    return out
