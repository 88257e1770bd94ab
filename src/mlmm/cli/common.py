"""What every ``mlmm`` sub-command shares: the usage error, the parser class, value parsers,
the training flags and the progress bar."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

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


def data_dir_name(folder: str) -> str:
    """``--data-dir FOLDER`` -> the dataset name ``dir:<absolute folder>`` (``mlmm.data.registry.DIR_PREFIX``)."""
    import os

    from ..data.registry import DIR_PREFIX

    path = os.path.abspath(os.path.expanduser(folder))
    if not os.path.isdir(path):
        raise UsageError(f"--data-dir: {folder!r} does not exist or is not a folder")
    return DIR_PREFIX + path


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


#: Help text of the generated training flags (the flags themselves come from ``TrainConfig``'s fields).
TRAIN_HELP = {
    "max_epochs": "maximum epochs (early stopping on validation)",
    "lr": "learning rate",
    "weight_decay": "AdamW weight decay",
    "patience": "epochs without a better validation score before stopping",
    "modality_dropout": "per-entry drop probability of present modalities during training (never drops all)",
    "select_on": "validation criterion for early stopping and model selection",
    "min_steps_per_epoch": "small training splits get batches down to 8 samples so an epoch has up to this many steps",
    "grad_clip": "clip the gradient norm to this value ('none': no clipping)",
    "num_workers": "DataLoader worker processes reading streamed (e.g. memory-mapped) batches; 0: in this process",
    "prefetch": "batches each DataLoader worker reads ahead",
    "pin_memory": "pinned host memory for streamed batches when training on CUDA (ignored on the CPU)",
    "precision": "training arithmetic: fp32, bf16 (autocast; CUDA or CPU) or fp16 (autocast + gradient scaling; "
                 "CUDA only)",
}
#: Older spellings that keep working.
TRAIN_ALIASES = {"max_epochs": ("--epochs",)}


def _flag_type(hint: Any, name: str) -> Callable[[str], Any]:
    """An argparse ``type`` for the annotation of ``TrainConfig.<name>``: int, float, str or bool,
    or one of them ``| None`` (then 'none' gives None)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    members = typing.get_args(hint) if union else (hint,)
    optional = type(None) in members
    rest = [a for a in members if a is not type(None)]
    base = rest[0] if len(rest) == 1 else None
    if base not in (int, float, str, bool):
        raise TypeError(f"TrainConfig.{name}: no command-line flag for a field of type {hint!r}")

    def convert(text: str) -> Any:
        word = text.strip().lower()
        if optional and word == "none":
            return None
        if base is bool:
            if word in ("true", "yes", "1", "on"):
                return True
            if word in ("false", "no", "0", "off"):
                return False
            raise ValueError(text)
        return base(text)

    convert.__name__ = base.__name__ + (" or none" if optional else "")  # argparse: "invalid float value: 'x'"
    return convert


def add_training_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ``TrainConfig`` field (``--max-epochs`` for ``max_epochs``, typed by its annotation,
    defaulting to its default; choices where ``TRAIN_CONSTRAINTS`` names a fixed set), then the run's
    device, threads and method parameters. A new trainer field gets its flag here without an edit."""
    from ..train.loop import TRAIN_CONSTRAINTS
    from ..validation import Options

    hints = typing.get_type_hints(TrainConfig)
    g = p.add_argument_group("training (TrainConfig)")
    for f in dataclasses.fields(TrainConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        options = [c for c in TRAIN_CONSTRAINTS.get(f.name, []) if isinstance(c, Options)]
        g.add_argument(f"--{f.name.replace('_', '-')}", *TRAIN_ALIASES.get(f.name, ()), dest=f.name, default=default,
                       type=_flag_type(hints[f.name], f.name), choices=options[0].values if options else None,
                       help=f"{TRAIN_HELP.get(f.name, f.name.replace('_', ' '))} (default: %(default)s)")
    g.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    g.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: on an idle 2-core machine 2 threads were ~1.2x "
                        "faster per step, but on a busy one several times slower; grids run one per core)")
    g.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="method hyper-parameter")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` of the flags ``add_training_flags`` added."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def progress(total: int, disable: bool = False):
    from tqdm.auto import tqdm

    # leave=False: the bar is wiped when done, so a failure leaves exactly one line on stderr
    # and no bar at all where stderr is not a terminal (a log file, a pipe)
    return tqdm(total=total, unit="fit", file=sys.stderr, disable=disable or not sys.stderr.isatty(),
                dynamic_ncols=True, leave=False)


def check_writable(path: str, flag: str, folder: bool = False) -> None:
    """Before any work: ``path`` (a file, or with ``folder`` a folder, created later) can be written.
    Its folder (or, for a folder, its nearest existing ancestor) must exist and accept a new file,
    which is checked by creating and removing a probe file (root ignores permission bits, and a
    read-only file system shows only when writing)."""
    import os
    import tempfile

    target = os.path.abspath(path)
    if folder:
        if os.path.exists(target) and not os.path.isdir(target):
            raise UsageError(f"{flag}: {path!r} exists and is not a folder")
        parent = target
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
    else:
        if os.path.isdir(target):
            raise UsageError(f"{flag}: {path!r} is a folder, not a file")
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            raise UsageError(f"{flag}: folder of {path!r} does not exist")
        if os.path.exists(target) and not os.access(target, os.W_OK):
            raise UsageError(f"{flag}: {path!r} is not writable (permission denied)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mlmm-probe-", dir=parent)
    except OSError as err:
        reason = err.strerror.lower() if err.strerror else type(err).__name__
        raise UsageError(f"{flag}: cannot write in {parent!r} ({reason})") from None
    os.close(fd)
    os.remove(probe)


def add_feature_cache_flag(p: argparse.ArgumentParser) -> None:
    """``--feature-cache DIR``: where frozen-backbone features are cached (``mlmm.data.feature_cache``)."""
    p.add_argument("--feature-cache", metavar="DIR",
                   help="cache frozen-backbone features on disk here (content-addressed: computed once per backbone, "
                        "preprocessing and input values, reused by every method, seed and cell)")


@contextlib.contextmanager
def feature_cache_env(directory: str | None) -> Iterator[None]:
    """``MLMM_FEATURE_CACHE`` set to ``directory`` for the block (inherited by pool workers), then restored."""
    from ..data.frozen_features import CACHE_ENV

    if not directory:
        yield
        return
    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = os.path.abspath(os.path.expanduser(directory))
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = saved
