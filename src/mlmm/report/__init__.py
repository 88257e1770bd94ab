"""Reports: plain-text / markdown tables (``text``) and the static HTML report (``html``).

The table helpers that ``mlmm run`` and the demo print are re-exported here so
``from mlmm.report import format_table`` keeps working; ``write_report`` (the
HTML report of ``mlmm report``) needs matplotlib and is imported on first use.
"""

from .text import format_table, pct, pivot_table, results_table, subsets_table

__all__ = ["format_table", "pct", "pivot_table", "results_table", "subsets_table", "write_report"]


def __getattr__(name: str):
    if name == "write_report":  # lazy: matplotlib is only needed for the HTML report
        from .html import write_report

        return write_report
    raise AttributeError(f"module 'mlmm.report' has no attribute {name!r}")
