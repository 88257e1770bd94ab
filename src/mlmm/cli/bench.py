"""``mlmm bench`` and ``mlmm reproduce``: argument parsing and printing (the CLI owns I/O and paths).

``mlmm.cli.main`` adds these sub-commands with ``add_parsers`` and dispatches to
``cmd_bench`` / ``cmd_reproduce``; the work itself is ``run_bench``.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..bench.catalog import find_spec, packaged_specs
from ..bench.runner import BenchOutcome, CellFailed, run_bench
from ..bench.spec import fast_overrides, load_spec, parse_spec
from ..bench.tables import comparison_table, published_rows, summarise_cells, summary_table
from .common import add_feature_cache_flag

__all__ = ["DEFAULT_DB", "add_parsers", "cmd_bench", "cmd_reproduce"]

DEFAULT_DB = "mlmm-bench.sqlite"


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a spec key (dotted, e.g. train.max_epochs=5, seeds=0-2, methods=[masked-mean])")
    p.add_argument("--db", default=DEFAULT_DB, help=f"SQLite results database (default {DEFAULT_DB}); "
                                                     "finished cells in it are skipped")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: process pool on this machine; ray: Ray tasks on a cluster")
    p.add_argument("--workers", type=int, help="cells run at once (default: min(cores, cells); 1 = in this process)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker (default 1)")
    p.add_argument("--ray-address",
                   help="Ray cluster to join (e.g. ray://head:10001 or auto; default: a local instance)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip regenerating the masks of finished cells to check their sha256")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    add_feature_cache_flag(p)


def add_parsers(sub) -> None:
    """Add ``bench`` and ``reproduce`` to the ``mlmm`` sub-command parser ``sub``."""
    bench = sub.add_parser("bench", help="run a YAML experiment spec's grid into a results database (resumable)")
    bench.add_argument("spec", help="path to a spec file (see experiments/)")
    bench.add_argument("--data-dir", metavar="FOLDER",
                       help="run the grid on this data folder instead of the spec's datasets (a memory-mapped "
                            "folder or a table folder with dataset.yaml; read batch by batch)")
    _add_run_flags(bench)
    rep = sub.add_parser("reproduce", help="run a committed experiment and print ours beside the published figures")
    rep.add_argument("name", nargs="?", help="experiment name (see --list) or path to a spec file")
    rep.add_argument("--fast", action="store_true", help="the spec's `fast` overrides (fewer seeds / rates)")
    rep.add_argument("--list", action="store_true", help="list the shipped experiments")
    _add_run_flags(rep)


def _progress(disable: bool):
    from tqdm.auto import tqdm

    def make(total: int, initial: int):
        return tqdm(total=total, initial=initial, unit="cell", file=sys.stderr, disable=disable, dynamic_ncols=True)

    return make


def _run(args: argparse.Namespace, spec, text: str, overrides: list[str], source: str) -> BenchOutcome:
    from ..train.devices import check_device
    from .common import check_writable

    check_device(spec.device)  # before the database is created or any cell runs
    check_writable(args.db, "--db")
    return run_bench(spec, args.db, spec_text=text, overrides=overrides, backend=args.backend, workers=args.workers,
                     threads=args.threads, ray_address=args.ray_address, verify=not args.no_verify,
                     progress=None if args.no_progress else _progress(args.json), source=source)


def _payload(outcome: BenchOutcome, summaries: list[dict]) -> dict:
    return {"spec": outcome.spec.name, "db": str(outcome.db), "run_id": outcome.run_id,
            "cells_total": outcome.cells_total, "cells_run": outcome.cells_run,
            "cells_skipped": outcome.cells_skipped, "cells_elsewhere": outcome.cells_elsewhere,
            "cells_waited": outcome.cells_waited, "worker": outcome.worker, "seconds": outcome.seconds,
            "reference": outcome.spec.reference,
            "summary": summaries, "cells_failed": outcome.failed}


def _footer(outcome: BenchOutcome) -> str:
    """What this process did: cells it ran, found already stored, and left to another process on the database."""
    others = f", {outcome.cells_elsewhere} run by another process" if outcome.cells_elsewhere else ""
    if outcome.cells_waited:
        others += f", {outcome.cells_waited} found held by another process's lease"
    if outcome.failed:
        others += f", {len(outcome.failed)} failed (recorded as failed, not as results; `mlmm report` lists them)"
    return (f"\n{outcome.cells_total} cells: {outcome.cells_run} run, {outcome.cells_skipped} already in "
            f"{outcome.db}{others} ({outcome.seconds:.0f} s)")


def _raise_if_failed(outcome: BenchOutcome) -> None:
    """After the tables: cells that failed make the command fail (exit 2), naming the first."""
    if outcome.failed:
        raise CellFailed(f"{len(outcome.failed)} of {outcome.cells_total} cells failed (recorded in {outcome.db}, "
                         f"not as results): {outcome.failed[0]}")


def cmd_bench(args: argparse.Namespace) -> None:
    if args.data_dir:  # the grid's datasets become this folder (recorded as an override of the spec)
        from .common import data_dir_name

        args.overrides = [*args.overrides, "datasets=" + json.dumps([data_dir_name(args.data_dir)])]
    spec, text = load_spec(args.spec, args.overrides)
    outcome = _run(args, spec, text, args.overrides, source=args.spec)
    summaries = summarise_cells(outcome.cells)
    if args.json:
        print(json.dumps(_payload(outcome, summaries), indent=2))
    else:
        print(summary_table(summaries))
        print(_footer(outcome))
    _raise_if_failed(outcome)


def cmd_reproduce(args: argparse.Namespace) -> None:
    if args.list or not args.name:
        if not args.list:
            raise ValueError("reproduce: give an experiment name (see `mlmm reproduce --list`)")
        for name, text in packaged_specs().items():
            print(f"{name}: {parse_spec(text, name).description}")
        return
    text, source = find_spec(args.name)
    spec = parse_spec(text, source)
    overrides = (fast_overrides(spec) if args.fast else []) + list(args.overrides)
    spec = parse_spec(text, source, overrides)
    outcome = _run(args, spec, text, overrides, source=source)
    summaries = summarise_cells(outcome.cells)
    if args.json:
        payload = _payload(outcome, summaries)
        payload["published"] = {d: published_rows(spec, d) for d in spec.datasets}
        print(json.dumps(payload, indent=2))
    else:
        print(f"{spec.name}: {spec.description}\n")
        print(comparison_table(spec, summaries))
        print(_footer(outcome))
    _raise_if_failed(outcome)
