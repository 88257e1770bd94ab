"""CPU time of the registry-wide conformance suite (what ``tests/test_conformance.py`` runs).

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_conformance.py [--methods a,b] [--out times.json]

For every registered method (or ``--methods``) it runs ``run_conformance(name)`` with its
defaults (every fast check, on every data kind the suite builds for that method) and
records the process CPU time (``time.process_time``, one torch thread: less disturbed
than wall time when other processes share the cores) and the wall time. A method whose
optional extra is missing is reported as skipped. Prints one line per method and the
totals. Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mlmm.methods import METHODS
from mlmm.testing import run_conformance


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default="", help="comma-separated names (default: the whole registry)")
    parser.add_argument("--out", default="", help="write {method: [cpu_s, wall_s]} as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.methods.split(",") if args.methods else METHODS.names()
    times: dict[str, list[float]] = {}
    cpu_total = wall_total = 0.0
    for name in names:
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            results = run_conformance(name)
            status = f"{sum(v == 'passed' for v in results.values())} passed"
        except Exception as err:  # noqa: BLE001 - a benchmark reports and moves on
            status = f"{type(err).__name__}: {str(err).splitlines()[0][:80]}"
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        cpu_total, wall_total = cpu_total + cpu, wall_total + wall
        times[name] = [round(cpu, 2), round(wall, 2)]
        print(f"{name:28s} cpu {cpu:7.2f} s  wall {wall:7.2f} s  {status}", flush=True)
    print(f"{'TOTAL':28s} cpu {cpu_total:7.2f} s  wall {wall_total:7.2f} s  ({len(names)} methods)")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(times, fh, indent=1)


if __name__ == "__main__":
    main()
