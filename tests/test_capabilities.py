"""Declared capabilities: what they mean for the loop, fill methods' recovery, the
registry's re-registration, and deep-ensemble forwarding every capability of its member."""

from __future__ import annotations

import pytest
import torch

from mlmm.data.datasets.synthetic import make_synthetic
from mlmm.data.preprocess import Standardizer
from mlmm.diagnostics.recovery import recovering_methods
from mlmm.methods import METHODS
from mlmm.methods.base import Capability, MethodInfo
from mlmm.registry import Registry
from mlmm.testing import run_conformance
from mlmm.train.loop import TrainConfig, Trainer, build_method

FAST = TrainConfig(max_epochs=2, batch_size=16, patience=2)


def _data(n: int = 60, kind: str = "vector"):
    data = make_synthetic(n_samples=n, n_classes=3, n_modalities=3, dims=(3, 4, 5), kind=kind, seed=0)
    return data.split("train"), data.split("test")


def test_method_info_adds_the_field_capabilities_and_refuses_contradictions() -> None:
    info = MethodInfo("dedicated", "late", recovers_missing=True, needs_complete_train=True, paper="p",
                      summary="s", recovery_space="input", capabilities=frozenset({Capability.CALIBRATES}))
    assert info.capabilities == {Capability.CALIBRATES, Capability.RECOVERS, Capability.NEEDS_COMPLETE_TRAIN}
    with pytest.raises(ValueError, match="its field says False"):
        MethodInfo("dedicated", "late", False, False, "p", "s", capabilities=frozenset({Capability.RECOVERS}))
    with pytest.raises(ValueError, match="recovery_space"):
        MethodInfo("dedicated", "late", True, False, "p", "s")
    with pytest.raises(ValueError, match="not a modality or task kind"):
        MethodInfo("dedicated", "late", False, False, "p", "s", unsupported_kinds={"audio": "no"})


@pytest.mark.parametrize("name", ["zero-fill", "mean-fill"])
def test_fill_methods_recover_their_fill_in_input_space(name: str) -> None:
    train, _ = _data()
    method = build_method(name, train.spec)
    assert method.has(Capability.RECOVERS) and method.recovery_space == "input"
    raw = train.as_batch()
    standardizer = Standardizer(train.spec).fit(raw)
    batch = standardizer(raw)
    method.prepare(batch, standardizer)
    mask = batch.mask.clone()
    mask[::2, 1] = False
    recovered = method.recover(batch.with_mask(mask))
    x1 = batch.inputs["m1"]
    if name == "zero-fill":  # raw zeros, seen through the standardisation
        fill = standardizer.transform_values("m1", torch.zeros(1, 4))[0]
    else:  # the training mean of the present rows (standardised: ~0)
        fill = x1.mean(dim=0)
    torch.testing.assert_close(recovered["m1"][::2], fill.expand(len(x1[::2]), -1))
    torch.testing.assert_close(recovered["m1"][1::2], x1[1::2])
    torch.testing.assert_close(recovered["m0"], batch.inputs["m0"])
    assert name in recovering_methods()


def test_every_declared_recovering_method_implements_recover() -> None:
    for name in recovering_methods():
        cls = METHODS.get(name)
        assert cls.info.recovery_space in ("input", "embedding"), name


def test_registry_re_registers_the_same_qualified_class_but_not_another() -> None:
    registry: Registry[type] = Registry("thing")

    def define():
        class Thing:  # re-running a notebook cell defines a new class of the same qualified name
            pass

        return Thing

    first, second = define(), define()
    registry.register("a")(first)
    registry.register("a")(second)
    assert registry.get("a") is second

    class Other:
        pass

    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(Other)


def test_loop_hands_the_method_a_generator_and_takes_it_back() -> None:
    train, val = _data()
    method = build_method("masked-autoencoder-fill", train.spec)
    seen = []
    original = method.hide

    def hide(mask):
        seen.append(method.generator)
        return original(mask)

    method.hide = hide
    Trainer(FAST).fit(method, train, val)
    assert seen and all(isinstance(g, torch.Generator) for g in seen)
    assert method.generator is None


# ------------------------------------------------------------------ deep-ensemble


