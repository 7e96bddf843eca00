"""spex: find the interactions that drive a model's output.

The math layer (this package's core) is pure numpy / scipy / LightGBM::

    import spex
    ex = spex.explain(value_fn, n, budget=4000, method="proxyspex", seed=0)
    ex.interactions(index="mobius", top=10)
    spex.faithfulness(value_fn, ex.spectrum, spex.masks.holdout(n, 1000, seed=1))
"""

from spex import config as _config  # noqa: F401  (telemetry defaults before anything else loads)
from spex.api import METHODS, explain, get_method
from spex.exact import exact_spectrum
from spex.explanation import Explanation
from spex.indices import INDICES
from spex.metrics import faithfulness
from spex.removal import removal
from spex.spectrum import Spectrum
from spex.validation import SpexInputError

__all__ = [
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
__version__ = "0.1.0"
