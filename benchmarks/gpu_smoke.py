"""CUDA smoke and throughput check of every registered method (run on a GPU machine).

For each method: train two epochs with the one training loop on CUDA and on the CPU
(same seed, same data: handwritten at entry rate 0.5), then check on CUDA that

- the loss stays finite and the fitted model's parameters live on the GPU;
- the CUDA model, moved to the CPU, predicts the same test classes as on the GPU (at least
  99 % agreement; the max |logit difference| is reported too: it is ~1e-5 for smooth
  models, larger where a discrete choice, a k-nearest-neighbour set or a thresholded graph
  edge, flips on a last-bit difference between the devices' float32 arithmetic);
- all-subsets evaluation runs on the GPU (the fast path where the method declares it);

and report seconds per epoch on each device and their ratio, and the peak GPU memory.

Usage: python benchmarks/gpu_smoke.py [--methods a,b] [--epochs 2] [--backbone PATH] [--json OUT]
Not a test (CI has no GPU); a failure of one method is reported and the others still run.
The exit status is 1 if any method failed a check.

Precision comparison (``TrainConfig.precision``, issue 12): with ``--precisions fp32,bf16`` the
script instead trains each method (default: masked-mean, modality-transformer, masked-modality-ae) on the image +
text dataset (``--dataset``, default digits-captions-10k, entry rate 0.3) at each precision and
reports training throughput (training samples per second over the fit, device synchronised), the
peak GPU memory of the fit (``torch.cuda.max_memory_allocated``), test accuracy, and each
precision's throughput and memory relative to fp32. ``--device cpu --rows 400`` is a dry run of
that path (bf16 through CPU autocast; fp16 is CUDA only)::

    python benchmarks/gpu_smoke.py --precisions fp32,bf16 --epochs 3 --json /tmp/precision.json
    python benchmarks/gpu_smoke.py --precisions fp32,bf16 --device cpu --rows 400 --epochs 1   # dry run
"""

from __future__ import annotations

import argparse
import json
import time
import traceback

import torch

from mlmm import load_dataset
from mlmm.data.splits import make_splits
from mlmm.methods import METHODS
from mlmm.metrics.evaluate import evaluate_subsets
from mlmm.missing import Scenario, make_protocol
from mlmm.train.loop import TrainConfig, Trainer, build_method

PRETRAINED = ("missing-aware-prompts", "frozen-backbone-tokens")


def fit_on(device: str, name: str, data, splits, epochs: int, params: dict):
    train, val, test = splits
    method = build_method(name, data.spec, seed=0, **params)
    config = TrainConfig(max_epochs=epochs, patience=epochs)
    start = time.perf_counter()
    fit = Trainer(config, device=device).fit(method, train, val, seed=0)
    return fit, (time.perf_counter() - start) / max(len(fit.history), 1)


def check(name: str, epochs: int, params: dict, device: str = "cuda") -> dict:
    data = load_dataset("handwritten")
    train, val, test = make_splits(data, "random", 0)
    protocol = make_protocol("entry", rate=0.5)
    # a method that needs complete training samples trains on complete data, is tested at 0.5
    fit_protocol = make_protocol("entry", rate=0.0) if METHODS.get(name).info.needs_complete_train else protocol
    scenario = Scenario(train=fit_protocol, val=fit_protocol, test=protocol)
    splits = tuple(scenario.apply(d, role, 0)[0] for d, role in ((train, "train"), (val, "val"), (test, "test")))
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    gpu_fit, gpu_epoch = fit_on(device, name, data, splits, epochs, params)
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    cpu_fit, cpu_epoch = fit_on("cpu", name, data, splits, epochs, params)
    losses = [v for row in gpu_fit.history for k, v in row.items() if "loss" in k and isinstance(v, float)]
    on_gpu = all(p.device.type == torch.device(device).type for p in gpu_fit.model.parameters())
    gpu_logits = gpu_fit.model.predict_logits(splits[2])
    cpu_logits = gpu_fit.model.to("cpu").predict_logits(splits[2])
    gpu_fit.model.to(device)
    subsets = evaluate_subsets(gpu_fit.model, test)
    diff = float((gpu_logits - cpu_logits).abs().max())
    agree = float((gpu_logits.argmax(1) == cpu_logits.argmax(1)).float().mean())
    acc = float((gpu_logits.argmax(1) == splits[2].labels).float().mean())
    return {
        "method": name, "epochs": len(gpu_fit.history),
        "finite_loss": all(torch.isfinite(torch.tensor(losses)).tolist()) if losses else True,
        "params_on_gpu": on_gpu, "gpu_vs_cpu_logit_diff": diff, "gpu_cpu_agreement": agree,
        "gpu_s_per_epoch": gpu_epoch, "cpu_s_per_epoch": cpu_epoch, "cpu_over_gpu": cpu_epoch / gpu_epoch,
        "gpu_peak_mib": peak / 2**20, "test_acc_after_epochs": acc, "n_subsets": len(subsets),
        "ok": on_gpu and agree >= 0.99 and len(subsets) == 2 ** data.spec.n_modalities - 1,
    }