def test_deep_ensemble_of_pattern_routers_calibrates_every_member() -> None:
    # Before: calibrate was not forwarded, and every member ended with 0 routing entries.
    train, val = _data(90)
    alone = Trainer(FAST).fit(build_method("pattern-router", train.spec), train, val).model.method
    ensemble = Trainer(FAST).fit(build_method("deep-ensemble", train.spec, member="pattern-router", members=2),
                                 train, val).model.method
    assert ensemble.has(Capability.CALIBRATES)
    n_alone = len(alone.route_codes)
    assert n_alone > 0
    assert [len(m.route_codes) for m in ensemble.members] == [n_alone, n_alone]


@pytest.mark.parametrize("member, capability, kind", [
    ("pattern-router", Capability.CALIBRATES, "vector"),
    ("mmin", Capability.MULTI_STAGE, "vector"),
    ("mean-teacher", Capability.AFTER_STEP, "vector"),
    ("retrieval-fill", Capability.RECOVERS, "vector"),
    ("embedding-retrieval", Capability.PREPARES, "vector"),
    ("masked-mean", Capability.FACTORISED, "vector"),
    ("streaming-gru", Capability.STREAMING, "sequence"),
])
def test_deep_ensemble_forwards_each_capability_of_its_member(member: str, capability: Capability, kind: str) -> None:
    spec = _data(kind=kind)[0].spec
    ensemble = build_method("deep-ensemble", spec, member=member, members=2)
    assert capability in ensemble.capabilities
    assert ensemble.capabilities == build_method(member, spec).capabilities
    # The conformance suite checks that each forwarded capability behaves as declared.
    setup = "vector" if kind == "vector" else "sequence/regression"
    result = run_conformance("deep-ensemble", ["declared_capabilities"], setups=[setup],
                             params={"member": member, "members": 2})
    assert result["declared_capabilities"] == "passed"


def test_deep_ensemble_of_a_complete_data_method_needs_complete_data() -> None:
    train, val = _data()
    ensemble = build_method("deep-ensemble", train.spec, member="mmin", members=2)
    assert ensemble.has(Capability.NEEDS_COMPLETE_TRAIN)
    mask = train.mask.clone()
    mask[0, 0] = False
    with pytest.raises(ValueError, match="needs complete training"):
        Trainer(FAST).fit(ensemble, train.with_mask(mask), val)


# ------------------------------------------------------------------ randomness

_DRAWS = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "bernoulli",
          "multinomial", "normal"}
#: (file, function) -> why a draw there does not take the method's generator yet.
_EXEMPT = {("smil.py", "_perturbation"): "a static helper's reparameterised noise (no access to the method)"}


def _unseeded_draws(path) -> list[str]:
    """'file:line in function' for every torch.<draw>(...) call outside ``__init__`` without ``generator=``."""
    import ast

    tree = ast.parse(path.read_text())
    out = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr in _DRAWS
                    and isinstance(child.func.value, ast.Name) and child.func.value.id == "torch"
                    and function != "__init__" and (path.name, function) not in _EXEMPT
                    and not any(k.arg == "generator" for k in child.keywords)):
                out.append(f"{path.name}:{child.lineno} in {function}")
            visit(child, name)

    visit(tree, None)
    return out


def test_methods_and_components_draw_from_the_generator_the_loop_hands_them() -> None:
    # Parameter initialisation (in __init__) draws from the seeded global RNG at build time;
    # every draw during training must use the method's generator (method.generator).
    from pathlib import Path

    import mlmm

    root = Path(mlmm.__file__).parent
    found = [d for folder in ("methods", "components") for p in sorted((root / folder).rglob("*.py"))
             for d in _unseeded_draws(p)]
    assert found == [], found


def test_a_draw_without_the_generator_is_found(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\n\ndef hide(mask):\n    return torch.rand(mask.shape) < 0.5\n")
    assert _unseeded_draws(bad) == ["bad.py:4 in hide"]


def test_subpattern_draws_are_reproducible_from_a_generator_and_leave_the_global_rng_alone() -> None:
    from mlmm.components.subpatterns import drop_present, random_sub_mask

    mask = torch.ones(64, 4, dtype=torch.bool)
    state = torch.get_rng_state()
    a = drop_present(mask, 0.5, torch.Generator().manual_seed(3))
    b = drop_present(mask, 0.5, torch.Generator().manual_seed(3))
    c = random_sub_mask(mask, strict=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, mask) and c.any(dim=1).all()
    assert torch.equal(torch.get_rng_state(), state)
