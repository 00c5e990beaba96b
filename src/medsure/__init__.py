"""medsure: make medical image models say how sure they are, with checkable guarantees."""

# The one place the version is written. pyproject.toml reads it ([tool.setuptools.dynamic]); the CLI
# (`medsure --version`), run records and prediction-file provenance import it. It is set before the
# imports below so that modules importing it during package initialisation find it. On a release, set it
# here and in CITATION.cff, and date its section in CHANGELOG.md (tests/test_packaging.py checks all agree).
__version__ = "0.1.0"

from medsure import shards  # noqa: F401  (registers load_predictions' reader of shard folders)
from medsure.artifact import Predictions, load_predictions, make_predictions, save_predictions

__all__ = ["Predictions", "__version__", "load_predictions", "make_predictions", "save_predictions"]
