"""The on-disk feature cache of frozen backbones (mlmm.data.feature_cache, mlmm.data.frozen_features):
hits and misses, content-addressed invalidation, atomic writes, corrupt entries, memory-mapped reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mlmm.data import DatasetSpec, ModalitySpec, MultimodalDataset, TaskSpec, open_memmap_dataset, save_memmap_dataset
from mlmm.data.feature_cache import CorruptCacheEntry, FeatureCache
from mlmm.data.frozen_features import frozen_features

N = 40


class Counting(nn.Module):
    """A frozen 'backbone' (B, 1, 4, 4) images -> (B, 5) that counts the rows it has seen."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = nn.Parameter(torch.randn(16, 5, generator=g), requires_grad=False)
        self.seen = 0
        self.feature_config = {"flatten": "C,H,W"}

    def forward(self, x):
        self.seen += len(x)
        return x.flatten(1) @ self.proj


def make_data(seed: int = 0) -> MultimodalDataset:
    rng = np.random.default_rng(seed)
    spec = DatasetSpec("toy", (ModalitySpec("image", "image", (1, 4, 4)), ModalitySpec("v", "vector", (3,))),
                       TaskSpec("classification", n_classes=2))
    mask = np.ones((N, 2), bool)
    mask[::4, 0] = False  # 10 images absent
    image = rng.integers(0, 256, (N, 1, 4, 4)).astype(np.uint8)
    image[~mask[:, 0]] = 0
    splits = {"train": np.arange(0, 24), "val": np.arange(24, 32), "test": np.arange(32, N)}
    return MultimodalDataset(spec, {"image": image, "v": rng.normal(size=(N, 3)).astype(np.float32)},
                             rng.integers(0, 2, N), mask, splits=splits)


def test_second_call_is_a_hit_and_reads_the_same_features(tmp_path):
    data, backbone, cache = make_data(), Counting(), FeatureCache(tmp_path)
    first = frozen_features(data, {"image": backbone}, cache)
    assert backbone.seen == 30 and cache.stats == {"hits": 0, "misses": 1, "rebuilt": 0}  # present rows only
    second = frozen_features(data, {"image": backbone}, FeatureCache(tmp_path))
    assert backbone.seen == 30  # not run again
    assert torch.equal(first.inputs["image"], second.inputs["image"])
    assert first.spec.modality("image") == ModalitySpec("image", "vector", (5,))
    assert first.spec.modality("v") == data.spec.modality("v") and torch.equal(first.inputs["v"], data.inputs["v"])
    # features of present rows are the backbone's on [0, 1] values; absent rows are zeros
    expected = backbone(data.inputs["image"].float() / 255)
    present = data.mask[:, 0]
    assert torch.allclose(first.inputs["image"][present], expected[present], atol=1e-5)
    assert first.inputs["image"][~present].abs().sum() == 0
    assert torch.equal(first.mask, data.mask) and torch.equal(first.target, data.target)
    assert first.splits.keys() == data.splits.keys()


def test_one_changed_input_value_or_weight_or_config_is_recomputed(tmp_path):
    data, backbone, cache = make_data(), Counting(), FeatureCache(tmp_path)
    base = frozen_features(data, {"image": backbone}, cache).inputs["image"]
    image = data.inputs["image"].clone()
    image[1, 0, 2, 3] += 1  # one pixel of one present row
    changed = MultimodalDataset(data.spec, {"image": image, "v": data.inputs["v"]}, data.target, data.mask)
    again = frozen_features(changed, {"image": backbone}, cache).inputs["image"]
    assert cache.stats["misses"] == 2 and len(cache.keys()) == 2
    differs = (again != base).any(dim=1)
    assert differs.nonzero().flatten().tolist() == [1]
    backbone.proj.data[3, 0] += 1e-3  # one weight
    frozen_features(data, {"image": backbone}, cache)
    backbone.feature_config = {"flatten": "other"}  # the preprocessing it declares
    frozen_features(data, {"image": backbone}, cache)
    assert cache.stats == {"hits": 0, "misses": 4, "rebuilt": 0} and len(cache.keys()) == 4


class Exploding(Counting):
    def forward(self, x):
        if self.seen >= 8:
            raise RuntimeError("killed")
        return super().forward(x)


