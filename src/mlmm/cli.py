"""The ``mlmm`` command line: datasets | methods | protocols | run | demo | bench | reproduce | report |
explain | recover | uncertainty.

The CLI owns I/O, paths, devices and seeds; the library underneath never
prints. Bad input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence

import torch

from . import __version__
from .data.registry import dataset_infos
from .methods import METHODS
from .missing import protocol_infos
from .registry import UnknownNameError
from .train.loop import TrainConfig


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message}")


def parse_seeds(text: str) -> tuple[int, ...]:
    """"0,1,2" or "0-4" -> (0, 1, 2, ...)."""
    try:
        if "-" in text.strip("-") and "," not in text:
            lo, hi = text.split("-")
            seeds = tuple(range(int(lo), int(hi) + 1))
        else:
            seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UsageError(f"--seeds: cannot read {text!r}; give e.g. 0,1,2 or 0-4") from None
    if not seeds:
        raise UsageError("--seeds: no seed given")
    return seeds


def parse_floats(text: str, flag: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"{flag}: cannot read {text!r}; give numbers separated by commas") from None


def parse_params(items: Sequence[str]) -> dict:
    """["embed_dim=64", "dropout=0.3"] -> {"embed_dim": 64, "dropout": 0.3} (values read as JSON when they parse)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param: expected KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=d.max_epochs, help="maximum epochs (early stopping on validation)")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--patience", type=int, default=d.patience)
    g.add_argument("--modality-dropout", type=float, default=d.modality_dropout,
                   help="per-entry drop probability of present modalities during training (never drops all)")
    g.add_argument("--select-on", choices=("accuracy", "loss"), default=d.select_on,
                   help="validation criterion for early stopping and model selection")
    g.add_argument("--min-steps-per-epoch", type=int, default=d.min_steps_per_epoch,
                   help="small training splits get batches down to 8 samples so an epoch has up to this many steps")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    g.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on an idle 2-core machine 2 threads were ~1.2x "
                        "faster per step, but on a busy one several times slower; grids run one per core)")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method hyper-parameter")


def _train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       patience=args.patience, modality_dropout=args.modality_dropout,
                       min_steps_per_epoch=args.min_steps_per_epoch, select_on=args.select_on)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mlmm", description="Multimodal learning with missing modalities.")
    parser.add_argument("--version", action="version", version=f"mlmm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    for name, help_text in (("datasets", "list bundled datasets"), ("methods", "list registered methods"),
                            ("protocols", "list missingness protocols and what their rates mean")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help="machine-readable output")

    run = sub.add_parser("run", help="train and evaluate methods under a missingness protocol")
    run.add_argument("--dataset", help="a bundled dataset (see `mlmm datasets`); or --data-file")
    g = run.add_argument_group("your own data (instead of --dataset; see mlmm.data.loaders)")
    g.add_argument("--data-file", help=".csv/.tsv/.parquet table, .npz, UEA .ts, MMSA .pkl, AV-MNIST folder, "
                                       "or a .yaml/.json mapping file")
    g.add_argument("--modality", action="append", default=[], metavar="NAME=COLS",
                   help="table columns of a modality: col1,col2 or prefix:b_ (repeat per modality)")
    g.add_argument("--label", help="label column of a table (label key of an .npz)")
    g.add_argument("--split-column", help="table column of per-row split names (train / valid / test)")
    g.add_argument("--task", choices=("classification", "regression"), help="default: classification")
    run.add_argument("--method", action="append", help="method name (repeat for several; default: every method)")
    run.add_argument("--protocol", default="entry", help="missingness protocol (see `mlmm protocols`)")
    run.add_argument("--rate", type=float, default=0.0, help="the protocol's rate, train, validation and test")
    run.add_argument("--train-rate", type=float, help="rate for training and validation (overrides --rate)")
    run.add_argument("--test-rate", type=float, help="rate for the test split (overrides --rate)")
    run.add_argument("--rates", help="per-modality protocol: one rate per modality, comma-separated")
    run.add_argument("--subset", help="fixed-subset protocol: modality names, comma-separated")
    run.add_argument("--strength", type=float, help="mnar protocol: spread of per-class rates in [0, 1]")
    run.add_argument("--protocol-param", action="append", default=[], metavar="KEY=VALUE",
                     help="any other protocol parameter, e.g. block=5 (burst) or every=4 (asynchronous)")
    run.add_argument("--split", default="fixed", help="fixed (as shipped; tmc for handwritten) or random (seeded 80/20)")
    run.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0-4")
    run.add_argument("--no-subsets", action="store_true", help="skip the evaluation on every modality subset")
    run.add_argument("--json", action="store_true", help="print JSON (one object per method; a list for several)")
    run.add_argument("--out", help="also write the JSON result to this file")
    run.add_argument("--distributed", action="store_true",
                     help="data-parallel training under torchrun (gloo on CPU, NCCL on CUDA); rank 0 reports, e.g. "
                          "torchrun --nproc-per-node 2 -m mlmm.cli run ... --distributed")
    _add_training_flags(run)

    demo = sub.add_parser("demo", help="the default benchmark: baselines on handwritten at entry rates 0, 0.3, 0.5")
    demo.add_argument("--out", default="mlmm-demo", help="folder for results.csv, results.json and report.md")
    demo.add_argument("--dataset", default="handwritten")
    demo.add_argument("--rates", default="0,0.3,0.5", help="entry rates, train and test")
    demo.add_argument("--seeds", default="0,1,2")
    demo.add_argument("--split", default="fixed")
    demo.add_argument("--method", action="append",
                      help="methods to run (default: the four foundation baselines; see --all-methods)")
    demo.add_argument("--all-methods", action="store_true", help="run every registered method")
    demo.add_argument("--no-progress", action="store_true")
    _add_training_flags(demo)

    stream = sub.add_parser("stream", help="train a streaming method, then feed the test split step by step "
                                           "with sensors failing mid-sequence")
    stream.add_argument("--dataset", required=True)
    stream.add_argument("--method", default="streaming-gru", help="a method that can stream (stream_init/stream_step)")
    stream.add_argument("--fail", action="append", default=[], metavar="MODALITY@STEP",
                        help="the sensor delivers steps before STEP only, e.g. gyroscope@50 (repeatable)")
    stream.add_argument("--every", type=int, default=10, help="print accuracy every this many steps")
    stream.add_argument("--train-protocol", default="none", help="missingness protocol for training and validation")
    stream.add_argument("--train-rate", type=float, default=0.0, help="its rate")
    stream.add_argument("--seed", type=int, default=0)
    stream.add_argument("--split", default="fixed")
    stream.add_argument("--json", action="store_true", help="print JSON (curves at every step, latency)")
    _add_training_flags(stream)
    # streaming-gru at lr 1e-3 was still improving at 100 epochs on basicmotions; at 3e-3 it
    # reached 100% test accuracy (complete data, seed 0) within them.
    stream.set_defaults(lr=3e-3)

    from .bench.commands import add_parsers as add_bench_parsers

    add_bench_parsers(sub)  # bench, reproduce

    from .diagnostics.commands import add_parsers as add_diagnostics_parsers

    add_diagnostics_parsers(sub)  # explain, recover, uncertainty

    report = sub.add_parser("report", help="static HTML report and markdown tables of benchmark results")
    report.add_argument("results", help="results database of `mlmm bench` (SQLite), or a JSON / JSONL file of cells")
    report.add_argument("-o", "--out", default="mlmm-report", help="folder for index.html and report.md")
    report.add_argument("--spec", help="report only this spec's cells")
    report.add_argument("--reference", help="method the robustness gaps are measured against "
                                            "(default: each spec's `reference`)")
    return parser


