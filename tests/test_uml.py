"""The UML joint model: shapes, and ablation switches that really remove their connections."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsure.errors import MedsureInputError
from medsure.models import JOINT_MODELS, build_model, count_parameters, task_of
from medsure.models.uml import UML


def _net(name: str, **kw) -> torch.nn.Module:
    defaults = {"in_channels": 3, "num_classes": 3, "image_size": 32, "width": 8}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(name, **{**defaults, **kw}).eval()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [30, 36, 48, 64])
def test_shapes_for_channels_and_sizes(channels, size):
    model = _net("uml", in_channels=channels, image_size=size, num_classes=4, num_seg_classes=3)
    with torch.no_grad():
        out = model(torch.rand(2, channels, size, size))
    assert out["class"].shape == (2, 4)
    assert out["seg"].shape == out["seg_initial"].shape == (2, 3, size, size)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_registry_and_task():
    assert set(JOINT_MODELS) == {"uml", "uml_no_navigator", "uml_no_instructor", "uml_separate"}
    assert all(task_of(m) == "joint" for m in JOINT_MODELS)
    with pytest.raises(MedsureInputError, match="image_size: got 31"):
        _net("uml", image_size=31)
    with pytest.raises(MedsureInputError, match="instructor=False for separate networks"):
        UML(1, 2, image_size=32, shared=False, instructor=True)


def _module_params(model: torch.nn.Module, attr: str) -> int:
    part = getattr(model.net, attr)
    return 0 if part is None else count_parameters(part)


def test_ablations_remove_exactly_their_modules():
    full, no_nav, no_ins, sep = (_net(m) for m in ("uml", "uml_no_navigator", "uml_no_instructor", "uml_separate"))
    nav = _module_params(full, "navigator") + _module_params(full, "seg_head")
    ins = _module_params(full, "instructor")
    assert nav > 0 and ins > 0
    assert count_parameters(full) - count_parameters(no_nav) == nav
    assert count_parameters(full) - count_parameters(no_ins) == ins
    # separate networks: a second encoder, neither navigator nor instructor
    assert count_parameters(sep) == count_parameters(full) - nav - ins + _module_params(full, "encoder")
    assert no_nav.net.navigator is None and no_ins.net.instructor is None
    assert sep.net.cls_encoder is not None and sep.net.instructor is None and sep.net.navigator is None


def _grad_norm(model: torch.nn.Module, output: str, part: str) -> float:
    model.zero_grad()
    out = model(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    out[output].sum().backward()
    grads = [p.grad for p in getattr(model.net, part).parameters() if p.grad is not None]
    return float(sum(g.abs().sum() for g in grads)) if grads else 0.0


def test_connections_by_gradients_and_hooks():
    full, no_nav, no_ins, sep = (_net(m) for m in ("uml", "uml_no_navigator", "uml_no_instructor", "uml_separate"))
    # instructor: the class output depends on the segmentation decoder only through it
    assert _grad_norm(full, "class", "decoder") > 0
    assert _grad_norm(no_ins, "class", "decoder") == 0.0
    # separate networks: neither task reaches the other's encoder
    assert _grad_norm(sep, "class", "encoder") == 0.0
    assert _grad_norm(sep, "seg", "cls_encoder") == 0.0
    assert _grad_norm(full, "class", "encoder") > 0 and _grad_norm(full, "seg", "encoder") > 0
    # navigator: runs in the full model, the final mask is the initial one without it
    calls = []
    handle = full.net.navigator.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        full(torch.rand(1, 3, 32, 32))
        out = no_nav(torch.rand(1, 3, 32, 32))
    handle.remove()
    assert calls == [1]
    assert out["seg"] is out["seg_initial"]


def test_navigator_reads_the_uncertainty_map():
    """The refined segmentation changes when the initial segmentation's uncertainty changes."""
    model = _net("uml").net
    decoded = torch.rand(1, 8, 32, 32, generator=torch.Generator().manual_seed(2))
    low, high = torch.full((1, 1, 32, 32), 0.05), torch.full((1, 1, 32, 32), 0.95)
    with torch.no_grad():
        assert not torch.allclose(model.navigator(decoded, low), model.navigator(decoded, high))


def _tiny_joint(n: int, seed: int):
    from medsure.data.joint import make_joint

    gen = np.random.default_rng(seed)
    labels = gen.integers(0, 2, n)
    images = gen.integers(0, 60, (n, 16, 16, 1)).astype(np.uint8)
    masks = np.zeros((n, 16, 16), np.int64)
    for i, y in enumerate(labels):  # class 1: a big bright lesion, class 0: a small one
        r = 6 if y else 3
        masks[i, 8 - r : 8 + r, 8 - r : 8 + r] = 1
    images[masks == 1] += 150
    return make_joint(images, masks, labels, np.asarray([f"c{i}" for i in range(n)]), image_class_names=["s", "b"])


def test_joint_training_resumes_to_the_uninterrupted_weights(tmp_path):
    from medsure.training import TrainConfig, train

    data = {"train": _tiny_joint(24, 0), "val": _tiny_joint(8, 1)}
    config = TrainConfig(
        model="uml", epochs=2, batch_size=8, patience=0, num_threads=1, width=4, augment=True, kl_annealing_epochs=2
    )
    whole = train(config, data, tmp_path / "whole")

    def stop_after_first(epoch, _record):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, data, tmp_path / "resumed", on_epoch_end=stop_after_first)
    resumed = train(config, data, tmp_path / "resumed", resume=True)
    for a, b in zip(whole.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [h["val_joint"] for h in whole.history] == [h["val_joint"] for h in resumed.history]
    assert whole.run.task == "joint" and whole.history[-1]["monitor"] == "joint"
