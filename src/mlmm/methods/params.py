"""Method parameter constraints, checked by ``build_method`` before a method is built.

Each method's parameters are the keyword arguments of its ``__init__``. Their constraints
come from, in order: the class's own ``param_constraints`` (merged along the MRO, so a
class declares what is special to it), then :data:`COMMON` (the vocabulary shared by the
methods: widths, drop rates, loss weights, ...), then the annotation (int / float / bool /
str: the type alone). ``None`` is allowed where the annotation says ``| None``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

from ..validation import (
    BOOLEAN,
    COUNT,
    NONNEG,
    NONNEG_COUNT,
    POSITIVE,
    PROBABILITY,
    STRING,
    UNIT,
    WIDTH,
    InstanceOf,
    Interval,
    SequenceOf,
    check_names,
    check_value,
)

_OPEN_UNIT = Interval("real", 0, 1, closed="neither")

#: Parameter name -> constraints, shared by every method that takes a parameter of that name.
COMMON: dict[str, list] = {
    **{name: [WIDTH] for name in ("embed_dim", "hidden", "latent_dim", "proj_dim", "gen_dim", "model_dim", "ff_dim",
                                  "head_hidden", "gate_hidden", "gate_dim", "bottleneck")},
    **{name: [PROBABILITY] for name in ("dropout", "attn_dropout", "token_drop", "student_drop", "decay",
                                        "fit_momentum")},
    **{name: [NONNEG] for name in ("weight", "aux_weight", "align_weight", "consistency_weight", "cycle_weight",
                                   "domain_weight", "feature_weight", "hinge_weight", "imagination_weight",
                                   "kd_weight", "prefix_weight", "recon_weight", "compute_penalty", "init_std",
                                   "fusion_weight")},
    **{name: [COUNT] for name in ("heads", "n_heads", "layers", "n_layers", "n_blocks", "members", "k", "top_k",
                                  "min_count", "max_patterns", "bank_size", "bank_per_step", "prompt_length",
                                  "prompt_layers")},
    **{name: [NONNEG_COUNT] for name in ("fit_steps", "anneal_steps", "bank_seed")},
    **{name: [POSITIVE] for name in ("temperature", "latent_scale", "ridge", "fit_lr")},
    "hide_rate": [_OPEN_UNIT],
    "threshold": [_OPEN_UNIT],
    "subpattern_prob": [UNIT],
    "simulate_missing": [BOOLEAN],
    "ae_dims": [SequenceOf(WIDTH)],
    "backbone": [InstanceOf((str, os.PathLike), "a path to a Hugging Face model folder")],
    # strings whose allowed values the class itself checks (one line naming them) when built
    **{name: [STRING] for name in ("member", "missing", "missing_input", "pool", "predict_with", "prompt_sets",
                                    "text_reader")},
}

_BY_ANNOTATION = {"int": [Interval("int")], "float": [Interval("real")], "bool": [BOOLEAN], "str": [STRING]}


def _signature(cls: type) -> list[inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    return [p for p in params if p.name != "spec"]


def _forwarded_names(cls: type) -> list[str]:
    """Keyword names a class's ``**kwargs`` reach: those of the bases' ``__init__`` that the
    chain of ``**kwargs`` forwarding gets to (it stops at the first base without ``**kwargs``)."""
    names: list[str] = []
    if not any(p.kind == p.VAR_KEYWORD for p in _signature(cls)):
        return names
    for klass in cls.__mro__[1:]:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = _signature(klass)
        names += [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def method_param_constraints(cls: type) -> dict[str, list]:
    """Parameter name -> constraints for method class ``cls`` (keyword arguments of its ``__init__``)."""
    declared: dict[str, list] = {}
    for klass in reversed(cls.__mro__):
        declared.update(getattr(klass, "param_constraints", None) or {})
    out = {}
    for p in _signature(cls):
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        annotation = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        base = annotation.replace("| None", "").replace("None |", "").strip()
        constraints = list(declared.get(p.name) or COMMON.get(p.name) or _BY_ANNOTATION.get(base, []))
        if not constraints:
            continue  # nothing known: the class checks it itself
        if ("None" in annotation or p.default is None) and None not in constraints:
            constraints.append(None)
        out[p.name] = constraints
    return out


def check_method_params(name: str, cls: type, params: Mapping[str, Any]) -> None:
    """Raise ``InvalidParameterError`` for an unknown parameter of method ``name`` (listing the
    allowed ones) or a value outside its constraints. A method taking ``**kwargs`` forwards
    them to the class ``cls.forwarded_params_class(params)`` names (checked against it)."""
    owner = f"method {name!r}"
    signature = _signature(cls)
    named = [p.name for p in signature if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    constraints = method_param_constraints(cls)
    own = {k: v for k, v in params.items() if k in named}
    extra = {k: v for k, v in params.items() if k not in named}
    target = getattr(cls, "forwarded_params_class", None)
    if extra and target is not None:
        member_cls = target(params)
        check_method_params(getattr(member_cls, "method_name", member_cls.__name__), member_cls, extra)
    elif extra:
        # A method forwarding **components up its bases (encoders / head / preprocess) takes the
        # keywords its bases name, and nothing else.
        check_names(owner, extra, sorted(set(named) | set(_forwarded_names(cls))))
    for key, value in own.items():
        if key in constraints:
            check_value(owner, key, value, constraints[key])
