"""MMSA-format feature pickles of CMU-MOSI, CMU-MOSEI and CH-SIMS (thuiar/MMSA's ``unaligned_*.pkl``).

**Unpickling a file can execute code.** Load only pickles you trust. The file is
read only from the path the user names, with a restricted unpickler that
resolves nothing but NumPy arrays and builtin containers (``trusted=True``
uses plain ``pickle.load`` for files that need more, at your own risk).

Layout (as MMSA's ``data_loader.py`` reads it): a dict with ``"train"``,
``"valid"``, ``"test"``, each a dict of
- ``"text"`` (N, L, D) word features, or ``"text_bert"`` (N, 3, L) BERT inputs
  (token ids, attention mask, segment ids);
- ``"audio"`` (N, Ta, Da) and ``"vision"`` (N, Tv, Dv) feature sequences
  (``-inf`` in audio is set to 0, as MMSA does);
- ``"regression_labels"`` (N,) sentiment in [-3, 3] (CH-SIMS: [-1, 1]);
  ``"classification_labels"`` (N,) optional;
- optional ``"audio_lengths"`` / ``"vision_lengths"`` (N,), ``"id"``, ``"raw_text"``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..base import MultimodalDataset
from ._build import build_dataset, encode_labels
from ._files import check_known, user_file
from .safe_pickle import UnsafeFileError, safe_load

SPLITS = ("train", "valid", "test")


def read_pickle(path: str | Path, trusted: bool = False) -> object:
    """Unpickle the file the user named; errors name the file."""
    p = user_file(path, "pickle file")
    check_known(p)
    try:
        with open(p, "rb") as f:
            return pickle.load(f) if trusted else safe_load(f)
    except UnsafeFileError as err:
        raise UnsafeFileError(f"{p}: {err}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError, TypeError) as err:
        raise ValueError(f"{p}: cannot unpickle ({type(err).__name__}: {err}); "
                         "truncated, corrupt or not a pickle?") from None


def _present(x: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """(N,) a sample's modality is present unless its length is 0 or its features are all 0 / non-finite."""
    flat = x.reshape(len(x), -1)
    ok = (np.isfinite(flat) & (flat != 0)).any(1)
    if lengths is not None:
        ok &= np.asarray(lengths).reshape(-1) > 0
    return ok


def load_mmsa(path: str | Path, text: str = "text", label: str = "regression", trusted: bool = False,
              name: str | None = None) -> MultimodalDataset:
    """An MMSA pickle as a dataset with modalities text, audio, vision and splits train/valid/test.

    text:  ``"text"`` -> sequence (L, D) of word features; ``"text_bert"`` -> ``text`` kind (L,)
           token ids (row 0 of MMSA's (3, L) BERT inputs).
    label: ``"regression"`` (``regression_labels``, task regression, 1 output) or
           ``"classification"`` (``classification_labels``).
    Availability: a modality is missing for a sample whose ``*_lengths`` entry is 0 or whose
    features are all zero / non-finite (no MMSA file marks absence otherwise). Padding
    steps are kept as zeros, as MMSA's own models read them.
    """
    if text not in ("text", "text_bert"):
        raise ValueError(f"text must be 'text' or 'text_bert', got {text!r}")
    if label not in ("regression", "classification"):
        raise ValueError(f"label must be 'regression' or 'classification', got {label!r}")
    p = Path(path)
    data = read_pickle(p, trusted)
    if not isinstance(data, dict) or not all(s in data for s in SPLITS):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{p}: not an MMSA feature file: expected a dict with {SPLITS}, got {keys}")
    parts: dict[str, list[np.ndarray]] = {"text": [], "audio": [], "vision": []}
    present: dict[str, list[np.ndarray]] = {k: [] for k in parts}
    targets, splits, start = [], {}, 0
    for s in SPLITS:
        d = data[s]
        need = (text, "audio", "vision", f"{label}_labels")
        missing = [k for k in need if k not in d]
        if missing:
            raise ValueError(f"{p}: split {s!r} has no key {missing[0]!r}; keys: {', '.join(map(str, d))}")
        y = np.asarray(d[f"{label}_labels"]).reshape(-1)
        n = len(y)
        for mod, key in (("text", text), ("audio", "audio"), ("vision", "vision")):
            x = np.asarray(d[key])
            if x.ndim != 3 or len(x) != n:
                raise ValueError(f"{p}: split {s!r} key {key!r} has shape {x.shape}; expected ({n}, ., .)")
            if key == "text_bert":
                x = x[:, 0, :].astype(np.int64)  # token ids
                present[mod].append(x.any(1))
            else:
                x = np.where(np.isneginf(x), 0.0, x).astype(np.float32)  # MMSA: audio -inf -> 0
                lengths = d.get(f"{mod}_lengths")
                present[mod].append(_present(x, lengths))
                x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
            parts[mod].append(x)
        targets.append(y)
        splits[s] = np.arange(start, start + n)
        start += n
    inputs = {m: np.concatenate(v) for m, v in parts.items()}
    mask = np.stack([np.concatenate(present[m]) for m in inputs], axis=1)
    target, class_names = encode_labels(np.concatenate(targets), label, f"{p} {label}_labels")
    kinds = {"text": "text" if text == "text_bert" else "sequence", "audio": "sequence", "vision": "sequence"}
    # MMSA's BERT ids come from bert-base tokenizers (uncased: 30,522 ids; chinese: 21,128), both below 30,522.
    vocab = {"text": max(30522, int(inputs["text"].max()) + 1)} if text == "text_bert" else None
    return build_dataset(name or p.stem, inputs, target, mask, label, class_names, splits, kinds,
                         vocab_size=vocab, source=str(p))
