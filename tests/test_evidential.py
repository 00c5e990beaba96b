"""Evidential outputs and losses: hand-computed values, closed forms against Monte Carlo and
references, gradients at the extremes, and what evidential training does on a toy problem."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import digamma, gammaln
from scipy.stats import dirichlet as scipy_dirichlet

from medsure.errors import MedsureInputError
from medsure.evidential import (
    EvidentialLoss,
    alpha_from_outputs,
    annealing_coefficient,
    check_concentration,
    dirichlet_summary,
    dissonance,
    evidence,
    evidential_data_term,
    expected_entropy,
    expected_probability,
    kl_to_uniform,
    soft_dice_loss,
    vacuity,
)

ALPHA = np.array([[3.0, 1.0, 2.0], [1.0, 1.0, 1.0], [10.0, 10.0, 1.0]])
LABELS = np.array([0, 2, 1])


# ---- evidence and Dirichlet quantities ---------------------------------------------------------


def test_evidence_functions_by_hand():
    z = torch.tensor([[-2.0, 0.0, 3.0]])
    assert torch.equal(evidence(z, "relu"), torch.tensor([[0.0, 0.0, 3.0]]))
    assert torch.allclose(evidence(z, "softplus"), torch.log1p(torch.exp(z)))
    assert torch.allclose(evidence(z, "exp"), torch.exp(z))
    assert torch.isfinite(evidence(torch.tensor([1e4]), "exp")).all()  # clamped, no overflow
    assert torch.equal(alpha_from_outputs(z), torch.tensor([[1.0, 1.0, 4.0]]))
    with pytest.raises(MedsureInputError, match="evidence function"):
        evidence(z, "sigmoid")


def test_probabilities_sum_to_one_and_u_is_k_over_s():
    rng = np.random.default_rng(0)
    alpha = 1.0 + rng.gamma(1.0, 5.0, size=(50, 4, 3, 3))
    probs = expected_probability(alpha)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(vacuity(alpha), 4.0 / alpha.sum(axis=1))
    assert vacuity(np.ones((1, 5)))[0] == 1.0  # no evidence: all uncertainty


def test_dissonance_by_hand():
    # two classes with equal evidence 4 each: b = (4/10, 4/10), Bal = 1 -> diss = 0.4 + 0.4 = 0.8
    assert dissonance(np.array([[5.0, 5.0]]))[0] == pytest.approx(0.8)
    # evidence on one class only: no conflict
    assert dissonance(np.array([[9.0, 1.0, 1.0]]))[0] == pytest.approx(0.0)
    # S = 7, b = (3/7, 1/7, 0): Bal(b1, b2) = 1 - (2/7)/(4/7) = 0.5; each ratio is 0.5 (b3 = 0
    # weighs nothing), so diss = 3/7 * 0.5 + 1/7 * 0.5 + 0 = 2/7
    assert dissonance(np.array([[4.0, 2.0, 1.0]]))[0] == pytest.approx(2 / 7)
    assert dissonance(np.ones((2, 3))).tolist() == [0.0, 0.0]


def test_expected_entropy_against_monte_carlo_and_decomposition():
    alpha = np.array([[2.0, 5.0, 1.5]])
    samples = scipy_dirichlet(alpha[0]).rvs(size=200_000, random_state=np.random.default_rng(1))
    mc = -(samples * np.log(samples)).sum(axis=1)
    assert expected_entropy(alpha)[0] == pytest.approx(mc.mean(), abs=4 * mc.std() / math.sqrt(len(mc)))
    summary = dirichlet_summary(ALPHA)
    p = ALPHA / ALPHA.sum(1, keepdims=True)
    np.testing.assert_allclose(summary.total_entropy, -(p * np.log(p)).sum(1))
    np.testing.assert_allclose(summary.mutual_information, summary.total_entropy - summary.expected_entropy)
    assert np.all(summary.mutual_information >= 0)
    np.testing.assert_allclose(summary.vacuity, [3 / 6, 1.0, 3 / 21])


def test_concentration_check_refuses_non_positive():
    with pytest.raises(MedsureInputError, match=r"alpha: got 1 value\(s\) <= 0.*expected Dirichlet concentrations"):
        check_concentration("alpha", np.array([[1.0, 0.0]]))
    with pytest.raises(MedsureInputError, match="not finite"):
        check_concentration("alpha", np.array([[1.0, np.nan]]))
    with pytest.raises(MedsureInputError, match="at least 2 classes"):
        check_concentration("alpha", np.array([[1.0], [2.0]]))


# ---- losses by hand ---------------------------------------------------------------------------


def _hand(kind: str) -> np.ndarray:
    s = ALPHA.sum(1)
    y = np.eye(3)[LABELS]
    p = ALPHA / s[:, None]
    if kind == "mse":
        return ((y - p) ** 2 + p * (1 - p) / (s[:, None] + 1)).sum(1)
    if kind == "log":
        return np.log(s) - np.log(ALPHA[np.arange(3), LABELS])
    return digamma(s) - digamma(ALPHA[np.arange(3), LABELS])


@pytest.mark.parametrize("kind", ["mse", "log", "digamma"])
def test_data_terms_equal_hand_computed(kind):
    got = evidential_data_term(torch.tensor(ALPHA), torch.tensor(LABELS), kind).numpy()
    np.testing.assert_allclose(got, _hand(kind), rtol=1e-12)


def test_mse_term_of_first_row_written_out():
    # alpha (3, 1, 2), y = (1, 0, 0): S = 6, p = (1/2, 1/6, 1/3)
    want = (0.5**2 + (1 / 6) ** 2 + (1 / 3) ** 2) + (0.5 * 0.5 + (1 / 6) * (5 / 6) + (1 / 3) * (2 / 3)) / 7
    got = evidential_data_term(torch.tensor(ALPHA[:1]), torch.tensor([0]), "mse")
    assert float(got[0]) == pytest.approx(want)


def test_kl_closed_form_against_scipy_and_monte_carlo():
    alpha = torch.tensor([[2.0, 0.5, 3.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    kl = kl_to_uniform(alpha).numpy()
    a = alpha.numpy()[0]
    want = gammaln(a.sum()) - gammaln(3) - gammaln(a).sum() + ((a - 1) * (digamma(a) - digamma(a.sum()))).sum()
    assert kl[0] == pytest.approx(want)
    assert kl[1] == pytest.approx(0.0, abs=1e-12)
    # torch's own analytic KL and a Monte-Carlo estimate E_q[log q - log p]
    q, p = torch.distributions.Dirichlet(alpha[0]), torch.distributions.Dirichlet(torch.ones(3, dtype=torch.float64))
    assert kl[0] == pytest.approx(float(torch.distributions.kl_divergence(q, p)))
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
        x = q.sample((400_000,))
    terms = (q.log_prob(x) - p.log_prob(x)).numpy()
    assert kl[0] == pytest.approx(terms.mean(), abs=4 * terms.std() / math.sqrt(len(terms)))


def test_annealing_coefficient():
    assert [annealing_coefficient(e) for e in (0, 1, 5, 10, 30)] == [0.0, 0.1, 0.5, 1.0, 1.0]
    assert annealing_coefficient(3, 0) == 1.0
    with pytest.raises(MedsureInputError, match="epoch"):
        annealing_coefficient(-1)


def test_total_loss_combines_data_and_annealed_kl():
    alpha, y = torch.tensor(ALPHA), torch.tensor(LABELS)
    loss = EvidentialLoss(kind="log", annealing_epochs=10)
    loss.on_epoch(5)
    yy = torch.eye(3, dtype=torch.float64)[y]
    want = _hand("log").mean() + 0.5 * kl_to_uniform(yy + (1 - yy) * alpha).mean().item()
    assert float(loss.from_alpha(alpha, y)) == pytest.approx(want)
    loss.on_epoch(0)
    assert float(loss.from_alpha(alpha, y)) == pytest.approx(_hand("log").mean())


def test_segmentation_loss_is_the_per_pixel_mean_plus_dice():
    gen = torch.Generator().manual_seed(0)
    alpha = 1 + 5 * torch.rand(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    masks = torch.randint(0, 3, (2, 4, 5), generator=gen)
    flat_alpha = alpha.permute(0, 2, 3, 1).reshape(-1, 3)
    per_pixel = evidential_data_term(flat_alpha, masks.reshape(-1), "digamma").mean()
    loss = EvidentialLoss(kind="digamma", annealing_epochs=0, kl_weight=0.0)
    assert float(loss.from_alpha(alpha, masks)) == pytest.approx(float(per_pixel))
    with_dice = EvidentialLoss(kind="digamma", annealing_epochs=0, kl_weight=0.0, dice_weight=1.0)
    from monai.losses import DiceLoss

    probs = alpha / alpha.sum(1, keepdim=True)
    monai_dice = DiceLoss(to_onehot_y=True, reduction="mean")(probs, masks[:, None])
    assert float(soft_dice_loss(probs, masks)) == pytest.approx(float(monai_dice), rel=1e-6)
    assert float(with_dice.from_alpha(alpha, masks)) == pytest.approx(float(per_pixel) + float(monai_dice), rel=1e-6)


@pytest.mark.parametrize("kind", ["mse", "log", "digamma"])
@pytest.mark.parametrize("function", ["relu", "softplus", "exp"])
def test_gradients_finite_at_alpha_one_and_huge_evidence(kind, function):
    outputs = torch.tensor([[-50.0, -50.0, -50.0], [1e6, -1e6, 0.0], [1e30, 1e30, 1e30]], requires_grad=True)
    loss = EvidentialLoss(kind=kind, evidence=function, annealing_epochs=1)
    loss.on_epoch(1)
    value = loss(outputs, torch.tensor([0, 1, 2]))
    value.backward()
    assert torch.isfinite(value)
    assert outputs.grad is not None and torch.isfinite(outputs.grad).all()


def test_bad_targets_refused():
    with pytest.raises(MedsureInputError, match=r"targets: got labels in \[0, 3\]; expected labels in \[0, 3\)"):
        evidential_data_term(torch.ones(2, 3), torch.tensor([0, 3]))
    with pytest.raises(MedsureInputError, match="evidential loss"):
        EvidentialLoss(kind="ce")


# ---- behaviour of an evidential head ------------------------------------------------------------


def _toy(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images: class 0 bright top half, class 1 bright bottom half (separable)."""
    y = torch.randint(0, 2, (n,), generator=gen)
    x = 0.1 * torch.rand(n, 1, 8, 8, generator=gen)
    x[y == 0, :, :4] += 0.9
    x[y == 1, :, 4:] += 0.9
    return x, y


