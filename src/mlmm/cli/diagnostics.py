"""``mlmm explain``, ``mlmm recover`` and ``mlmm uncertainty``: argument parsing and printing.

``mlmm.cli.main`` adds these sub-commands with ``add_parsers`` and dispatches with ``HANDLERS``;
the work is in ``mlmm.diagnostics.runs`` (usable from Python).
"""

from __future__ import annotations

import argparse
import json
import math

__all__ = ["add_parsers", "HANDLERS"]


def _common(p: argparse.ArgumentParser, method_default: str | None, rates: bool) -> None:
    from .common import add_training_flags

    p.add_argument("--dataset", required=True)
    if method_default is None:
        p.add_argument("--method", action="append",
                       help="method (repeat for several; default: every registered method that recovers)")
    else:
        p.add_argument("--method", default=method_default)
    p.add_argument("--protocol", default="entry", help="missingness protocol (see `mlmm protocols`)")
    if rates:
        p.add_argument("--rates", default="0.3,0.5" if method_default is None else "0,0.3,0.5",
                       help="protocol rates, comma-separated (train, validation and test at each)")
    else:
        p.add_argument("--rate", type=float, default=0.0, help="protocol rate, train, validation and test")
    p.add_argument("--split", default="fixed")
    p.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0-4")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_training_flags(p)


def add_parsers(sub) -> None:
    """Add ``explain``, ``recover`` and ``uncertainty`` to the ``mlmm`` sub-command parser ``sub``."""
    p = sub.add_parser("explain", help="Shapley contribution of each modality to a trained method's decisions")
    _common(p, "masked-mean", rates=False)
    p.add_argument("--target", choices=("predicted", "true"), default="predicted",
                   help="value v(S) = probability of the class predicted with every available modality "
                        "(default) or of the true class")
    p.add_argument("--permutations", type=int, default=64,
                   help="sampled permutations per sample when M > --max-exact")
    p.add_argument("--max-exact", type=int, default=10, help="exact Shapley values up to this many modalities")
    p.add_argument("--top", type=int, default=5, help="interactions shown")

    p = sub.add_parser("recover", help="recover-or-not: fidelity of recovered modalities and reliance on them")
    _common(p, None, rates=True)

    p = sub.add_parser("uncertainty", help="calibration and uncertainty (error-detection AUROC) under missingness")
    _common(p, "masked-mean", rates=True)
    p.add_argument("--no-subsets", action="store_true", help="skip the per-modality-subset table")
    p.add_argument("--bins", type=int, default=15, help="reliability bins")


def _cell_config(args: argparse.Namespace, method: str, rate: float = 0.0):
    from ..experiment import ExperimentConfig
    from .common import parse_params, train_config

    return ExperimentConfig(dataset=args.dataset, method=method, rate=rate, protocol=args.protocol, split=args.split,
                            train=train_config(args), device=args.device, method_params=parse_params(args.param))


