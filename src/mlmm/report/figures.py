"""Matplotlib figures of the HTML report, each returned as PNG bytes.

matplotlib's object API (``Figure`` + the Agg canvas) is used instead of pyplot:
no global figure state, no backend switching, safe in worker processes and
threads. Every function takes plain summaries (see ``report.html``) and never
touches files.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_DPI = 100


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return buf.getvalue()


def rate_curves_png(curves: Sequence[Mapping], metric: str, title: str) -> bytes:
    """Metric vs test rate, one line per method: curves are robustness summaries
    ({"method_label", "rates", "per_rate": {rate: {"mean", "std"}}}); error bars = std over seeds."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for c in curves:
        rates = c["rates"]
        mean = [100 * c["per_rate"][r]["mean"] for r in rates]
        std = [100 * c["per_rate"][r]["std"] for r in rates]
        ax.errorbar(rates, mean, yerr=std, marker="o", capsize=3, label=c["method_label"])
    ax.set_xlabel("test missing rate")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def subset_heatmap_png(methods: Sequence[str], subsets: Sequence[str], values: np.ndarray, title: str) -> bytes:
    """values (n_methods, n_subsets) mean accuracy in [0, 1] (NaN = not run); annotated in percent."""
    n_m, n_s = values.shape
    fig = Figure(figsize=(max(6.0, 0.32 * n_s + 2.5), max(2.2, 0.42 * n_m + 1.6)))
    ax = fig.subplots()
    vmin = np.nanmin(100 * values) if np.isfinite(values).any() else 0
    image = ax.imshow(100 * values, aspect="auto", cmap="viridis", vmin=vmin, vmax=100)
    ax.set_yticks(range(n_m), labels=list(methods), fontsize=7)
    ax.set_xticks(range(n_s), labels=list(subsets), rotation=90, fontsize=6)
    if n_s <= 16:
        for i in range(n_m):
            for j in range(n_s):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{100 * values[i, j]:.0f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(image, ax=ax, label="accuracy (%)")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def cost_scatter_png(points: Sequence[Mapping], title: str) -> bytes:
    """Accuracy vs cost, one point per method: points = [{"label", "accuracy", "latency_ms", "parameters"}]
    (means over the dataset's cells). Two panels: latency per sample, trainable parameters."""
    fig = Figure(figsize=(9.0, 3.8))
    axes = fig.subplots(1, 2)
    for ax, key, xlabel in ((axes[0], "latency_ms", "inference latency per sample (ms)"),
                            (axes[1], "parameters", "trainable parameters")):
        for p in points:
            if p.get(key) is not None:
                ax.scatter(p[key], 100 * p["accuracy"], s=30)
                ax.annotate(p["label"], (p[key], 100 * p["accuracy"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def reliability_png(curves: Mapping[str, Mapping], title: str) -> bytes:
    """Reliability diagram: label -> pooled bins {"confidence", "accuracy", "count"} (NaN = empty bin)."""
    fig = Figure(figsize=(4.8, 4.4))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for label, c in curves.items():
        conf, acc = np.asarray(c["confidence"], float), np.asarray(c["accuracy"], float)
        ok = np.isfinite(conf) & np.isfinite(acc)
        ax.plot(conf[ok], acc[ok], marker="o", markersize=3, label=f"{label} (ECE {100 * c['ece']:.1f}%)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def realised_png(points: Sequence[Mapping], title: str) -> bytes:
    """Asked test rate vs realised test figures: points = [{"asked", "missing", "complete", "label"}]."""
    fig = Figure(figsize=(5.6, 4.0))
    ax = fig.subplots()
    asked = [p["asked"] for p in points]
    ax.scatter(asked, [p["missing"] for p in points], marker="o", label="realised missing-entry fraction")
    ax.scatter(asked, [p["complete"] for p in points], marker="s", label="realised complete-sample fraction")
    top = max([1.0] + asked)
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="realised = asked")
    ax.set_xlabel("asked test rate")
    ax.set_ylabel("fraction of the test split")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)
