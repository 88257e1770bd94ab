"""Plain-text tables and the markdown report of a set of experiment results.

Hand-written on purpose: a fixed-width table is twenty lines, and a table
library would be one more dependency for every user.
"""

from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], markdown: bool = False) -> str:
    """Align ``rows`` under ``header``; ``markdown`` gives a GitHub table instead."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    if markdown:
        lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        return "\n".join(lines)
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def pct(summary: dict) -> str:
    """{"mean", "std"} fractions -> "94.3 ± 1.2" in percent."""
    return f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f}"


def results_table(results: Sequence[dict], markdown: bool = False) -> str:
    """One row per (method, rates) result: accuracy, macro-F1, realised missingness, time."""
    header = ["method", "protocol", "train/test rate", "accuracy %", "macro-F1 %", "test missing", "test complete",
              "worst subset", "fit s"]
    rows = []
    for r in results:
        real = r["realised"]["test"]
        worst = r.get("worst_subset")
        rows.append([
            r["method"], r["protocol"], f"{r['train_rate']:g}/{r['test_rate']:g}",
            pct(r["metrics"]["accuracy"]), pct(r["metrics"]["macro_f1"]),
            f"{real['missing_entry_fraction']:.3f}", f"{real['complete_sample_fraction']:.3f}",
            f"{worst['subset']} ({100 * worst['accuracy']:.1f})" if worst else "-",
            f"{r['train_seconds']['mean']:.1f}",
        ])
    return format_table(header, rows, markdown)


def subsets_table(result: dict, markdown: bool = False) -> str:
    """Per-subset accuracy and macro-F1 of one result (complete test data restricted to each subset)."""
    rows = [[name, s["n"], pct(s["accuracy"]), pct(s["macro_f1"])] for name, s in result.get("subsets", {}).items()]
    return format_table(["subset", "n", "accuracy %", "macro-F1 %"], rows, markdown)


def pivot_table(results: Sequence[dict], metric: str = "accuracy", markdown: bool = False) -> str:
    """Methods as rows, rates as columns: mean ± std of ``metric`` in percent."""
    rates = sorted({r["rate"] for r in results})
    methods = list(dict.fromkeys(r["method"] for r in results))
    cell = {(r["method"], r["rate"]): pct(r["metrics"][metric]) for r in results}
    rows = [[m] + [cell.get((m, rate), "-") for rate in rates] for m in methods]
    return format_table(["method"] + [f"rate {rate:g}" for rate in rates], rows, markdown)
