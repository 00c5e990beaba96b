"""medsure: make medical image models say how sure they are, with checkable guarantees."""
__version__ = "0.1.0"

from medsure.artifact import Predictions, load_predictions, make_predictions, save_predictions

__all__ = ["Predictions", "load_predictions", "make_predictions", "save_predictions", "__version__"]
