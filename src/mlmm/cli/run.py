"""``mlmm run``: train and evaluate methods under a missingness protocol (optionally distributed)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .common import (
    UsageError,
    check_writable,
    data_dir_name,
    parse_floats,
    parse_params,
    parse_seeds,
    progress,
    train_config,
)
from .listing import method_names


def _experiment_config(args: argparse.Namespace, method: str):
    from ..experiment import ExperimentConfig

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
        protocol_params=protocol_params, method_params=parse_params(args.param), train=train_config(args),
        device=args.device, subsets=not args.no_subsets,
    )


def folds_table(result: dict) -> str:
    """Each fold of a fold split (held-out groups, test rows, accuracy / macro-F1 over seeds) and the pooled row."""
    from ..report import format_table

    rows = [[f["split"], ",".join(f["held_out_groups"]) or "-", f["n_test"],
             f"{100 * f['metrics']['accuracy']['mean']:.1f}", f"{100 * f['metrics']['macro_f1']['mean']:.1f}"]
            for f in result["folds"]]
    pooled = result["pooled"]
    rows.append(["pooled (test rows weighted)", "all", sum(f["n_test"] for f in result["folds"]),
                 f"{100 * pooled['accuracy']['mean']:.1f}", f"{100 * pooled['macro_f1']['mean']:.1f}"])
    title = f"\n{result['method']}: every fold of split {result['split']} (accuracy / macro-F1 %, mean over seeds)\n"
    return title + format_table(["fold", "held-out groups", "test rows", "accuracy", "macro-F1"], rows)


def cmd_run(args: argparse.Namespace) -> None:
    from ..data.loaders.user_data import (
        parse_kind_flags,
        parse_modality_flags,
        resolve_dataset,
    )
    from ..data.registry import load_dataset
    from ..experiment import run_experiment, validate_config
    from ..report import results_table, subsets_table

    if getattr(args, "data_dir", None):  # a folder read batch by batch: named dir:<folder> for every process
        if args.dataset or args.data_file:
            raise UsageError("give one of --dataset, --data-file and --data-dir")
        args.dataset, args.data_dir = data_dir_name(args.data_dir), None  # (--distributed calls cmd_run again)
    options = {}
    if args.data_file:  # flags override the same keys of a mapping file; absent ones leave them
        options = {"modalities": parse_modality_flags(args.modality), "label": args.label,
                   "split": args.split_column, "task": args.task, "groups": args.group_column}
        for flag, key, cast in (("--kind", "kinds", None), ("--vocab-size", "vocab_size", int),
                                ("--pad-id", "pad_id", int)):
            options[key] = parse_kind_flags(getattr(args, key, None) or [], flag, cast)
    data_file = args.data_file
    args.dataset = resolve_dataset(args.dataset, args.data_file, **options)
    args.data_file = None  # a --data-file is now registered as file:<stem>
    if args.frozen:  # the dataset with those modalities replaced by frozen features (cached: --feature-cache)
        from ..data.frozen_features import register_frozen_dataset

        if args.distributed:
            raise ValueError("--frozen is not available with --distributed (featurise into a data file first)")
        backbones = parse_kind_flags(args.frozen, "--frozen", str)
        args.dataset = register_frozen_dataset(args.dataset, backbones, replace=True)
    spec = load_dataset(args.dataset).spec  # unknown dataset -> one clear line before anything else
    if args.distributed:
        _run_distributed(args)
        return
    if args.out:
        check_writable(args.out, "--out")  # say so before hours of training
    configs = [_experiment_config(args, m) for m in method_names(args.method)]
    on_fit = _model_saver(args, configs, data_file, options) if getattr(args, "save_model", None) else None
    for config in configs:
        validate_config(config, spec)  # protocol, rates and subsets checked before any training
    results = []
    from ..data.splits import fold_splits

    n_folds = len(fold_splits(load_dataset(args.dataset), args.split))  # logo / group-kfold: every fold
    with progress(len(configs) * len(configs[0].seeds) * n_folds, disable=args.json) as bar:
        for config in configs:
            bar.set_description(config.method)
            results.append(run_experiment(config, on_seed=lambda record: bar.update(1), on_fit=on_fit))
    payload = results[0] if len(results) == 1 else results
    # Print first: a failing --out (the disk filled up during training) must not lose the results.
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        print(results_table(results))
        for r in results:
            if "folds" in r:
                print(folds_table(r))
            if "subsets" in r:
                print(f"\n{r['method']}: every modality subset of the complete test split "
                      f"(trained at rate {r['train_rate']:g})")
                print(subsets_table(r))
    if args.out:
        _write_json(args.out, payload)


def _write_json(path: str, payload: object) -> None:
    """Write ``payload`` to ``path`` whole or not at all (a temporary file renamed into place)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(payload, f, indent=2)
        os.replace(tmp, path)
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _model_saver(args: argparse.Namespace, configs: list, data_file, options: dict):
    """``on_fit`` for ``--save-model DIR``: saves the first fit (first seed, first fold), with the
    data-file column mapping in its manifest so that ``mlmm predict`` reads new files alike."""
    from pathlib import Path

    from ..data.loaders.new_data import data_file_mapping

    out = Path(args.save_model).expanduser()
    if len(configs) != 1:
        raise UsageError(f"--save-model saves one model: give one --method (got {len(configs)})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--save-model: {str(out)!r} exists and is not an empty directory")
    if not out.parent.is_dir():
        raise UsageError(f"--save-model: folder of {str(out)!r} does not exist")
    mapping = data_file_mapping(data_file, **{k: v for k, v in options.items() if v}) if data_file else None
    saved = []

    def on_fit(seed: int, fit) -> None:
        if saved:
            return
        model = fit.model
        model.metadata.update({"trained_on": {"dataset": args.dataset, "method": configs[0].method, "seed": seed,
                                              "protocol": args.protocol, "rate": args.rate}})
        if mapping is not None:
            model.metadata["data_file"] = mapping
        model.save(out)
        saved.append(seed)

    return on_fit


def _run_distributed(args: argparse.Namespace) -> None:
    """``mlmm run --distributed``: every rank trains its shard of each fit; rank 0 alone prints and writes."""
    from ..train import distributed

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
