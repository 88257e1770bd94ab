"""All-subsets evaluation cost on handwritten (6 modalities, 63 subsets, 400 test rows).

Usage: python benchmarks/bench_subsets.py [--methods masked-mean,late-ensemble] [--repeats 7] [--threads 1]

For each method (trained a few epochs: the cost of evaluation does not depend
on how well the model is trained) it times, in one process, best of
``--repeats``:
  one   = ``evaluate(model, test)``: one full evaluation (forward + metrics);
  slow  = ``evaluate_subsets(model, test, fast=False)``: 63 full passes;
  fast  = ``evaluate_subsets(model, test)``: encode once, re-run the fusion per subset
          (methods declaring FactorisedFusion; others fall back to the slow path).
and prints slow/one, fast/one (the issue's figure, aim <= 3) and slow/fast, on the wall
clock and on the process CPU clock (``time.process_time``, one torch thread: less
disturbed than wall time when other processes share the cores).
Not a test: timings depend on the machine and its load.
"""

import argparse
import time

import torch

from mlmm.components.factorised import is_factorised
from mlmm.data.registry import load_dataset
from mlmm.data.splits import make_splits
from mlmm.metrics.evaluate import evaluate, evaluate_subsets
from mlmm.train.loop import TrainConfig, Trainer, build_method


def best_of(repeats: int, fn, clock) -> float:
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="masked-mean,masked-max,sign-max,late-ensemble,infonce-align,zero-fill")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("handwritten")
    train, val, test = make_splits(data, "fixed", 0)
    print(f"handwritten: {len(test)} test rows, {2 ** data.spec.n_modalities - 1} subsets, "
          f"threads {torch.get_num_threads()}, best of {args.repeats}")
    print(f"{'method':15s} {'path':5s} {'clock':5s} {'one ms':>8s} {'slow ms':>8s} {'fast ms':>8s} {'slow/one':>9s} "
          f"{'fast/one':>9s} {'slow/fast':>9s}")
    for name in args.methods.split(","):
        fit = Trainer(TrainConfig(max_epochs=args.epochs)).fit(build_method(name, data.spec, seed=0), train, val)
        model = fit.model
        assert evaluate_subsets(model, test, fast=False) == evaluate_subsets(model, test)  # same figures
        path = "fast" if is_factorised(model.method) else "slow"
        for clock_name, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
            one = best_of(args.repeats, lambda: evaluate(model, test), clock)
            slow = best_of(args.repeats, lambda: evaluate_subsets(model, test, fast=False), clock)
            fast = best_of(args.repeats, lambda: evaluate_subsets(model, test), clock)
            print(f"{name:15s} {path:5s} {clock_name:5s} {1e3 * one:8.1f} {1e3 * slow:8.1f} {1e3 * fast:8.1f} "
                  f"{slow / one:9.2f} {fast / one:9.2f} {slow / fast:9.2f}", flush=True)


if __name__ == "__main__":
    main()
