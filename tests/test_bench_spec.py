"""Experiment specs: validation names the key, --set overrides, grid expansion, the shipped specs."""

from __future__ import annotations

import pytest

from mlmm.bench import SpecError, apply_overrides, expand, load_spec, packaged_specs, parse_spec
from mlmm.bench.spec import fast_overrides

BASE = """
name: t
datasets: [synthetic]
split: random
methods: [masked-mean, {name: zero-fill, label: zf}]
scenarios:
  - protocol: entry
    rates: [0.0, 0.3]
seeds: [0, 1]
train: {max_epochs: 2}
"""


def spec(*overrides: str):
    return parse_spec(BASE, "t.yaml", overrides)


@pytest.mark.parametrize("override, message", [
    ("train.max_epoch=3", "t.yaml: train.max_epoch: unknown key"),
    ("train.max_epochs=many", "train.max_epochs: Input should be a valid integer"),
    ("train.patience=0", "train: TrainConfig: patience=0 is not allowed"),
    ("train.grad_clip=-1", "train: TrainConfig: grad_clip=-1.0 is not allowed"),  # was accepted: training climbed
    ("train.weight_decay=-0.5", "weight_decay=-0.5 is not allowed"),
    ("train.lr=.inf", "lr=inf is not allowed"),
    ("bogus=1", "t.yaml: bogus: unknown key"),
    ("methods.0.name=nope", "methods.0.name: unknown method 'nope'"),
    ("methods.0.colour=red", "methods.0.colour: unknown key"),
    ("datasets=[nope]", "datasets: unknown dataset 'nope'"),
    ("split=weird", "split: unknown split 'weird'"),
    ("seeds=[0, 0]", "seeds: seeds repeat"),
    ("seeds=[x]", "seeds.0: Input should be a valid integer"),
    ("scenarios.0.protocol=nope", "scenarios.0.protocol: unknown protocol 'nope'"),
    ("scenarios.0.rates=null", "needs `rates` or `train_rates` + `test_rates`"),
    ("scenarios.0.train_rates=[0]", "not both"),
    ("scenarios.0.protocol=none", "takes no rate"),
    ("reference=late-ensemble", "reference: 'late-ensemble' is not one of the spec's methods"),
    ("methods=[masked-mean, masked-mean]", "'masked-mean' appears twice"),
    ("scenarios.5.rates=[0.1]", "'5' is not an index of a list of 1"),
    ("name=has space", "name: String should match pattern"),
    ("train", "expected KEY=VALUE"),
])
def test_bad_specs_name_the_key(override: str, message: str) -> None:
    with pytest.raises(SpecError, match=None) as info:
        spec(override)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_yaml_and_non_mapping_are_named(tmp_path) -> None:
    with pytest.raises(SpecError, match="x.yaml: not valid YAML"):
        parse_spec("name: [unclosed", "x.yaml")
    with pytest.raises(SpecError, match="a spec is a YAML mapping"):
        parse_spec("- a\n- b\n", "x.yaml")
    with pytest.raises(SpecError, match="missing.yaml: cannot read the spec"):
        load_spec(tmp_path / "missing.yaml")


def test_scenario_errors_found_at_expansion_name_the_scenario() -> None:
    with pytest.raises(SpecError, match=r"scenarios\.0 on synthetic: entry rate 0.9 is impossible"):
        expand(spec("scenarios.0.rates=[0.9]"), "t.yaml")
    with pytest.raises(SpecError, match=r"methods\.0 \(masked-mean\) on synthetic: .*no_such_param"):
        expand(spec("methods.0.params={no_such_param: 1}"), "t.yaml")


def test_overrides_are_typed_and_nested() -> None:
    s = spec("train.max_epochs=5", "seeds=0-3", "methods.1.params={dropout: 0.2}", "scenarios.0.rates=[0.5]")
    assert s.train.max_epochs == 5 and s.seeds == [0, 1, 2, 3]
    assert s.methods[1].params == {"dropout": 0.2} and s.methods[1].key == "zf"
    assert s.scenarios[0].rates == [0.5]
    assert apply_overrides({"a": {"b": 1}}, ["a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_grid_counts() -> None:
    assert len(expand(spec())) == 2 * 2 * 2  # rates x methods x seeds
    product = spec("scenarios=[{protocol: entry, train_rates: [0, 0.2], test_rates: [0, 0.3, 0.5]}]")
    cells = expand(product)
    assert len(cells) == 6 * 2 * 2
    assert {c.scenario for c in cells} == {"entry 0", "entry 0→0.3", "entry 0→0.5", "entry 0.2→0",
                                           "entry 0.2→0.3", "entry 0.2→0.5"}
    subsets = expand(spec("scenarios=[{protocol: fixed-subset, subsets: all}, {protocol: none}]"))
    assert len(subsets) == (2 ** 3 - 1 + 1) * 2 * 2  # synthetic has M = 3
    assert len({c.config_hash for c in subsets}) == 8 * 2  # seeds share a config hash
    assert len({(c.config_hash, c.seed) for c in subsets}) == len(subsets)


def test_config_hash_ignores_the_device_and_labels_but_not_parameters() -> None:
    a = {(c.config_hash, c.seed) for c in expand(spec())}
    assert a == {(c.config_hash, c.seed) for c in expand(spec("device=cuda", "methods.1.label=zero"))}
    assert a != {(c.config_hash, c.seed) for c in expand(spec("train.lr=0.01"))}
    # how data is read (workers, prefetch, pinning) is not part of the outcome; the precision is
    assert a == {(c.config_hash, c.seed) for c in expand(spec("train.num_workers=2", "train.pin_memory=false"))}
    assert a != {(c.config_hash, c.seed) for c in expand(spec("train.precision=bf16"))}


@pytest.mark.parametrize("name, cells, fast", [
    ("handwritten_cpm", 6 * 6 * 10, 6 * 3 * 3),
    ("handwritten_tmc", 5 * 1 * 5, 5 * 1 * 2),
    ("handwritten_sample_rate", 4 * 6 * 5, 4 * 3 * 2),
    ("basicmotions_subsets", 4 * (1 + 3) * 5, 4 * 4 * 2),
])
def test_shipped_specs_parse_and_expand(name: str, cells: int, fast: int) -> None:
    text = packaged_specs()[name]
    s = parse_spec(text, name)
    assert s.name == name and s.provenance and s.reference
    assert len(expand(s)) == cells
    assert len(expand(parse_spec(text, name, fast_overrides(s)))) == fast


def test_cpm_spec_carries_the_published_figures() -> None:
    s = parse_spec(packaged_specs()["handwritten_cpm"], "handwritten_cpm")
    figures = {p.method: {v.rate: v.mean for v in p.values} for p in s.published}
    assert figures["CPM-Nets"][0.5] == 91.0
    # The paper's own method runs, and is the row compared with the paper's figure.
    keys = [m.key for m in s.methods]
    assert {"cpm-nets", "cpm-nets-paper-norm"} <= set(keys)
    assert next(p for p in s.published if p.method == "CPM-Nets").ours == "cpm-nets"
    tmc = parse_spec(packaged_specs()["handwritten_tmc"], "handwritten_tmc")
    assert next(p for p in tmc.published if p.method == "TMC").ours == "tmc"
    assert figures["FeatConcat (class-mean imputation)"][0.5] == 87.9
    assert s.split == "random" and s.seeds == list(range(10))
