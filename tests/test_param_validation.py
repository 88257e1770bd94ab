"""Parameters validated at one place (mlmm.validation, mlmm.methods.params): every method
parameter has a declared constraint, defaults satisfy them, bad values are refused naming
the parameter, the value and what is allowed, before anything is built."""

from __future__ import annotations

import inspect

import pytest

from mlmm import ExperimentConfig, run_experiment
from mlmm.data.registry import load_dataset
from mlmm.errors import InvalidParameterError
from mlmm.methods import METHODS
from mlmm.methods.params import COMMON, check_method_params, method_param_constraints
from mlmm.missing import make_protocol
from mlmm.train.loop import build_method


def _named(cls):
    return [p for p in list(inspect.signature(cls.__init__).parameters.values())[2:]
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_parameter_has_a_declared_constraint(name):
    cls = METHODS.get(name)
    declared = {}
    for klass in cls.__mro__:
        declared.update(getattr(klass, "param_constraints", None) or {})
    missing = [p.name for p in _named(cls) if p.name not in COMMON and p.name not in declared]
    assert not missing, f"{name}: no constraint declared for {missing}"


@pytest.mark.parametrize("name", METHODS.names())
def test_defaults_satisfy_the_constraints(name):
    cls = METHODS.get(name)
    defaults = {p.name: p.default for p in _named(cls) if p.default is not inspect.Parameter.empty}
    check_method_params(name, cls, defaults)  # passing every default explicitly is valid
    assert set(method_param_constraints(cls)) >= set(defaults) - {"backbone"} - {
        k for k, v in defaults.items() if v is None and k not in COMMON}


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(embed_dim=0),
         r"method 'masked-mean': embed_dim=0 is not allowed; embed_dim must be an int in \[1, 65536\]"),
        (dict(embed_dim=-4), r"embed_dim=-4 is not allowed"),
        (dict(embed_dim=1.5), r"embed_dim=1.5 is not allowed"),
        (dict(embed_dim="abc"), r"embed_dim=str 'abc' is not allowed"),
        (dict(embed_dim=100_000_000), r"embed_dim=100000000 is not allowed"),
        (dict(embed_dim=1e8), r"embed_dim=100000000.0 is not allowed"),
        (dict(embed_dim=True), r"embed_dim=True is not allowed"),
        (dict(dropout=float("nan")), r"dropout=nan is not allowed; dropout must be a finite number in \[0, 1\)"),
        (dict(dropout=1.0), r"dropout=1.0 is not allowed"),
        (dict(hidden=0), r"hidden must be an int in \[1, 65536\] or None"),
        (dict(nosuch=1), r"'nosuch'; allowed: dropout, embed_dim, encoders, head, hidden, preprocess"),
    ],
)
def test_build_method_refuses_bad_parameters_before_building(params, message):
    spec = load_dataset("synthetic").spec
    with pytest.raises(InvalidParameterError, match=message):
        build_method("masked-mean", spec, **params)


def test_invalid_parameter_error_is_both_value_and_type_error():
    assert issubclass(InvalidParameterError, ValueError) and issubclass(InvalidParameterError, TypeError)


def test_build_method_accepts_none_where_declared():
    spec = load_dataset("synthetic").spec
    assert build_method("masked-mean", spec, hidden=None, embed_dim=8) is not None


@pytest.mark.parametrize(
    "seeds, message",
    [((), "seeds is empty"), ((0, 0), "seeds repeat 0"), ((0, -1), r"seed=-1 is not allowed"),
     ((0.5,), r"seed=0.5 is not allowed"), ("0", "seeds must be a non-empty list")],
)
def test_run_experiment_refuses_bad_seeds_before_training(seeds, message):
    with pytest.raises(InvalidParameterError, match=message):
        run_experiment(ExperimentConfig(dataset="synthetic", method="masked-mean", seeds=seeds))


def test_run_experiment_refuses_bad_method_parameters_before_training():
    with pytest.raises(InvalidParameterError, match="embed_dim=0"):
        run_experiment(ExperimentConfig(dataset="synthetic", method="masked-mean", method_params={"embed_dim": 0}))


@pytest.mark.parametrize(
    "name, params, message",
    [("fixed-subset", {}, r"protocol 'fixed-subset' needs parameter 'subset'"),
     ("entry", {"rate": float("nan")}, r"protocol 'entry': rate must be a finite number"),
     ("burst", {"rate": 0.2, "block": 0}, r"protocol 'burst': block must be an integer >= 1"),
     ("entry", {"rate": 0.1, "x": 1}, r"protocol 'entry' has no parameter 'x'")],
)
def test_protocol_parameters_are_checked_and_named(name, params, message):
    with pytest.raises(ValueError, match=message):
        make_protocol(name, **params)
