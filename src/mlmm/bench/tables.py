"""Bench results as tables: ours per (method, scenario) over seeds, and beside the published figures."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ..metrics.task import summarise_seeds
from ..report import format_table
from .grid import scenario_label
from .spec import BenchSpec

__all__ = ["comparison_table", "published_rows", "summarise_cells", "summary_table"]

METRICS = ("accuracy", "macro_f1")


def summarise_cells(cells: Sequence[dict]) -> list[dict]:
    """One entry per (dataset, scenario, method label): the metrics' mean / std / ci95 / per_seed over seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in cells:
        groups[(c["dataset"], c["scenario"], c["method_label"])].append(c)
    out = []
    for (dataset, scenario, label), group in groups.items():
        group.sort(key=lambda c: c["seed"])
        first = group[0]
        out.append({
            "dataset": dataset, "scenario": scenario, "method": first["method"], "method_label": label,
            "protocol": first["protocol"], "protocol_params": first["protocol_params"],
            "train_rate": first["train_rate"], "test_rate": first["test_rate"], "seeds": [c["seed"] for c in group],
            **{m: summarise_seeds([c["metrics"][m] for c in group]) for m in METRICS},
            "train_seconds": summarise_seeds([c["train_seconds"] for c in group]),
        })
    return out


def _scenario_order(spec: BenchSpec | None, summaries: Sequence[dict]) -> list[str]:
    seen: list[str] = []
    for s in summaries:
        if s["scenario"] not in seen:
            seen.append(s["scenario"])
    return seen


def _fmt(summary: dict, n: int) -> str:
    mean, std = 100 * summary["mean"], 100 * summary["std"]
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def summary_table(summaries: Sequence[dict], metric: str = "accuracy", markdown: bool = False) -> str:
    """Rows: dataset x method; columns: scenarios; cells: metric % mean ± std over seeds."""
    blocks = []
    for dataset in dict.fromkeys(s["dataset"] for s in summaries):
        rows_of = [s for s in summaries if s["dataset"] == dataset]
        scenarios = _scenario_order(None, rows_of)
        methods = list(dict.fromkeys(s["method_label"] for s in rows_of))
        index = {(s["method_label"], s["scenario"]): s for s in rows_of}
        rows = [[m] + [_fmt(index[(m, sc)][metric], len(index[(m, sc)]["seeds"])) if (m, sc) in index else "-"
                       for sc in scenarios] for m in methods]
        blocks.append(f"{dataset}: {metric} % (mean ± std over seeds)\n" +
                      format_table(["method"] + scenarios, rows, markdown=markdown))
    return "\n\n".join(blocks)


def published_rows(spec: BenchSpec, dataset: str) -> list[dict]:
    """The spec's published figures for ``dataset``: {method, source, metric, note, values: {scenario: text}}."""
    out = []
    for pub in spec.published:
        if pub.dataset not in (None, dataset):
            continue
        values = {}
        for p in pub.values:
            train_rate, test_rate = p.rates()
            params = {"subset": p.subset} if p.subset else {}
            text = f"{'~' if p.approx else ''}{p.mean:.2f}" + (f" ± {p.std:.2f}" if p.std is not None else "")
            values[scenario_label(pub.protocol, train_rate, test_rate, params)] = text
        out.append({"method": pub.method, "source": pub.source, "metric": pub.metric, "note": pub.note,
                    "values": values, "ours": pub.ours})
    return out


def comparison_table(spec: BenchSpec, summaries: Sequence[dict], markdown: bool = False) -> str:
    """Ours (every method, % mean ± std over seeds) above the published figures, one column per scenario,
    then the best of ours against the best published figure in every scenario that has one."""
    blocks = []
    for dataset in spec.datasets:
        rows_of = [s for s in summaries if s["dataset"] == dataset]
        published = published_rows(spec, dataset)
        scenarios = _scenario_order(spec, rows_of)
        index = {(s["method_label"], s["scenario"]): s for s in rows_of}
        header = ["method", "source"] + scenarios
        rows = []
        own = {p["ours"]: p["method"] for p in published if p.get("ours")}
        for m in dict.fromkeys(s["method_label"] for s in rows_of):
            # The paper's own method, as mlmm implements it, is marked with the paper's name.
            name = f"{m} (= {own[m]})" if m in own else m
            rows.append([name, f"mlmm ({len(rows_of[0]['seeds'])} seeds)"] +
                        [_fmt(index[(m, sc)]["accuracy"], len(index[(m, sc)]["seeds"])) if (m, sc) in index else "-"
                         for sc in scenarios])
        for pub in published:
            rows.append([pub["method"], pub["source"]] + [pub["values"].get(sc, "") for sc in scenarios])
        lines = [f"{dataset}: accuracy % — ours beside the published figures (~ = read off a figure)",
                 format_table(header, rows, markdown=markdown)]
        lines += [f"  note ({pub['method']}): {pub['note']}" for pub in published if pub.get("note")]
        for pub in published:
            if not pub.get("ours") or pub["metric"] != "accuracy":
                continue
            for sc in scenarios:
                mine = index.get((pub["ours"], sc))
                if mine is None or sc not in pub["values"]:
                    continue
                value = float(pub["values"][sc].lstrip("~").split(" ")[0])
                diff = 100 * mine["accuracy"]["mean"] - value
                lines.append(f"  {sc}: paper's own method {pub['method']}: mlmm {pub['ours']} "
                             f"{_fmt(mine['accuracy'], len(mine['seeds']))} vs published {pub['values'][sc]} "
                             f"({diff:+.2f} points)")
        for sc in scenarios:
            ours = [s for s in rows_of if s["scenario"] == sc]
            theirs = [(float(p["values"][sc].lstrip("~").split(" ")[0]), p["method"]) for p in published
                      if sc in p["values"] and p["metric"] == "accuracy"]
            if ours and theirs:
                best = max(ours, key=lambda s: s["accuracy"]["mean"])
                value, name = max(theirs)
                diff = 100 * best["accuracy"]["mean"] - value
                lines.append(f"  {sc}: best mlmm {best['method_label']} {100 * best['accuracy']['mean']:.2f} vs "
                             f"best published {name} {value:.2f} ({diff:+.2f} points)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