def _f(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _ms(d: dict, digits: int = 3) -> str:
    """"0.912 ± 0.004" (± the SE over seeds, shown with more than one seed)."""
    if d["n"] > 1:
        return f"{_f(d['mean'], digits)} ± {_f(d['se'], digits)}"
    return _f(d["mean"], digits)


def cmd_explain(args: argparse.Namespace) -> None:
    from ..data.registry import load_dataset
    from ..diagnostics.runs import explain_runs
    from ..methods import METHODS
    from ..report import format_table
    from .common import UsageError, parse_seeds

    load_dataset(args.dataset)
    METHODS.get(args.method)
    if args.permutations < 2:
        raise UsageError("--permutations must be >= 2")
    out = explain_runs(_cell_config(args, args.method, args.rate), parse_seeds(args.seeds), target=args.target,
                       max_exact=args.max_exact, n_permutations=args.permutations)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    seed0 = out["per_seed"][0]
    how = "exact" if seed0["exact"] else f"sampled, {seed0['n_permutations']} permutations"
    print(f"{args.method} on {args.dataset} (rate {args.rate:g}, seeds {','.join(map(str, out['seeds']))}): "
          f"Shapley values of each modality ({how}); v(S) = p({args.target} class | S), v(∅) = the model's "
          f"empty-sample output (mean {seed0['value_empty']:.3f}), v(all) mean {seed0['value_full']:.3f}; "
          f"efficiency gap max {seed0['efficiency_max_abs_gap']:.1e}")
    rows = sorted(out["modalities"].items(), key=lambda kv: -kv[1]["mean_abs_phi"]["mean"])
    print(format_table(["modality", "mean |φ|", "mean φ"],
                       [[n, _ms(v["mean_abs_phi"]), _ms(v["mean_phi"])] for n, v in rows]))
    if out["top_pairwise"]:
        print("\ntop pairwise Shapley interactions (mean over samples; + synergy, - redundancy)")
        print(format_table(["pair", "interaction"], [[p["pair"], _f(p["interaction"])]
                                                      for p in out["top_pairwise"][:args.top]]))
    if out["top_dividends"]:
        print("\ntop Harsanyi dividends of subsets of 2+ modalities")
        print(format_table(["subset", "dividend"], [[d["subset"], _f(d["dividend"])]
                                                     for d in out["top_dividends"][:args.top]]))


def cmd_recover(args: argparse.Namespace) -> None:
    from ..data.registry import load_dataset
    from ..diagnostics.recovery import recovering_methods
    from ..diagnostics.runs import recover_runs
    from ..methods import METHODS
    from ..report import format_table
    from .common import UsageError, parse_floats, parse_seeds

    load_dataset(args.dataset)
    available = recovering_methods()
    methods = args.method or available
    for name in methods:
        METHODS.get(name)
        if name not in available:
            raise UsageError(f"method {name!r} has no recovery hooks (recover / recovery_space); "
                             f"these have: {', '.join(available)}")
    rates = parse_floats(args.rates, "--rates")
    rows = recover_runs(_cell_config(args, methods[0]), methods, rates, parse_seeds(args.seeds))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"recover or not on {args.dataset} ({args.protocol}; fidelity on held-out slots present but masked; "
          "reliance = plain fill in place of the recovery)")
    skipped = [r for r in rows if "skipped" in r]
    rows = [r for r in rows if "skipped" not in r]
    header = ["method", "rate", "space", "MSE", "MSE plain", "cosine", "changed", "acc recov", "acc plain",
              "gain", "verdict"]
    print(format_table(header, [[r["method"], f"{r['rate']:g}", r["space"], _ms(r["mse"]), _ms(r["mse_plain"]),
                                 _ms(r["cosine"]), _ms(r["changed_fraction"]), _ms(r["accuracy_recovered"]),
                                 _ms(r["accuracy_plain"]), _ms(r["accuracy_gain"]), r["verdict"]] for r in rows]))
    print("verdict: ignored if < 2% of incomplete samples change prediction; else helps / hurts if the gain is "
          "beyond max(0.005, 2 SE over seeds); else dominated (the present modalities decide)")
    for r in skipped:
        print(f"skipped {r['method']} at rate {r['rate']:g}: {r['skipped']}")


def cmd_uncertainty(args: argparse.Namespace) -> None:
    from ..data.registry import load_dataset
    from ..diagnostics.runs import uncertainty_runs
    from ..methods import METHODS
    from ..report import format_table
    from .common import parse_floats, parse_seeds

    load_dataset(args.dataset)
    METHODS.get(args.method)
    rates = parse_floats(args.rates, "--rates")
    out = uncertainty_runs(_cell_config(args, args.method), rates, parse_seeds(args.seeds),
                           subsets=not args.no_subsets, n_bins=args.bins)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    first = next(iter(out["rates"].values()))
    keys = list(first["auroc"])
    print(f"{args.method} on {args.dataset}: uncertainty = entropy / log C"
          + (" and the method's own Output.aux['uncertainty']" if "method" in keys else "")
          + "; AUROC of uncertainty for detecting errors")
    header = ["rate", "accuracy", "ECE"] + [f"AUROC {k}" for k in keys] + [f"mean {k}" for k in keys]
    print(format_table(header, [[r, _ms(v["accuracy"]), _ms(v["ece"])] + [_ms(v["auroc"][k]) for k in keys]
                                + [_ms(v["mean_uncertainty"][k]) for k in keys] for r, v in out["rates"].items()]))
    print("\nby number of present modalities (test samples at each rate)")
    rows = [[r, k, d["n"], _ms(d["accuracy"])] + [_ms(d["mean_uncertainty"][u]) for u in keys]
            for r, v in out["rates"].items() for k, d in v["by_n_present"].items()]
    print(format_table(["rate", "present", "n", "accuracy"] + [f"mean {k}" for k in keys], rows))
    if "by_subset_size" in out:
        print(f"\nevery modality subset of the complete test split (model trained at rate {out['subset_rate']:g}), "
              "averaged by subset size")
        print(format_table(["size", "accuracy", "ECE"] + [f"mean {k}" for k in keys],
                           [[s, _ms(v["accuracy"]), _ms(v["ece"])] + [_ms(v["mean_uncertainty"][k]) for k in keys]
                            for s, v in out["by_subset_size"].items()]))


HANDLERS = {"explain": cmd_explain, "recover": cmd_recover, "uncertainty": cmd_uncertainty}
