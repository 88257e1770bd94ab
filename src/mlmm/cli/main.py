"""The ``mlmm`` command line: datasets | methods | protocols | run | predict | demo | stream | bench |
reproduce | report | explain | recover | uncertainty.

The CLI owns I/O, paths, devices and seeds; the library underneath never
prints. Bad input and known runtime conditions exit with code 2 and one line on
stderr (``cli/errors.py``); a bug exits 1 with one line, its traceback only under
``MLMM_DEBUG=1``. One module per
command group in this package; this one builds the parser and dispatches.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

import torch

from .. import __version__
from ..errors import MlmmWarning
from ..train.devices import check_device
from . import bench, demo, diagnostics, listing, predict, report, run, stream
from .common import UsageError, _Parser, add_feature_cache_flag, add_training_flags, feature_cache_env
from .errors import KNOWN, describe


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mlmm", description="Multimodal learning with missing modalities.")
    parser.add_argument("--version", action="version", version=f"mlmm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    for name, help_text in (("datasets", "list bundled datasets"), ("methods", "list registered methods"),
                            ("protocols", "list missingness protocols and what their rates mean")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help="machine-readable output")

    run_p = sub.add_parser("run", help="train and evaluate methods under a missingness protocol")
    run_p.add_argument("--dataset", help="a bundled dataset (see `mlmm datasets`); or --data-file / --data-dir")
    g = run_p.add_argument_group("your own data (instead of --dataset; see mlmm.data.loaders)")
    g.add_argument("--data-file", help=".csv/.tsv/.parquet table, .npz, UEA .ts, MMSA .pkl, AV-MNIST folder, "
                                       "or a .yaml/.json mapping file")
    g.add_argument("--data-dir", metavar="FOLDER",
                   help="a data folder read batch by batch, never whole: memory-mapped .npy files (spec.json, "
                        "mlmm.data.save_memmap_dataset) or a row table with dataset.yaml (images, text, numbers, "
                        "Parquet; see mlmm.data.tables)")
    g.add_argument("--modality", action="append", default=[], metavar="NAME=COLS",
                   help="table columns of a modality: col1,col2 or prefix:b_ (repeat per modality)")
    g.add_argument("--label", help="label column of a table (label key of an .npz)")
    g.add_argument("--split-column", help="table column of per-row split names (train / valid / test)")
    g.add_argument("--group-column", help="table column of group ids (subject, patient): grouped splits keep each "
                                          "group on one side, and become the default split")
    g.add_argument("--task", choices=("classification", "regression"), help="default: classification")
    g.add_argument("--kind", action="append", default=[], dest="kinds", metavar="NAME=KIND",
                   help="a modality's kind: image, text, vector or sequence (repeat per modality; unstated kinds "
                        "are inferred only where unambiguous, with a note; integer arrays need one)")
    g.add_argument("--vocab-size", action="append", default=[], dest="vocab_size", metavar="NAME=N",
                   help="a text modality's vocabulary size (the tokenizer's; default: largest id + 1, with a note)")
    g.add_argument("--pad-id", action="append", default=[], dest="pad_id", metavar="NAME=ID",
                   help="a text modality's padding id (default 0); a row of padding only is missing")
    fb = run_p.add_argument_group("frozen pretrained backbones (features computed once; see mlmm.data.frozen_features)")
    fb.add_argument("--frozen", action="append", default=[], metavar="NAME=BACKBONE",
                    help="replace modality NAME by the features of a frozen backbone before anything runs: "
                         "hf:minilm, hf:<local dir>, torchvision:<arch>:<weights file>, timm:<arch>:<weights file>")
    add_feature_cache_flag(fb)
    run_p.add_argument("--method", action="append", help="method name (repeat for several; default: every method)")
    run_p.add_argument("--protocol", default="entry", help="missingness protocol (see `mlmm protocols`)")
    run_p.add_argument("--rate", type=float, default=0.0, help="the protocol's rate, train, validation and test")
    run_p.add_argument("--train-rate", type=float, help="rate for training and validation (overrides --rate)")
    run_p.add_argument("--test-rate", type=float, help="rate for the test split (overrides --rate)")
    run_p.add_argument("--rates", help="per-modality protocol: one rate per modality, comma-separated")
    run_p.add_argument("--subset", help="fixed-subset protocol: modality names, comma-separated")
    run_p.add_argument("--strength", type=float, help="mnar protocol: spread of per-class rates in [0, 1]")
    run_p.add_argument("--protocol-param", action="append", default=[], metavar="KEY=VALUE",
                     help="any other protocol parameter, e.g. block=5 (burst) or every=4 (asynchronous)")
    run_p.add_argument("--split", default="fixed",
                       help="fixed (as shipped; tmc for handwritten; grouped for data with group ids), random (seeded "
                            "80/20), group (no group on two sides), logo (leave one group out: every fold, each "
                            "and pooled), group-kfold (5 grouped folds); logo:i / group-kfold:i: fold i")
    run_p.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0-4")
    run_p.add_argument("--no-subsets", action="store_true", help="skip the evaluation on every modality subset")
    run_p.add_argument("--json", action="store_true", help="print JSON (one object per method; a list for several)")
    run_p.add_argument("--out", help="also write the JSON result to this file")
    run_p.add_argument("--distributed", action="store_true",
                     help="data-parallel training under torchrun (gloo on CPU, NCCL on CUDA); rank 0 reports, e.g. "
                          "torchrun --nproc-per-node 2 -m mlmm.cli run ... --distributed")
    run_p.add_argument("--save-model", metavar="DIR",
                       help="save the fitted model of the first seed to this new directory (one method only); "
                            "`mlmm predict --model DIR` uses it")
    add_training_flags(run_p)

    demo_p = sub.add_parser("demo", help="the default benchmark: baselines on handwritten at entry rates 0, 0.3, 0.5")
    demo_p.add_argument("--out", default="mlmm-demo", help="folder for results.csv, results.json and report.md")
    demo_p.add_argument("--dataset", default="handwritten")
    demo_p.add_argument("--rates", default="0,0.3,0.5", help="entry rates, train and test")
    demo_p.add_argument("--seeds", default="0,1,2")
    demo_p.add_argument("--split", default="fixed")
    demo_p.add_argument("--workers", type=int, help="fits at once, one process and one torch thread each "
                                                    "(default: one per core; 1 = in this process)")
    demo_p.add_argument("--method", action="append",
                      help="methods to run (default: the four foundation baselines; see --all-methods)")
    demo_p.add_argument("--all-methods", action="store_true", help="run every registered method")
    demo_p.add_argument("--no-progress", action="store_true")
    add_training_flags(demo_p)

    stream_p = sub.add_parser("stream", help="train a streaming method, then feed the test split step by step "
                                           "with sensors failing mid-sequence")
    stream_p.add_argument("--dataset", required=True)
    stream_p.add_argument("--method", default="streaming-gru",
                          help="a method that can stream (stream_init/stream_step)")
    stream_p.add_argument("--fail", action="append", default=[], metavar="MODALITY@STEP",
                        help="the sensor delivers steps before STEP only, e.g. gyroscope@50 (repeatable)")
    stream_p.add_argument("--every", type=int, default=10, help="print accuracy every this many steps")
    stream_p.add_argument("--train-protocol", default="none", help="missingness protocol for training and validation")
    stream_p.add_argument("--train-rate", type=float, default=0.0, help="its rate")
    stream_p.add_argument("--seed", type=int, default=0)
    stream_p.add_argument("--split", default="fixed")
    stream_p.add_argument("--json", action="store_true", help="print JSON (curves at every step, latency)")
    add_training_flags(stream_p)
    # streaming-gru at lr 1e-3 was still improving at 100 epochs on basicmotions; at 3e-3 it
    # reached 100% test accuracy (complete data, seed 0) within them.
    stream_p.set_defaults(lr=3e-3)

    predict.add_parser(sub)
    bench.add_parsers(sub)  # bench, reproduce
    diagnostics.add_parsers(sub)  # explain, recover, uncertainty

    report_p = sub.add_parser("report", help="static HTML report and markdown tables of benchmark results")
    report_p.add_argument("results", help="results database of `mlmm bench` (SQLite), or a JSON / JSONL file of cells")
    report_p.add_argument("-o", "--out", default="mlmm-report", help="folder for index.html and report.md")
    report_p.add_argument("--spec", help="report only this spec's cells")
    report_p.add_argument("--reference", help="method the robustness gaps are measured against "
                                            "(default: each spec's `reference`)")
    return parser


def _note(message, category, filename, lineno, file=None, line=None) -> None:
    """A library warning as one line on stderr (``mlmm: note: ...``), without the source line."""
    print(f"mlmm: note: {message}", file=sys.stderr if file is None else file)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    shown = warnings.showwarning
    # What a loader inferred (KindInferredWarning) and mlmm's other warnings: one line each, shown
    # even where the interpreter's filters would ignore them or turn them into errors (-W error).
    warnings.showwarning = _note
    with warnings.catch_warnings():
        warnings.simplefilter("default", MlmmWarning)
        return _main(parser, argv, shown)


def _main(parser: argparse.ArgumentParser, argv: Sequence[str] | None, shown) -> int:
    try:
        args = parser.parse_args(argv)
        if getattr(args, "threads", None) is not None:
            if args.threads < 1:
                raise UsageError("--threads must be >= 1")
            torch.set_num_threads(args.threads)
        handler = {**diagnostics.HANDLERS, "run": run.cmd_run, "demo": demo.cmd_demo, "bench": bench.cmd_bench,
                   "stream": stream.cmd_stream, "reproduce": bench.cmd_reproduce,
                   "report": report.cmd_report, "predict": predict.cmd_predict}.get(args.command, listing.cmd_listing)
        if getattr(args, "device", None) is not None:
            check_device(args.device)  # a bogus name or an absent GPU: one line before any work
        with feature_cache_env(getattr(args, "feature_cache", None)):
            handler(args)
    except KNOWN as err:
        if os.environ.get("MLMM_DEBUG"):
            raise
        print(f"mlmm: error: {describe(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mlmm: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: one line, the traceback under MLMM_DEBUG=1
        if os.environ.get("MLMM_DEBUG"):
            raise
        print(f"mlmm: internal error: {type(err).__name__}: {describe(err)} "
              "(rerun with MLMM_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = shown
    return 0


if __name__ == "__main__":
    sys.exit(main())
