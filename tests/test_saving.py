"""Rebuildable, savable models: get_params / clone, spec to_dict / from_dict, FittedModel.save
and mlmm.load (weights + JSON manifest, nothing that executes on load), bad model directories."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import mlmm
from mlmm.data import DatasetSpec, ModalitySpec, MultimodalDataset, TaskSpec
from mlmm.methods import METHODS
from mlmm.train import ModelFileError, TrainConfig, Trainer, build_method, load

SPEC = DatasetSpec("toy", (ModalitySpec("a", "vector", (5,)), ModalitySpec("b", "vector", (3,))),
                   TaskSpec("classification", n_classes=3))
FAST = TrainConfig(max_epochs=3, patience=3)


def _data(n: int = 60, seed: int = 0, labels: bool = True) -> MultimodalDataset:
    g = np.random.default_rng(seed)
    y = g.integers(0, 3, n)
    a = g.normal(size=(n, 5)).astype(np.float32) + y[:, None]
    b = g.normal(size=(n, 3)).astype(np.float32) - y[:, None]
    mask = np.ones((n, 2), bool)
    mask[::4, 0] = False
    mask[1::4, 1] = False
    return MultimodalDataset(SPEC, {"a": a, "b": b}, y if labels else None, mask, class_names=("cat", "dog", "eel"))


def _fit(name: str, **params):
    data = _data()
    method = build_method(name, SPEC, seed=0, **params)
    return Trainer(FAST).fit(method, data.subset(np.arange(40)), data.subset(np.arange(40, 60)), seed=0).model


def test_spec_round_trips_through_json():
    spec = DatasetSpec("x", (ModalitySpec("img", "image", (1, 4, 4)), ModalitySpec("s", "sequence", (7, 2))),
                       TaskSpec("regression", n_outputs=2))
    assert DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="unknown field 'colour'"):
        ModalitySpec.from_dict({"name": "a", "kind": "vector", "shape": [3], "colour": "red"})
    with pytest.raises(ValueError, match="field 'modalities' is missing"):
        DatasetSpec.from_dict({"name": "x"})


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_reports_its_parameters_and_clones(name):
    spec = DatasetSpec("toy", (ModalitySpec("a", "vector", (5,)), ModalitySpec("b", "vector", (3,))),
                       TaskSpec("classification", n_classes=3))
    method = build_method(name, spec, seed=0)
    params = method.get_params()
    json.dumps({k: v for k, v in params.items() if not isinstance(v, (nn.Module, type))}, default=list)
    copy = mlmm.clone(method)
    assert type(copy) is type(method) and copy.get_params() == params and copy is not method
    assert set(copy.state_dict()) == set(method.state_dict())
    # The copy is built, not copied: it shares no tensor with the original.
    ptrs = {p.data_ptr() for p in method.parameters() if p.numel()}
    assert not any(p.data_ptr() in ptrs for p in copy.parameters() if p.numel())


def test_get_params_records_the_outermost_call_with_defaults():
    method = build_method("masked-mean", SPEC, embed_dim=16)
    assert method.get_params()["embed_dim"] == 16 and "dropout" in method.get_params()
    other = build_method("masked-max", SPEC, embed_dim=8)  # a subclass calling super().__init__
    assert other.get_params()["embed_dim"] == 8


@pytest.mark.parametrize("name", ["masked-mean", "pattern-router", "mmin"])
def test_save_load_predicts_the_same(tmp_path, name):
    data = _data(seed=0)
    if name == "mmin":  # needs complete training samples
        data = MultimodalDataset(SPEC, data.inputs, data.target, None, class_names=data.class_names)
        method = build_method(name, SPEC, seed=0, embed_dim=8)
        model = Trainer(FAST).fit(method, data.subset(np.arange(40)), data.subset(np.arange(40, 60)), seed=0).model
    else:
        model = _fit(name)
    new = _data(seed=1, labels=False)
    before = model.predict_logits(new)
    path = model.save(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "weights.safetensors"]
    rng = torch.get_rng_state()
    loaded = load(path)
    assert torch.equal(torch.get_rng_state(), rng)  # loading leaves the caller's RNG alone
    assert torch.equal(loaded.predict_logits(new), before)
    assert list(loaded.predict(new)) == list(model.predict(new))
    assert set(loaded.predict(new)) <= {"cat", "dog", "eel"}
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["method"] == name and manifest["spec"] == SPEC.to_dict()
    assert manifest["class_names"] == ["cat", "dog", "eel"] and manifest["format_version"] == 1
    assert "torch_version" in manifest and "mlmm_version" in manifest


def test_router_calibration_log_survives_reload(tmp_path):
    model = _fit("pattern-router", min_count=1)
    log = model.method.calibration
    assert log, "the router calibrated nothing"
    loaded = load(model.save(tmp_path / "m"))
    assert loaded.method.calibration == log
    assert torch.equal(loaded.method.route_experts, model.method.route_experts)


def test_training_rows_are_not_saved_unless_prediction_needs_them(tmp_path):
    data = _data()
    full = MultimodalDataset(SPEC, data.inputs, data.target, None)
    method = build_method("mmin", SPEC, seed=0, embed_dim=8)
    model = Trainer(FAST).fit(method, full.subset(np.arange(40)), full.subset(np.arange(40, 60)), seed=0).model
    # mmin keeps no training rows at all (its teacher sees the complete batch the loop hands it).
    assert not any(k.startswith(("row_", "bank_")) for k in model.method.state_dict())
    path = model.save(tmp_path / "m")
    from safetensors.torch import load_file

    assert not any(k.startswith(("method.row_", "method.bank_")) for k in load_file(str(path / "weights.safetensors")))
    bank_model = _fit("retrieval-fill")  # retrieval at prediction reads its bank: kept, and said why
    kept = json.loads((bank_model.save(tmp_path / "r") / "manifest.json").read_text())["training_state"]["kept"]
    assert kept.get("method.bank_x0")


class TinyEncoder(nn.Module):
    """A user encoder whose constructor arguments are stored under their own names."""

    def __init__(self, in_dim: int, out_dim: int = 4) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.net = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        return self.net(x)


def test_module_parameters_are_recorded_by_class_path_and_parameters():
    from mlmm.train.saving import decode, encode

    enc = encode({"a": TinyEncoder(5, out_dim=6), "kind": TinyEncoder, "t": (1, 2)}, "p")
    assert enc["a"] == {"$module": f"{__name__}:TinyEncoder", "params": {"in_dim": 5, "out_dim": 6}}
    back = decode(enc, "p")
    assert isinstance(back["a"], TinyEncoder) and back["a"].out_dim == 6 and back["kind"] is TinyEncoder
    assert back["t"] == (1, 2)


def test_load_never_imports_or_calls_what_a_manifest_names():
    from mlmm.train.saving import decode

    with pytest.raises(ModelFileError, match="not imported"):
        decode({"$module": "some_module_never_imported_xyz:Thing", "params": {}}, "p")
    with pytest.raises(ModelFileError, match="not a subclass of Module"):
        decode({"$module": "subprocess:Popen", "params": {"args": ["true"]}}, "p")
    with pytest.raises(ModelFileError, match="constructor parameters are unknown"):
        decode({"$module": f"{__name__}:TinyEncoder", "params": None}, "p")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model"
    _fit("masked-mean").save(path)
    return path


def _copy(saved, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(saved, dst)
    return dst


def test_bad_model_directories_name_the_file(saved, tmp_path):
    with pytest.raises(ModelFileError, match="no such model directory"):
        load(tmp_path / "nowhere")
    d = _copy(saved, tmp_path)
    (d / "weights.safetensors").unlink()
    with pytest.raises(ModelFileError, match=r"weights\.safetensors: missing"):
        load(d)
    d = _copy(saved, tmp_path / "2")
    (d / "manifest.json").unlink()
    with pytest.raises(ModelFileError, match=r"manifest\.json: missing"):
        load(d)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format_version=99), "format_version 99 is not supported.*newer mlmm"),
    (lambda m: m.update(format="other"), "not an mlmm model manifest"),
    (lambda m: m.pop("spec"), "field 'spec' is missing"),
    (lambda m: m.update(method="no-such-method"), "method 'no-such-method' is not registered"),
    (lambda m: m["params"].update(embed_dim=7), "weights do not match the method"),
    (lambda m: m["params"].update(colour=1), "cannot rebuild method 'masked-mean'"),
    (lambda m: m["spec"]["modalities"][0].update(shape=[9]), "weights do not match|does not fit the spec"),
    (lambda m: m["standardizer"].update(mean_a=[0.0]), "'standardizer' does not fit the spec"),
])
def test_tampered_manifest_is_a_clear_error(saved, tmp_path, edit, message):
    d = _copy(saved, tmp_path)
    manifest = json.loads((d / "manifest.json").read_text())
    edit(manifest)
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match=message) as err:
        load(d)
    assert str(d) in str(err.value)


def test_weights_not_matching_are_named(saved, tmp_path):
    d = _copy(saved, tmp_path)
    data = (d / "weights.safetensors").read_bytes()
    (d / "weights.safetensors").write_bytes(data[:-8] + b"\0" * 8)
    with pytest.raises(ModelFileError, match=r"weights\.safetensors: its SHA-256 differs"):
        load(d)
    # A consistent checksum but other weights (another model's file): named as not matching.
    from safetensors.torch import load_file, save_file

    d2 = _copy(saved, tmp_path / "b")
    tensors = load_file(str(d2 / "weights.safetensors"))
    tensors.pop(next(k for k in tensors if k.startswith("method.")))
    save_file(tensors, str(d2 / "weights.safetensors"))
    manifest = json.loads((d2 / "manifest.json").read_text())
    from mlmm.train.saving import _sha256

    manifest["weights_sha256"] = _sha256(d2 / "weights.safetensors")
    (d2 / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match=r"weights\.safetensors: the weights do not match .* lacks"):
        load(d2)


def test_save_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="non-empty directory"):
        _fit("masked-mean").save(tmp_path)


def test_torch_state_dict_loads_with_weights_only(tmp_path):
    model = _fit("pattern-router", min_count=1)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    state = torch.load(tmp_path / "sd.pt", weights_only=True)
    fresh = mlmm.FittedModel(mlmm.Standardizer(SPEC), build_method("pattern-router", SPEC, min_count=1))
    fresh.load_state_dict(state)
    new = _data(seed=2, labels=False)
    assert torch.equal(fresh.predict_logits(new), model.predict_logits(new))


@pytest.mark.parametrize("name", [n for n in METHODS.names() if METHODS.get(n).training_state])
def test_training_state_declarations_name_real_state(name):
    from fnmatch import fnmatch

    keys = list(build_method(name, SPEC, seed=0).state_dict())
    for pattern in METHODS.get(name).training_state:
        assert any(fnmatch(k, pattern) or k.startswith(pattern + ".") for k in keys), (name, pattern)
