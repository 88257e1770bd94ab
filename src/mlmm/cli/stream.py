"""``mlmm stream``: train a streaming method, then feed the test split step by step."""

from __future__ import annotations

import argparse
import json

from ..methods import METHODS
from .common import UsageError, parse_params, train_config


def cmd_stream(args: argparse.Namespace) -> None:
    from ..data.registry import load_dataset
    from ..report import format_table
    from ..streaming import parse_failures, stream_demo

    spec = load_dataset(args.dataset).spec
    if args.every < 1:
        raise UsageError("--every must be >= 1")
    METHODS.get(args.method)
    demo = stream_demo(args.dataset, parse_failures(args.fail, spec), method=args.method, seed=args.seed,
                       split=args.split, train=train_config(args), device=args.device,
                       method_params=parse_params(args.param), train_protocol=args.train_protocol,
                       train_rate=args.train_rate)
    if args.json:
        print(json.dumps({**demo.info, "curves": demo.curves, "train_seconds": demo.train_seconds,
                          "epochs_run": demo.epochs_run}, indent=2))
        return
    n_steps = len(next(iter(demo.curves.values()))["accuracy"])
    shown = sorted({1, *range(args.every, n_steps + 1, args.every), n_steps})
    header = ["steps seen"] + [f"{label}: {what}" for label in demo.curves for what in ("accuracy", "uncertainty")]
    rows = [[k] + [f"{c[what][k - 1]:.3f}" for c in demo.curves.values() for what in ("accuracy", "uncertainty")]
            for k in shown]
    print(f"{args.method} on {args.dataset} (seed {args.seed}): "
          f"{demo.epochs_run} epochs in {demo.train_seconds:.0f} s; "
          f"{demo.info['n_test']} test streams; uncertainty = predictive entropy / log C")
    print(format_table(header, rows))
    for label, c in demo.curves.items():
        lat = c["latency_ms"]
        print(f"per-step latency, one stream ({label}): median {lat['median']:.3f} ms, p95 {lat['p95']:.3f} ms, "
              f"CPU time median {lat['cpu_median']:.3f} ms, over {lat['steps_timed']} steps")
