"""``mlmm predict``: a saved model's predictions for new samples with whatever modalities they have."""

from __future__ import annotations

import argparse
import csv
import io
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict new samples with a model saved by `mlmm run --save-model`")
    p.add_argument("--model", required=True, help="model directory (FittedModel.save / mlmm run --save-model)")
    p.add_argument("--data-file", required=True,
                   help="new samples: a table (.csv/.tsv/.parquet; a modality's columns all empty = missing) or "
                        ".npz (one array per modality); the column mapping the model was trained with is reused")
    p.add_argument("--modality", action="append", default=[], metavar="NAME=COLS",
                   help="columns of a modality, where the model was not trained from a data file (or to override)")
    p.add_argument("--out", help="write the predictions to this CSV file (default: standard output)")
    p.add_argument("--nan-as-missing", action="store_true",
                   help="a NaN/inf in a present entry makes that modality missing for that sample (default: error)")
    p.add_argument("--device", default="cpu")


def cmd_predict(args: argparse.Namespace) -> None:
    from ..data.loaders.new_data import load_new_data
    from ..data.loaders.user_data import parse_modality_flags
    from ..train.fitted import needs_calibration
    from ..train.saving import load
    from .common import check_writable

    if args.out:
        check_writable(args.out, "--out")
    model = load(args.model, device=args.device)
    if needs_calibration(model.method) and not bool(model.calibrated):
        raise ValueError(f"{args.model}: the model's calibrate step never ran (it was saved before FitSteps.finish)")
    mapping = dict(model.metadata.get("data_file") or {})
    if args.modality:
        mapping["modalities"] = {**(mapping.get("modalities") or {}), **parse_modality_flags(args.modality)}
    data = load_new_data(args.data_file, model.spec, mapping, nonfinite="missing" if args.nan_as_missing else "error")
    rows = _rows(model, data)
    if args.out:
        with open(args.out, "w", newline="") as f:
            f.write(rows)
    else:
        sys.stdout.write(rows)


def _rows(model, data) -> str:
    """CSV text: row, prediction (class name or label; regression values) and, for
    classification, one probability column per class; plus which modalities each row had."""
    out = io.StringIO()
    writer = csv.writer(out)
    names = model.spec.modality_names
    present = data.mask.numpy()
    if model.spec.task.kind == "classification":
        proba = model.predict_proba(data)
        labels = model.predict(data)
        classes = model.class_names or [str(c) for c in range(proba.shape[1])]
        writer.writerow(["row", "prediction", *(f"p_{c}" for c in classes), "modalities"])
        for i in range(len(data)):
            writer.writerow([i, labels[i], *(f"{p:.6g}" for p in proba[i]),
                             "+".join(n for n, ok in zip(names, present[i]) if ok)])
    else:
        values = model.predict(data).reshape(len(data), -1)
        writer.writerow(["row", *(["prediction"] if values.shape[1] == 1 else
                                   [f"prediction_{k}" for k in range(values.shape[1])]), "modalities"])
        for i in range(len(data)):
            had = "+".join(n for n, ok in zip(names, present[i]) if ok)
            writer.writerow([i, *(f"{v:.6g}" for v in values[i]), had])
    return out.getvalue()
