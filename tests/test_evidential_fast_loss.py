"""The fast paths of the evidential loss (vectorised digamma, closed forms for K = 2, fused Dice)
give the values and gradients of the general formulas they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import digamma, polygamma

from medsure.errors import MedsureInputError
from medsure.evidential import EvidentialLoss, evidential_data_term, kl_to_uniform, soft_dice_loss
from medsure.evidential.losses import _binary_loss, _soft_dice_of_alpha, fast_digamma
from medsure.training.losses import UMLLoss


def _values() -> np.ndarray:
    gen = np.random.default_rng(0)
    return np.r_[np.logspace(-3, 30, 500), 1 + 30 * gen.random(2000), [1.0, 2.0, 1e6]]


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-9), (torch.float32, 2e-6)])
def test_fast_digamma_and_its_derivative_against_scipy(dtype, rtol):
    x = _values()
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    value = fast_digamma(xt)
    (grad,) = torch.autograd.grad(value.sum(), xt)
    assert value.dtype == dtype
    # relative error, with an absolute floor of rtol where psi crosses 0 (near 1.4616)
    np.testing.assert_allclose(value.detach().numpy(), digamma(x), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(grad.numpy(), polygamma(1, x), rtol=rtol, atol=0)


def test_fast_digamma_gradcheck():
    x = (0.5 + 4 * torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))).requires_grad_()
    assert torch.autograd.gradcheck(fast_digamma, (x,))


def _reference(alpha: torch.Tensor, targets: torch.Tensor, kind: str, coefficient: float, dice: float):
    """The general K formulas of the module (one-hot, kl_to_uniform, autograd Dice)."""
    y = torch.movedim(torch.nn.functional.one_hot(targets, alpha.shape[1]), -1, 1).to(alpha.dtype)
    loss = evidential_data_term(alpha, targets, kind).mean() + coefficient * kl_to_uniform(y + (1 - y) * alpha).mean()
    if dice:
        loss = loss + dice * soft_dice_loss(alpha / alpha.sum(1, keepdim=True), targets)
    return loss


@pytest.mark.parametrize("kind", ["digamma", "log", "mse"])
@pytest.mark.parametrize("epoch", [0, 3, 20])
@pytest.mark.parametrize("shape", [(7, 2), (3, 2, 5, 6)])
def test_binary_loss_equals_the_general_formulas(kind, epoch, shape):
    gen = torch.Generator().manual_seed(epoch)
    alpha = (1 + 40 * torch.rand(*shape, generator=gen, dtype=torch.float64) ** 3).requires_grad_()
    targets = torch.randint(0, 2, (shape[0], *shape[2:]), generator=gen)
    dice = 1.0 if len(shape) > 2 else 0.0
    loss = EvidentialLoss(kind=kind, annealing_epochs=10, dice_weight=dice)
    loss.on_epoch(epoch)
    got = loss.from_alpha(alpha, targets)
    (got_grad,) = torch.autograd.grad(2.5 * got, alpha)
    want = _reference(alpha, targets, kind, min(1.0, epoch / 10), dice)
    (want_grad,) = torch.autograd.grad(2.5 * want, alpha)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(got_grad.numpy(), want_grad.numpy(), rtol=1e-8, atol=1e-12)


def test_binary_kl_is_the_closed_form_of_dir_1_b():
    # KL(Dir(1, b) || Dir(1, 1)) = log b - (b - 1) / b: against torch.distributions
    b = torch.tensor([1.0, 1.5, 4.0, 300.0], dtype=torch.float64)
    alpha = torch.stack([torch.full_like(b, 7.0), b], dim=1)  # class 0 is true: its 7 is ignored
    got = _binary_loss(alpha, torch.zeros(4, dtype=torch.long), "log", 1.0) - _binary_loss(
        alpha, torch.zeros(4, dtype=torch.long), "log", 0.0
    )
    ones = torch.ones(2, dtype=torch.float64)
    want = np.mean(
        [
            float(
                torch.distributions.kl_divergence(
                    torch.distributions.Dirichlet(torch.stack([ones[0], v])), torch.distributions.Dirichlet(ones)
                )
            )
            for v in b
        ]
    )
    assert float(got) == pytest.approx(want, rel=1e-12)
    assert float(got) == pytest.approx(float((torch.log(b) - (b - 1) / b).mean()), rel=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_fused_dice_value_and_gradient(k):
    gen = torch.Generator().manual_seed(k)
    alpha = (1 + 5 * torch.rand(3, k, 6, 7, generator=gen, dtype=torch.float64)).requires_grad_()
    masks = torch.randint(0, k, (3, 6, 7), generator=gen)
    masks[0] = 0  # an image without foreground: the smoothing term matters there
    got = _soft_dice_of_alpha(alpha, masks)
    (got_grad,) = torch.autograd.grad(got, alpha)
    want = soft_dice_loss(alpha / alpha.sum(1, keepdim=True), masks)
    (want_grad,) = torch.autograd.grad(want, alpha)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
    np.testing.assert_allclose(got_grad.numpy(), want_grad.numpy(), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("kind", ["mse", "log", "digamma"])
@pytest.mark.parametrize("function", ["relu", "softplus", "exp"])
def test_binary_gradients_finite_at_alpha_one_and_huge_evidence(kind, function):
    outputs = torch.tensor(
        [[[[-50.0, 1e6]], [[-50.0, -1e6]]], [[[1e30, 0.0]], [[1e30, 3.0]]]], requires_grad=True
    )  # (2, 2, 1, 2)
    loss = EvidentialLoss(kind=kind, evidence=function, annealing_epochs=1, dice_weight=1.0)
    loss.on_epoch(1)
    value = loss(outputs, torch.tensor([[[0, 1]], [[1, 0]]]))
    value.backward()
    assert torch.isfinite(value)
    assert outputs.grad is not None and torch.isfinite(outputs.grad).all()


def test_uml_loss_value_is_unchanged_by_the_fast_paths():
    """The UML objective on float32 maps equals the general formulas (as before the fast paths)."""
    gen = torch.Generator().manual_seed(0)
    outputs = {
        "class": torch.randn(4, 3, generator=gen),
        "seg": 3 * torch.randn(4, 2, 16, 16, generator=gen),
        "seg_initial": 3 * torch.randn(4, 2, 16, 16, generator=gen),
    }
    masks, labels = (torch.rand(4, 16, 16, generator=gen) > 0.6).long(), torch.randint(0, 3, (4,), generator=gen)
    loss = UMLLoss()
    loss.on_epoch(4)
    got = loss(outputs, (masks, labels))
    alpha = {k: torch.nn.functional.softplus(v.double()) + 1 for k, v in outputs.items()}
    coefficient = 0.4
    want = (
        _reference(alpha["class"], labels, "digamma", coefficient, 0.0)
        + _reference(alpha["seg"], masks, "digamma", coefficient, 1.0)
        + 0.5 * _reference(alpha["seg_initial"], masks, "digamma", coefficient, 1.0)
    )
    assert float(got) == pytest.approx(float(want), rel=1e-6)


def test_binary_path_refuses_bad_targets():
    with pytest.raises(MedsureInputError, match=r"targets: got labels in \[0, 2\]; expected labels in \[0, 2\)"):
        EvidentialLoss()(torch.zeros(1, 2, 2, 2), torch.tensor([[[0, 1], [2, 0]]]))
    with pytest.raises(MedsureInputError, match="integer class labels"):
        EvidentialLoss()(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2))
