"""``mlmm demo``: the default benchmark."""

from __future__ import annotations

import argparse

from .common import UsageError, check_writable, parse_floats, parse_params, parse_seeds, progress, train_config
from .listing import method_names


def cmd_demo(args: argparse.Namespace) -> None:
    from ..demo import DEMO_METHODS, run_demo

    if args.all_methods and args.method:
        raise UsageError("give either --method or --all-methods")
    methods = method_names(None) if args.all_methods else method_names(args.method or DEMO_METHODS)
    check_writable(args.out, "--out", folder=True)
    out = run_demo(
        out_dir=args.out, dataset=args.dataset, rates=parse_floats(args.rates, "--rates"),
        seeds=parse_seeds(args.seeds), split=args.split, methods=methods,
        train=train_config(args), device=args.device, method_params=parse_params(args.param),
        progress=None if args.no_progress else progress, workers=args.workers,
    )
    print(out.table)
    print(f"\nwrote {out.report_path}, {out.csv_path} and {out.json_path} ({out.seconds:.0f} s)")
