"""One numerical core: the math that several analyses share, defined once (layer 0).

Every function here is pure numpy/scipy (no torch, no I/O), never modifies its inputs and is
pinned by ``tests/test_core.py`` against its reference library on the same inputs.

Undefined values
    A quantity that is undefined for the given data (AUROC when one class is absent, Dice when
    a structure is absent from both prediction and truth, the mean of no finite value) is
    ``NaN`` here, never an exception and never a made-up number. Results dictionaries that are
    written to JSON turn it into ``None`` with :func:`undefined_as_none`.

Modules
    :mod:`~medsure.core.probability` softmax, entropy, the entropy (mutual-information)
    decomposition; :mod:`~medsure.core.ranking` tie-aware AUROC; :mod:`~medsure.core.dice`
    Dice with one empty-mask convention and one reduction; :mod:`~medsure.core.stats` NaN-aware
    mean and the percentile bootstrap; :mod:`~medsure.core.calibration` binned calibration error.
"""

from medsure.core.calibration import BinnedCalibration, BinStrategy, bin_edges, binned_calibration, calibration_error
from medsure.core.dice import check_label_maps, dice_per_label, mean_dice
from medsure.core.probability import EntropyDecomposition, entropy, entropy_decomposition, softmax
from medsure.core.ranking import auroc_from_tie_blocks, binary_auroc, macro_ovr_auroc, tie_blocks
from medsure.core.stats import bootstrap_counts, nanmean, percentile_bootstrap, undefined_as_none

__all__ = [
    "softmax",
    "entropy",
    "entropy_decomposition",
    "EntropyDecomposition",
    "binary_auroc",
    "macro_ovr_auroc",
    "auroc_from_tie_blocks",
    "tie_blocks",
    "dice_per_label",
    "mean_dice",
    "check_label_maps",
    "nanmean",
    "undefined_as_none",
    "bootstrap_counts",
    "percentile_bootstrap",
    "BinnedCalibration",
    "BinStrategy",
    "bin_edges",
    "binned_calibration",
    "calibration_error",
]
