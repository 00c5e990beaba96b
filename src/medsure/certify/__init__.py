"""Certified robustness by randomized smoothing (layer 2: statistics over a model callable).

- :mod:`~medsure.certify.stats`: Clopper–Pearson bounds, binomial tests, Holm/Bonferroni/BH over
  pixels, the alpha-spending p-values of the sequential mode;
- :mod:`~medsure.certify.smoothing`: Cohen et al. (2019) PREDICT/CERTIFY for classifiers,
  SegCertify (Fischer et al. 2021) for segmenters, sequential early stopping;
- :mod:`~medsure.certify.metrics`: certified Dice (abstain = wrong), Dice on certified pixels,
  abstain rate, certified accuracy vs radius;
- :func:`evaluate_certification` -> :class:`CertificationResults`.
"""

from medsure.certify.evaluate import CertificationResults, evaluate_certification, images_to_tensor
from medsure.certify.smoothing import (
    ABSTAIN,
    certify_classification,
    certify_segmentation,
    classification_radius,
    image_seed,
    segmentation_radius,
    smoothed_predict,
)
from medsure.certify.stats import (
    CORRECTIONS,
    adjust_pvalues,
    binomial_pvalue_greater,
    binomial_pvalue_two_sided,
    clopper_pearson_lower,
    reject,
)

__all__ = [
    "ABSTAIN",
    "CORRECTIONS",
    "CertificationResults",
    "evaluate_certification",
    "images_to_tensor",
    "certify_classification",
    "certify_segmentation",
    "smoothed_predict",
    "classification_radius",
    "segmentation_radius",
    "image_seed",
    "adjust_pvalues",
    "reject",
    "binomial_pvalue_greater",
    "binomial_pvalue_two_sided",
    "clopper_pearson_lower",
]