PRECISION_METHODS = ("masked-mean", "modality-transformer", "masked-modality-ae")


def precision_row(name: str, dataset: str, precision: str, epochs: int, device: str, rows: int | None) -> dict:
    """Train ``name`` on ``dataset`` (``rows`` random rows if given) at ``precision``: throughput, peak memory."""
    data = load_dataset(dataset)
    if rows:  # a random sample of rows (the first ones may all share a group)
        data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:rows].sort().values)
    train, val, test = make_splits(data, "group" if data.groups is not None else "random", 0)
    protocol = make_protocol("entry", rate=0.3)
    # a method that needs complete training samples trains on complete data, is tested at 0.3 (as ``check``)
    fit_protocol = make_protocol("entry", rate=0.0) if METHODS.get(name).info.needs_complete_train else protocol
    scenario = Scenario(train=fit_protocol, val=fit_protocol, test=protocol)
    train, val, test = (scenario.apply(d, role, 0)[0] for d, role in ((train, "train"), (val, "val"), (test, "test")))
    method = build_method(name, data.spec, seed=0)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fit = Trainer(TrainConfig(max_epochs=epochs, patience=epochs, precision=precision), device=device).fit(
        method, train, val, seed=0)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    logits = fit.model.predict_logits(test)
    losses = [r["train_loss"] for r in fit.history]
    return {"method": name, "precision": precision, "dataset": dataset, "n_train": len(train),
            "epochs": len(fit.history), "fit_seconds": seconds,
            "train_samples_per_s": len(train) * len(fit.history) / seconds,
            "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            "finite_loss": all(torch.isfinite(torch.tensor(losses)).tolist()),
            "test_acc": float((logits.argmax(1).cpu() == torch.as_tensor(test.labels)).float().mean())}


def compare_precisions(args) -> None:
    methods = args.methods.split(",") if args.methods else list(PRECISION_METHODS)
    precisions = args.precisions.split(",")
    rows, failed = [], []
    for name in methods:
        base = None
        for precision in precisions:
            try:
                row = precision_row(name, args.dataset, precision, args.epochs, args.device, args.rows)
            except Exception as err:  # report and go on
                row = {"method": name, "precision": precision, "error": f"{type(err).__name__}: {err}"}
                failed.append(f"{name}@{precision}")
            if "error" not in row:
                base = row if precision == "fp32" else base
                if base is not None:
                    row["throughput_vs_fp32"] = row["train_samples_per_s"] / base["train_samples_per_s"]
                    if row["gpu_peak_mib"] and base["gpu_peak_mib"]:
                        row["memory_vs_fp32"] = row["gpu_peak_mib"] / base["gpu_peak_mib"]
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
            if args.json:
                with open(args.json, "w") as fh:
                    json.dump(rows, fh, indent=1)
    print(f"{len(rows) - len(failed)}/{len(rows)} (method, precision) fits ran" +
          (f"; failed: {', '.join(failed)}" if failed else ""))
    raise SystemExit(1 if failed else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=None, help="comma-separated (default: every method; with "
                        f"--precisions: {','.join(PRECISION_METHODS)})")
    parser.add_argument("--precisions", default=None, help="e.g. fp32,bf16: compare training precisions instead")
    parser.add_argument("--dataset", default="digits-captions-10k", help="dataset of the precision comparison")
    parser.add_argument("--rows", type=int, default=None, help="precision comparison on ROWS random rows only")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--backbone", default=None, help="local model directory for the pretrained methods")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the script itself")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script checks the GPU path (--device cpu for a dry run)")
    torch.set_num_threads(1)  # CPU side of the ratio: one thread, as the zoo table runs
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu (dry run)"
    print(f"device: {name} | torch {torch.__version__}", flush=True)
    if args.precisions:
        compare_precisions(args)
    rows, failed = [], []
    for name in (args.methods or ",".join(METHODS.names())).split(","):
        params = {"backbone": args.backbone} if args.backbone and name in PRETRAINED else {}
        try:
            row = check(name, args.epochs, params, args.device)
        except Exception as err:  # report and go on: one broken method must not hide the others
            row = {"method": name, "ok": False, "error": f"{type(err).__name__}: {err}",
                   "trace": traceback.format_exc(limit=4)}
        rows.append(row)
        if not row["ok"]:
            failed.append(name)
        print(json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in row.items() if k != "trace"}),
              flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
    failures = f"; failed: {', '.join(failed)}" if failed else ""
    print(f"{len(rows) - len(failed)}/{len(rows)} methods pass on CUDA{failures}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