def test_an_interrupted_write_leaves_no_entry(tmp_path):
    data, cache = make_data(), FeatureCache(tmp_path)
    with pytest.raises(RuntimeError, match="killed"):
        frozen_features(data, {"image": Exploding()}, cache, batch_size=8)
    assert cache.keys() == [] and [p.name for p in tmp_path.iterdir() if not p.name.startswith(".lock-")] == []
    # a run killed outright leaves its temporary directory: never read, removed by remove_partial
    (tmp_path / ".tmp-abc-123").mkdir()
    (tmp_path / ".tmp-abc-123" / "features.npy").write_bytes(b"half")
    backbone = Counting()
    frozen_features(data, {"image": backbone}, cache, batch_size=8)
    assert backbone.seen == 30 and len(cache.keys()) == 1
    removed = sorted(p.name[:5] for p in cache.remove_partial())
    assert removed == [".lock", ".lock", ".tmp-"] and len(list(tmp_path.iterdir())) == 1  # a lock per key tried


class Slow(Counting):
    def forward(self, x):
        import time

        time.sleep(0.2)
        return super().forward(x)


def test_concurrent_askers_compute_an_entry_once(tmp_path):
    import threading

    data, backbone = make_data(), Slow()
    caches = [FeatureCache(tmp_path), FeatureCache(tmp_path)]  # two workers (flock: one file handle each)
    threads = [threading.Thread(target=frozen_features, args=(data, {"image": backbone}, c)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backbone.seen == 30  # the second waited for the first's entry instead of computing again
    assert sorted((c.stats["hits"], c.stats["misses"]) for c in caches) == [(0, 1), (1, 0)]


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "meta"])
def test_a_corrupt_entry_is_rebuilt_or_reported(tmp_path, damage):
    data, backbone = make_data(), Counting()
    good = frozen_features(data, {"image": backbone}, FeatureCache(tmp_path)).inputs["image"]
    (entry,) = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    features = entry / "features.npy"
    if damage == "flip_byte":
        raw = bytearray(features.read_bytes())
        raw[-3] ^= 0xFF
        features.write_bytes(bytes(raw))
    elif damage == "truncate":
        features.write_bytes(features.read_bytes()[:-40])
    else:
        (entry / "meta.json").write_text(json.dumps({"key": "something else"}))
    with pytest.raises(CorruptCacheEntry, match=str(entry)):
        frozen_features(data, {"image": backbone}, FeatureCache(tmp_path, on_corrupt="error"))
    cache = FeatureCache(tmp_path)
    rebuilt = frozen_features(data, {"image": backbone}, cache).inputs["image"]
    assert cache.stats == {"hits": 0, "misses": 1, "rebuilt": 1} and torch.equal(rebuilt, good)
    assert frozen_features(data, {"image": backbone}, cache) is not None and cache.stats["hits"] == 1


def test_memory_mapped_data_reads_the_cached_features_memory_mapped(tmp_path):
    data, backbone = make_data(), Counting()
    folder = save_memmap_dataset(data, tmp_path / "data")
    mm = frozen_features(open_memmap_dataset(folder), {"image": backbone}, tmp_path / "cache")
    assert isinstance(mm.arrays["image"], np.memmap)
    assert str(tmp_path / "cache") in str(mm.arrays["image"].filename)
    ref = frozen_features(data, {"image": Counting()}, None)  # computed in memory, no cache
    batch = mm.__getitems__(np.arange(N))
    assert torch.allclose(batch.inputs["image"], ref.inputs["image"], atol=1e-6)
    assert mm.split("test").__getitems__([0]).inputs["image"].shape == (1, 5)


class Samples(torch.utils.data.Dataset):
    """A user's own Dataset over ``data``: dicts, None where a modality is absent."""

    def __init__(self, data: MultimodalDataset) -> None:
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        d = self.data  # images as floats in [0, 1] (the adapter keeps a uint8 image's 0..255 as float32)
        image = d.inputs["image"][i].float() / 255 if d.mask[i, 0] else None
        return {"image": image, "v": d.inputs["v"][i], "target": int(d.target[i])}


