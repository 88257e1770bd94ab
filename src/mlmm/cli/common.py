"""What every ``mlmm`` sub-command shares: the usage error, the parser class, value parsers,
the training flags and the progress bar."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from ..train.loop import TrainConfig


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message}")


def parse_seeds(text: str) -> tuple[int, ...]:
    """"0,1,2" or "0-4" -> (0, 1, 2, ...)."""
    try:
        if "-" in text.strip("-") and "," not in text:
            lo, hi = text.split("-")
            seeds = tuple(range(int(lo), int(hi) + 1))
        else:
            seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UsageError(f"--seeds: cannot read {text!r}; give e.g. 0,1,2 or 0-4") from None
    if not seeds:
        raise UsageError("--seeds: no seed given")
    return seeds


def parse_floats(text: str, flag: str) -> list[float]:
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"{flag}: cannot read {text!r}; give numbers separated by commas") from None


def parse_params(items: Sequence[str]) -> dict:
    """["embed_dim=64", "dropout=0.3"] -> {"embed_dim": 64, "dropout": 0.3} (values read as JSON when they parse)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param: expected KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def add_training_flags(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=d.max_epochs, help="maximum epochs (early stopping on validation)")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--patience", type=int, default=d.patience)
    g.add_argument("--modality-dropout", type=float, default=d.modality_dropout,
                   help="per-entry drop probability of present modalities during training (never drops all)")
    g.add_argument("--select-on", choices=("accuracy", "loss"), default=d.select_on,
                   help="validation criterion for early stopping and model selection")
    g.add_argument("--min-steps-per-epoch", type=int, default=d.min_steps_per_epoch,
                   help="small training splits get batches down to 8 samples so an epoch has up to this many steps")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    g.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on an idle 2-core machine 2 threads were ~1.2x "
                        "faster per step, but on a busy one several times slower; grids run one per core)")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method hyper-parameter")


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       patience=args.patience, modality_dropout=args.modality_dropout,
                       min_steps_per_epoch=args.min_steps_per_epoch, select_on=args.select_on)


def progress(total: int, disable: bool = False):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="fit", file=sys.stderr, disable=disable, dynamic_ncols=True)
