"""``mlmm report``: static HTML report and markdown tables of benchmark results."""

from __future__ import annotations

import argparse

from .common import UsageError, check_writable


def cmd_report(args: argparse.Namespace) -> None:
    try:
        from ..report import write_report
        from ..report.load import load_failed_cells, load_results
    except ImportError as err:  # matplotlib is the optional extra `report`
        raise UsageError(f"report: {err}; install it with: pip install 'mlmm[report]'") from None

    check_writable(args.out, "--out", folder=True)
    cells, references = load_results(args.results, args.spec)
    failures = load_failed_cells(args.results, args.spec)
    paths = write_report(cells, args.out, reference=args.reference or references, failures=failures)
    failed = f"; {len(failures)} failed cells listed apart" if failures else ""
    print(f"wrote {paths['html']} and {paths['markdown']} ({len(cells)} cells{failed})")