def _methods(selected: Sequence[str] | None) -> list[str]:
    names = list(selected) if selected else METHODS.names()
    for name in names:
        METHODS.get(name)  # unknown -> UnknownNameError listing the known ones
    return names


def cmd_listing(args: argparse.Namespace) -> None:
    from .report import format_table

    if args.command == "datasets":
        infos = dataset_infos()
        rows = [[d["name"], d.get("n_samples", "-"), d.get("modalities", "-"), d.get("description", "")] for d in infos]
        header = ["dataset", "samples", "modalities", "description"]
    elif args.command == "methods":
        infos = [{"name": n, **METHODS.get(n).info.as_dict()} for n in METHODS.names()]
        rows = [[d["name"], d["category"], d["fusion"], "yes" if d["recovers_missing"] else "no",
                 "yes" if d["needs_complete_train"] else "no"] for d in infos]
        header = ["method", "category", "fusion", "recovers missing", "needs complete train"]
    else:
        infos = protocol_infos()
        rows = [[d["name"], d["definition"]] for d in infos]
        header = ["protocol", "definition"]
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
    else:
        print(format_table(header, [[_short(c) for c in row] for row in rows]))


def _short(value: object, width: int = 110) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _experiment_config(args: argparse.Namespace, method: str):
    from .experiment import ExperimentConfig

    protocol_params: dict = {}
    if args.rates:
        protocol_params["rates"] = parse_floats(args.rates, "--rates")
    if args.subset:
        protocol_params["subset"] = [s.strip() for s in args.subset.split(",") if s.strip()]
    if args.strength is not None:
        protocol_params["strength"] = args.strength
    protocol_params.update(parse_params(args.protocol_param))
    return ExperimentConfig(
        dataset=args.dataset, method=method, protocol=args.protocol, rate=args.rate, split=args.split,
        seeds=parse_seeds(args.seeds), train_rate=args.train_rate, test_rate=args.test_rate,
        protocol_params=protocol_params, method_params=parse_params(args.param), train=_train_config(args),
        device=args.device, subsets=not args.no_subsets,
    )


