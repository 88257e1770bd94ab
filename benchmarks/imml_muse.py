"""mlmm's ``muse`` against the peer library iMML's MUSE, same data, same masks (issue 13).

Two interpreters, because iMML lives in its own environment (``pip install imml``; see
RESULTS.md for how its deep-learning part was made importable offline):

    # 1. with mlmm: per seed, the handwritten split and entry-rate masks of mlmm's cell
    #    (standardised on the training rows, as mlmm's muse sees them) as .npy files,
    #    and mlmm's muse on that very cell
    PYTHONPATH=src python benchmarks/imml_muse.py export --seeds 0-4 --rate 0.5 --out /tmp/imml-cells --mlmm
    # 2. with iMML: its MUSE (imml.classify.MUSE, Lightning) on the same arrays
    /tmp/imml-venv/bin/python benchmarks/imml_muse.py imml --out /tmp/imml-cells
    # 3. either interpreter: the two side by side
    python benchmarks/imml_muse.py table --out /tmp/imml-cells

Both sides select on the same validation rows: iMML's MUSE trains for up to ``--max-epochs``
epochs (its own Adam, lr 2e-4, batch 128) and keeps the epoch with the best validation
accuracy (patience 15), since iMML ships no early stopping of its own. Missing entries are
zeros plus iMML's missing-modality indicator (MUSE drops their graph edges either way).
Not a test: figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def export(seeds: list[int], rate: float, out: Path, with_mlmm: bool) -> None:
    """Per seed: ``seed{s}/{role}_{modality}.npy`` (standardised, zeros where missing),
    ``{role}_mask.npy`` (N, M) bool, ``{role}_y.npy``; with ``with_mlmm`` also mlmm's muse
    on the same cell (``seed{s}/mlmm.json``)."""
    import torch

    from mlmm.data.preprocess import Standardizer
    from mlmm.data.registry import load_dataset
    from mlmm.experiment import ExperimentConfig, check_splits, run_seed
    from mlmm.train.loop import build_method

    config = ExperimentConfig(dataset="handwritten", method="muse", protocol="entry", rate=rate, split="random",
                              subsets=False)
    data = load_dataset("handwritten")
    for seed in seeds:
        folder = out / f"rate{rate:g}" / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        parts = dict(zip(("train", "val", "test"), check_splits(data, config.split, seed)))
        scenario = config.scenario()
        masked = {role: scenario.apply(part, role, seed)[0] for role, part in parts.items()}
        method = build_method("muse", data.spec, seed=seed)
        standardizer = Standardizer(data.spec, method.preprocessing).fit(masked["train"].as_batch())
        for role, part in masked.items():
            with torch.no_grad():
                batch = standardizer(part.as_batch())
            mask = batch.mask.numpy()
            np.save(folder / f"{role}_mask.npy", mask)
            np.save(folder / f"{role}_y.npy", batch.target.numpy())
            for j, name in enumerate(data.spec.modality_names):
                x = batch.inputs[name].numpy().astype(np.float32)
                np.save(folder / f"{role}_{name}.npy", np.where(mask[:, j:j + 1], x, 0.0).astype(np.float32))
        (folder / "modalities.json").write_text(json.dumps(list(data.spec.modality_names)))
        if with_mlmm and not (folder / "mlmm.json").exists():
            start = time.process_time()
            record = run_seed(config, seed)
            (folder / "mlmm.json").write_text(json.dumps({"accuracy": record["metrics"]["accuracy"],
                                                          "cpu_seconds": time.process_time() - start,
                                                          "epochs_run": record["epochs_run"]}))


def run_imml(out: Path, max_epochs: int, patience: int, batch_size: int) -> None:
    """iMML's MUSE on every exported seed (``seed{s}/imml.json``)."""
    import copy

    import lightning as L
    import torch
    import torch.nn.functional as F
    from imml.classify import MUSE
    from imml.load import MUSEDataset

    torch.set_num_threads(1)

    def load(folder: Path, role: str, names: list[str]):
        mask = np.load(folder / f"{role}_mask.npy")
        xs = []
        for j, name in enumerate(names):
            x = np.load(folder / f"{role}_{name}.npy").astype(np.float32)
            x[~mask[:, j]] = np.nan  # iMML reads a missing modality as a row of NaN ...
            xs.append(x)
        dataset = MUSEDataset(Xs=xs, y=np.load(folder / f"{role}_y.npy").astype(np.float32))
        # ... then zeros in its place: NaN would reach the weights' gradients through 0 * NaN
        dataset.Xs = [torch.nan_to_num(x, nan=0.0) for x in dataset.Xs]
        assert torch.equal(dataset.missing_mod_indicator, torch.from_numpy(~mask))
        return dataset

    def accuracy(model, loader) -> float:
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for Xs, y, missing, _ in loader:
                logits = model.model.predict(Xs=Xs, missing_mod_indicator=missing)
                correct += int((logits.argmax(dim=1) == y.long()).sum())
                total += len(y)
        return correct / total

    class KeepBest(L.Callback):
        """Validation accuracy after every epoch; keeps the best state and stops after ``patience``."""

        def __init__(self, loader):
            self.loader, self.best, self.best_epoch, self.state = loader, -1.0, 0, None

        def on_train_epoch_end(self, trainer, module):
            acc = accuracy(module, self.loader)
            module.train()
            epoch = trainer.current_epoch + 1
            if acc > self.best:
                self.best, self.best_epoch, self.state = acc, epoch, copy.deepcopy(module.state_dict())
            elif epoch - self.best_epoch >= patience:
                trainer.should_stop = True

    for folder in sorted(out.glob("rate*/seed*")):
        if (folder / "imml.json").exists():
            continue
        seed = int(folder.name.removeprefix("seed"))
        names = json.loads((folder / "modalities.json").read_text())
        train, val, test = (load(folder, role, names) for role in ("train", "val", "test"))
        L.seed_everything(seed, verbose=False)
        generator = torch.Generator().manual_seed(seed)
        loaders = {role: torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=role == "train",
                                                     generator=generator if role == "train" else None)
                   for role, ds in (("train", train), ("val", val), ("test", test))}
        n_classes = int(np.load(folder / "train_y.npy").max()) + 1
        model = MUSE(input_dim=[x.shape[1] for x in train.Xs], modalities=["tabular"] * len(names),
                     output_dim=n_classes, loss_fn=lambda logits, y: F.cross_entropy(logits, y.long()))
        keep = KeepBest(loaders["val"])
        trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[keep],
                            num_sanity_val_steps=0, limit_val_batches=0)
        start = time.process_time()
        trainer.fit(model, loaders["train"])
        model.load_state_dict(keep.state)
        record = {"accuracy": accuracy(model, loaders["test"]), "best_epoch": keep.best_epoch,
                  "epochs_run": trainer.current_epoch, "val_accuracy": keep.best,
                  "cpu_seconds": time.process_time() - start}
        (folder / "imml.json").write_text(json.dumps(record))
        print(folder, record, flush=True)


