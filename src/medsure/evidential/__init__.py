"""Evidential deep learning: Dirichlet outputs, their uncertainty and their losses (layer 2).

A network's raw outputs ``z`` become non-negative *evidence* ``e = f(z)`` (ReLU, softplus or
exp), Dirichlet concentrations ``alpha = e + 1`` with strength ``S = sum_k alpha_k``, expected
probabilities ``alpha / S`` and vacuity (uncertainty mass) ``u = K / S`` (Sensoy et al., NeurIPS
2018, "Evidential deep learning to quantify classification uncertainty"). The same holds per
pixel for segmentation, with the class axis at position 1.

Modules
    :mod:`~medsure.evidential.dirichlet` evidence functions (torch) and the Dirichlet
    quantities of a concentration array (numpy: vacuity, dissonance, expected entropy, entropy
    of the expected probability, mutual information);
    :mod:`~medsure.evidential.losses` the three evidential losses (MSE, log-likelihood,
    digamma), the KL regulariser towards the uniform Dirichlet with its annealing, and the
    optional soft Dice term for segmentation (torch);
    :mod:`~medsure.evidential.analysis` :func:`evaluate_joint`, the joint analysis of a joint
    (UML) model's prediction files (``medsure joint``); :mod:`.plots` and :mod:`.report` render it.
"""

from typing import TYPE_CHECKING

# Submodules load on first use (PEP 562): the numpy analyses (failure CSFs, ``medsure joint``) must not
# pay for torch, which the losses and the evidence functions need.
_SUBMODULE_OF = {
    **dict.fromkeys(("JointCase", "JointResults", "evaluate_joint"), "analysis"),
    **dict.fromkeys(
        (
            "EVIDENCE_FUNCTIONS",
            "DirichletSummary",
            "JointReliability",
            "alpha_from_outputs",
            "check_concentration",
            "dirichlet_summary",
            "dissonance",
            "evidence",
            "expected_entropy",
            "expected_probability",
            "joint_reliability",
            "vacuity",
        ),
        "dirichlet",
    ),
    **dict.fromkeys(
        (
            "EVIDENTIAL_LOSSES",
            "EvidentialLoss",
            "annealing_coefficient",
            "evidential_data_term",
            "kl_to_uniform",
            "soft_dice_loss",
        ),
        "losses",
    ),
}

if TYPE_CHECKING:
    from medsure.evidential.analysis import JointCase, JointResults, evaluate_joint
    from medsure.evidential.dirichlet import (
        EVIDENCE_FUNCTIONS,
        DirichletSummary,
        JointReliability,
        alpha_from_outputs,
        check_concentration,
        dirichlet_summary,
        dissonance,
        evidence,
        expected_entropy,
        expected_probability,
        joint_reliability,
        vacuity,
    )
    from medsure.evidential.losses import (
        EVIDENTIAL_LOSSES,
        EvidentialLoss,
        annealing_coefficient,
        evidential_data_term,
        kl_to_uniform,
        soft_dice_loss,
    )


__all__ = [
    "EVIDENCE_FUNCTIONS",
    "EVIDENTIAL_LOSSES",
    "DirichletSummary",
    "JointReliability",
    "EvidentialLoss",
    "JointCase",
    "JointResults",
    "evaluate_joint",
    "alpha_from_outputs",
    "annealing_coefficient",
    "check_concentration",
    "dirichlet_summary",
    "dissonance",
    "evidence",
    "evidential_data_term",
    "expected_entropy",
    "expected_probability",
    "joint_reliability",
    "kl_to_uniform",
    "soft_dice_loss",
    "vacuity",
]


def __getattr__(name: str) -> object:
    if name in _SUBMODULE_OF:
        import importlib

        return getattr(importlib.import_module(f"medsure.evidential.{_SUBMODULE_OF[name]}"), name)
    raise AttributeError(f"module 'medsure.evidential' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