def cmd_run(args: argparse.Namespace) -> None:
    from .data.registry import load_dataset
    from .experiment import run_experiment, validate_config
    from .report import results_table, subsets_table

    from .data.loaders.user_data import dataset_from_flags

    args.dataset, args.data_file = dataset_from_flags(args), None  # a --data-file registers as file:<stem>
    spec = load_dataset(args.dataset).spec  # unknown dataset -> one clear line before anything else
    if args.distributed:
        _run_distributed(args)
        return
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UsageError(f"--out: folder of {args.out!r} does not exist")  # say so before hours of training
    configs = [_experiment_config(args, m) for m in _methods(args.method)]
    for config in configs:
        validate_config(config, spec)  # protocol, rates and subsets checked before any training
    results = []
    with _progress(len(configs) * len(configs[0].seeds), disable=args.json) as bar:
        for config in configs:
            bar.set_description(config.method)
            results.append(run_experiment(config, on_seed=lambda record: bar.update(1)))
    payload = results[0] if len(results) == 1 else results
    if args.out:
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2)
    if args.json:
        print(json.dumps(payload, indent=2))
        return
    print(results_table(results))
    for r in results:
        if "subsets" in r:
            print(f"\n{r['method']}: every modality subset of the complete test split (trained at rate {r['train_rate']:g})")
            print(subsets_table(r))


def _run_distributed(args: argparse.Namespace) -> None:
    """``mlmm run --distributed``: every rank trains its shard of each fit; rank 0 alone prints and writes."""
    from .train import distributed

    args.device = distributed.init_from_env(args.device)
    try:
        quiet = distributed.rank() != 0
        if quiet:
            args.out, args.json = None, True
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - closed with the process
        args.distributed = False
        cmd_run(args)
    finally:
        distributed.shutdown()


def _progress(total: int, disable: bool = False):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="fit", file=sys.stderr, disable=disable, dynamic_ncols=True)


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import DEMO_METHODS, run_demo

    if args.all_methods and args.method:
        raise UsageError("give either --method or --all-methods")
    methods = _methods(None) if args.all_methods else _methods(args.method or DEMO_METHODS)
    out = run_demo(
        out_dir=args.out, dataset=args.dataset, rates=parse_floats(args.rates, "--rates"),
        seeds=parse_seeds(args.seeds), split=args.split, methods=methods,
        train=_train_config(args), device=args.device, method_params=parse_params(args.param),
        progress=None if args.no_progress else _progress,
    )
    print(out.table)
    print(f"\nwrote {out.report_path}, {out.csv_path} and {out.json_path} ({out.seconds:.0f} s)")


def cmd_report(args: argparse.Namespace) -> None:
    try:
        from .report import write_report
        from .report.load import load_results
    except ImportError as err:  # matplotlib is the optional extra `report`
        raise UsageError(f"report: {err}; install it with: pip install 'mlmm[report]'") from None

    cells, references = load_results(args.results, args.spec)
    paths = write_report(cells, args.out, reference=args.reference or references)
    print(f"wrote {paths['html']} and {paths['markdown']} ({len(cells)} cells)")


def cmd_stream(args: argparse.Namespace) -> None:
    from .data.registry import load_dataset
    from .report import format_table
    from .streaming import parse_failures, stream_demo

    spec = load_dataset(args.dataset).spec
    if args.every < 1:
        raise UsageError("--every must be >= 1")
    METHODS.get(args.method)
    demo = stream_demo(args.dataset, parse_failures(args.fail, spec), method=args.method, seed=args.seed,
                       split=args.split, train=_train_config(args), device=args.device,
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
    print(f"{args.method} on {args.dataset} (seed {args.seed}): {demo.epochs_run} epochs in {demo.train_seconds:.0f} s; "
          f"{demo.info['n_test']} test streams; uncertainty = predictive entropy / log C")
    print(format_table(header, rows))
    for label, c in demo.curves.items():
        lat = c["latency_ms"]
        print(f"per-step latency, one stream ({label}): median {lat['median']:.3f} ms, p95 {lat['p95']:.3f} ms, "
              f"CPU time median {lat['cpu_median']:.3f} ms, over {lat['steps_timed']} steps")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "threads", None) is not None:
            if args.threads < 1:
                raise UsageError("--threads must be >= 1")
            torch.set_num_threads(args.threads)
        from .bench.commands import cmd_bench, cmd_reproduce
        from .diagnostics.commands import HANDLERS as diagnostics_handlers

        handler = {**diagnostics_handlers, "run": cmd_run, "demo": cmd_demo, "bench": cmd_bench, "stream": cmd_stream,
                   "reproduce": cmd_reproduce, "report": cmd_report}.get(args.command, cmd_listing)
        handler(args)
    except (UsageError, UnknownNameError, ValueError, OSError) as err:
        if os.environ.get("MLMM_DEBUG"):
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"mlmm: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mlmm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