def table(out: Path) -> None:
    for rate_dir in sorted(out.glob("rate*")):
        rows = {"mlmm muse": [], "iMML MUSE": []}
        for folder in sorted(rate_dir.glob("seed*"), key=lambda p: int(p.name.removeprefix("seed"))):
            for label, file in (("mlmm muse", "mlmm.json"), ("iMML MUSE", "imml.json")):
                if (folder / file).exists():
                    rows[label].append((folder.name, 100 * json.loads((folder / file).read_text())["accuracy"]))
        print(f"{rate_dir.name}:")
        for label, values in rows.items():
            if values:
                acc = np.array([v for _, v in values])
                seeds = ", ".join(f"{v:.2f}" for _, v in values)
                print(f"  {label:10s} {acc.mean():.2f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.2f} "
                      f"({len(acc)} seeds: {seeds})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["export", "imml", "table"])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("bench-results/imml-muse"))
    parser.add_argument("--mlmm", action="store_true", help="export: also run mlmm's muse on each cell")
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    if args.what == "export":
        export(_seeds(args.seeds), args.rate, args.out, args.mlmm)
    elif args.what == "imml":
        run_imml(args.out, args.max_epochs, args.patience, args.batch_size)
    else:
        table(args.out)


if __name__ == "__main__":
    main()
