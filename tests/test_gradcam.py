"""Grad-CAM / Grad-CAM++: reference check against captum, hand-computed case, hook release,
no memory growth, no_grad callers, conformal label sets."""

from __future__ import annotations

import gc
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from medsure.errors import MedsureInputError
from medsure.explain import CAM_METHODS, BaseCAM, GradCAM, GradCAMPlusPlus, cam_method, grad_cam, last_conv_layer
from medsure.models import build_model, gradcam_target_layer


def _model(name: str = "small_cnn", k: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, in_channels=3, num_classes=k, image_size=32)
    # non-trivial BatchNorm statistics so maps are not degenerate
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,layer_fn", [("small_cnn", last_conv_layer), ("resnet18", gradcam_target_layer)])
def test_equals_captum_layer_gradcam(name, layer_fn):
    from captum.attr import LayerAttribution, LayerGradCam

    model = _model(name)
    layer = layer_fn(model)
    x = _images()
    targets = np.array([0, 1, 2, 0, 1, 2])
    ref = LayerGradCam(model, layer).attribute(x, target=torch.as_tensor(targets), relu_attributions=True)
    ours = grad_cam(model, x, targets, target_layer=layer, upsample=False)
    assert float(ref.detach().abs().max()) > 0
    np.testing.assert_allclose(ours, ref[:, 0].detach().numpy(), rtol=1e-4, atol=1e-7)
    ref_up = LayerAttribution.interpolate(ref, (32, 32), interpolate_mode="bilinear")
    ours_up = grad_cam(model, x, targets, target_layer=layer)
    np.testing.assert_allclose(ours_up, ref_up[:, 0].detach().numpy(), rtol=1e-4, atol=1e-7)


def _cam_model() -> nn.Module:
    conv = nn.Conv2d(1, 1, 1, bias=False)
    head = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        head.weight.copy_(torch.tensor([[4.0], [-4.0]]))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()


def test_hand_computed_gradcam_and_plusplus():
    # activation A = x (identity conv), logit_0 = 4 * mean(A): dlogit/dA = 1 everywhere
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    model = _cam_model()
    cam = grad_cam(model, a, np.array([0]), upsample=False)
    np.testing.assert_allclose(cam[0], a[0, 0].numpy())  # weight = mean grad = 1
    # Grad-CAM++: alpha = g^2 / (2 g^2 + sum(A) g^3) = 1 / 12, weight = 4 * 1 * 1/12 = 1/3
    campp = grad_cam(model, a, np.array([0]), method="gradcam++", upsample=False)
    np.testing.assert_allclose(campp[0], a[0, 0].numpy() / 3, rtol=1e-6)
    # class 1 has gradient -1: ReLU removes the (negative) map entirely
    np.testing.assert_allclose(grad_cam(model, a, np.array([1]), upsample=False)[0], 0.0)


def test_label_sets_match_single_targets_and_batching():
    model = _model()
    x = _images(5)
    sets = [[0, 2], [1], [], [2, 1, 0], [0]]
    with GradCAM(model, batch_size=2) as cam:
        multi = cam(x, sets)
        for c in range(3):
            single = cam(x, np.full(5, c))
            for i, labels in enumerate(sets):
                for j, label in enumerate(labels):
                    if label == c:
                        np.testing.assert_allclose(multi[i][j], single[i], rtol=1e-5, atol=1e-8)
    assert multi[2].shape == (0, 32, 32)
    big = grad_cam(model, x, np.full(5, 1), batch_size=32)
    small = grad_cam(model, x, np.full(5, 1), batch_size=2)
    np.testing.assert_allclose(big, small, rtol=1e-5, atol=1e-8)


def test_default_target_is_predicted_class():
    model = _model()
    x = _images(4)
    with torch.no_grad():
        predicted = model(x).argmax(1).numpy()
    np.testing.assert_allclose(grad_cam(model, x), grad_cam(model, x, predicted))


