"""Write a folder of image files + a text table in the layout ``mlmm run --data-dir`` reads.

    python examples/image_text_folder.py my-photos [--n 300]
    mlmm run --data-dir my-photos --method masked-mean

The images are real: the UCI handwritten digits shipped in scikit-learn (8 x 8 grey, saved as PNG;
the dataset resizes them to the 16 x 16 its ``dataset.yaml`` declares). The captions are generated
by the template of ``mlmm.data.datasets.digits_captions`` (real words, 40 % uninformative, 10 %
naming a wrong digit). About 20 % of the rows have no image (an empty cell, no file) and 20 % no
caption (an empty cell), never both: that is the folder's natural missingness.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

DESCRIPTION = """\
table: rows.csv            # .csv / .tsv, or .parquet (read by row group) / .arrow (memory-mapped)
modalities:
  image: {kind: image, column: image, shape: [1, 16, 16]}   # PNG paths, relative to this folder
  caption: {kind: text, column: caption, max_length: 16}     # tokenised by the bundled MiniLM tokenizer
label: digit
split: split               # optional: train / val / test per row (else --split random)
"""


def write_folder(folder: str | Path, n: int = 300, seed: int = 0) -> Path:
    """``n`` rows (at most 1,797) of digit images + captions into ``folder``; returns it."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from mlmm.data.datasets.digits_captions import caption_texts

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(digits.target))[:n]
    captions = caption_texts(digits.target[rows], rng)
    drop = rng.random(n)  # < 0.2: no image; 0.2 .. 0.4: no caption
    with open(folder / "rows.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["image", "caption", "digit", "split"])
        for k, row in enumerate(rows):
            image = ""
            if drop[k] >= 0.2:
                image = f"images/{row}.png"
                pixels = (digits.images[row] * 255 / 16).astype(np.uint8)  # values 0..16 -> 0..255
                Image.fromarray(pixels, mode="L").save(folder / image)
            caption = "" if 0.2 <= drop[k] < 0.4 else captions[k]
            split = "test" if k % 5 == 0 else "val" if k % 5 == 1 else "train"
            out.writerow([image, caption, int(digits.target[row]), split])
    (folder / "dataset.yaml").write_text(DESCRIPTION)
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    print(write_folder(args.folder, args.n))