def test_a_users_torch_dataset_streams_through_the_cache(tmp_path):
    from mlmm.data.adapter import adapt_dataset
    from mlmm.data.frozen_features import FeatureRows

    data = make_data()
    streamed = adapt_dataset(Samples(data), data.spec, splits=data.splits)
    backbone, cache = Counting(), FeatureCache(tmp_path)
    feats = frozen_features(streamed, {"image": backbone}, cache, batch_size=16)
    assert isinstance(feats, FeatureRows) and backbone.seen == 30
    ref = frozen_features(data, {"image": Counting()}, None)
    batch = feats.split("test").__getitems__(np.arange(8))
    ref_batch = ref.split("test").as_batch()
    assert torch.allclose(batch.inputs["image"], ref_batch.inputs["image"], atol=1e-6)
    assert torch.equal(batch.inputs["v"], ref_batch.inputs["v"]) and torch.equal(batch.mask, ref_batch.mask)
    import pickle

    again = pickle.loads(pickle.dumps(feats))  # a DataLoader worker's copy: features by file reference
    assert again.features["image"].filename == feats.features["image"].filename is not None
    assert torch.equal(again.__getitems__([1, 2]).inputs["image"], feats.__getitems__([1, 2]).inputs["image"])
    frozen_features(adapt_dataset(Samples(data), data.spec), {"image": backbone}, cache, batch_size=16)
    assert backbone.seen == 30 and cache.stats["hits"] == 1  # values read again to hash them, backbone not run


def test_bad_backbones_and_modalities_are_clear_errors(tmp_path):
    data = make_data()
    with pytest.raises(ValueError, match="backbone for unknown modality 'text'"):
        frozen_features(data, {"text": Counting()}, tmp_path)
    with pytest.raises(ValueError, match=r"modality 'image': backbone Flat must map \(B, 1, 4, 4\) to \(B, W\)"):
        class Flat(nn.Module):
            def forward(self, x):
                return x
        frozen_features(data, {"image": Flat()}, tmp_path)
    with pytest.raises(ValueError, match="'hf:minilm' is a text encoder, but the modality is image"):
        frozen_features(data, {"image": "hf:minilm"}, tmp_path)
    with pytest.raises(ValueError, match="on_corrupt must be one of"):
        FeatureCache(tmp_path, on_corrupt="ignore")


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A tiny randomly initialised BERT saved locally (a stand-in for MiniLM: same loading path)."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16)).save_pretrained(root)
    return root


def _captions_file(path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    caption = np.where(rng.random((60, 6)) < 0.5, 5 + 3 * y[:, None], rng.integers(1, 50, (60, 6)))
    caption[::5] = 0  # absent captions: padding only
    np.savez(path, image=rng.normal(size=(60, 4)).astype(np.float32), caption=caption.astype(np.int64), y=y)


def test_cli_run_featurises_once_into_the_cache_it_is_given(tmp_path, tiny_bert, capsys, monkeypatch):
    from mlmm.cli import main
    from mlmm.data.frozen_features import CACHE_ENV

    monkeypatch.delenv(CACHE_ENV, raising=False)
    _captions_file(tmp_path / "caps.npz")
    argv = ["run", "--data-file", str(tmp_path / "caps.npz"), "--kind", "image=vector", "--kind", "caption=text",
            "--vocab-size", "caption=50", "--frozen", f"caption=hf:{tiny_bert}", "--feature-cache",
            str(tmp_path / "cache"), "--method", "masked-mean", "--max-epochs", "1", "--no-subsets", "--json",
            "--split", "random"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    entries = FeatureCache(tmp_path / "cache").keys()
    assert len(entries) == 1 and first["metrics"]["accuracy"]["mean"] >= 0
    meta = json.loads((tmp_path / "cache" / entries[0] / "meta.json").read_text())
    assert meta["modality"]["name"] == "caption" and meta["n_rows"] == 60 and meta["n_present"] == 48
    assert main(argv) == 0  # again: the same entry, nothing new
    assert FeatureCache(tmp_path / "cache").keys() == entries
    assert CACHE_ENV not in __import__("os").environ  # the CLI restores the environment
    assert json.loads(capsys.readouterr().out)["metrics"] == first["metrics"]
