"""Rows per second read by each streamed storage, in random batches (a training epoch's order) and in order
(evaluation's), through ``__getitems__`` as the DataLoader calls it, in this process.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_table_reads.py --rows 20000 --images 2000

Storages: a memory-mapped folder (``write_synthetic_memmap``), the same rows as Parquet with row groups
of 1,024 and of 16,384 rows (``TableDataset``, one list column per modality), as an Arrow file
(memory-mapped), and a folder of PNG files (3 x 32 x 32) listed by a CSV, resized on read.
CPU seconds (``time.process_time``) are reported beside wall seconds: on a shared machine the wall
time says more about the neighbours than about the reader.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _epoch(data, order: np.ndarray, batch: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(order), batch):
        data.__getitems__(order[start:start + batch])
    return time.perf_counter() - wall, time.process_time() - cpu


def _tables(folder: Path, n: int) -> dict:
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    from mlmm.data import open_memmap_dataset, open_table_dataset, write_synthetic_memmap

    mm = open_memmap_dataset(write_synthetic_memmap(folder / "mm", n=n, n_modalities=4, features=256, seed=0))
    columns = {}
    for m in mm.spec.modality_names:
        values = np.asarray(mm.arrays[m])
        present = mm.mask[:, mm.spec.index(m)].numpy()
        flat = pa.array(values.reshape(-1), type=pa.float32())
        offsets = pa.array(np.arange(0, (n + 1) * 256, 256, dtype=np.int32))
        columns[m] = pa.ListArray.from_arrays(offsets, flat, mask=pa.array(~present))
    columns["y"] = pa.array(mm.target.numpy())
    table = pa.table(columns)
    modalities = {m: {"kind": "vector", "column": m, "shape": [256]} for m in mm.spec.modality_names}
    out = {"memory-mapped .npy": mm}
    for group in (1024, 16384):
        pq.write_table(table, folder / f"t{group}.parquet", row_group_size=group)
        out[f"Parquet, row groups of {group}"] = open_table_dataset(folder / f"t{group}.parquet", modalities, label="y")
    feather.write_feather(table, folder / "t.arrow", compression="uncompressed")
    out["Arrow file (memory-mapped)"] = open_table_dataset(folder / "t.arrow", modalities, label="y")
    return out


def _images(folder: Path, n: int):
    from PIL import Image

    from mlmm.data import open_table_dataset

    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True)
    lines = ["image,y"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{i % 4}")
    (folder / "rows.csv").write_text("\n".join(lines) + "\n")
    return open_table_dataset(folder / "rows.csv", {"photo": {"kind": "image", "column": "image",
                                                              "shape": [3, 32, 32]}}, label="y")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000, help="rows of the 4 x 256 float tables")
    parser.add_argument("--images", type=int, default=2000, help="PNG files of the image folder")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        stores = _tables(Path(tmp), args.rows)
        stores[f"{args.images} PNG files + CSV, 3 x 32 x 32"] = _images(Path(tmp) / "png", args.images)
        print(f"rows per CPU second (rows per wall second), batches of {args.batch} rows\n")
        print("| storage | rows | random order | in order |")
        print("|---|---|---|---|")
        for name, data in stores.items():
            n = len(data)
            shuffled = _epoch(data, rng.permutation(n), args.batch)
            ordered = _epoch(data, np.arange(n), args.batch)
            print(f"| {name} | {n} | {n / max(shuffled[1], 1e-3):,.0f} ({n / shuffled[0]:,.0f}) | "
                  f"{n / max(ordered[1], 1e-3):,.0f} ({n / ordered[0]:,.0f}) |")


if __name__ == "__main__":
    main()