def test_works_inside_no_grad_with_frozen_model_and_leaves_no_grads():
    model = _model()
    for p in model.parameters():
        p.requires_grad_(False)
    x = _images(3)
    targets = np.array([0, 1, 2])
    with torch.no_grad():
        inside = grad_cam(model, x, targets)
    for p in model.parameters():
        p.requires_grad_(True)
    outside = grad_cam(model, x, targets)
    np.testing.assert_allclose(inside, outside, rtol=1e-5, atol=1e-8)
    assert all(p.grad is None for p in model.parameters())
    assert torch.is_grad_enabled()


def test_hooks_released_even_on_error():
    model = _model()
    layer = last_conv_layer(model)
    with GradCAM(model) as cam:
        assert len(layer._forward_hooks) == 1
        cam(_images(2), np.array([0, 1]))
    assert len(layer._forward_hooks) == 0
    with pytest.raises(MedsureInputError, match="out of range"), GradCAM(model) as cam:
        cam(_images(2), np.array([0, 7]))
    assert len(layer._forward_hooks) == 0
    grad_cam(model, _images(2))
    assert len(layer._forward_hooks) == 0


def test_no_memory_growth_over_1000_calls():
    model = _cam_model()
    x = torch.rand(2, 1, 4, 4)
    targets = np.array([0, 1])
    layer = model[0]

    def count_tensors() -> int:
        gc.collect()
        with warnings.catch_warnings():  # isinstance on deprecated torch objects warns
            warnings.simplefilter("ignore")
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    for _ in range(20):  # warm-up: lazy imports and caches
        grad_cam(model, x, targets)
    before = count_tensors()
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for _ in range(1000):
        grad_cam(model, x, targets)
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    assert count_tensors() == before
    assert len(layer._forward_hooks) == 0
    assert growth < 200_000  # bytes; a leak of one small map per call would exceed this


def test_input_errors():
    model = _model()
    with pytest.raises(MedsureInputError, match="images"):
        grad_cam(model, torch.rand(3, 32, 32))
    with pytest.raises(MedsureInputError, match="targets"):
        grad_cam(model, _images(2), np.array([0, 1, 2]))
    with pytest.raises(MedsureInputError, match="method"):
        grad_cam(model, _images(2), method="scorecam")
    with pytest.raises(MedsureInputError, match=r"--method: got 'scorecam'; expected one of 'gradcam', 'gradcam\+\+'"):
        cam_method("scorecam", what="--method")
    with pytest.raises(MedsureInputError, match=r"no nn\.Conv2d"):
        last_conv_layer(nn.Linear(2, 2))


def test_registry_names_one_class_per_method_over_the_base():
    assert {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus} == CAM_METHODS
    for name, cls in CAM_METHODS.items():
        assert issubclass(cls, BaseCAM) and cls.name == name and cam_method(name) is cls
    model = _model()
    x = _images(3)
    targets = np.array([0, 1, 2])
    # the registry's class is the method grad_cam runs
    np.testing.assert_array_equal(grad_cam(model, x, targets, method="gradcam++"), GradCAMPlusPlus(model)(x, targets))
    assert not np.allclose(GradCAMPlusPlus(model)(x, targets), GradCAM(model)(x, targets))


def test_gradcam_plusplus_matches_the_pytorch_grad_cam_formula_by_hand():
    # pytorch-grad-cam's GradCAMPlusPlus.get_cam_weights, written out on one random layer output
    torch.manual_seed(0)
    act, grad = torch.rand(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    g2, g3 = grad**2, grad**3
    sum_act = act.sum(dim=(2, 3), keepdim=True)
    denom = 2 * g2 + sum_act * g3
    aij = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    aij = torch.where(grad != 0, aij, torch.zeros_like(aij))
    expected = (torch.clamp(grad, min=0) * aij).sum(dim=(2, 3), keepdim=True)
    ours = GradCAMPlusPlus(_cam_model()).channel_weights(act, grad)
    torch.testing.assert_close(ours, expected)
