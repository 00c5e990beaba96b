"""Model builders: shapes, stems, dropout, validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medsure.errors import MedsureInputError
from medsure.models import build_model, gradcam_target_layer
from medsure.models.resnet import ResNet
from test_training import single_thread  # noqa: F401 (autouse fixture: one torch thread)


def _first_stride(model: nn.Module) -> int:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d)).stride[0]


@pytest.mark.parametrize("size, stride, has_pool", [(28, 1, False), (64, 2, False), (128, 2, True)])
def test_resnet18_stem_depends_on_image_size(size: int, stride: int, has_pool: bool) -> None:
    model = build_model("resnet18", in_channels=1, num_classes=3, image_size=size)
    assert _first_stride(model) == stride
    assert any(isinstance(m, nn.MaxPool2d) for m in model.net.stem) == has_pool
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 1, size, size))
    assert out.shape == (2, 3)


def test_resnet_sizes_match_the_reference_architectures() -> None:
    # torchvision's ResNet-18/50 have 11.69M / 25.56M parameters with a 1000-class head and a
    # 7x7 RGB stem; ours with 2 classes and 3x3 grey stem must differ exactly by head + stem.
    r18 = build_model("resnet18", in_channels=3, num_classes=1000, image_size=224)
    r50 = build_model("resnet50", in_channels=3, num_classes=1000, image_size=224)
    assert sum(p.numel() for p in r18.parameters()) == 11_689_512
    assert sum(p.numel() for p in r50.parameters()) == 25_557_032


@pytest.mark.parametrize("name", ["small_cnn", "resnet18"])
@pytest.mark.parametrize("size", [28, 64])
def test_classifier_output_shape(name: str, size: int) -> None:
    model = build_model(name, in_channels=3, num_classes=4, image_size=size).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 3, size, size)).shape == (3, 4)


@pytest.mark.parametrize("size", [48, 64, 28])
def test_unet_keeps_spatial_size(size: int) -> None:
    model = build_model("unet", in_channels=1, num_classes=3, image_size=size).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, size, size)).shape == (2, 3, size, size)


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "unet"])
def test_dropout_layers_only_when_requested(name: str) -> None:
    def n_dropout(model: nn.Module) -> int:
        return sum(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())

    without = build_model(name, in_channels=1, num_classes=2, image_size=32)
    with_dropout = build_model(name, in_channels=1, num_classes=2, image_size=32, dropout=0.3)
    assert n_dropout(without) == 0
    assert n_dropout(with_dropout) >= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"name": "vgg"},
            r"^model name: got 'vgg'; expected one of 'resnet18', 'resnet50', 'small_cnn', 'unet', 'uml', "
            r"'uml_no_navigator', 'uml_no_instructor', 'uml_separate'$",
        ),
        ({"num_classes": 1}, r"^num_classes: got 1; expected an integer >= 2\. Background counts"),
        ({"dropout": 1.0}, r"^dropout: got 1\.0; expected a finite number in \[0\.0, 1\.0\)$"),
        ({"in_channels": 0}, r"^in_channels: got 0; expected an integer >= 1$"),
        ({"name": "unet", "image_size": 27}, r"^image_size: got 27; expected an even size for the U-Net"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    args = {"name": "small_cnn", "in_channels": 1, "num_classes": 2, "image_size": 28, **kwargs}
    name = args.pop("name")
    with pytest.raises(MedsureInputError, match=message):
        build_model(name, **args)


def test_models_take_unit_range_images_and_normalise_inside() -> None:
    model = build_model("small_cnn", in_channels=1, num_classes=2, image_size=28).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        direct = model.net((x - 0.5) / 0.25)
        assert torch.allclose(model(x), direct)


def test_gradcam_target_layer_is_last_stage() -> None:
    model = build_model("resnet18", in_channels=1, num_classes=2, image_size=28)
    assert isinstance(model.net, ResNet)
    assert gradcam_target_layer(model) is model.net.layers[-1]
    with pytest.raises(MedsureInputError, match=r"^Grad-CAM target layer of the model: got a UNet, .*\. Pass a target"):
        gradcam_target_layer(build_model("unet", in_channels=1, num_classes=2, image_size=32))
