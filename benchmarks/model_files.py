"""Size of a saved model directory (FittedModel.save) vs the torch state_dict of the same fit,
for methods that keep training data: mmin (rows dropped), cpm-nets and retrieval-fill (kept).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/model_files.py
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import torch

import mlmm


def main() -> None:
    torch.set_num_threads(1)
    data = mlmm.load_dataset("handwritten")
    train, val, _ = mlmm.make_splits(data, "fixed", 0)
    for name in ("mmin", "cpm-nets", "retrieval-fill", "masked-mean"):
        method = mlmm.build_method(name, data.spec, seed=0)
        fit = mlmm.Trainer(mlmm.TrainConfig(max_epochs=1)).fit(method, train, val, seed=0)
        buffer = io.BytesIO()
        torch.save(fit.model.state_dict(), buffer)
        with tempfile.TemporaryDirectory() as tmp:
            path = fit.model.save(Path(tmp) / "m")
            saved = sum(f.stat().st_size for f in path.iterdir())
        n_params = sum(p.numel() for p in fit.model.parameters())
        print(f"{name:16s} parameters {n_params / 1e6:6.2f} M   torch.save(state_dict) {buffer.tell() / 1e6:6.2f} MB"
              f"   FittedModel.save {saved / 1e6:6.2f} MB")


if __name__ == "__main__":
    main()
