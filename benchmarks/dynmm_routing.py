"""Where dynmm-gate routes: on one zoo cell (handwritten, entry protocol, random split), the
test split's expert picks and each expert's own test accuracy, from the same fit.

Usage: OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/dynmm_routing.py [--rate 0.5] [--seed 0]
Not a test: one training run (~1-2 CPU-minutes).
"""

from __future__ import annotations

import argparse
import collections

import torch

from mlmm import ExperimentConfig
from mlmm.experiment import fit_seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from mlmm.cli import parse_params

    config = ExperimentConfig(method="dynmm-gate", dataset="handwritten", protocol="entry", rate=args.rate,
                              split="random", subsets=False, seeds=(args.seed,),
                              method_params=parse_params(args.param))
    cell = fit_seed(config, args.seed)
    model = cell.fit.model
    method = model.method.eval()
    with torch.no_grad():
        batch = model.standardizer(cell.test_masked.as_batch())
        out = method(batch)
    target = batch.target
    print(f"gate: test accuracy {float((out.logits.argmax(1) == target).float().mean()):.4f}")
    picks = collections.Counter(method.expert_names[i] for i in out.aux["expert"].tolist())
    print("picks:", ", ".join(f"{name} {count}" for name, count in picks.most_common()))
    feasible = out.aux["feasible"]
    for e, name in enumerate(method.expert_names):
        ok = feasible[:, e]
        acc = (out.aux["expert_logits"][ok, e].argmax(1) == target[ok]).float().mean()
        print(f"expert {name}: feasible on {int(ok.sum())} test rows, accuracy there {float(acc):.4f}")


if __name__ == "__main__":
    main()
