"""What code produced an audit: spex's version (and git commit when run from a checkout) and the
versions of the libraries that decide its numbers.

Stored on every audit so that a result months old can be reproduced or explained ("the proxy changed
because LightGBM changed"). Read from package metadata: importing torch just to ask its version
would cost seconds.
"""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

LIBRARIES = (
    "spex",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "lightgbm",
    "galois",
    "torch",
    "transformers",
    "accelerate",
    "mlflow",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "prefect",
    "shapiq",
)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that influence results (missing ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@lru_cache(maxsize=1)
def code_version() -> str:
    """``spex <version>`` plus ``+g<commit>[-dirty]`` when spex runs from a git checkout."""
    try:
        version = metadata.version("spex")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            described = subprocess.run(
                ["git", "describe", "--always", "--dirty", "--abbrev=12"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            if described:
                return f"spex {version}+g{described}"
        except (OSError, subprocess.SubprocessError):
            pass
    return f"spex {version}"
