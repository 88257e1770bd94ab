"""The CLI's training flags are generated from ``TrainConfig``'s fields (none re-declared by hand)."""

from __future__ import annotations

import dataclasses

import pytest

from mlmm.cli import common, main
from mlmm.cli.main import build_parser
from mlmm.train.loop import TrainConfig

#: A value different from the default for every field, as the command line spells it.
NON_DEFAULT = {"max_epochs": "7", "batch_size": "16", "lr": "0.02", "weight_decay": "0", "patience": "3",
               "modality_dropout": "0.1", "min_steps_per_epoch": "4", "select_on": "accuracy", "grad_clip": "none",
               "optimizer": "sgd", "num_workers": "2", "prefetch": "4", "pin_memory": "false", "precision": "bf16"}
TRAINING_COMMANDS = {"run": ["--dataset", "synthetic"], "demo": [], "stream": ["--dataset", "synthetic"],
                     "explain": ["--dataset", "synthetic"], "recover": ["--dataset", "synthetic"],
                     "uncertainty": ["--dataset", "synthetic"]}


def test_every_trainconfig_field_is_covered_here() -> None:
    # a new TrainConfig field must get a case in NON_DEFAULT (the flag itself needs no edit)
    assert set(NON_DEFAULT) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("command", sorted(TRAINING_COMMANDS))
def test_every_field_has_a_flag_that_reaches_the_config(command: str) -> None:
    argv = [command, *TRAINING_COMMANDS[command]]
    for name, text in NON_DEFAULT.items():
        argv += [f"--{name.replace('_', '-')}", text]
    config = common.train_config(build_parser().parse_args(argv))
    assert config == TrainConfig(max_epochs=7, batch_size=16, lr=0.02, weight_decay=0.0, patience=3,
                                 modality_dropout=0.1, min_steps_per_epoch=4, select_on="accuracy", grad_clip=None,
                                 optimizer="sgd", num_workers=2, prefetch=4, pin_memory=False, precision="bf16")
    assert common.train_config(build_parser().parse_args([command, *TRAINING_COMMANDS[command]])) == (
        TrainConfig() if command != "stream" else TrainConfig(lr=3e-3))  # stream keeps its own default lr


def test_the_old_epochs_spelling_still_works() -> None:
    args = build_parser().parse_args(["run", "--dataset", "synthetic", "--epochs", "5"])
    assert common.train_config(args).max_epochs == 5


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--grad-clip", "abc", "invalid float or none value: 'abc'"),
    ("--batch-size", "1.5", "invalid int value: '1.5'"),
    ("--select-on", "f1", "invalid choice: 'f1'"),
    ("--optimizer", "lbfgs", "invalid choice: 'lbfgs'"),
    ("--grad-clip", "-1", "grad_clip"),  # typed right, refused by TrainConfig's own check
])
def test_a_bad_training_flag_is_one_line_and_exit_2(flag: str, value: str, says: str, capsys) -> None:
    assert main(["run", "--dataset", "synthetic", "--method", "masked-mean", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1


def test_a_new_trainconfig_field_gets_its_flag_without_an_edit(monkeypatch) -> None:
    @dataclasses.dataclass(frozen=True)
    class Extended(TrainConfig):
        warmup_steps: int = 0
        label_smoothing: float | None = None

        def __post_init__(self) -> None:  # TrainConfig's check knows only its own fields
            pass

    monkeypatch.setattr(common, "TrainConfig", Extended)
    args = build_parser().parse_args(["run", "--dataset", "synthetic", "--warmup-steps", "3",
                                      "--label-smoothing", "0.1"])
    config = common.train_config(args)
    assert (config.warmup_steps, config.label_smoothing) == (3, 0.1)


def test_a_field_of_a_type_the_cli_cannot_spell_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="TrainConfig.schedule"):
        common._flag_type(list[int], "schedule")
    with pytest.raises(TypeError, match="TrainConfig.either"):
        common._flag_type(int | str, "either")
