"""Ablations: run a value function on masks, once per mask ever, crash-safe and batched.

* :class:`AblationStore` — (fingerprint, mask bits) -> value on disk; append-only atomic chunks.
* :class:`AblationEngine` — de-duplicate, look up, compute the missing masks in cost-packed batches
  with OOM back-off and progress, write chunks as they complete; ``engine.bind(vf)`` gives the plain
  ``f(masks) -> values`` callable the methods take.
* :func:`measure_throughput` — a value function's forward masks/s and tokens/s (for estimates).

Masks are keyed by their packed bits, as everywhere in spex: :mod:`spex.engine.maskbits`.

Imports neither torch (used only if already loaded), SQLAlchemy, MLflow nor Prefect.
"""

from spex.ablation.engine import (
    AblationEngine,
    BoundValueFunction,
    EngineStats,
    Throughput,
    is_out_of_memory,
    measure_throughput,
)
from spex.ablation.store import (
    AblationStore,
    AblationStoreError,
    AblationStoreUnwritable,
    StoreStats,
    read_parquet,
)

__all__ = [
    "AblationEngine",
    "AblationStore",
    "AblationStoreError",
    "AblationStoreUnwritable",
    "BoundValueFunction",
    "EngineStats",
    "StoreStats",
    "Throughput",
    "is_out_of_memory",
    "measure_throughput",
    "read_parquet",
]
