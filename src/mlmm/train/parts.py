"""Each independent part of a method selected on its own (``StageControl.parts``).

A method made of independent sub-models (``pattern-oracle``: one model per availability
pattern) declares them as parameter-name prefixes. One early stop for all of them would
keep every part at the epoch where their *sum* was best, although each part sees other
rows and learns at its own pace. Instead, per epoch the loop asks the method for each
part's validation loss on the rows that part serves (``method.part_losses(val)``, (P,),
NaN for a part without validation rows) and, per part:

- keeps the state of its best epoch (from ``StageControl.min_epochs`` on);
- counts its own patience; a part whose patience ran out is *stopped*: its parameters get
  no more optimiser steps (their gradients are dropped before each step, and Adam/AdamW
  skip a parameter without a gradient, weight decay included);
- at the end of the stage, the part's best state is loaded.

The stage ends when every part that has validation rows has stopped (or at ``max_epochs``).
A part without validation rows cannot be selected: it trains to the stage's end and keeps
its last state. Parts are selected on their validation loss (``TrainConfig.select_on``
does not apply: a part's accuracy on a handful of rows is too coarse to rank epochs).
"""

from __future__ import annotations

import math

from torch import Tensor, nn


class PartSelection:
    """Per-part best state, patience and stop for one training stage.

    method: the method being trained; prefixes: its parts, (P,) parameter-name prefixes, each
    trainable parameter in exactly one (else a ValueError naming it); min_epochs, patience: as
    for the stage. ``begin`` takes the parts' validation losses before training.
    """

    def __init__(self, method: nn.Module, prefixes: tuple[str, ...], min_epochs: int, patience: int) -> None:
        self.method, self.prefixes = method, tuple(prefixes)
        self.min_epochs, self.patience = min_epochs, patience
        owners: dict[str, list[int]] = {}
        self.params: list[list[nn.Parameter]] = [[] for _ in self.prefixes]
        for name, p in method.named_parameters():
            if not p.requires_grad:
                continue
            owners[name] = [i for i, prefix in enumerate(self.prefixes) if name.startswith(prefix)]
            if len(owners[name]) != 1:
                raise ValueError(f"{type(method).__name__}: trainable parameter {name!r} falls in "
                                 f"{len(owners[name])} of the stage's parts {list(self.prefixes)} "
                                 "(it must fall in exactly one)")
            self.params[owners[name][0]].append(p)
        n = len(self.prefixes)
        self.start = [math.nan] * n
        self.best_loss = [math.inf] * n
        #: per part: the epoch whose state it keeps (0: none selected yet, e.g. no validation rows)
        self.best_epoch = [0] * n
        #: per part: the epoch at which its patience ran out (None: still training)
        self.stopped_at: list[int | None] = [None] * n
        self.best_state: list[dict[str, Tensor] | None] = [None] * n

    def _check(self, losses: Tensor, what: str) -> list[float]:
        if losses.shape != (len(self.prefixes),):
            raise ValueError(f"{type(self.method).__name__}.part_losses returned shape {tuple(losses.shape)} "
                             f"({what}); expected ({len(self.prefixes)},), one loss per part of StageControl.parts")
        return [float(v) for v in losses.detach().cpu()]

    def _state(self, i: int) -> dict[str, Tensor]:
        prefix = self.prefixes[i]
        return {k: v.detach().clone() for k, v in self.method.state_dict().items() if k.startswith(prefix)}

    def begin(self, start: Tensor) -> None:
        """(P,) the parts' validation losses before training (what ``improved`` compares with)."""
        self.start = self._check(start, "before training")

    def update(self, epoch: int, losses: Tensor) -> bool:
        """Record epoch ``epoch``'s (P,) part losses; True when every part with validation rows has stopped."""
        values = self._check(losses, f"epoch {epoch}")
        if epoch < self.min_epochs:  # too early to select: nothing kept, no patience used
            return False
        for i, loss in enumerate(values):
            if self.stopped_at[i] is not None or not math.isfinite(loss):
                continue
            if loss < self.best_loss[i]:
                self.best_loss[i], self.best_epoch[i] = loss, epoch
                self.best_state[i] = self._state(i)
            elif epoch - max(self.best_epoch[i], self.min_epochs) >= self.patience:
                self.stopped_at[i] = epoch
        selectable = [i for i, loss in enumerate(values) if math.isfinite(loss)]
        return bool(selectable) and all(self.stopped_at[i] is not None for i in selectable)

    def drop_stopped_gradients(self) -> None:
        """Before an optimiser step: stopped parts lose their gradients, so the step leaves them as they are."""
        for i, stopped in enumerate(self.stopped_at):
            if stopped is not None:
                for p in self.params[i]:
                    p.grad = None

    def load_best(self) -> None:
        """Each selected part back to its best epoch's state (a part never selected keeps its last state)."""
        state = self.method.state_dict()
        for part in self.best_state:
            if part is not None:
                state.update(part)
        self.method.load_state_dict(state)

    @property
    def last_selection(self) -> int:
        """The latest epoch any part keeps (the stage's selected epoch, for the record)."""
        return max(self.best_epoch)

    @property
    def improved(self) -> bool:
        """Whether the selected parts' total validation loss is below their total at the stage's start
        (over the parts with a finite loss at both)."""
        both = [i for i, (a, b) in enumerate(zip(self.start, self.best_loss)) if math.isfinite(a) and math.isfinite(b)]
        return bool(both) and sum(self.best_loss[i] for i in both) < sum(self.start[i] for i in both)
