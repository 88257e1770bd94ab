"""The static report of a set of benchmark cells: one self-contained HTML page and markdown tables.

``write_report(cells, out_dir)`` writes ``index.html`` (every figure inlined as a
base64 PNG, CSS inline, no script, no external reference: it opens from a
mail attachment) and ``report.md`` (the same tables, no figures). Sections:
leaderboard per dataset and scenario (task metrics, ECE, worst subset, cost),
robustness (metric-vs-rate curves, AUC, relative drop, gap to the spec's
reference method), per-subset heatmaps, accuracy-vs-cost scatter, reliability
curves, realised missingness, and the definitions of every protocol and figure.
"""

from __future__ import annotations

import base64
import html
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..metrics.robustness import DEFINITIONS, normalise_cell, robustness_summaries, scenario_of, subset_summaries
from ..metrics.task import summarise_seeds
from ..missing import protocol_infos
from . import figures
from .text import format_table

EFFICIENCY_DEFINITIONS = {
    "parameters": "trainable parameter elements of the fitted model (preprocessing has none).",
    "train s": "wall time of the fit (standardisation, method preparation, every training stage, early stopping), "
               "at the training precision in brackets when it is not fp32 (TrainConfig.precision: bf16 / fp16 "
               "autocast); validation, prediction and the latency always run in fp32.",
    "latency": "wall time of one batched evaluation of the test split (batches of 1024, eval mode, no grad) "
               "divided by its samples, best of 3 runs; on CUDA the device is synchronised.",
    "peak memory": "CPU: peak resident set size of the process during the fit minus its size at the start "
                   "(Linux: the kernel's high-water mark VmHWM reset before the fit; elsewhere the growth of "
                   "ru_maxrss); GPU: torch.cuda.max_memory_allocated during the fit.",
    "ECE": "expected calibration error of the test predictions: 15 equal-width bins of the top-class "
           "probability, Σ_b (n_b / N) |accuracy_b - confidence_b|.",
}

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; } dt { font-weight: bold; margin-top: 0.4em; }
"""


class _Doc:
    """Accumulates the HTML body and the markdown text side by side."""

    def __init__(self) -> None:
        self.html: list[str] = []
        self.md: list[str] = []
        self.n_figures = 0

    def heading(self, level: int, text: str) -> None:
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self.md += ["#" * level + " " + text, ""]

    def para(self, text: str) -> None:
        self.html.append(f"<p class='note'>{html.escape(text)}</p>")
        self.md += [text, ""]

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        self.html.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        self.md += [format_table(header, rows, markdown=True), ""]

    def figure(self, png: bytes, alt: str) -> None:
        data = base64.b64encode(png).decode("ascii")
        self.html.append(f"<img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{data}'>")
        self.n_figures += 1

    def definitions(self, items: Mapping[str, str]) -> None:
        self.html.append("<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
                                          for k, v in items.items()) + "</dl>")
        self.md += [f"- **{k}**: {v}" for k, v in items.items()] + [""]


def _pct(summary: Mapping | None, ci: bool = False) -> str:
    if summary is None:
        return "-"
    text = f"{100 * summary['mean']:.1f}"
    if len(summary.get("per_seed", [])) > 1:
        text += f" ± {100 * summary['std']:.1f}"
        if ci:
            text += f" (±{100 * summary['ci95']:.1f})"
    return text


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _get(cell: Mapping, *path: str):
    for key in path:
        if not isinstance(cell, Mapping) or key not in cell:
            return None
        cell = cell[key]
    return cell


def _scenario_groups(cells: Sequence[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in cells:
        groups[(c["spec"], c["dataset"], c["scenario"])].append(c)
    return groups


def _by_label(cells: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for c in sorted(cells, key=lambda c: c["seed"]):
        out[c["method_label"]].append(c)
    return out


def _group_title(spec: str, dataset: str, scenario: str) -> str:
    return f"{dataset} · {scenario}" + (f" · spec {spec}" if spec else "")


def _leaderboard(doc: _Doc, group: Sequence[dict], worst: Mapping[str, dict]) -> None:
    rows = []
    for label, cs in _by_label(group).items():
        acc = summarise_seeds([c["metrics"]["accuracy"] for c in cs])
        f1 = summarise_seeds([c["metrics"]["macro_f1"] for c in cs])
        eces = [_get(c, "calibration", "ece") for c in cs]
        ece = summarise_seeds(eces) if all(e is not None for e in eces) else None
        w = worst.get(label)
        lat = _mean([_get(c, "efficiency", "latency_per_sample_s") for c in cs])
        params = _get(cs[0], "efficiency", "parameters", "trainable") or cs[0].get("n_parameters")
        mem = _mean([_get(c, "efficiency", "peak_memory", "cpu_peak_growth_bytes") for c in cs])
        gpu = _mean([_get(c, "efficiency", "peak_memory", "gpu_peak_allocated_bytes") for c in cs])
        rows.append((acc["mean"], [
            label, _pct(acc, ci=True), _pct(f1), _pct(ece),
            f"{w['worst_subset']} ({100 * w['subsets'][w['worst_subset']]['mean']:.1f})" if w else "-",
            f"{params:,}" if params else "-",
            f"{_mean([c.get('train_seconds') for c in cs]) or 0:.1f}" + _precision_note(cs),
            f"{1e3 * lat:.3f}" if lat is not None else "-",
            f"{mem / 2 ** 20:.0f}" if mem is not None else "-",
            f"{gpu / 2 ** 20:.0f}" if gpu is not None else "-", len(cs)]))
    rows.sort(key=lambda r: -r[0])
    doc.table(["method", "accuracy % (±95% CI)", "macro-F1 %", "ECE %", "worst subset (acc %)", "parameters",
               "train s", "latency ms/sample", "CPU peak MB", "GPU peak MB", "seeds"], [r[1] for r in rows])


def _precision_note(cells: Sequence[dict]) -> str:
    """" (bf16)" when the cells trained at a precision other than fp32 (older cells say nothing: fp32)."""
    found = sorted({_get(c, "efficiency", "train_precision") or "fp32" for c in cells})
    return "" if found == ["fp32"] else f" ({'/'.join(found)})"


def _robustness(doc: _Doc, cells: Sequence[dict], reference) -> None:
    summaries = robustness_summaries(cells, "accuracy", reference)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in summaries:
        key = (s["spec"], s["dataset"], s["split"], s["protocol"], json.dumps(s["protocol_params"]), s["regime"])
        groups[key].append(s)
    if not groups:
        doc.para("No rate curve: every scenario was run at a single rate or with a rateless protocol.")
        return
    for (spec, dataset, split, protocol, _, regime), curves in groups.items():
        title = f"{dataset} · {protocol} ({regime}) · split {split}" + (f" · spec {spec}" if spec else "")
        doc.heading(3, title)
        if len(curves[0]["rates"]) > 1 or len(curves) > 1:
            doc.figure(figures.rate_curves_png(curves, "accuracy", title), f"accuracy vs rate, {title}")
        top = max(curves[0]["rates"])
        rows = []
        for c in curves:
            drop = (c["relative_drop"] or {}).get(top)
            gap = (c["gap"] or {}).get(top)
            rows.append([c["method_label"], ", ".join(f"{r:g}" for r in c["rates"]), _pct(c["auc"]),
                         _pct(drop), c["reference"] or "-", _pct(gap), _pct(c["gap_auc"])])
        doc.table(["method", "rates", "AUC %", f"relative drop at {top:g} %", "reference",
                   f"gap at {top:g} (points)", "gap in AUC (points)"], rows)


def _subsets(doc: _Doc, cells: Sequence[dict], per_group: Mapping[tuple, list[dict]]) -> None:
    if not per_group:
        doc.para("No per-subset evaluation in these cells.")
        return
    for (spec, dataset, scenario), entries in per_group.items():
        title = _group_title(spec, dataset, scenario)
        doc.heading(3, title)
        names = list(entries[0]["subsets"])
        labels = [e["method_label"] for e in entries]
        values = np.array([[e["subsets"][n]["mean"] if n in e["subsets"] else np.nan for n in names] for e in entries])
        doc.figure(figures.subset_heatmap_png(labels, names, values, f"accuracy per modality subset, {title}"),
                   f"per-subset heatmap, {title}")
        rows = [[n, entries[0]["subsets"][n]["n"]] + [_pct(e["subsets"].get(n)) for e in entries] for n in names]
        doc.table(["subset", "n"] + labels, rows)


def _cost(doc: _Doc, cells: Sequence[dict]) -> None:
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for c in cells:
        by_dataset[c["dataset"]].append(c)
    for dataset, group in by_dataset.items():
        points = []
        for label, cs in _by_label(group).items():
            lat = _mean([_get(c, "efficiency", "latency_per_sample_s") for c in cs])
            points.append({"label": label, "accuracy": float(np.mean([c["metrics"]["accuracy"] for c in cs])),
                           "latency_ms": None if lat is None else 1e3 * lat,
                           "parameters": (_get(cs[0], "efficiency", "parameters", "trainable")
                                          or cs[0].get("n_parameters"))})
        doc.heading(3, dataset)
        doc.figure(figures.cost_scatter_png(points, f"{dataset}: accuracy (mean over its cells) vs cost"),
                   f"accuracy vs cost, {dataset}")
        per_size = defaultdict(list)
        for label, cs in _by_label(group).items():
            sizes = _get(cs[0], "efficiency", "latency_per_subset_size_s") or {}
            for k in sizes:
                per_size[label].append(_mean([_get(c, "efficiency", "latency_per_subset_size_s", k) for c in cs]))
        if per_size:
            ks = sorted({k for cs in _by_label(group).values()
                         for k in (_get(cs[0], "efficiency", "latency_per_subset_size_s") or {})}, key=int)
            doc.para("Latency per sample (ms) with every test sample restricted to k modalities:")
            doc.table(["method"] + [f"k={k}" for k in ks],
                      [[label] + [f"{1e3 * v:.3f}" if v is not None else "-" for v in vals]
                       for label, vals in per_size.items()])


def _pooled_reliability(cs: Sequence[dict]) -> dict | None:
    rels = [_get(c, "calibration", "reliability") for c in cs]
    if not rels or any(r is None for r in rels):
        return None
    count = np.sum([np.asarray(r["count"], float) for r in rels], axis=0)
    def weighted(key: str) -> np.ndarray:
        return np.sum([np.nan_to_num(np.asarray(r[key], float)) * np.asarray(r["count"], float) for r in rels], axis=0)

    conf, acc = weighted("confidence"), weighted("accuracy")
    with np.errstate(invalid="ignore", divide="ignore"):
        conf, acc = conf / count, acc / count
    filled = count > 0
    ece = float(np.sum(count[filled] / count.sum() * np.abs(acc[filled] - conf[filled])))
    return {"confidence": conf, "accuracy": acc, "count": count, "ece": ece}


def _calibration(doc: _Doc, groups: Mapping[tuple, list[dict]]) -> None:
    any_figure = False
    for (spec, dataset, scenario), group in groups.items():
        curves = {label: r for label, cs in _by_label(group).items() if (r := _pooled_reliability(cs)) is not None}
        if curves:
            title = _group_title(spec, dataset, scenario)
            doc.figure(figures.reliability_png(curves, f"reliability, {title} (seeds pooled)"), f"reliability, {title}")
            any_figure = True
    if not any_figure:
        doc.para("No calibration figures in these cells.")


def _realised(doc: _Doc, groups: Mapping[tuple, list[dict]]) -> None:
    rows, points = [], defaultdict(list)
    for (_spec, dataset, scenario), group in groups.items():
        first = group[0]
        real = {role: [_get(c, "realised", role) for c in group] for role in ("train", "val", "test")}
        if any(r is None for rs in real.values() for r in rs):
            continue

        def m(role: str, key: str, real: dict = real) -> float:
            return float(np.mean([r[key] for r in real[role]]))

        rows.append([dataset, scenario, f"{first['train_rate']}" if first["train_rate"] is not None else "-",
                     f"{first['test_rate']}" if first["test_rate"] is not None else "-",
                     f"{m('train', 'missing_entry_fraction'):.3f}", f"{m('test', 'missing_entry_fraction'):.3f}",
                     f"{m('test', 'incomplete_sample_fraction'):.3f}", f"{m('test', 'complete_sample_fraction'):.3f}",
                     str(real["test"][0].get("mask_sha256", "-"))[:12]])
        if first["test_rate"] is not None:
            points[dataset].append({"asked": float(first["test_rate"]), "missing": m("test", "missing_entry_fraction"),
                                    "complete": m("test", "complete_sample_fraction"), "label": scenario})
    if not rows:
        doc.para("No realised-missingness records in these cells.")
        return
    doc.table(["dataset", "scenario", "asked train rate", "asked test rate", "train missing entries",
               "test missing entries", "test incomplete samples", "test complete samples",
               "test mask sha256 (first seed)"], rows)
    for dataset, pts in points.items():
        doc.figure(figures.realised_png(pts, f"{dataset}: asked vs realised (test split, mean over cells)"),
                   f"realised missingness, {dataset}")


def _protocols(doc: _Doc, used: set[str]) -> None:
    infos = protocol_infos()
    doc.table(["protocol", "used here", "definition"],
              [[i["name"], "yes" if i["name"] in used else "", i["definition"]] for i in infos])


def write_report(cells: Sequence[Mapping], out_dir: str | Path, reference: str | Mapping[str, str | None] | None = None,
                 title: str = "mlmm benchmark report", failures: Sequence[Mapping] = ()) -> dict[str, Path]:
    """Write ``index.html`` and ``report.md`` for ``cells`` into ``out_dir`` (created if needed).

    ``reference``: the method every gap is measured against — one name for all specs,
    or spec name -> method (``load_specs``' ``reference``). ``failures``: cells recorded as
    failed (``mlmm.bench.store.load_failures``), listed apart, never as results.
    Returns {"html", "markdown"} paths.
    """
    if not cells:
        raise ValueError("no cells to report: the results are empty")
    cells = [normalise_cell(c) for c in cells]
    for c in cells:
        c["scenario"] = scenario_of(c)
    groups = _scenario_groups(cells)
    worst = defaultdict(dict)
    subsets_by_group: dict[tuple, list[dict]] = defaultdict(list)
    for s in subset_summaries(cells):
        worst[(s["spec"], s["dataset"], s["scenario"])][s["method_label"]] = s
        subsets_by_group[(s["spec"], s["dataset"], s["scenario"])].append(s)

    doc = _Doc()
    specs = sorted({c["spec"] for c in cells if c["spec"]})
    doc.para(f"{len(cells)} cells; datasets {', '.join(sorted({c['dataset'] for c in cells}))}; "
             f"methods {', '.join(sorted({c['method_label'] for c in cells}))}"
             + (f"; specs {', '.join(specs)}" if specs else "")
             + (f"; reference method {json.dumps(reference) if not isinstance(reference, str) else reference}"
                if reference else "") + ".")
    if failures:
        doc.heading(2, "Failed cells (not results)")
        doc.para(f"{len(failures)} cells failed (a diverged fit, an empty split) and appear in no table below.")
        doc.table(["spec", "dataset", "scenario", "method", "seed", "reason"],
                  [[f.get("spec", ""), f.get("dataset", ""), f.get("scenario", ""), f.get("method_label", ""),
                    f.get("seed", ""), f.get("reason", "")] for f in failures])
    doc.heading(2, "Leaderboard per dataset and scenario")
    doc.para("Mean ± sample std over seeds (95% t-interval half-width in brackets); worst subset = lowest mean "
             "accuracy when every test sample is restricted to one modality subset.")
    for key, group in groups.items():
        doc.heading(3, _group_title(*key))
        _leaderboard(doc, group, worst.get(key, {}))
    doc.heading(2, "Robustness: accuracy vs missing rate")
    doc.definitions({k: DEFINITIONS[k] for k in ("auc", "relative_drop", "gap")})
    _robustness(doc, cells, reference)
    doc.heading(2, "Accuracy per modality subset")
    _subsets(doc, cells, subsets_by_group)
    doc.heading(2, "Accuracy vs cost")
    _cost(doc, cells)
    doc.heading(2, "Calibration (reliability curves)")
    _calibration(doc, groups)
    doc.heading(2, "Realised missingness")
    doc.para("Asked rates next to what the masks actually hold (mean over seeds and methods of the scenario).")
    _realised(doc, groups)
    doc.heading(2, "Definitions")
    doc.heading(3, "Missingness protocols")
    _protocols(doc, {c["protocol"] for c in cells})
    doc.heading(3, "Figures")
    doc.definitions({**{k: DEFINITIONS[k] for k in DEFINITIONS}, **EFFICIENCY_DEFINITIONS})

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>" + "\n".join(doc.html) + "</body></html>\n")
    paths = {"html": out / "index.html", "markdown": out / "report.md"}
    paths["html"].write_text(page, encoding="utf-8")
    paths["markdown"].write_text("\n".join([f"# {title}", ""] + doc.md), encoding="utf-8")
    return paths
