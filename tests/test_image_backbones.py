"""Image backbones from local weight files only (mlmm.components.image_backbones): loading, the
errors of a missing or unfitting file, random initialisation declared, the head removed, use as an
encoder and as a feature-cache backbone. torchvision / timm themselves are stood in for by small
fake modules (their wheels need a matching torch build), so what is tested is mlmm's side: which
call is made (never with pretrained weights) and what is done with the model."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from mlmm import build_method
from mlmm.components.image_backbones import ImageBackbone, image_backbone_by_name
from mlmm.components.injection import ComponentChoices
from mlmm.components.pretrained_backbone import MissingExtraError
from mlmm.data import DatasetSpec, ModalitySpec, TaskSpec
from mlmm.data.batch import make_batch


class TinyNet(nn.Module):
    """A torchvision-shaped classifier: features -> pool -> fc (the head)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(1)
    net = TinyNet()
    net.bn.running_mean.fill_(0.25)
    torch.save(net.state_dict(), tmp_path / "tiny.pth")
    return tmp_path / "tiny.pth", net


def test_weights_come_from_the_local_file_and_the_head_is_removed(weights, tmp_path):
    path, net = weights
    backbone = ImageBackbone(TinyNet(), path)
    assert torch.equal(backbone.model.conv.weight, net.conv.weight)
    assert torch.equal(backbone.model.bn.running_mean, net.bn.running_mean)
    assert isinstance(backbone.model.fc, nn.Identity) and backbone.head_removed == "fc"
    out = backbone(torch.rand(2, 1, 8, 8))  # one channel repeated to three
    assert out.shape == (2, 6)
    assert backbone.pretrained and backbone.feature_config["weights"] == "tiny.pth"
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training  # frozen: BatchNorm statistics never move
    from safetensors.torch import save_file

    save_file(net.state_dict(), str(tmp_path / "tiny.safetensors"))
    same = ImageBackbone(TinyNet(), tmp_path / "tiny.safetensors")
    x = torch.rand(3, 3, 5, 5)
    assert torch.equal(same(x), backbone(x))


def test_missing_or_unfitting_weights_are_clear_errors(weights, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"weights file for module 'TinyNet' not found: '.*nowhere\.pth'"):
        ImageBackbone(TinyNet(), tmp_path / "nowhere.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"weights file '.*other\.pth' does not fit module 'TinyNet'"):
        ImageBackbone(TinyNet(), tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"weights file '.*junk\.pth' for module 'TinyNet' could not be read"):
        ImageBackbone(TinyNet(), tmp_path / "junk.pth")


def test_no_weights_is_random_initialisation_declared():
    backbone = ImageBackbone(TinyNet(), None)
    assert not backbone.pretrained and backbone.feature_config["weights"] == "random-init"


@pytest.fixture
def fake_libraries(monkeypatch):
    """Stand-ins for torchvision.models and timm that record how mlmm calls them."""
    calls = []
    tv, tv_models, timm = types.ModuleType("torchvision"), types.ModuleType("torchvision.models"), \
        types.ModuleType("timm")

    def get_model(name, weights="DEFAULT"):
        calls.append(("torchvision", name, weights))
        if name != "tinynet":
            raise ValueError(f"Unknown model {name}")
        return TinyNet()

    class TimmNet(TinyNet):
        def reset_classifier(self, n):
            assert n == 0
            self.fc = nn.Identity()

    def create_model(name, pretrained=True):
        calls.append(("timm", name, pretrained))
        return TimmNet()

    tv_models.get_model, timm.create_model, tv.models = get_model, create_model, tv_models
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.models", tv_models)
    monkeypatch.setitem(sys.modules, "timm", timm)
    return calls


def test_library_architectures_are_built_without_downloading(fake_libraries, weights):
    path, net = weights
    tv = image_backbone_by_name(f"torchvision:tinynet:{path}")
    tm = image_backbone_by_name(f"timm:tinynet:{path}")
    assert fake_libraries == [("torchvision", "tinynet", None), ("timm", "tinynet", False)]
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(tv(x), tm(x)) and tv(x).shape == (2, 6)
    assert tm.head_removed == "reset_classifier(0)" and tv.feature_config["library"] == "torchvision"
    assert not image_backbone_by_name("torchvision:tinynet").pretrained
    with pytest.raises(ValueError, match="torchvision has no architecture 'resnet999'"):
        image_backbone_by_name("torchvision:resnet999")
    with pytest.raises(ValueError, match="must be 'torchvision:<arch>"):
        image_backbone_by_name("keras:resnet18")


def test_a_missing_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(MissingExtraError, match=r"mlmm\[vision\]"):
        image_backbone_by_name("torchvision:resnet18")


def test_usable_as_any_methods_encoder_by_instance_and_by_name(fake_libraries, weights):
    path, _ = weights
    spec = DatasetSpec("t", (ModalitySpec("image", "image", (1, 6, 6)), ModalitySpec("v", "vector", (3,))),
                       TaskSpec("classification", n_classes=2))
    for choice in (ImageBackbone(TinyNet(), path), f"torchvision:tinynet:{path}"):
        assert ComponentChoices(spec, {"image": choice}).preprocessing()["image"] == "none"
        method = build_method("masked-mean", spec, seed=0, encoders={"image": choice})
        backbones = [m for m in method.modules() if isinstance(m, ImageBackbone)]
        assert len(backbones) == 1 and not any(p.requires_grad for p in backbones[0].parameters())
        batch = make_batch(spec, {"image": torch.rand(4, 1, 6, 6), "v": torch.randn(4, 3)},
                           torch.ones(4, 2, dtype=torch.bool), torch.tensor([0, 1, 0, 1]))
        assert method(batch).logits.shape == (4, 2)
