"""Image + caption: does adding the caption help or hurt the image? (issue 15)

On the digits + captions example (``mlmm.data.datasets.digits_captions``: real 8x8 digits,
generated captions, 20 % of images and 20 % of captions missing), each method is trained on
the fixed train split (natural mask, default TrainConfig) and scored on the test samples that
hold **both** modalities, under three masks: image + caption, image only, caption only. The
comparison is on the same samples, so "image + caption vs image" is a fair one (``mlmm run``'s
subset table scores each subset on every sample holding part of it, i.e. different samples).

    OMP_NUM_THREADS=1 python benchmarks/image_caption.py --seeds 0,1,2 \\
        --method product-of-experts --method masked-mean --method late-ensemble
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import mlmm
from mlmm.data.datasets import load_digits_captions


def score(model: mlmm.FittedModel, data: mlmm.MultimodalDataset, keep: list[bool]) -> float:
    """Accuracy on ``data`` with only the modalities ``keep`` (one bool per modality) shown."""
    mask = data.mask & torch.tensor(keep).unsqueeze(0)
    logits = model.predict_logits(data.with_mask(mask))
    return float((logits.argmax(1) == data.target).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", action="append")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = args.method or ["product-of-experts", "masked-mean"]
    data = load_digits_captions(seed=0)
    rows = {m: [] for m in methods}
    for seed in (int(s) for s in args.seeds.split(",")):
        train, val, test = mlmm.make_splits(data, "fixed", seed=seed)
        both = test.subset(np.flatnonzero(test.mask.all(1).numpy()))
        for name in methods:
            start = time.perf_counter()
            fit = mlmm.Trainer(mlmm.TrainConfig()).fit(mlmm.build_method(name, data.spec, seed=seed), train, val,
                                                       seed=seed)
            figures = [score(fit.model, both, keep) for keep in ([True, True], [True, False], [False, True])]
            rows[name].append(figures)
            print(f"{name} seed {seed}: image+caption {figures[0]:.3f} image {figures[1]:.3f} "
                  f"caption {figures[2]:.3f} (n={len(both)}, {time.perf_counter() - start:.0f} s)", flush=True)
    print("\n| method | image + caption % | image only % | caption only % | (image+caption) - image, points |")
    print("|---|---|---|---|---|")
    for name, figs in rows.items():
        f = 100 * np.asarray(figs)
        diff = f[:, 0] - f[:, 1]
        per_seed = ", ".join(f"{d:+.1f}" for d in diff)
        print(f"| `{name}` | {f[:, 0].mean():.1f} ± {f[:, 0].std():.1f} | {f[:, 1].mean():.1f} ± {f[:, 1].std():.1f} "
              f"| {f[:, 2].mean():.1f} ± {f[:, 2].std():.1f} | {diff.mean():+.1f} (per seed {per_seed}) |")


if __name__ == "__main__":
    main()
