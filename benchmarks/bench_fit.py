"""Time one training fit per method on handwritten (entry rate 0.5, seed 0).

Usage: python benchmarks/bench_fit.py [--epochs 30] [--methods masked-mean,zero-fill]
Prints seconds per fit and per epoch. Not a test: timings depend on the machine.
"""

import argparse
import time

import torch

from mlmm import ExperimentConfig, TrainConfig
from mlmm.experiment import run_seed

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--methods", default="zero-fill,mean-fill,masked-mean,late-ensemble")
parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
args = parser.parse_args()
if args.threads:
    torch.set_num_threads(args.threads)
for method in args.methods.split(","):
    # patience = epochs: every fit runs all epochs, so times compare.
    config = ExperimentConfig(dataset="handwritten", method=method, protocol="entry", rate=0.5,
                              train=TrainConfig(max_epochs=args.epochs, patience=args.epochs), subsets=False)
    start = time.perf_counter()
    record = run_seed(config, 0)
    seconds = time.perf_counter() - start
    print(f"{method:15s} {seconds:6.2f} s/fit  {1000 * record['train_seconds'] / args.epochs:7.1f} ms/epoch  "
          f"acc {record['metrics']['accuracy']:.3f}  threads {torch.get_num_threads()}")
