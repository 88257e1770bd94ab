"""Streaming on basicmotions: accuracy and uncertainty vs time with a sensor failing, and per-step latency.

Usage: python benchmarks/stream_latency.py [--fail-step 50] [--seeds 0,1,2] [--every 10] [--lr 3e-3]
       [--train-protocol catastrophic --train-rate 0.5]

Per seed: trains ``streaming-gru`` on the training split (by default complete data with
the loop's modality dropout; --train-protocol adds e.g. sensor failures), then streams the
40 test recordings one step at a time: with every sensor, with the gyroscope dying at
--fail-step, and with the accelerometer dying there. Latency: one stream (B = 1), ``Streamer.step`` per step, against
one
full forward over the whole sequence (what recomputing the past would cost at the
last step). Not a test: timings depend on the machine and its load.
"""

import argparse
import time

import numpy as np
import torch

from mlmm.data.registry import load_dataset
from mlmm.data.splits import make_splits
from mlmm.streaming import stream_curves, stream_demo
from mlmm.train.loop import TrainConfig

parser = argparse.ArgumentParser()
parser.add_argument("--fail-step", type=int, default=50)
parser.add_argument("--seeds", default="0,1,2")
parser.add_argument("--every", type=int, default=10)
parser.add_argument("--lr", type=float, default=3e-3)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--train-protocol", default="none")
parser.add_argument("--train-rate", type=float, default=0.0)
args = parser.parse_args()
torch.set_num_threads(args.threads)

test = make_splits(load_dataset("basicmotions"), "fixed", 0)[2]
conditions = {"all sensors": {}, f"gyroscope dies at {args.fail_step}": {"gyroscope": args.fail_step},
              f"accelerometer dies at {args.fail_step}": {"accelerometer": args.fail_step}}
curves = {label: [] for label in conditions}
latency, cpu, full = [], [], []
for seed in (int(s) for s in args.seeds.split(",")):
    demo = stream_demo("basicmotions", {}, seed=seed, train=TrainConfig(lr=args.lr),
                       train_protocol=args.train_protocol, train_rate=args.train_rate)
    for label, failures in conditions.items():
        c = stream_curves(demo.model, test, failures, latency_samples=10)
        curves[label].append(c)
        latency.append(c["latency_ms"]["median"])
        cpu.append(c["latency_ms"]["cpu_median"])
    one = test.as_batch().select(torch.arange(1))
    with torch.no_grad():
        demo.model(one)  # warm-up
        times = []
        for _ in range(50):
            start = time.perf_counter()
            demo.model(one)
            times.append(time.perf_counter() - start)
    full.append(1e3 * float(np.median(times)))
    print(f"seed {seed}: {demo.epochs_run} epochs, final accuracy {demo.final_accuracy:.3f}", flush=True)

n_steps = len(curves["all sensors"][0]["accuracy"])
shown = sorted({1, *range(args.every, n_steps + 1, args.every)})
print(f"\nstreaming-gru on basicmotions, trained under {args.train_protocol} {args.train_rate:g}, "
      f"{len(curves['all sensors'])} seeds, 40 test streams; "
      "accuracy (mean over seeds) / uncertainty (normalised entropy) after k steps")
print("k     " + "".join(f"{label:>34s}" for label in conditions))
for k in shown:
    cells = []
    for label in conditions:
        acc = np.mean([c["accuracy"][k - 1] for c in curves[label]])
        unc = np.mean([c["uncertainty"][k - 1] for c in curves[label]])
        cells.append(f"{acc:.3f} / {unc:.3f}")
    print(f"{k:<6d}" + "".join(f"{cell:>34s}" for cell in cells))
print(f"\nper-step latency, one stream: median {np.median(latency):.3f} ms wall, {np.median(cpu):.3f} ms CPU "
      "(Streamer.step); "
      f"one full forward over all {n_steps} steps: median {np.median(full):.3f} ms")
