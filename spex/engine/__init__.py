"""The pure math of spex: sampling, set families, Walsh-Hadamard transforms, spectra, interaction
indices, the methods (ProxySPEX, SPEX, linear, Faith-Banzhaf), removal, faithfulness, planted games.

Imports: numpy, scipy, LightGBM and threadpoolctl (to cap BLAS threads); pandas (interaction tables)
and scikit-learn (cross-validated Lasso / ridge refits) lazily, where a caller asks for them; of spex
only :mod:`spex.errors` and :mod:`spex.content`. Nothing here imports torch, SQLAlchemy, MLflow,
Prefect, transformers or anything above it in spex (import-linter contracts and
``tests/engine/test_layering.py`` check it). ``spex`` re-exports the entry points below, so
``spex.explain`` is the same function as ``spex.engine.explain``.
"""

from spex.engine.exact import EXACT_MAX_N, exact_spectrum
from spex.engine.explainer import METHODS, explain, get_method
from spex.engine.explanation import Explanation
from spex.engine.heldout import faithfulness
from spex.engine.indices import INDICES
from spex.engine.removal_choice import removal
from spex.engine.spectrum import Spectrum
from spex.errors import SpexInputError

__all__ = [
    "EXACT_MAX_N",
    "INDICES",
    "METHODS",
    "Explanation",
    "Spectrum",
    "SpexInputError",
    "exact_spectrum",
    "explain",
    "faithfulness",
    "get_method",
    "removal",
]
