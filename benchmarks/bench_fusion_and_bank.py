"""Before/after ratios of two speed-ups (all-subsets fusion, memory-bank own-copy check), each measured in one run on
the same data.

1. All-subsets fusion of masked-mean: the generic ``FactorisedFusion.fuse_subsets`` (one
   ``fuse_embeddings`` per mask, pool then the whole head) vs masked-mean's own (the head's first
   layer applied once per modality, then a batched weighted sum), on handwritten's 63 subset
   masks x 400 test rows.
2. The memory bank's own-copy check: the full (B, N, F) comparison vs ``_equal_rows`` (first
   feature, then the candidate pairs that hold the modality), on a training batch of 128 rows
   against a bank of 1024 standardised handwritten rows at entry rate 0.5, per modality.

Usage: python benchmarks/bench_fusion_and_bank.py [--repeats 15]
One torch thread, best of --repeats; run with the CPU otherwise idle. Not a test.
"""

import argparse
import time

import torch

from mlmm import Standardizer, load_dataset
from mlmm.components.factorised import FactorisedFusion
from mlmm.components.memory_bank import _equal_rows
from mlmm.data.splits import make_splits
from mlmm.metrics.evaluate import modality_subsets
from mlmm.missing import make_protocol
from mlmm.train.loop import TrainConfig, Trainer, build_method


def best_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("handwritten")
    train, val, test = make_splits(data, "fixed", 0)

    model = Trainer(TrainConfig(max_epochs=2)).fit(build_method("masked-mean", data.spec, seed=0), train, val).model
    method = model.method
    subsets = modality_subsets(data.spec.n_modalities)
    chosen = torch.zeros(len(subsets), data.spec.n_modalities, dtype=torch.bool)
    for i, subset in enumerate(subsets):
        chosen[i, list(subset)] = True
    masks = chosen.unsqueeze(1).expand(-1, len(test), -1)  # (63, 400, 6)
    with torch.no_grad():
        z = method.encode_modalities(model.standardizer(test.as_batch()))
        generic = best_ms(lambda: FactorisedFusion.fuse_subsets(method, z, masks), args.repeats)
        own = best_ms(lambda: method.fuse_subsets(z, masks), args.repeats)
    print(f"masked-mean fuse_subsets, 63 masks x {len(test)} rows: generic {generic:.1f} ms, "
          f"head-first-layer-once {own:.1f} ms, ratio {generic / own:.1f}x")

    rng = torch.Generator().manual_seed(0)
    mask = torch.as_tensor(make_protocol("entry", rate=0.5).sample(
        data.spec.n_modalities, train.labels, __import__("numpy").random.default_rng(0), data.spec.modality_names))
    batch = Standardizer(data.spec).fit(train.as_batch())(train.with_mask(mask).as_batch())
    bank_rows = torch.randperm(len(train), generator=rng)[:1024]
    query_rows = torch.cat([bank_rows[:64], torch.randperm(len(train), generator=rng)[:64]])  # half are bank copies
    full_ms = pairs_ms = 0.0
    for j, name in enumerate(data.spec.modality_names):
        x = batch.inputs[name] * batch.mask[:, j:j + 1]  # absent rows zeroed, as the bank stores them
        q, b = x[query_rows], x[bank_rows]
        pairs = batch.mask[query_rows, j].unsqueeze(1) & batch.mask[bank_rows, j].unsqueeze(0)
        full = best_ms(lambda: (q.unsqueeze(1) == b.unsqueeze(0)).all(dim=2) & pairs, args.repeats)
        fast = best_ms(lambda: _equal_rows(q, b, pairs), args.repeats)
        assert torch.equal((q.unsqueeze(1) == b.unsqueeze(0)).all(dim=2) & pairs, _equal_rows(q, b, pairs))
        full_ms, pairs_ms = full_ms + full, pairs_ms + fast
    print(f"memory-bank own-copy check, 128 x 1024 rows, all 6 modalities: full comparison {full_ms:.1f} ms, "
          f"first feature + candidate pairs {pairs_ms:.1f} ms, ratio {full_ms / pairs_ms:.1f}x")


if __name__ == "__main__":
    main()