def _net(seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(),
            torch.nn.Linear(32, 2),
        )


def test_untrained_head_is_uncertain():
    gen = torch.Generator().manual_seed(0)
    x, _ = _toy(64, gen)
    with torch.no_grad():
        alpha = alpha_from_outputs(_net(0)(x)).numpy()
    assert vacuity(alpha).mean() > 0.85  # little evidence before training: u = K/S near 1


def test_evidential_training_lowers_u_on_train_and_not_on_noise():
    # softplus evidence: ReLU heads whose outputs all start negative never move (a known EDL
    # failure, seen here for seed 0); inputs centred so that structureless noise carries no signal
    for seed in range(3):  # the property must hold for every seed, not by luck of one
        gen = torch.Generator().manual_seed(seed)
        x, y = _toy(128, gen)
        x = 2 * x - 1
        net = _net(seed)
        loss_fn = EvidentialLoss(kind="digamma", evidence="softplus", annealing_epochs=10)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        for epoch in range(1, 61):
            loss_fn.on_epoch(epoch)
            opt.zero_grad()
            loss_fn(net(x), y).backward()
            opt.step()
        noise = 0.3 * torch.randn(128, 1, 8, 8, generator=gen)
        with torch.no_grad():
            alpha_train = alpha_from_outputs(net(x), "softplus").numpy()
            u_train = vacuity(alpha_train)
            u_noise = vacuity(alpha_from_outputs(net(noise), "softplus").numpy())
        u_untrained = 2 / (2 + 2 * math.log(2))  # softplus(0) = log 2 evidence per class
        assert (alpha_train.argmax(1) == y.numpy()).all()
        assert u_train.mean() < 0.2, u_train.mean()
        assert u_noise.mean() > u_train.mean() + 0.2, (u_noise.mean(), u_train.mean())
        assert u_noise.mean() < u_untrained + 1e-9


def test_joint_reliability_by_hand():
    from medsure.evidential import joint_reliability

    class_alpha = np.array([[9.0, 1.0], [1.0, 1.0]])
    seg = np.ones((2, 2, 1, 2))
    seg[0, 1, 0, 0] = 3.0  # image 0: pixel 0 foreground (u = 2/4), pixel 1 no evidence (u = 1)
    rel = joint_reliability(class_alpha, seg)
    np.testing.assert_allclose(rel.class_u, [0.2, 1.0])
    np.testing.assert_allclose(rel.seg_u, [0.75, 1.0])
    assert rel.seg_u_foreground[0] == pytest.approx(0.5) and np.isnan(rel.seg_u_foreground[1])
    with pytest.raises(MedsureInputError, match="segmentation alpha"):
        joint_reliability(class_alpha, seg[:1])
